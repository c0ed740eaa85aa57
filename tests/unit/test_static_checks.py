"""The linters and the type checker, run as tests.

CI runs exactly the README's install-and-test command, so the static checks live here rather than as
extra CI steps: ``ruff check``, ``ruff format --check`` and ``mypy`` (strict on ``underlay.api`` and
``underlay.core``, configured in ``pyproject.toml``). Each test fails with the tool's own report, so
the fix is in the failure message.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: float = 540) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <tool> ...`` from this interpreter's environment at the repository root."""
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def _report(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def test_ruff_check_is_clean() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, _report(result)


def test_ruff_format_check_is_clean() -> None:
    result = _run("ruff", "format", "--check", ".")
    assert result.returncode == 0, _report(result)


def test_mypy_strict_on_contract_and_control_plane() -> None:
    result = _run("mypy")
    assert result.returncode == 0, _report(result)
    # The configured files are the ones checked: an empty run would pass without checking anything.
    assert "Success: no issues found" in result.stdout, _report(result)
