"""Run a model's Python answer against a problem's unit tests in a sandboxed subprocess.

The answer is untrusted code. It runs in a separate interpreter (isolated mode, empty environment, a fresh
temporary directory as its working directory) under resource limits (address space, CPU seconds, file
size, open files, processes), in its own process group that is killed whole on timeout, and without a
network when the kernel lets us make private namespaces (``unshare --net --pid``, tried once and
remembered): in its own PID namespace, every process the answer starts dies with it. The process-count
limit binds only when the server is not root (the kernel exempts root): run production servers as an
unprivileged user.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass

MEMORY_BYTES = 1 << 30
PROCESSES = 32
_UNSHARE = ("--net", "--pid", "--fork", "--kill-child")
OUTPUT_LIMIT = 4_000
_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)
_unshare_ok: bool | None = None


@dataclass(frozen=True)
class TestRun:
    passed: bool
    detail: str
    """``passed``, ``timed out`` or ``failed: <the last line of the error>``."""


def extract_code(answer: str, prompt: str, entry_point: str) -> str:
    """The program to test: the answer's first fenced block (or the whole answer), completed by the prompt.

    A model may answer with the whole function or only its body; a body is appended to the prompt (the
    signature). The prompt's imports are always kept, since answers often drop them.
    """
    match = _FENCE.search(answer)
    code = match.group(1) if match else answer
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE):
        imports = "\n".join(line for line in prompt.splitlines() if line.startswith(("import ", "from ")))
        return f"{imports}\n{code}"
    return prompt + code


def _limits(cpu_seconds: int) -> None:  # runs in the child before exec
    import resource

    os.setsid()
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_NPROC, (PROCESSES, PROCESSES))


async def _can_unshare() -> bool:
    global _unshare_ok
    if _unshare_ok is None:
        tool = shutil.which("unshare")
        if tool is None:
            _unshare_ok = False
        else:
            proc = await asyncio.create_subprocess_exec(
                tool, *_UNSHARE, "--", "true", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            _unshare_ok = await proc.wait() == 0
    return _unshare_ok


async def run_unit_tests(program: str, test: str, entry_point: str, timeout_s: float = 10.0) -> TestRun:
    """Run ``program`` then ``test`` then ``check(entry_point)``; passed when the process exits 0 in time."""
    source = f"{program}\n\n{test}\n\ncheck({entry_point})\n"
    argv = [sys.executable, "-I", "-c", source]
    if await _can_unshare():
        argv = [shutil.which("unshare") or "unshare", *_UNSHARE, "--", *argv]
    with tempfile.TemporaryDirectory(prefix="underlay-code-") as workdir:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=workdir,
            env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=lambda: _limits(int(timeout_s) + 1),
        )
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
            return TestRun(False, "timed out")
    if proc.returncode == 0:
        return TestRun(True, "passed")
    lines = [line for line in stderr.decode(errors="replace")[-OUTPUT_LIMIT:].splitlines() if line.strip()]
    return TestRun(False, "failed: " + (lines[-1] if lines else f"exit status {proc.returncode}"))
