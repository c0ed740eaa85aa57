"""The web console: first-load bytes and time to interactive, and the render time of a 1,000-span trace.

What it measures: a real server (``underlay run``, SmolLM2 registered, auth off) on loopback, driven
by Debian's Chromium through Playwright (``/usr/bin/chromium``; ``apt-get install -y chromium``).

- **Cold first load** (a fresh browser context, empty cache) of ``/#/playground``: bytes transferred
  (the browser's own Resource Timing ``transferSize``, headers included, summed over the document and
  every asset) and time to interactive: from navigation start until the model picker has its options
  (the page has fetched ``/v1/models``, drawn its form and can send a message), stamped in the page by
  a ``MutationObserver`` installed before any page script runs, so the figure is the browser's own
  clock and owes nothing to the driver. Budget from issue 15: < 300 KB, < 1 s.
  The driver's view is printed beside it (``performance.now()`` read over CDP once Playwright has seen
  the option): under heavy load that adds the driver's own round trips, which the earlier figures
  included.
- **Warm load**: the same, reloaded in the same context (assets revalidate with 304s).
- **Waterfall of 1,000 spans**: the traces page's own ``renderWaterfall`` on a generated 1,000-span
  tree, timed from the call to the next painted frame (build + style + layout + paint).

``--timeline`` prints one cold load's requests (start and end, ms from navigation) and when the page
became interactive: what the first render waits for. ``--url`` measures a server already running
(console on, auth off) instead of starting one, e.g. to compare two versions under the same load.

Run from the repository root: ``python bench/console.py [--runs N] [--timeline]``.
``--record`` / ``--check [--tolerance 1.5]`` (``bench/_results.py``) keep and compare the headline
figures: the cold load's bytes, the cold and warm time to interactive and the waterfall's paint time
(the times are wall-clock figures: they gate a check only on a quiet machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import free_port, start_underlay, wait_http  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import LOWER, Guard  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHAT = "smollm2-135m-instruct"

# Installed before any page script: stamps the moment the playground's model picker gets an option.
STAMP_INTERACTIVE = """(() => {
  const ready = () => document.querySelector('select[name=model] option') !== null;
  new MutationObserver((_, observer) => {
    if (window.__interactive === undefined && ready()) {
      window.__interactive = performance.now();
      observer.disconnect();
    }
  }).observe(document, {subtree: true, childList: true});
})();"""

MEASURE_LOAD = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const resources = performance.getEntriesByType('resource');
  const bytes = nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0);
  const decoded = nav.decodedBodySize + resources.reduce((sum, r) => sum + r.decodedBodySize, 0);
  const timeline = [['document', 0, nav.responseEnd]].concat(
    resources.map((r) => [r.name.replace(location.origin, ''), r.startTime, r.responseEnd]));
  return {bytes, decoded, requests: resources.length + 1, dcl: nav.domContentLoadedEventEnd,
          tti: window.__interactive, timeline};
}"""

RENDER_TRACE = """async (count) => {
  const { renderWaterfall } = await import('/console/pages/traces.js');
  const spans = [];
  const t0 = 1_700_000_000_000_000_000;
  for (let i = 0; i < count; i++) {
    const parent = i === 0 ? null : `s${Math.floor((i - 1) / 4)}`;  // a 4-ary tree, 5 levels deep
    const start = t0 + i * 1_000_000;
    spans.push({span_id: `s${i}`, trace_id: 't', parent_span_id: parent, name: `span ${i}`, kind: 'internal',
      layer: ['route', 'router', 'provider', 'upstream'][i % 4], start_time_ns: start,
      end_time_ns: start + 5_000_000, duration_ms: 5, status: i % 97 ? 'ok' : 'error', attributes: {i}, events: []});
  }
  const box = document.createElement('div');
  document.querySelector('main').append(box);
  const begin = performance.now();
  renderWaterfall(box, spans, () => {});
  const built = performance.now() - begin;
  await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  const painted = performance.now() - begin;
  const rows = box.querySelectorAll('.span-row').length;
  box.remove();
  return {built, painted, rows};
}"""


