"""The regression guard: a bench's headline figures, recorded in ``bench/results/`` and checked against later.

Why it exists: the benches print figures for a person to read, and comparing today's run with last week's
meant finding last week's figures in a README table, with no record of the load they were taken under.
A bench that declares its headline figures here gains three flags:

- ``--record`` appends the run to ``bench/results/<bench>.json``: date (UTC), git commit (``+dirty`` when
  ``underlay/`` or ``bench/`` had uncommitted changes), the 1-minute load average before and after, the
  cores, the CPU model, an optional ``--note``, the bench's own arguments and each figure with its unit and
  direction. Only the last :data:`KEEP` runs are kept, so the files stay small and readable.
- ``--check [--tolerance R]`` runs the bench, compares each figure with the last recorded run as a ratio
  and exits 1 only when a figure got worse by more than ``R`` (1.5x by default). It prints a table and
  warns when the load, the cores or the bench's arguments differ from the recorded run's. A missing or
  unreadable record stops the check before the bench runs (exit 2), with the command that makes one.
- neither: the bench runs and exits exactly as it did before.

This is a tool for people comparing runs on one machine, not a CI timing test. Wall-clock figures (a
latency, a rate) move with whatever else runs: on the shared 2-core box two runs of one commit differed
by up to 4x in p50 latency and throughput share while the CPU-time figures stayed within 1.3x. So a bench
marks such figures ``wall=True``, and they fail a check only when the machine was at most half busy
before both runs (1-minute load at most :data:`QUIET_LOAD_PER_CORE` per core); otherwise a large change
is shown as ``worse, ungated`` and the CPU-time and memory figures decide.

Usage in a bench::

    parser = argparse.ArgumentParser()
    ...
    Guard.add_arguments(parser)
    args = parser.parse_args()
    guard = Guard("startup", args)  # with --check and no record: message, exit 2
    ...
    guard.figure("CPU to first 200 (median)", cpu, "s", LOWER)
    guard.figure("wall to first 200 (median)", wall, "s", LOWER, wall=True)
    return guard.finish()  # 0, or 1 when --check found a regression
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
HIGHER: Literal["higher"] = "higher"
LOWER: Literal["lower"] = "lower"
Direction = Literal["higher", "lower"]
DEFAULT_TOLERANCE = 1.5
KEEP = 20  # runs kept per file
LOAD_RATIO = 2.0  # warn when the loads (each at least LOAD_FLOOR) differ by this factor or more
LOAD_FLOOR = 0.5  # below this a machine is quiet: 0.1 vs 0.4 is no difference worth a warning
QUIET_LOAD_PER_CORE = 0.5  # wall-clock figures gate a check only below this load before both runs
GUARD_FLAGS = ("--record", "--check", "--tolerance", "--note")
UNGATED = "worse, ungated"


@dataclass(frozen=True)
class Figure:
    """One headline figure of a run. ``better`` says which way is an improvement; ``wall`` that it is
    measured on the wall clock (and so moves with the machine's load)."""

    name: str
    value: float | None  # None: not measured or not a finite number
    unit: str
    better: Direction
    wall: bool = False


@dataclass(frozen=True)
class Row:
    """One line of a check: a figure recorded, now, or both."""

    name: str
    unit: str
    better: Direction
    recorded: float | None
    now: float | None
    ratio: float | None  # now / recorded, when both are positive
    worse_by: float | None  # how many times worse now is (below 1: better), in the figure's direction
    verdict: str  # ok, better, WORSE, worse, ungated (a wall-clock figure on a busy machine), new, gone, n/a
    wall: bool = False

    @property
    def failed(self) -> bool:
        return self.verdict == "WORSE"


# ---------------------------------------------------------------------------------------------------
# Comparing (pure: no clock, no files, so the unit tests need neither)
# ---------------------------------------------------------------------------------------------------


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def compare_one(
    name: str,
    unit: str,
    better: Direction,
    recorded: float | None,
    now: float | None,
    tolerance: float,
    *,
    wall: bool = False,
    gate_wall: bool = True,
) -> Row:
    """The verdict for one figure: WORSE when it moved the wrong way by more than ``tolerance`` times
    (``worse, ungated`` instead for a wall-clock figure when ``gate_wall`` is off: a busy machine).

    Ratios need positive numbers on both sides; a figure that was or is zero, negative or missing gets
    ``n/a`` rather than a verdict (a zero baseline would turn any noise into an infinite ratio)."""
    if not _usable(recorded) or not _usable(now):
        return Row(name, unit, better, recorded, now, None, None, "n/a", wall)
    assert recorded is not None and now is not None
    ratio = now / recorded
    worse_by = ratio if better == LOWER else 1 / ratio
    if worse_by > tolerance:
        verdict = "WORSE" if gate_wall or not wall else UNGATED
    elif worse_by < 1 / tolerance:
        verdict = "better"
    else:
        verdict = "ok"
    return Row(name, unit, better, recorded, now, ratio, worse_by, verdict, wall)


def compare(recorded_run: dict[str, Any], now: list[Figure], tolerance: float, *, gate_wall: bool = True) -> list[Row]:
    """Each figure of ``now`` against the recorded run's figure of the same name, then the recorded
    figures this run did not measure (``gone``: a skipped backend, a renamed figure)."""
    recorded: dict[str, dict[str, Any]] = recorded_run.get("figures", {})
    rows: list[Row] = []
    for f in now:
        old = recorded.get(f.name)
        if old is None:
            rows.append(Row(f.name, f.unit, f.better, None, f.value, None, None, "new", f.wall))
            continue
        rows.append(
            compare_one(
                f.name, f.unit, f.better, old.get("value"), f.value, tolerance, wall=f.wall, gate_wall=gate_wall
            )
        )
    measured = {f.name for f in now}
    for name, old in recorded.items():
        if name not in measured:
            better = old.get("better", LOWER)
            rows.append(Row(name, old.get("unit", ""), better, old.get("value"), None, None, None, "gone"))
    return rows


def gates_wall_clock(
    recorded_before: float | None, now_before: float, recorded_cores: int | None, now_cores: int
) -> bool:
    """Whether wall-clock figures may fail a check: the same cores, and both runs started on a machine
    at most half busy (the load *before* a run is the other work; the bench adds its own once running)."""
    if recorded_before is None or recorded_cores != now_cores:
        return False
    return max(recorded_before, now_before) <= QUIET_LOAD_PER_CORE * now_cores


def run_load(run: dict[str, Any]) -> float | None:
    """A run's load: the mean of its 1-minute load averages before and after."""
    values = [v for v in (run.get("load") or {}).values() if isinstance(v, int | float)]
    return sum(values) / len(values) if values else None


def load_warning(
    recorded_load: float | None, now_load: float, recorded_cores: int | None, now_cores: int
) -> str | None:
    """A warning when the two runs' conditions differ enough to move wall-clock figures by themselves."""
    if recorded_cores is not None and recorded_cores != now_cores:
        return (
            f"warning: recorded on {recorded_cores} cores, now {now_cores}: a different machine, "
            "so the ratios say little; record a baseline here"
        )
    if recorded_load is None:
        return "warning: the record has no load average; wall-clock figures may differ for that reason alone"
    low, high = sorted((max(recorded_load, LOAD_FLOOR), max(now_load, LOAD_FLOOR)))
    if high / low >= LOAD_RATIO:
        return (
            f"warning: load average {now_load:.1f} now vs {recorded_load:.1f} recorded ({now_cores} cores): "
            "wall-clock figures move with the load; trust the CPU-time figures more, or rerun when it matches"
        )
    return None


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def render(rows: list[Row], tolerance: float) -> str:
    """The check's table: figure (unit, which way is better), recorded, now, now/recorded, verdict."""
    header = ("figure", "recorded", "now", "now/rec", "verdict")
    lines = [
        (
            f"{r.name} ({r.unit}, {r.better} is better{', wall clock' if r.wall else ''})",
            _number(r.recorded),
            _number(r.now),
            f"{r.ratio:.2f}x" if r.ratio is not None else "-",
            r.verdict + (f" ({r.worse_by:.2f}x worse > {tolerance:g}x)" if r.failed and r.worse_by else ""),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])] + [row[i].rjust(widths[i]) for i in (1, 2, 3)] + ["  " + row[4]]
        return "  ".join(cells).rstrip()

    return "\n".join([fmt(header), *(fmt(line) for line in lines)])


