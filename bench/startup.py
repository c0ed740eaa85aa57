"""Start-up: from ``underlay run`` to the first 200 on /v1/health, its CPU time, and idle RSS without model weights.

Runs the shipped ``local`` distribution (models load lazily, so nothing heavy is read at start) in a
fresh state directory, several times, and prints the median and worst start-up time, the CPU seconds the
server spent to get there (user + system, read from ``/proc/<pid>/stat`` at the first 200: unlike the
wall clock it barely moves with the machine's load), and the RSS after start. Targets: at most 1.0 s to
the first 200; at most 100 MB idle RSS.

``--first-requests`` times the first and second conversation, embedding and chat request of a fresh
server (what the loads deferred to first use cost; the embedding and chat ones load model weights).
``--baseline DIR`` runs another checkout (a directory holding its ``underlay`` package, e.g. from
``git archive <commit> underlay | tar -x -C DIR``) interleaved with this one, run for run, so both see
the same load; ``--profile`` runs one start under ``python -X importtime`` and prints where the time
goes: the imports start-up asked for by cumulative time, the packages by their own time, and which
heavy libraries were imported before the first 200.

    python bench/startup.py [--runs 5] [--baseline DIR] [--profile [--top 25]] [--first-requests]
    python bench/startup.py --runs 3 --record | --check [--tolerance 1.5]   (bench/_results.py)

The regression guard's figures are this checkout's median wall clock and CPU to the first 200 and its
idle RSS (the default run only; with ``--baseline`` the baseline's are printed, not recorded).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, free_port, rss_mb  # noqa: E402
from _results import LOWER, Guard  # noqa: E402

TARGET_S = 1.0
TARGET_MB = 100.0
# What must wait for the request that needs it: the lists the start-up imports test pins, not a copy.
sys.path.insert(0, str(ROOT))
from tests.integration.test_startup_imports import DEFERRED, HEAVY  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Start:
    wall_s: float  # process start to the first 200 on /v1/health
    cpu_s: float  # the server's user + system CPU up to that 200
    cpu_total_s: float  # the server's CPU from start to exit (the /v1/models call and the stop included)
    rss_mb: float  # after /v1/models and half a second of idling


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process; fields 14 and 15 of /proc/<pid>/stat, after the ``(comm)``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _command(port: int, importtime: bool = False) -> list[str]:
    flags = ["-X", "importtime"] if importtime else []
    return [sys.executable, *flags, "-m", "underlay", "run", "local", "--port", str(port)]


BYTECODE_CACHE = Path(tempfile.gettempdir()) / "underlay-bench-pycache"
COMPILE_EVERY_TIME = False  # --no-bytecode-cache


def _env(state_dir: Path) -> dict[str, str]:
    """The child's environment: a fresh state dir, offline, and compiled modules cached like an install's.

    Why the bytecode cache: pip compiles a wheel's modules when it installs them, but a development
    shell often sets ``PYTHONDONTWRITEBYTECODE`` (this project's does), and then every start compiles
    Underlay's own modules again, which measured 0.4 CPU seconds of a start. The cache lives outside the
    source tree (``PYTHONPYCACHEPREFIX``), keyed by each file's path, so two checkouts never share entries.
    """
    env = {**os.environ, "UNDERLAY_STATE_DIR": str(state_dir), "HF_HUB_OFFLINE": "1"}
    if not COMPILE_EVERY_TIME:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(BYTECODE_CACHE)
    return env


def _wait_health(process: subprocess.Popen[bytes], port: int) -> float:
    start = time.perf_counter()
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"underlay run exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=0.5).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            time.sleep(0.005)


def one_run(state_dir: Path, checkout: Path | None = None) -> Start:
    """One start of ``checkout`` (this repository when None; ``python -m`` imports from the cwd first)."""
    port = free_port()
    before = _children_cpu()
    process = subprocess.Popen(
        _command(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(state_dir),
        cwd=checkout or ROOT,
    )
    try:
        elapsed = _wait_health(process, port)
        cpu = _cpu_seconds(process.pid)
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30)  # discovery done, still no weights
        time.sleep(0.5)
        memory = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(30)
    return Start(elapsed, cpu, _children_cpu() - before, memory)


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def _summary(label: str, starts: list[Start]) -> None:
    times = [s.wall_s for s in starts]
    cpu = [s.cpu_s for s in starts]
    median, worst, mem = statistics.median(times), max(times), max(s.rss_mb for s in starts)
    prefix = f"{label}: " if label else ""
    print(
        f"{prefix}start-up median {median * 1000:.0f} ms, worst {worst * 1000:.0f} ms "
        f"(target <= {TARGET_S * 1000:.0f} ms: {'PASS' if median <= TARGET_S else 'MISS'})"
    )
    print(
        f"{prefix}CPU to the first 200: median {statistics.median(cpu):.2f} s, worst {max(cpu):.2f} s "
        f"(start to exit: median {statistics.median(s.cpu_total_s for s in starts):.2f} s)"
    )
    print(f"{prefix}idle RSS {mem:.0f} MB (target <= {TARGET_MB:.0f} MB: {'PASS' if mem <= TARGET_MB else 'MISS'})")


def benchmark(runs: int, baseline: Path | None) -> list[Start]:
    """Prints the figures; returns this checkout's starts."""
    variants: list[tuple[str, Path | None]] = [("this checkout", None)]
    if baseline is not None:
        variants.insert(0, (f"baseline {baseline}", baseline))
    results: dict[str, list[Start]] = {label: [] for label, _ in variants}
    print(f"load average (1 min) before: {_loadavg()}", flush=True)
    if not COMPILE_EVERY_TIME:
        for _, checkout in variants:  # not timed: fills the bytecode cache, as installing would have
            with tempfile.TemporaryDirectory() as tmp:
                one_run(Path(tmp) / "state", checkout)
    for index in range(runs):
        # Alternate which variant goes first, so neither always starts on a machine the other just warmed.
        order = variants if index % 2 == 0 else variants[::-1]
        for label, checkout in order:
            with tempfile.TemporaryDirectory() as tmp:
                start = one_run(Path(tmp) / "state", checkout)
            results[label].append(start)
            tag = f" [{label}]" if baseline is not None else ""
            print(
                f"run {index + 1}{tag}: first 200 on /v1/health after {start.wall_s * 1000:.0f} ms; "
                f"CPU {start.cpu_s:.2f} s; idle RSS {start.rss_mb:.0f} MB",
                flush=True,
            )
    for label, _ in variants:
        _summary(label if baseline is not None else "", results[label])
    if baseline is not None:
        base, new = (statistics.median(s.cpu_s for s in results[label]) for label, _ in variants)
        print(f"CPU per start: {new:.2f} s vs {base:.2f} s baseline ({base / new:.1f}x less)")
    print(f"load average (1 min) after: {_loadavg()}")
    return results["this checkout"]


# --------------------------------------------------------------------------------------------------
# --first-requests: what the lazy loads cost the first requests that need them

FIRST_REQUESTS: list[tuple[str, str, dict[str, object]]] = [
    # A cheap route: its first call pays for building its request and response models.
    ("conversation", "/v1/conversations", {"metadata": {"bench": "startup"}}),
    ("embedding", "/v1/embeddings", {"model": "sentence-transformers/all-minilm-l6-v2", "input": "hello world"}),
    (
        "chat",
        "/v1/chat/completions",
        {
            "model": "llama-cpp/qwen2.5-coder-0.5b-instruct",
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 4,
            "temperature": 0,
        },
    ),
]


def first_requests(checkout: Path | None) -> dict[str, tuple[float, float]]:
    """(first, second) seconds of each request in :data:`FIRST_REQUESTS`, on one fresh server."""
    port = free_port()
    out: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        process = subprocess.Popen(
            _command(port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env(Path(tmp) / "state"),
            cwd=checkout or ROOT,
        )
        try:
            _wait_health(process, port)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                for name, path, body in FIRST_REQUESTS:
                    times = []
                    for _ in range(2):
                        start = time.perf_counter()
                        response = client.post(path, json=body)
                        times.append(time.perf_counter() - start)
                        response.raise_for_status()
                    out[name] = (times[0], times[1])
        finally:
            process.terminate()
            process.wait(30)
    return out


def report_first_requests(variants: list[tuple[str, Path | None]]) -> None:
    print(f"load average (1 min) before: {_loadavg()}", flush=True)
    for label, checkout in variants:
        for name, (first, second) in first_requests(checkout).items():
            print(f"{label}: first {name} request {first * 1000:.0f} ms, second {second * 1000:.0f} ms", flush=True)
    print(f"load average (1 min) after: {_loadavg()}")


# --------------------------------------------------------------------------------------------------
# --profile: python -X importtime, parsed

_LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|( *)(\S+)")


@dataclass
class Import:
    name: str
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(text: str) -> list[Import]:
    """The ``-X importtime`` lines (header skipped); depth 0 is an import nothing else was importing."""
    out = []
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            out.append(Import(match[4], int(match[1]), int(match[2]), (len(match[3]) - 1) // 2))
    return out


def profile(checkout: Path | None, top: int) -> None:
    if not COMPILE_EVERY_TIME:
        with tempfile.TemporaryDirectory() as tmp:
            one_run(Path(tmp) / "state", checkout)  # fills the bytecode cache: compiling is not importing
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "importtime.txt"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                _command(port, importtime=True),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=_env(Path(tmp) / "state"),
                cwd=checkout or ROOT,
            )
            try:
                elapsed = _wait_health(process, port)
                cpu = _cpu_seconds(process.pid)
            finally:
                process.terminate()
                process.wait(30)
        imports = parse_importtime(log.read_text(errors="replace"))
    total = sum(i.self_us for i in imports) / 1e6
    print(
        f"one start under -X importtime (slower than a plain start): first 200 after {elapsed:.2f} s, "
        f"{cpu:.2f} s CPU, {total:.2f} s of it importing {len(imports)} modules (load {_loadavg()})"
    )
    print(f"\ntop {top} imports start-up asked for (not nested in another import), cumulative ms:")
    roots = sorted((i for i in imports if i.depth == 0), key=lambda i: -i.cumulative_us)
    for item in roots[:top]:
        print(f"  {item.cumulative_us / 1000:8.1f}  {item.name}")
    packages: dict[str, int] = {}
    for item in imports:
        package = item.name.split(".")[0]
        packages[package] = packages.get(package, 0) + item.self_us
    print(f"\ntop {top} packages by their own import time (ms; all their modules, wherever imported from):")
    for package, us in sorted(packages.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {us / 1000:8.1f}  {package}")
    loaded = sorted({i.name.split(".")[0] for i in imports} & set(HEAVY))
    print(f"\nheavy libraries imported before the first 200: {', '.join(loaded) if loaded else 'none'}")
    early = sorted({d for d in DEFERRED for i in imports if i.name == d or i.name.startswith(d + ".")})
    print(f"deferred modules imported before the first 200: {', '.join(early) if early else 'none'}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="another checkout's directory, run interleaved with this one")
    parser.add_argument("--profile", action="store_true", help="one start under -X importtime: where the time goes")
    parser.add_argument("--top", type=int, default=25, help="rows per --profile table")
    parser.add_argument(
        "--first-requests",
        action="store_true",
        help="time the first and second conversation, embedding and chat request after a start (loads the models)",
    )
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="leave PYTHONDONTWRITEBYTECODE as it is (modules compiled on every start, as in a bare dev shell)",
    )
    Guard.add_arguments(parser)
    args = parser.parse_args()
    if (args.record or args.check) and (args.first_requests or args.profile):
        parser.error("--record and --check apply to the default run, not to --profile or --first-requests")
    guard = Guard("startup", args)
    global COMPILE_EVERY_TIME
    COMPILE_EVERY_TIME = args.no_bytecode_cache
    if args.baseline is not None and not (args.baseline / "underlay" / "__init__.py").is_file():
        parser.error(f"{args.baseline} holds no underlay package")
    if args.first_requests:
        variants: list[tuple[str, Path | None]] = [("this checkout", None)]
        if args.baseline is not None:
            variants.insert(0, (f"baseline {args.baseline}", args.baseline.resolve()))
        report_first_requests(variants)
        return 0
    if args.profile:
        if args.baseline is not None:
            print(f"== baseline {args.baseline}")
            profile(args.baseline.resolve(), args.top)
            print("\n== this checkout")
        profile(None, args.top)
        return 0
    starts = benchmark(args.runs, args.baseline.resolve() if args.baseline is not None else None)
    guard.figure("wall to first 200 (median)", statistics.median(s.wall_s for s in starts), "s", LOWER, wall=True)
    guard.figure("CPU to first 200 (median)", statistics.median(s.cpu_s for s in starts), "s", LOWER)
    guard.figure("idle RSS (max)", max(s.rss_mb for s in starts), "MB", LOWER)
    return guard.finish()


if __name__ == "__main__":
    sys.exit(main())
