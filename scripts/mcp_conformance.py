"""Run the public MCP conformance suite against Underlay, as a server or as a client.

    python scripts/mcp_conformance.py [--mode server|client] [--url URL] [--json PATH] [--min-pass N]

Server mode (the default) tests a real Underlay ``/mcp``. Without ``--url`` it starts its own servers
on free loopback ports: the content fixture MCP server (``tests/fixtures/mcp/content_server.py``) and
an ``underlay run`` with the Files API and that fixture registered as a tool group, so the suite's tool
scenarios go through Underlay's proxy.

Client mode tests Underlay's MCP client provider: the suite starts its own server per scenario and
launches ``scripts/mcp_conformance_client.py`` (this interpreter) against each, all scenarios in
parallel; a generous per-scenario timeout keeps a loaded machine from failing a slow client start.

The suite (``@modelcontextprotocol/conformance``, pinned below) needs Node 22; both come from the
npm registry into a cache folder (``.cache/mcp-conformance`` under the repository, gitignored, or
``$MCP_CONFORMANCE_CACHE``), installed once and reused. Without npm, or when the registry cannot be
reached, it stops with a one-line reason and exit status 2: a missing suite is a failure, never a skip.

Prints one line per scenario (✓/✗ and, for a failure, the suite's first error message) and the
total; exits 1 when fewer than ``--min-pass`` scenarios pass. ``--json`` writes
``{"passed": [...], "failed": {name: reason}, "total": n}`` in both modes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
SUITE = "@modelcontextprotocol/conformance"
SUITE_VERSION = "0.1.16"
NODE_VERSION = "22.23.3"
CONTENT_SERVER = ROOT / "tests" / "fixtures" / "mcp" / "content_server.py"
CLIENT = ROOT / "scripts" / "mcp_conformance_client.py"
CLIENT_TIMEOUT_MS = 120_000  # per scenario; the suite's 30 s default is too tight for 26 parallel Pythons on 2 cores
_SUMMARY_LINE = re.compile(r"^([✓✗]) ([\w./-]+): (\d+) passed, (\d+) failed")


class SuiteUnavailable(RuntimeError):
    """The suite could not be installed (no npm, registry unreachable, wrong Node)."""


def cache_dir() -> Path:
    return Path(os.environ.get("MCP_CONFORMANCE_CACHE") or ROOT / ".cache" / "mcp-conformance")


def ensure_suite(cache: Path) -> tuple[Path, Path]:
    """Install Node 22 and the suite into ``cache`` unless the pinned versions are there; (node, entry)."""
    node = cache / "node_modules" / "node" / "bin" / "node"
    entry = cache / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    manifest = {
        "name": "underlay-mcp-conformance",
        "private": True,
        "dependencies": {"node": NODE_VERSION, SUITE: SUITE_VERSION},
    }
    package_json = cache / "package.json"
    current = json.loads(package_json.read_text()) if package_json.exists() else None
    if current != manifest or not node.exists() or not entry.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SuiteUnavailable("npm is not installed; install Node.js (any version with npm) to fetch the suite")
        cache.mkdir(parents=True, exist_ok=True)
        package_json.write_text(json.dumps(manifest, indent=2))
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=cache,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            raise SuiteUnavailable("npm install did not finish in 600s (is the npm registry reachable?)") from None
        if done.returncode != 0 or not node.exists() or not entry.exists():
            package_json.unlink(missing_ok=True)  # so the next run installs again
            raise SuiteUnavailable(
                f"npm install of {SUITE}@{SUITE_VERSION} and node@{NODE_VERSION} failed: {_npm_reason(done)}"
            )
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    if not version.startswith("v22."):
        raise SuiteUnavailable(f"{node} is {version or 'not runnable'}, the suite needs Node 22")
    return node, entry


def _npm_reason(done: subprocess.CompletedProcess[str]) -> str:
    """npm's own diagnosis (``code`` and the first message), not its stack trace or log location."""
    lines = [line.removeprefix("npm error").strip() for line in (done.stderr or done.stdout).splitlines()]
    useful = [line for line in lines if line and not line.startswith(("at ", "A complete log", "syscall", "errno"))]
    return "; ".join(useful[:2]) or f"exit status {done.returncode}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(process: subprocess.Popen[bytes], url: str, what: str, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout}s")


