"""``basic::code_unit_tests``' sandbox: real subprocesses, the shipped HumanEval rows and hostile answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from underlay.eval_benchmarks import SHIPPED
from underlay.providers.scoring.builtin.basic import FUNCTIONS, BasicConfig, BasicScoringProvider
from underlay.providers.scoring.builtin.code_tests import _can_unshare, extract_code, run_unit_tests

HUMANEVAL = list(SHIPPED["humaneval"].rows())


def _running(marker: str) -> list[Path]:
    """Processes whose command line holds ``marker``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(proc)
        except OSError:
            pass
    return found


def _canonical(row: dict[str, object]) -> str:
    return f"Here you go:\n```python\n{row['expected_answer']}```\n"


async def test_the_reference_solutions_pass_and_a_wrong_one_fails() -> None:
    for row in HUMANEVAL[:5]:
        code = extract_code(_canonical(row), str(row["prompt"]), str(row["entry_point"]))
        assert (await run_unit_tests(code, str(row["test"]), str(row["entry_point"]))).passed, row["id"]
    first = HUMANEVAL[0]
    wrong = extract_code("    return True\n", str(first["prompt"]), str(first["entry_point"]))
    result = await run_unit_tests(wrong, str(first["test"]), str(first["entry_point"]))
    assert not result.passed and result.detail == "failed: AssertionError"


def test_a_body_only_answer_is_completed_by_the_prompt() -> None:
    code = extract_code("    return 1\n", "import math\n\ndef f():\n", "f")
    assert code == "import math\n\ndef f():\n    return 1\n"
    whole = extract_code("```py\ndef f():\n    return 2\n```", "import math\n\ndef f():\n", "f")
    assert whole.startswith("import math\n") and "return 2" in whole


async def test_hostile_answers_are_contained() -> None:
    looping = await run_unit_tests("while True:\n    pass\n", "", "print", timeout_s=1.5)
    assert looping == type(looping)(False, "timed out")
    memory = await run_unit_tests("x = bytearray(4 << 30)\n", "", "print", timeout_s=10)
    assert not memory.passed and "MemoryError" in memory.detail
    marker = "time.sleep(61.25)"
    escaped = await run_unit_tests(
        f"import os, time\nif os.fork() == 0:\n    os.setsid()\n    {marker}\n", "def check(f):\n    pass", "print"
    )
    assert escaped.passed  # the parent exits at once: the run is over
    await asyncio.sleep(0.5)
    if await _can_unshare():  # in its own PID namespace, the detached child died with the run
        assert not _running(marker)
    if await _can_unshare():
        network = await run_unit_tests(
            "import socket\nsocket.create_connection(('127.0.0.1', 5432), timeout=2)\n", "", "print", timeout_s=5
        )
        assert not network.passed and "unreachable" in network.detail.lower()


async def test_the_scoring_function_scores_rows_and_names_bad_ones() -> None:
    provider = BasicScoringProvider("basic", BasicConfig())
    function = next(f for f in FUNCTIONS if f.identifier == "basic::code_unit_tests")
    rows = [
        {**HUMANEVAL[1], "generated_answer": _canonical(HUMANEVAL[1])},
        {**HUMANEVAL[2], "generated_answer": "no code at all"},
        {**HUMANEVAL[3], "generated_answer": "x", "entry_point": "os.system('id')"},
    ]
    scored = await provider.score(function.model_copy(update={"provider_id": "basic"}), None, rows)
    assert [r["score"] for r in scored] == [1.0, 0.0, None]
    assert scored[0]["detail"] == "passed" and "entry_point" in scored[2]["error"]


@pytest.mark.parametrize(("answer", "score"), [("  Y, he was.", 1.0), ("N", 0.0), ("Yes", 1.0), ("y", 0.0)])
def test_starts_with(answer: str, score: float) -> None:
    provider = BasicScoringProvider("basic", BasicConfig())
    function = next(f for f in FUNCTIONS if f.identifier == "basic::starts_with")
    rows = [{"generated_answer": answer, "expected_answer": "Y"}]
    assert asyncio.run(provider.score(function, None, rows)) == [{"score": score}]
