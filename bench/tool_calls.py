"""Tool calls with ``tool_choice: "auto"`` on the embedded model, scored on a public function-calling set.

What it measures: a real Underlay server (``inline::llama-cpp``, the packaged Qwen2.5-Coder 0.5B,
greedy decoding) answers a seeded sample of the Berkeley Function Calling Leaderboard through
``/v1/chat/completions`` with the ``openai`` SDK, every request with its tools and ``tool_choice``
auto (the default), one request at a time:

* **simple** cases (``BFCL_v4_simple_python``): one function declared, one call expected;
* **irrelevance** cases (``BFCL_v4_irrelevance``): one function declared that cannot answer the
  question, so no call is expected.

Printed per category and overall:

* *decision*: called when a call was expected, answered in words when none was;
* *name*: exactly one call, naming the expected function (simple cases);
* *arguments*: that call's arguments match one of the accepted answers, checked the way BFCL's AST
  checker does (every argument without an optional marker present, no argument the answer lacks,
  each value among the accepted ones; strings compared without case, spaces or the punctuation
  ``,./-_*^``; an integer accepted where a float is expected; lists element by element, objects key by
  key);
* *markup leaks*: template markup (``<tool_call>``, ``<tools>``, ``<|im_start|>`` ...) in the
  content; the target is 0;
* *truncations*: ``finish_reason`` ``length`` (``--max-tokens`` reached);
* *calls written out as text*: content that is a JSON ``{"name", "arguments"}`` object (bare or
  fenced), i.e. a call the model wrote as an answer, usually to a tool that does not exist;
* latency p50/p90 per request.

The data come from the ``bfcl-eval`` wheel on PyPI (Apache-2.0), pinned by version and sha256: pass
``--wheel PATH``, or the script fetches it once with ``pip download --no-deps`` into
``~/.cache/underlay/bench``. Function names lose their dots (``math.factorial`` becomes
``math_factorial``, as OpenAI names allow no dots) and BFCL's Python type names become JSON Schema
ones (``dict`` object, ``float`` number, ``tuple`` array, ``any`` unconstrained).

The server runs from the checkout the script is in. ``--baseline DIR`` starts a second server from
another checkout (say ``git worktree add /tmp/before <commit>``) and sends every case to both, one
after the other, so that both see the same load on a shared machine::

    python bench/tool_calls.py [--simple 60] [--irrelevance 30] [--max-tokens 192] [--threads 1]
                               [--baseline DIR] [--json out.json]

Exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, free_port, percentile, wait_http  # noqa: E402

BFCL_VERSION = "2026.3.23"
BFCL_WHEEL = f"bfcl_eval-{BFCL_VERSION}-py3-none-any.whl"
BFCL_SHA256 = "3bb6dfa5f0c68ad403c9ec50b00db2bb3b4cc9b38ab1ff33f48fe30d853d3a0a"
SEED = 20261207
MODEL = "qwen2.5-coder-0.5b-instruct"
CACHE = Path.home() / ".cache" / "underlay" / "bench"

#: Chat-template markup that must never reach a client as content.
MARKUP = (
    "<tool_call>",
    "</tool_call>",
    "<tools>",
    "</tools>",
    "<tool_response>",
    "</tool_response>",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
)

#: BFCL's Python-flavoured type names, as JSON Schema types (None: no type constraint).
_TYPES: dict[str, str | None] = {
    "dict": "object",
    "float": "number",
    "tuple": "array",
    "list": "array",
    "any": None,
    "bool": "boolean",
}


# --------------------------------------------------------------------------------------------------
# Data


def wheel_path(given: str | None) -> Path:
    """The pinned wheel, checked by sha256 (fetched from PyPI into the cache when not given)."""
    path = Path(given) if given else CACHE / BFCL_WHEEL
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "-q",
                "-d",
                str(CACHE),
                f"bfcl-eval=={BFCL_VERSION}",
            ],
            check=True,
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != BFCL_SHA256:
        raise SystemExit(f"{path}: sha256 {digest}, expected {BFCL_SHA256} (bfcl-eval {BFCL_VERSION})")
    return path


def _lines(archive: zipfile.ZipFile, name: str) -> list[dict[str, Any]]:
    text = archive.read(f"bfcl_eval/data/{name}").decode("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def openai_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def json_schema(node: Any) -> Any:
    """BFCL's parameter schema as JSON Schema (types renamed, recursively)."""
    if isinstance(node, list):
        return [json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, str):
            mapped = _TYPES.get(value, value)
            if mapped is not None:
                out[key] = mapped
        elif key == "properties" and isinstance(value, dict):
            out[key] = {k: json_schema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf"):
            out[key] = json_schema(value)
        else:
            out[key] = value
    return out


def tool(function: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": openai_name(function["name"]),
            "description": function.get("description", ""),
            "parameters": json_schema(function.get("parameters") or {"type": "dict", "properties": {}}),
        },
    }