class Servers:
    """The content fixture and an Underlay server that proxies it, in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.url = ""

    def _spawn(self, args: list[str], name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.workdir / f"{name}.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        with log.open("wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir, env=env)
        self.processes.append(process)
        return process, log

    def start(self) -> str:
        fixture_port, port = _free_port(), _free_port()
        fixture, fixture_log = self._spawn(
            [sys.executable, str(CONTENT_SERVER), "--port", str(fixture_port)], "content-fixture"
        )
        _wait(fixture, f"http://127.0.0.1:{fixture_port}/", "the content fixture", fixture_log)
        config = {
            "state_dir": str(self.workdir / "state"),
            "apis": ["files", "tool_runtime"],
            "providers": {
                "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
                "tool_runtime": [{"provider_id": "mcp", "provider_type": "remote::model-context-protocol"}],
            },
            "tool_groups": [
                {
                    "toolgroup_id": "content",
                    "provider_id": "mcp",
                    "mcp_endpoint": f"http://127.0.0.1:{fixture_port}/mcp",
                }
            ],
        }
        config_path = self.workdir / "run.yaml"
        config_path.write_text(yaml.safe_dump(config))
        underlay, log = self._spawn(
            [sys.executable, "-m", "underlay", "run", str(config_path), "--port", str(port)], "underlay"
        )
        _wait(underlay, f"http://127.0.0.1:{port}/v1/health", "underlay", log)
        self.url = f"http://127.0.0.1:{port}/mcp"
        return self.url

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


def run_suite(node: Path, entry: Path, url: str, out: Path) -> dict[str, Any]:
    """Run every server scenario (``--suite all``); {"passed": [...], "failed": {name: reason}, "total": n}."""
    command = [str(node), str(entry), "server", "--suite", "all", "--url", url, "-o", str(out)]
    return _run(node, command, out, prefix="server-")


def run_client_suite(node: Path, entry: Path, out: Path) -> dict[str, Any]:
    """Run every client scenario against ``scripts/mcp_conformance_client.py``; same shape as :func:`run_suite`."""
    client = f"{sys.executable} {CLIENT}"
    command = [str(node), str(entry), "client", "--command", client, "--suite", "all"]
    command += ["--timeout", str(CLIENT_TIMEOUT_MS), "-o", str(out)]
    return _run(node, command, out, prefix="")


def _run(node: Path, command: list[str], out: Path, prefix: str) -> dict[str, Any]:
    env = {**os.environ, "PATH": f"{node.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    passed: list[str] = []
    failed: dict[str, str] = {}
    summary = re.split(r"=== (?:SUITE )?SUMMARY ===", done.stdout)[-1]
    for line in summary.splitlines():
        match = _SUMMARY_LINE.match(line.strip())
        if match is None:
            continue
        name = match.group(2)
        if match.group(1) == "✓":
            passed.append(name)
        else:
            failed[name] = _first_error(out, prefix + name)
    if not passed and not failed:
        raise RuntimeError(f"the suite printed no summary (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return {"passed": passed, "failed": failed, "total": len(passed) + len(failed)}


def _first_error(out: Path, scenario: str) -> str:
    """The first failed check's message, else the first warning's (the suite fails a scenario on either)."""
    for status in ("FAILURE", "WARNING"):
        for checks in sorted(out.glob(f"{scenario}-*/checks.json")):
            for check in json.loads(checks.read_text()):
                if check.get("status") == status:
                    return str(check.get("errorMessage") or check.get("description") or check.get("name"))[:300]
    return "failed"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("server", "client"), default="server", help="which side to test")
    parser.add_argument(
        "--url", help="server mode: an MCP endpoint to test (default: start Underlay and the content fixture)"
    )
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--min-pass", type=int, default=0, help="exit 1 when fewer scenarios pass")
    args = parser.parse_args()
    try:
        node, entry = ensure_suite(cache_dir())
    except SuiteUnavailable as exc:
        print(f"mcp_conformance: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mcp-conformance-") as tmp:
        work = Path(tmp)
        servers = Servers(work)
        try:
            if args.mode == "client":
                results = run_client_suite(node, entry, work / "results")
            else:
                results = run_suite(node, entry, args.url or servers.start(), work / "results")
        finally:
            servers.stop()
    for name in results["passed"]:
        print(f"✓ {name}")
    for name, reason in results["failed"].items():
        print(f"✗ {name}: {reason}")
    print(
        f"passed {len(results['passed'])} of {results['total']} scenarios ({SUITE}@{SUITE_VERSION}, {args.mode} mode)"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False))
    return 1 if len(results["passed"]) < args.min_pass else 0


if __name__ == "__main__":
    sys.exit(main())
