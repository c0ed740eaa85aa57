"""The benches' regression guard (``bench/_results.py``): the comparison, the record files, the messages.

Nothing here times anything: figures are given as numbers, so each verdict is decided by the rule
alone (how many times worse, in the figure's direction, against the tolerance)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_results_under_test", BENCH / "_results.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


R = _load()


def _run(figures: dict[str, tuple[float | None, str, str]], load: float = 2.0, cores: int = 2) -> dict[str, Any]:
    return {
        "date": "2026-12-07 18:00 UTC",
        "commit": "abc1234",
        "load": {"before": load, "after": load},
        "cores": cores,
        "arguments": "--runs 3",
        "figures": {n: {"value": v, "unit": u, "better": b} for n, (v, u, b) in figures.items()},
    }


# -- ratios and directions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("better", "recorded", "now", "verdict"),
    [
        ("lower", 10.0, 20.0, "WORSE"),  # twice the time
        ("lower", 10.0, 14.0, "ok"),
        ("lower", 10.0, 5.0, "better"),
        ("higher", 400.0, 200.0, "WORSE"),  # half the throughput
        ("higher", 400.0, 300.0, "ok"),
        ("higher", 400.0, 800.0, "better"),
        ("lower", 10.0, 15.0, "ok"),  # exactly the tolerance: not beyond it
        ("higher", 300.0, 200.0, "ok"),
    ],
)
def test_a_figure_fails_only_when_worse_in_its_own_direction(
    better: str, recorded: float, now: float, verdict: str
) -> None:
    row = R.compare_one("f", "u", better, recorded, now, 1.5)
    assert row.verdict == verdict
    assert row.ratio == pytest.approx(now / recorded)
    assert row.failed is (verdict == "WORSE")


def test_worse_by_reads_the_same_for_both_directions() -> None:
    slower = R.compare_one("latency", "ms", "lower", 10.0, 20.0, 1.5)
    fewer = R.compare_one("throughput", "req/s", "higher", 20.0, 10.0, 1.5)
    assert slower.worse_by == pytest.approx(2.0) == fewer.worse_by
    assert slower.ratio == pytest.approx(2.0) and fewer.ratio == pytest.approx(0.5)


def test_the_tolerance_moves_the_line() -> None:
    assert R.compare_one("f", "s", "lower", 1.0, 1.8, 1.5).verdict == "WORSE"
    assert R.compare_one("f", "s", "lower", 1.0, 1.8, 2.0).verdict == "ok"
    assert R.compare_one("f", "s", "lower", 1.0, 1.8, 1.2).verdict == "WORSE"
    assert R.compare_one("f", "s", "lower", 1.0, 1.1, 1.2).verdict == "ok"


@pytest.mark.parametrize(("recorded", "now"), [(0.0, 3.0), (3.0, 0.0), (None, 3.0), (3.0, None), (-1.0, 2.0)])
def test_zero_negative_or_missing_values_get_no_verdict(recorded: float | None, now: float | None) -> None:
    row = R.compare_one("f", "ms", "lower", recorded, now, 1.5)
    assert row.verdict == "n/a" and not row.failed and row.ratio is None


def test_compare_names_new_and_gone_figures_without_failing() -> None:
    recorded = _run({"kept": (10.0, "ms", "lower"), "dropped": (5.0, "ms", "lower")})
    now = [R.Figure("kept", 30.0, "ms", "lower"), R.Figure("added", 1.0, "ms", "lower")]
    rows = {r.name: r for r in R.compare(recorded, now, 1.5)}
    assert rows["kept"].verdict == "WORSE"
    assert rows["added"].verdict == "new" and rows["added"].now == 1.0
    assert rows["dropped"].verdict == "gone" and rows["dropped"].recorded == 5.0
    assert [r.name for r in R.compare(recorded, now, 1.5) if r.failed] == ["kept"]


def test_the_table_shows_each_figure_with_both_values_the_ratio_and_the_verdict() -> None:
    rows = R.compare(_run({"p50": (10.0, "ms", "lower")}), [R.Figure("p50", 25.0, "ms", "lower")], 1.5)
    table = R.render(rows, 1.5).splitlines()
    assert table[0].split() == ["figure", "recorded", "now", "now/rec", "verdict"]
    assert "p50 (ms, lower is better)" in table[1]
    assert "10.0" in table[1] and "25.0" in table[1] and "2.50x" in table[1]
    assert "WORSE (2.50x worse > 1.5x)" in table[1]


def test_a_wall_clock_figure_fails_only_when_wall_clock_figures_gate() -> None:
    gated = R.compare_one("p50", "ms", "lower", 1.0, 3.0, 1.5, wall=True, gate_wall=True)
    ungated = R.compare_one("p50", "ms", "lower", 1.0, 3.0, 1.5, wall=True, gate_wall=False)
    cpu = R.compare_one("cpu", "ms", "lower", 1.0, 3.0, 1.5, wall=False, gate_wall=False)
    assert gated.verdict == "WORSE" and gated.failed
    assert ungated.verdict == "worse, ungated" and not ungated.failed and ungated.worse_by == pytest.approx(3.0)
    assert cpu.verdict == "WORSE" and cpu.failed  # CPU and memory figures always gate
    assert R.compare_one("p50", "ms", "lower", 3.0, 1.0, 1.5, wall=True, gate_wall=False).verdict == "better"


def test_wall_clock_figures_gate_only_when_both_runs_started_on_a_quiet_machine() -> None:
    assert R.gates_wall_clock(0.3, 0.9, 2, 2)  # at most half of 2 cores busy before each run
    assert not R.gates_wall_clock(0.3, 1.2, 2, 2)  # busy now
    assert not R.gates_wall_clock(4.0, 0.2, 2, 2)  # busy when recorded
    assert R.gates_wall_clock(4.0, 6.0, 16, 16)  # the same load is quiet on 16 cores
    assert not R.gates_wall_clock(0.1, 0.1, 2, 16)  # another machine
    assert not R.gates_wall_clock(None, 0.1, 2, 2)  # a record without a load


def test_compare_passes_the_gate_to_wall_clock_figures_only() -> None:
    recorded = _run({"p50": (1.0, "ms", "lower"), "cpu": (1.0, "ms", "lower")})
    now = [R.Figure("p50", 4.0, "ms", "lower", wall=True), R.Figure("cpu", 1.1, "ms", "lower")]
    assert [r.verdict for r in R.compare(recorded, now, 1.5, gate_wall=False)] == ["worse, ungated", "ok"]
    assert [r.verdict for r in R.compare(recorded, now, 1.5, gate_wall=True)] == ["WORSE", "ok"]


# -- the load ---------------------------------------------------------------------------------------


def test_a_load_twice_the_recorded_one_is_warned_about() -> None:
    warning = R.load_warning(2.0, 6.5, 2, 2)
    assert warning is not None and "6.5 now vs 2.0 recorded" in warning
    assert R.load_warning(6.0, 1.0, 2, 2) is not None  # quieter now counts too


def test_similar_or_quiet_loads_are_not_warned_about() -> None:
    assert R.load_warning(2.0, 3.0, 2, 2) is None
    assert R.load_warning(0.1, 0.45, 2, 2) is None  # both quiet: 4.5x of almost nothing


def test_other_cores_or_an_unknown_load_are_warned_about() -> None:
    other = R.load_warning(2.0, 2.0, 2, 16)
    assert other is not None and "2 cores, now 16" in other
    unknown = R.load_warning(None, 2.0, 2, 2)
    assert unknown is not None and "no load average" in unknown


def test_a_runs_load_is_the_mean_of_before_and_after() -> None:
    assert R.run_load({"load": {"before": 2.0, "after": 4.0}}) == pytest.approx(3.0)
    assert R.run_load({}) is None


# -- the record files -------------------------------------------------------------------------------


def test_a_missing_record_is_a_message_naming_the_command_that_makes_one(tmp_path: Path) -> None:
    with pytest.raises(R.RecordError) as caught:
        R.last_run("startup", tmp_path)
    assert "no recorded figures for startup" in str(caught.value)
    assert "python bench/startup.py --record" in str(caught.value)


def test_an_unreadable_or_empty_record_is_a_message_too(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(R.RecordError, match="is not a bench record"):
        R.last_run("broken", tmp_path)
    (tmp_path / "empty.json").write_text('{"bench": "empty", "runs": []}')
    with pytest.raises(R.RecordError, match="holds no runs"):
        R.last_run("empty", tmp_path)


def test_check_without_a_record_stops_before_the_bench_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(record=False, check=True, tolerance=1.5, note="")
    with pytest.raises(SystemExit) as caught:
        R.Guard("overhead", args, results_dir=tmp_path, argv=["--check"])
    assert caught.value.code == 2
    assert "no recorded figures for overhead" in capsys.readouterr().err


def test_records_append_and_keep_only_the_last_runs(tmp_path: Path) -> None:
    for index in range(5):
        R.append_run("b", _run({"f": (float(index + 1), "s", "lower")}), tmp_path, keep=3)
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["bench"] == "b"
    assert [run["figures"]["f"]["value"] for run in data["runs"]] == [3.0, 4.0, 5.0]
    assert R.last_run("b", tmp_path)["figures"]["f"]["value"] == 5.0


def test_a_record_is_json_with_one_line_per_figure() -> None:
    runs = [_run({"cpu": (1.5, "s", "lower"), "rate": (400.0, "items/s", "higher")}), _run({})]
    text = R.dumps("demo", runs)
    assert json.loads(text) == {"bench": "demo", "runs": runs}
    assert '    "rate": {"value": 400.0, "unit": "items/s", "better": "higher"}' in text.splitlines()
    assert json.loads(R.dumps("demo", [])) == {"bench": "demo", "runs": []}


def test_the_guard_flags_are_not_counted_as_the_benchs_arguments() -> None:
    argv = ["--runs", "3", "--check", "--tolerance", "2", "--note", "quiet box", "--seconds=2", "--tolerance=3"]
    assert R.bench_arguments(argv) == "--runs 3 --seconds=2"
    assert R.bench_arguments(["--record", "--note=busy"]) == ""


# -- a whole round: record, then check ----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    R.Guard.add_arguments(parser)
    return parser


def test_record_then_check_fails_only_on_the_figure_that_regressed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--runs", "3", "--record", "--note", "unit test"]
    guard = R.Guard("demo", _parser().parse_args(argv), results_dir=tmp_path, argv=argv)
    guard.figure("cpu", 1.0, "s", R.LOWER)
    guard.figure("rate", 400.0, "items/s", R.HIGHER)
    assert guard.finish() == 0
    run = R.last_run("demo", tmp_path)
    assert run["note"] == "unit test" and run["arguments"] == "--runs 3" and run["cores"] >= 1
    assert set(run["load"]) == {"before", "after"} and run["commit"]
    assert run["figures"]["rate"] == {"value": 400.0, "unit": "items/s", "better": "higher"}
    assert "wall" not in run["figures"]["cpu"]
    capsys.readouterr()

    argv = ["--runs", "3", "--check"]
    guard = R.Guard("demo", _parser().parse_args(argv), results_dir=tmp_path, argv=argv)
    guard.figure("cpu", 1.2, "s", R.LOWER)  # 1.2x worse: within 1.5x
    guard.figure("rate", 150.0, "items/s", R.HIGHER)  # 2.7x worse
    assert guard.finish() == 1
    out = capsys.readouterr().out
    assert "FAIL: 1 figure(s) worse by more than 1.5x: rate" in out
    assert len(json.loads((tmp_path / "demo.json").read_text())["runs"]) == 1  # a check records nothing

    argv = ["--runs", "3", "--check", "--tolerance", "3"]
    guard = R.Guard("demo", _parser().parse_args(argv), results_dir=tmp_path, argv=argv)
    guard.figure("cpu", 1.2, "s", R.LOWER)
    guard.figure("rate", 150.0, "items/s", R.HIGHER)
    assert guard.finish() == 0
    assert "PASS: no figure worse by more than 3x" in capsys.readouterr().out


@pytest.mark.parametrize(("load", "status"), [(0.1, 1), (6.0, 0)])
def test_a_slower_wall_clock_figure_fails_the_check_only_on_a_quiet_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, load: float, status: int
) -> None:
    monkeypatch.setattr(R.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(R.os, "cpu_count", lambda: 2)
    for mode, value in (("--record", 10.0), ("--check", 30.0)):
        guard = R.Guard("demo", _parser().parse_args([mode]), results_dir=tmp_path, argv=[mode])
        guard.figure("p50", value, "ms", R.LOWER, wall=True)
        guard.figure("cpu", 1.0, "ms", R.LOWER)
        result = guard.finish()
    assert R.last_run("demo", tmp_path)["figures"]["p50"]["wall"] is True
    out = capsys.readouterr().out
    assert result == status
    if status:
        assert "WORSE (3.00x worse > 1.5x)" in out and "FAIL: 1 figure(s)" in out
    else:
        assert "worse, ungated" in out and "was 6.0 recorded and 6.0 now on 2 cores" in out and "PASS" in out


def test_a_check_with_other_arguments_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    R.append_run("demo", _run({"cpu": (1.0, "s", "lower")}), tmp_path)
    argv = ["--runs", "7", "--check"]
    guard = R.Guard("demo", _parser().parse_args(argv), results_dir=tmp_path, argv=argv)
    guard.figure("cpu", 1.0, "s", R.LOWER)
    assert guard.finish() == 0
    assert "recorded with arguments '--runs 3', now '--runs 7'" in capsys.readouterr().out


def test_without_the_flags_the_guard_does_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    guard = R.Guard("demo", _parser().parse_args([]), results_dir=tmp_path, argv=[])
    guard.figure("cpu", 1.0, "s", R.LOWER)
    assert guard.finish() == 0
    assert not list(tmp_path.iterdir()) and capsys.readouterr().out == ""


def test_record_and_check_together_and_a_tolerance_of_one_are_refused() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["--record", "--check"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["--check", "--tolerance", "1"])
    with pytest.raises(ValueError, match="higher"):
        R.Guard("demo", _parser().parse_args([]), argv=[]).figure("f", 1.0, "s", "up")