def load_cases(wheel: Path, n_simple: int, n_irrelevance: int) -> list[dict[str, Any]]:
    """A seeded sample: ``n_simple`` call-expected cases and ``n_irrelevance`` no-call cases."""
    with zipfile.ZipFile(wheel) as archive:
        simple = _lines(archive, "BFCL_v4_simple_python.json")
        answers = {a["id"]: a["ground_truth"] for a in _lines(archive, "possible_answer/BFCL_v4_simple_python.json")}
        irrelevance = _lines(archive, "BFCL_v4_irrelevance.json")
    rng = random.Random(SEED)
    cases = []
    for case in rng.sample(simple, min(n_simple, len(simple))):
        cases.append({**case, "kind": "simple", "answer": answers[case["id"]]})
    for case in rng.sample(irrelevance, min(n_irrelevance, len(irrelevance))):
        cases.append({**case, "kind": "irrelevance", "answer": None})
    return cases


# --------------------------------------------------------------------------------------------------
# Scoring


def _norm(text: str) -> str:
    return re.sub(r"[ ,./\-_*^]", "", text).lower()


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, str):
        return isinstance(got, str) and _norm(got) == _norm(want)
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, int | float):
        return isinstance(got, int | float) and float(got) == float(want)
    if isinstance(want, list):
        return (
            isinstance(got, list) and len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
        )
    if isinstance(want, dict):
        return isinstance(got, dict) and args_match(got, want)
    return got == want


def _accepted(value: Any, options: Any) -> bool:
    if not isinstance(options, list):
        return _same(value, options)
    return any(_same(value, o) for o in options if o != "")


def args_match(got: dict[str, Any], want: dict[str, Any]) -> bool:
    """BFCL-style: all non-optional arguments present, none unknown, each value among the accepted."""
    for key in got:
        if key not in want:
            return False
    for key, options in want.items():
        optional = isinstance(options, list) and "" in options
        if key not in got:
            if not optional:
                return False
            continue
        if not _accepted(got[key], options):
            return False
    return True


def call_shaped(content: str) -> bool:
    """Whether the content is a call written out as JSON (bare or fenced) rather than an answer."""
    text = content.strip()
    fenced = re.match(r"```[\w-]*\s*\n(.*?)\n?\s*```\s*\Z", text, re.DOTALL)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError:
        return False
    return isinstance(value, dict) and "name" in value and ("arguments" in value or "parameters" in value)


def score(case: dict[str, Any], message: Any, finish: str | None) -> dict[str, Any]:
    calls = message.tool_calls or []
    content = message.content or ""
    out: dict[str, Any] = {
        "id": case["id"],
        "kind": case["kind"],
        "called": bool(calls),
        "leak": any(m in content for m in MARKUP),
        "call_text": call_shaped(content),
        "truncated": finish == "length",
        "finish": finish,
        "content": content[:300],
        "calls": [{"name": c.function.name, "arguments": c.function.arguments} for c in calls],
    }
    if case["kind"] == "irrelevance":
        out["decision"] = not calls
        return out
    out["decision"] = bool(calls)
    (expected,) = case["answer"]
    (want_name, want_args), *_ = expected.items()
    out["name"] = len(calls) == 1 and calls[0].function.name == openai_name(want_name)
    try:
        got = json.loads(calls[0].function.arguments) if out["name"] else None
    except json.JSONDecodeError:
        got = None
    out["arguments"] = isinstance(got, dict) and args_match(got, want_args)
    return out


# --------------------------------------------------------------------------------------------------
# Running


