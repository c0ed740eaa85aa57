"""Run promptfoo (the eval tool OpenAI now points users to) with Underlay as its OpenAI-compatible provider.

    python scripts/promptfoo_eval.py CONFIG [--output results.json]

promptfoo (pinned below) needs Node 22; both come from the npm registry into a cache folder
(``.cache/promptfoo`` under the repository, gitignored, or ``$PROMPTFOO_CACHE``), installed once and
reused. Without npm, or when the registry cannot be reached, it stops with a one-line reason and exit
status 2: a missing tool is a failure, never a skip.

It runs ``promptfoo eval -c CONFIG`` offline: no telemetry, no update check, no sharing, no result cache,
and promptfoo's own state in a scratch folder. Prints one line per test and provider (✓/✗, the
provider's label and the test's description) and the totals; exits 1 when any test failed or errored.
``--output`` keeps promptfoo's JSON results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPTFOO_VERSION = "0.123.1"
NODE_VERSION = "22.23.3"  # promptfoo 0.123 needs Node >= 22.22


class ToolUnavailable(RuntimeError):
    """promptfoo could not be installed (no npm, registry unreachable)."""


def cache_dir() -> Path:
    return Path(os.environ.get("PROMPTFOO_CACHE") or ROOT / ".cache" / "promptfoo")


def ensure_promptfoo(cache: Path) -> tuple[Path, Path]:
    """Install Node 22 and promptfoo into ``cache`` unless the pinned versions are there; (node, entry)."""
    node = cache / "node_modules" / "node" / "bin" / "node"
    entry = cache / "node_modules" / "promptfoo" / "dist" / "src" / "entrypoint.js"
    manifest = {
        "name": "underlay-promptfoo",
        "private": True,
        "dependencies": {"node": NODE_VERSION, "promptfoo": PROMPTFOO_VERSION},
    }
    package_json = cache / "package.json"
    current = json.loads(package_json.read_text()) if package_json.exists() else None
    if current != manifest or not node.exists() or not entry.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise ToolUnavailable("npm is not installed; install Node.js (any version with npm) to fetch promptfoo")
        cache.mkdir(parents=True, exist_ok=True)
        package_json.write_text(json.dumps(manifest, indent=2))
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=cache,
                capture_output=True,
                text=True,
                timeout=900,
            )
        except subprocess.TimeoutExpired:
            raise ToolUnavailable(
                "npm install of promptfoo took over 15 minutes; is the npm registry reachable?"
            ) from None
        if done.returncode != 0 or not entry.exists():
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ToolUnavailable(f"npm install of promptfoo@{PROMPTFOO_VERSION} failed: {last[0][:300]}")
    return node, entry


def run_promptfoo(config: Path, output: Path, *, timeout: float = 1200) -> dict[str, Any]:
    """``promptfoo eval`` on ``config``; promptfoo's JSON results (raises when it wrote none)."""
    node, entry = ensure_promptfoo(cache_dir())
    with tempfile.TemporaryDirectory(prefix="promptfoo-home-") as home:
        env = {
            **os.environ,
            "PROMPTFOO_CONFIG_DIR": home,
            "PROMPTFOO_DISABLE_TELEMETRY": "1",
            "PROMPTFOO_DISABLE_UPDATE": "1",
            "PROMPTFOO_DISABLE_SHARING": "1",
            "PROMPTFOO_CACHE_ENABLED": "false",
            "PROMPTFOO_DISABLE_REMOTE_GENERATION": "1",
            "NODE_NO_WARNINGS": "1",
            "OPENAI_API_KEY": os.environ.get("OPENAI_API_KEY", "unused"),
        }
        done = subprocess.run(
            [str(node), str(entry), "eval", "-c", str(config), "-o", str(output), "--no-cache", "--no-progress-bar",
             "--no-table", "--no-share", "-j", "1"],
            cwd=config.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )  # fmt: skip
    if not output.exists():
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise RuntimeError(f"promptfoo exited {done.returncode} without results:\n{tail}")
    return dict(json.loads(output.read_text()))


def outcomes(results: dict[str, Any]) -> list[tuple[bool, str, str, str]]:
    """(passed, provider label, test description, reason) for each test × provider of a results file."""
    rows: list[tuple[bool, str, str, str]] = []
    for result in results.get("results", {}).get("results", []):
        provider = result.get("provider") or {}
        label = provider.get("label") or provider.get("id") or "?"
        description = (result.get("testCase") or {}).get("description") or json.dumps(result.get("vars") or {})
        reason = result.get("error") or (result.get("gradingResult") or {}).get("reason") or ""
        rows.append((bool(result.get("success")), str(label), str(description), str(reason)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        output = args.output or Path(scratch) / "results.json"
        try:
            results = run_promptfoo(args.config.resolve(), output.resolve())
        except ToolUnavailable as exc:
            print(f"promptfoo unavailable: {exc}", file=sys.stderr)
            return 2
        rows = outcomes(results)
    for ok, label, description, reason in rows:
        print(f"{'✓' if ok else '✗'} {label}: {description}" + ("" if ok else f" ({reason[:200]})"))
    passed = sum(1 for ok, *_ in rows if ok)
    print(f"{passed} of {len(rows)} passed")
    return 0 if rows and passed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
