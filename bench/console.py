"""The web console: first-load bytes and time to interactive, and the render time of a 1,000-span trace.

What it measures: a real server (``underlay run``, SmolLM2 registered, auth off) on loopback, driven
by Debian's Chromium through Playwright (``/usr/bin/chromium``; ``apt-get install -y chromium``).

- **Cold first load** (a fresh browser context, empty cache) of ``/#/playground``: bytes transferred
  (the browser's own Resource Timing ``transferSize``, headers included, summed over the document and
  every asset) and time to interactive = from navigation start until the model picker is filled in
  (the page has fetched ``/v1/models`` and can send a message). Budget from issue 15: < 300 KB, < 1 s.
- **Warm load**: the same, reloaded in the same context (assets revalidate with 304s).
- **Waterfall of 1,000 spans**: the traces page's own ``renderWaterfall`` on a generated 1,000-span
  tree, timed from the call to the next painted frame (build + style + layout + paint).

Run from the repository root: ``python bench/console.py [--runs N]``. Prints its figures, exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import free_port, start_underlay, wait_http  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHAT = "smollm2-135m-instruct"

MEASURE_LOAD = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const resources = performance.getEntriesByType('resource');
  const bytes = nav.transferSize + resources.reduce((sum, r) => sum + r.transferSize, 0);
  const decoded = nav.decodedBodySize + resources.reduce((sum, r) => sum + r.decodedBodySize, 0);
  return {bytes, decoded, requests: resources.length + 1, dcl: nav.domContentLoadedEventEnd};
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        config_path = state / "run.yaml"
        config_path.write_text(yaml.safe_dump(_config(state)))
        port = free_port()
        process = start_underlay(config_path, port, state / "server.log")
        try:
            wait_http(f"http://127.0.0.1:{port}/v1/health", process, timeout=300)
            url = f"http://127.0.0.1:{port}/#/playground"
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                cold: list[dict[str, float]] = []
                warm: list[dict[str, float]] = []
                for _ in range(args.runs):
                    context = browser.new_context(viewport={"width": 1280, "height": 800})
                    page = context.new_page()
                    for runs in (cold, warm):
                        if runs is cold:
                            page.goto(url)
                        else:
                            page.reload()
                        page.locator("select[name=model] option").first.wait_for(state="attached")
                        tti = page.evaluate("performance.now()")
                        page.wait_for_load_state("networkidle")
                        runs.append({**page.evaluate(MEASURE_LOAD), "tti": tti})
                    context.close()
                context = browser.new_context(viewport={"width": 1280, "height": 800})
                page = context.new_page()
                page.goto(f"http://127.0.0.1:{port}/#/traces")
                page.locator("main h1").wait_for()
                renders = [page.evaluate(RENDER_TRACE, 1000) for _ in range(args.runs)]
                context.close()
                browser.close()
        finally:
            process.terminate()
            process.wait(30)

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"console first load, {args.runs} runs each, medians (Chromium {CHROMIUM}, loopback):")
    for name, runs in (("cold", cold), ("warm", warm)):
        print(
            f"  {name}: {med(runs, 'bytes') / 1024:.1f} KB transferred ({med(runs, 'decoded') / 1024:.1f} KB decoded, "
            f"{med(runs, 'requests'):.0f} requests); DOMContentLoaded {med(runs, 'dcl'):.0f} ms; "
            f"interactive {med(runs, 'tti'):.0f} ms (max {max(r['tti'] for r in runs):.0f} ms)"
        )
    print(
        f"  waterfall of {renders[0]['rows']} spans: built in {med(renders, 'built'):.1f} ms, "
        f"painted in {med(renders, 'painted'):.1f} ms (max {max(r['painted'] for r in renders):.1f} ms)"
    )
    print(f"  at {time.strftime('%Y-%m-%d %H:%M:%S')}")


if __name__ == "__main__":
    main()
