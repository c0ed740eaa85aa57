"""Idle CPU: what a started ``underlay run`` costs while nobody calls it.

Starts the ``local`` distribution (or ``--config``: a distribution name or a run-config path) in a fresh
state directory, waits for the first 200 on /v1/health, asks /v1/models once (what a client does first),
lets it settle, then measures the server over ``--seconds``: the CPU it used as a share of one core
(every thread, user + system, from ``/proc/<pid>/task/*/schedstat`` in nanoseconds where
``/proc/<pid>/stat`` counts 10 ms ticks; its worker processes too when ``server.workers`` is above 1),
and how often its threads were put on a CPU (wake-ups per second: each is a timer or a poll that
fired). CPU seconds, not wall time, are the figure: the window is a fixed sleep, and what the server
does in it is the same however busy the machine is (only a little dearer per wake-up).

Issue 16: an idle server used 1-3% of a core. Nearly all of it was the durable job runner: every worker
of every lane claimed from the SQL store every ``jobs.poll_seconds`` (0.5 s), a write transaction each on
SQLite. ``--baseline DIR`` runs another checkout (a directory holding its ``underlay`` package, e.g. from
``git archive <commit> underlay | tar -x -C DIR``) interleaved with this one, run for run, so both see
the same load.

    python bench/idle_cpu.py [--seconds 20] [--runs 1] [--config local] [--baseline DIR]
    python bench/idle_cpu.py --record | --check [--tolerance 1.5]   (bench/_results.py)

The regression guard's figures are this checkout's idle CPU (median over runs) and wake-ups per second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, free_port  # noqa: E402
from _results import LOWER, Guard  # noqa: E402

BYTECODE_CACHE = Path(tempfile.gettempdir()) / "underlay-bench-pycache"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Idle:
    seconds: float  # the measured window (wall clock)
    cpu_s: float  # the server's CPU in the window, all threads
    wakeups: int  # times its threads were scheduled onto a CPU in the window
    threads: int

    @property
    def cpu_percent(self) -> float:
        return 100 * self.cpu_s / self.seconds

    @property
    def wakeups_per_s(self) -> float:
        return self.wakeups / self.seconds


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a multi-worker server's worker processes are its children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _sample(pid: int) -> tuple[float, int, int]:
    """CPU seconds and scheduling count summed over every thread of the server's processes, and how
    many threads. Processes that start or end inside the window would skew it; an idle server has none."""
    cpu_ns = 0
    slices = 0
    threads = 0
    for process in _tree(pid):
        try:
            tasks = list(Path(f"/proc/{process}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                on_cpu, _, scheduled = (task / "schedstat").read_text().split()[:3]
            except (OSError, ValueError):
                continue  # a thread that just ended
            cpu_ns += int(on_cpu)
            slices += int(scheduled)
            threads += 1
    if threads == 0:  # no schedstat (a kernel without it): the server's own ticks, no wake-up count
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, 0, 0
    return cpu_ns / 1e9, slices, threads


def _env(state_dir: Path) -> dict[str, str]:
    """Fresh state, offline, compiled modules cached outside the tree (as ``startup.py`` does)."""
    env = {**os.environ, "UNDERLAY_STATE_DIR": str(state_dir), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(BYTECODE_CACHE)
    return env


def _wait_health(process: subprocess.Popen[bytes], port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"underlay run exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"no 200 on /v1/health within {timeout:.0f} s")


def one_run(config: str, seconds: float, settle: float, checkout: Path | None = None) -> Idle:
    """Start a server from ``checkout`` (this repository when None), let it idle, measure ``seconds`` of it."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "underlay", "run", config, "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_env(Path(tmp) / "state"),
                cwd=checkout or ROOT,
            )
        try:
            try:
                _wait_health(process, port)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}; its log ends: {log.read_text()[-1500:]}") from None
            httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30)
            time.sleep(settle)
            cpu0, slices0, _ = _sample(process.pid)
            start = time.monotonic()
            time.sleep(seconds)
            cpu1, slices1, threads = _sample(process.pid)
            elapsed = time.monotonic() - start
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    return Idle(elapsed, cpu1 - cpu0, slices1 - slices0, threads)


def _line(label: str, idle: Idle) -> str:
    return (
        f"{label}: {idle.cpu_s * 1000:.0f} ms CPU in {idle.seconds:.1f} s = {idle.cpu_percent:.3f}% of a core, "
        f"{idle.wakeups_per_s:.1f} wake-ups/s, {idle.threads} threads (load {os.getloadavg()[0]:.2f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the measured idle window")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds after start-up before measuring")
    parser.add_argument("--runs", type=int, default=1, help="servers started (per checkout)")
    parser.add_argument("--config", default="local", help="distribution name or run-config path (default local)")
    parser.add_argument("--baseline", type=Path, help="another checkout's directory, run interleaved with this one")
    Guard.add_arguments(parser)
    args = parser.parse_args()
    if args.baseline is not None and not (args.baseline / "underlay" / "__init__.py").is_file():
        parser.error(f"{args.baseline} holds no underlay package")
    guard = Guard("idle_cpu", args)
    variants: list[tuple[str, Path | None]] = [("this checkout", None)]
    if args.baseline is not None:
        variants.insert(0, (f"baseline {args.baseline}", args.baseline.resolve()))
    results: dict[str, list[Idle]] = {label: [] for label, _ in variants}
    print(
        f"idle server ({args.config}): {args.seconds:g} s measured after {args.settle:g} s settling; "
        f"load average (1 min) before: {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    for index in range(args.runs):
        order = variants if index % 2 == 0 else variants[::-1]
        for label, checkout in order:
            idle = one_run(args.config, args.seconds, args.settle, checkout)
            results[label].append(idle)
            print(_line(f"  run {index + 1} [{label}]", idle), flush=True)
    summary: dict[str, tuple[float, float]] = {}
    for label, runs in results.items():
        cpu = statistics.median(r.cpu_percent for r in runs)
        wakeups = statistics.median(r.wakeups_per_s for r in runs)
        summary[label] = (cpu, wakeups)
        print(f"{label}: idle CPU {cpu:.3f}% of a core (median), {wakeups:.1f} wake-ups/s")
    if args.baseline is not None:
        (base_cpu, base_wake), (cpu, wake) = summary[variants[0][0]], summary["this checkout"]
        ratio = f"{base_cpu / cpu:.1f}x less" if cpu > 0 else "none left"
        print(f"idle CPU: {cpu:.3f}% vs {base_cpu:.3f}% baseline ({ratio}); wake-ups/s {wake:.1f} vs {base_wake:.1f}")
    cpu, wakeups = summary["this checkout"]
    guard.figure("idle CPU (median)", cpu, "% of a core", LOWER)
    guard.figure("idle wake-ups (median)", wakeups, "/s", LOWER)
    return guard.finish()


if __name__ == "__main__":
    sys.exit(main())