# ---------------------------------------------------------------------------------------------------
# The record files
# ---------------------------------------------------------------------------------------------------


class RecordError(Exception):
    """No usable record to check against; the message says what to run."""


def record_path(bench: str, results_dir: Path = RESULTS_DIR) -> Path:
    return results_dir / f"{bench}.json"


def last_run(bench: str, results_dir: Path = RESULTS_DIR) -> dict[str, Any]:
    path = record_path(bench, results_dir)
    make_one = f"record one first: python bench/{bench}.py --record"
    if not path.is_file():
        raise RecordError(f"no recorded figures for {bench} ({path} does not exist); {make_one}")
    try:
        runs = json.loads(path.read_text())["runs"]
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordError(f"{path} is not a bench record ({exc}); fix or delete it, then {make_one}") from exc
    if not runs:
        raise RecordError(f"{path} holds no runs; {make_one}")
    return dict(runs[-1])


def append_run(bench: str, run: dict[str, Any], results_dir: Path = RESULTS_DIR, keep: int = KEEP) -> Path:
    """Add ``run`` to the bench's record, keeping the last ``keep`` runs; one figure per line for reading."""
    path = record_path(bench, results_dir)
    runs: list[dict[str, Any]] = []
    if path.is_file():
        try:
            runs = list(json.loads(path.read_text())["runs"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RecordError(f"{path} is not a bench record ({exc}); fix or delete it before recording") from exc
    runs = [*runs, run][-keep:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(bench, runs))
    return path


def dumps(bench: str, runs: list[dict[str, Any]]) -> str:
    """JSON laid out for reading and for small diffs: one line per field of a run, one per figure."""

    def one(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    blocks = []
    for run in runs:
        fields = [f"   {one(k)}: {one(v)}" for k, v in run.items() if k != "figures"]
        figures = [f"    {one(k)}: {one(v)}" for k, v in run.get("figures", {}).items()]
        fields.append('   "figures": {\n' + ",\n".join(figures) + "\n   }" if figures else '   "figures": {}')
        blocks.append("  {\n" + ",\n".join(fields) + "\n  }")
    body = "[\n" + ",\n".join(blocks) + "\n ]" if blocks else "[]"
    return '{\n "bench": ' + one(bench) + ',\n "runs": ' + body + "\n}\n"


def _git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD") or "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "underlay", "bench", ":!bench/results")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_arguments(argv: list[str]) -> str:
    """The bench's own arguments, without the guard's: what must match for two runs to compare."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in GUARD_FLAGS:
            skip = name in ("--tolerance", "--note") and "=" not in arg
            continue
        out.append(arg)
    return " ".join(out)


# ---------------------------------------------------------------------------------------------------
# What a bench uses
# ---------------------------------------------------------------------------------------------------


def _tolerance(text: str) -> float:
    value = float(text)
    if not value > 1:
        raise argparse.ArgumentTypeError(f"the tolerance is a ratio above 1 (e.g. 1.5), not {text}")
    return value


class Guard:
    """Collects a run's headline figures, and records or checks them when asked (see the module docstring)."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("regression guard (bench/results/)")
        mode = group.add_mutually_exclusive_group()
        mode.add_argument("--record", action="store_true", help="append this run's figures to bench/results/")
        mode.add_argument(
            "--check", action="store_true", help="compare with the last recorded run; exit 1 on a large regression"
        )
        group.add_argument(
            "--tolerance",
            type=_tolerance,
            default=DEFAULT_TOLERANCE,
            help=f"with --check: fail when a figure is more than this many times worse (default {DEFAULT_TOLERANCE})",
        )
        group.add_argument("--note", default="", help="with --record: a note kept with the run (what else was running)")

    def __init__(
        self, bench: str, args: argparse.Namespace, results_dir: Path = RESULTS_DIR, argv: list[str] | None = None
    ) -> None:
        self.bench = bench
        self.mode = "record" if getattr(args, "record", False) else "check" if getattr(args, "check", False) else ""
        self.tolerance: float = getattr(args, "tolerance", DEFAULT_TOLERANCE)
        self.note: str = getattr(args, "note", "")
        self.results_dir = results_dir
        self.arguments = bench_arguments(sys.argv[1:] if argv is None else argv)
        self.figures: list[Figure] = []
        self.baseline: dict[str, Any] | None = None
        self.load_before = os.getloadavg()[0]
        if self.mode == "check":
            try:
                self.baseline = last_run(bench, results_dir)
            except RecordError as exc:
                print(f"{bench} --check: {exc}", file=sys.stderr)
                raise SystemExit(2) from None

    @property
    def active(self) -> bool:
        return bool(self.mode)

    def figure(self, name: str, value: float | None, unit: str, better: Direction, *, wall: bool = False) -> None:
        """Declare a headline figure of this run (ignored unless --record or --check); ``wall=True`` for a
        wall-clock figure (latency, rate), which fails a check only on a quiet machine."""
        if better not in (HIGHER, LOWER):
            raise ValueError(f"better is {HIGHER!r} or {LOWER!r}, not {better!r}")
        number = float(value) if value is not None else None
        finite = number if number is not None and math.isfinite(number) else None
        self.figures.append(Figure(name, finite, unit, better, wall))

    def run_entry(self) -> dict[str, Any]:
        return {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": _git_commit(),
            "load": {"before": round(self.load_before, 2), "after": round(os.getloadavg()[0], 2)},
            "cores": os.cpu_count(),
            "machine": _cpu_model(),
            "note": self.note,
            "python": platform.python_version(),
            "arguments": self.arguments,
            "figures": {
                f.name: {"value": _rounded(f.value), "unit": f.unit, "better": f.better}
                | ({"wall": True} if f.wall else {})
                for f in self.figures
            },
        }

    def finish(self) -> int:
        """Record or check as asked; the exit status for the bench to return (0 without the flags)."""
        if not self.mode:
            return 0
        if not self.figures:
            print(f"\n{self.bench}: this mode declares no headline figures; nothing to {self.mode}", file=sys.stderr)
            return 2
        entry = self.run_entry()
        if self.mode == "record":
            try:
                path = append_run(self.bench, entry, self.results_dir)
            except RecordError as exc:
                print(f"{self.bench} --record: {exc}", file=sys.stderr)
                return 2
            load, shown = entry["load"], path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            print(
                f"\nrecorded {len(self.figures)} figures in {shown} (commit {entry['commit']}, "
                f"load {load['before']} before, {load['after']} after, {entry['cores']} cores)"
            )
            return 0
        assert self.baseline is not None
        return self._check(entry)

    def _check(self, entry: dict[str, Any]) -> int:
        base = self.baseline or {}
        load = entry["load"]
        base_before = (base.get("load") or {}).get("before")
        gate = gates_wall_clock(base_before, load["before"], base.get("cores"), entry["cores"])
        rows = compare(base, self.figures, self.tolerance, gate_wall=gate)
        print(
            f"\n{self.bench} --check against the run recorded {base.get('date', '?')} "
            f"(commit {base.get('commit', '?')}, load {_load_text(base.get('load'))}); "
            f"now commit {entry['commit']}, load {_load_text(load)}"
        )
        print(render(rows, self.tolerance))
        if any(r.verdict == UNGATED for r in rows):
            print(
                f"{UNGATED}: a wall-clock figure beyond the tolerance, not failing the check: the load before a run "
                f"was {base_before} recorded and {load['before']} now on {entry['cores']} cores (wall-clock figures "
                f"gate at most {QUIET_LOAD_PER_CORE * entry['cores']:g}); read the CPU-time figures, or record and "
                "check again on a quiet machine"
            )
        warning = load_warning(run_load(base), run_load(entry) or 0.0, base.get("cores"), entry["cores"])
        if warning:
            print(warning)
        if base.get("arguments", "") != self.arguments:
            print(
                f"warning: recorded with arguments {base.get('arguments', '')!r}, now {self.arguments!r}: "
                "the figures may not compare"
            )
        failed = [r.name for r in rows if r.failed]
        if failed:
            print(f"FAIL: {len(failed)} figure(s) worse by more than {self.tolerance:g}x: {', '.join(failed)}")
            return 1
        better = [r.name for r in rows if r.verdict == "better"]
        hint = f" ({len(better)} much better: --record to make this run the baseline)" if better else ""
        print(f"PASS: no figure worse by more than {self.tolerance:g}x{hint}")
        return 0


def _rounded(value: float | None) -> float | None:
    """Four significant digits: enough for a ratio check, and the record stays readable."""
    if value is None or value == 0:
        return value
    return float(f"{value:.4g}")


def _load_text(load: Any) -> str:
    if not isinstance(load, dict) or not load:
        return "unknown"
    return "/".join(f"{v}" for v in load.values()) + " (before/after)"