def start_server(workdir: Path, root: Path, threads: int) -> tuple[subprocess.Popen[bytes], int]:
    """``underlay run`` from the checkout at ``root`` with the model loaded."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = {
        "state_dir": str(workdir / "state"),
        "apis": ["inference", "models"],
        "providers": {
            "inference": [
                {
                    "provider_id": "llama-cpp",
                    "provider_type": "inline::llama-cpp",
                    "config": {
                        "models": [{"name": MODEL, "packaged": MODEL, "n_ctx": 4096, "n_threads": threads}],
                        "preload": True,
                    },
                }
            ]
        },
    }
    path = workdir / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    process = subprocess.Popen(
        [sys.executable, "-m", "underlay", "run", str(path), "--port", str(port)],
        stdout=(workdir / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(root),
    )
    wait_http(f"http://127.0.0.1:{port}/v1/health", process, timeout=300)
    return process, port


def _commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "underlay"], capture_output=True)
        return out.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def _rate(rows: list[dict[str, Any]], key: str) -> str:
    if not rows:
        return "   n/a"
    hits = sum(1 for r in rows if r.get(key))
    return f"{hits:3d}/{len(rows):<3d} {100 * hits / len(rows):5.1f}%"


def report(rows: list[dict[str, Any]], latencies: list[float]) -> dict[str, Any]:
    simple = [r for r in rows if r["kind"] == "simple"]
    irrelevance = [r for r in rows if r["kind"] == "irrelevance"]
    print(f"\n{'':24}{'simple':>16}{'irrelevance':>18}{'all':>18}")
    for key, label in (("decision", "call/no-call decision"), ("name", "function name"), ("arguments", "arguments")):
        cells = [_rate(simple, key), _rate(irrelevance, key) if key == "decision" else "   n/a", _rate(rows, key)]
        if key != "decision":
            cells[2] = "   n/a"
        print(f"{label:24}" + "".join(f"{c:>18}" for c in cells))
    leaks = sum(r["leak"] for r in rows)
    truncated = sum(r["truncated"] for r in rows)
    errors = sum(1 for r in rows if r.get("error"))
    call_text = sum(1 for r in rows if r.get("call_text"))
    print(
        f"markup leaks: {leaks} (target 0)   truncations: {truncated}   errors: {errors}   "
        f"calls written out as JSON text instead of a call: {call_text}"
    )
    print(
        f"latency per request: p50 {statistics.median(latencies):.2f}s  p90 {percentile(latencies, 90):.2f}s  "
        f"(n={len(latencies)})"
    )

    def share(part: list[dict[str, Any]], key: str) -> float:
        return round(sum(1 for r in part if r.get(key)) / len(part), 4) if part else float("nan")

    return {
        "decision_simple": share(simple, "decision"),
        "decision_irrelevance": share(irrelevance, "decision"),
        "decision_all": share(rows, "decision"),
        "name": share(simple, "name"),
        "arguments": share(simple, "arguments"),
        "markup_leaks": leaks,
        "truncations": truncated,
        "errors": errors,
        "call_text": call_text,
        "p50_s": round(statistics.median(latencies), 3),
        "p90_s": round(percentile(latencies, 90), 3),
    }


def ask(client: Any, case: dict[str, Any], max_tokens: int) -> tuple[dict[str, Any], float]:
    """One case through one server: its scored row and the request's latency."""
    import openai

    t0 = time.perf_counter()
    try:
        reply = client.chat.completions.create(
            model=MODEL,
            messages=case["question"][0],
            tools=[tool(f) for f in case["function"]],
            temperature=0,
            max_tokens=max_tokens,
        )
    except openai.APIError as exc:
        row = {"id": case["id"], "kind": case["kind"], "error": str(exc)[:300], "leak": False, "truncated": False}
        return row, time.perf_counter() - t0
    choice = reply.choices[0]
    return score(case, choice.message, choice.finish_reason), time.perf_counter() - t0


def _line(row: dict[str, Any], seconds: float) -> str:
    if row.get("error"):
        return f"error {row['error'][:80]}"
    flag = "ok  " if row["decision"] and row.get("arguments", True) else "MISS"
    names = [c["name"] for c in row["calls"]]
    return f"{flag} {seconds:5.1f}s {row['finish']:<10} calls={names}" + (" LEAK" if row["leak"] else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simple", type=int, default=60, help="call-expected cases (of 400)")
    parser.add_argument("--irrelevance", type=int, default=30, help="no-call cases (of 240)")
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1 is faster on busy cores)")
    parser.add_argument(
        "--baseline", help="another checkout (e.g. a git worktree of an older commit): run it too, case by case"
    )
    parser.add_argument("--wheel", help=f"path to {BFCL_WHEEL} (default: fetched with pip into {CACHE})")
    parser.add_argument("--json", help="write every case's outcome here")
    args = parser.parse_args()

    import openai

    cases = load_cases(wheel_path(args.wheel), args.simple, args.irrelevance)
    print(
        f"bfcl-eval {BFCL_VERSION} (sha256 {BFCL_SHA256[:12]}), seed {SEED}: {args.simple} simple + "
        f"{args.irrelevance} irrelevance cases; model {MODEL}, greedy, tool_choice auto, max_tokens {args.max_tokens}, "
        f"{args.threads} thread(s); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    roots = {"this": ROOT}
    if args.baseline:
        roots = {"baseline": Path(args.baseline).resolve(), "this": ROOT}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in roots}
    latencies: dict[str, list[float]] = {name: [] for name in roots}
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="underlay-bench-tools-") as tmp:
        try:
            clients = {}
            for name, root in roots.items():
                started = time.perf_counter()
                process, port = start_server(Path(tmp) / name, root, args.threads)
                processes.append(process)
                clients[name] = openai.OpenAI(
                    base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=900
                )
                print(f"{name}: {root} @ {_commit(root)}, up in {time.perf_counter() - started:.1f}s")
            for n, case in enumerate(cases, 1):
                for name, client in clients.items():  # alternate, so both see the same load
                    row, seconds = ask(client, case, args.max_tokens)
                    rows[name].append(row)
                    if not row.get("error"):
                        latencies[name].append(seconds)
                    print(f"[{n}/{len(cases)}] {case['id']:<18} {name:<8} {_line(row, seconds)}", flush=True)
        finally:
            for process in processes:
                process.terminate()
                process.wait(30)
    out = {}
    for name in roots:
        print(f"\n== {name}: {roots[name]}")
        out[name] = report(rows[name], latencies[name] or [float("nan")])
        print(f"summary {name}: " + json.dumps(out[name]))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": out, "cases": rows}, indent=1))


if __name__ == "__main__":
    main()