def _config(state: Path) -> dict[str, Any]:
    return {
        "state_dir": str(state),
        "apis": ["inference", "models", "telemetry"],
        "providers": {
            "inference": [
                {
                    "provider_id": "llama-cpp",
                    "provider_type": "inline::llama-cpp",
                    "config": {"models": [{"name": CHAT, "packaged": CHAT, "n_ctx": 2048}]},
                }
            ]
        },
    }


def _serve(stack: ExitStack) -> str:
    """Start a server for the bench; its base URL (stopped when ``stack`` closes)."""
    state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    config_path = state / "run.yaml"
    config_path.write_text(yaml.safe_dump(_config(state)))
    port = free_port()
    process = start_underlay(config_path, port, state / "server.log")

    def stop() -> None:
        process.terminate()
        process.wait(30)

    stack.callback(stop)
    wait_http(f"http://127.0.0.1:{port}/v1/health", process, timeout=300)
    return f"http://127.0.0.1:{port}"


def _measure(base: str, runs: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    from playwright.sync_api import sync_playwright

    url = f"{base}/#/playground"
    cold: list[dict[str, Any]] = []
    warm: list[dict[str, Any]] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for _ in range(runs):
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            context.add_init_script(STAMP_INTERACTIVE)
            page = context.new_page()
            for found in (cold, warm):
                if found is cold:
                    page.goto(url)
                else:
                    page.reload()
                page.locator("select[name=model] option").first.wait_for(state="attached")
                driver = page.evaluate("performance.now()")
                page.wait_for_load_state("networkidle")
                found.append({**page.evaluate(MEASURE_LOAD), "driver": driver})
            context.close()
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(f"{base}/#/traces")
        page.locator("main h1").wait_for()
        renders = [page.evaluate(RENDER_TRACE, 1000) for _ in range(runs)]
        context.close()
        browser.close()
    return cold, warm, renders


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--timeline", action="store_true", help="print one cold load's requests and interactive time")
    parser.add_argument("--url", help="measure this running server (console on, auth off) instead of starting one")
    Guard.add_arguments(parser)
    args = parser.parse_args()
    guard = Guard("console", args)

    with ExitStack() as stack:
        base = args.url.rstrip("/") if args.url else _serve(stack)
        cold, warm, renders = _measure(base, args.runs)

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    print(f"console first load, {args.runs} runs each, medians (Chromium {CHROMIUM}, loopback):")
    for name, runs in (("cold", cold), ("warm", warm)):
        print(
            f"  {name}: {med(runs, 'bytes') / 1024:.1f} KB transferred ({med(runs, 'decoded') / 1024:.1f} KB decoded, "
            f"{med(runs, 'requests'):.0f} requests); DOMContentLoaded {med(runs, 'dcl'):.0f} ms; "
            f"interactive {med(runs, 'tti'):.0f} ms (max {max(r['tti'] for r in runs):.0f} ms; "
            f"as the driver saw it {med(runs, 'driver'):.0f} ms)"
        )
    print(
        f"  waterfall of {renders[0]['rows']} spans: built in {med(renders, 'built'):.1f} ms, "
        f"painted in {med(renders, 'painted'):.1f} ms (max {max(r['painted'] for r in renders):.1f} ms)"
    )
    if args.timeline:
        middle = sorted(cold, key=lambda r: r["tti"])[len(cold) // 2]
        print(f"  timeline of the median cold load (ms from navigation; interactive at {middle['tti']:.0f}):")
        for name, start, end in middle["timeline"]:
            print(f"    {start:7.1f} → {end:7.1f}  {name}")
    print(f"  at {time.strftime('%Y-%m-%d %H:%M:%S')}")

    guard.figure("cold first load transferred (median)", med(cold, "bytes") / 1024, "KB", LOWER)
    guard.figure("cold time to interactive (median)", med(cold, "tti"), "ms", LOWER, wall=True)
    guard.figure("warm time to interactive (median)", med(warm, "tti"), "ms", LOWER, wall=True)
    guard.figure("1,000-span waterfall painted (median)", med(renders, "painted"), "ms", LOWER, wall=True)
    return guard.finish()


if __name__ == "__main__":
    sys.exit(main())
