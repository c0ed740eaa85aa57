"""Start-up: from ``underlay run`` to the first 200 on /v1/health, and idle RSS without model weights.

Runs the shipped ``local`` distribution (models load lazily, so nothing heavy is read at start) in a
fresh state directory, several times, and prints the median and worst start-up time and the RSS
after start. Targets: at most 1.5 s to the first 200; at most 200 MB idle RSS.

    python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, rss_mb  # noqa: E402


def one_run(state_dir: Path) -> tuple[float, float]:
    port = free_port()
    env = {**os.environ, "UNDERLAY_STATE_DIR": str(state_dir), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "underlay", "run", "local", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"underlay run exited with {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.005)
        elapsed = time.perf_counter() - start
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=30)  # discovery done, still no weights
        time.sleep(0.5)
        return elapsed, rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times, rss = [], []
    for index in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            elapsed, memory = one_run(Path(tmp) / "state")
        times.append(elapsed)
        rss.append(memory)
        print(
            f"run {index + 1}: first 200 on /v1/health after {elapsed * 1000:.0f} ms; idle RSS {memory:.0f} MB",
            flush=True,
        )
    median, worst, mem = statistics.median(times), max(times), max(rss)
    print(
        f"start-up median {median * 1000:.0f} ms, worst {worst * 1000:.0f} ms "
        f"(target <= 1500 ms: {'PASS' if median <= 1.5 else 'MISS'})"
    )
    print(f"idle RSS {mem:.0f} MB (target <= 200 MB: {'PASS' if mem <= 200 else 'MISS'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
