"""Loading llama.cpp models with or without its extra buffer types (repacked weights, AMX tiles).

The crash this guards against is real on this project's machines: with AMX reported by the CPU, the
first multi-token batch died in ``ggml_backend_amx_mul_mat`` (SIGSEGV). The default-settings check runs
in a child process so that a crash is a failing test, not the end of the pytest run.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from underlay.providers.utils import llama_loader
from underlay.shared.packaged_models import resolve_model_path

SMOL = "smollm2-135m-instruct"
PROMPT = b"The quick brown fox jumps over the lazy dog. " * 6


@pytest.fixture
def cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(llama_loader, "CPUINFO", path)
    llama_loader.cpu_reports_amx.cache_clear()
    yield path
    llama_loader.cpu_reports_amx.cache_clear()


def test_amx_is_read_from_the_cpu_flags(cpuinfo: Path) -> None:
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n")
    assert llama_loader.cpu_reports_amx() and llama_loader.use_extra_buffers(None) is False
    assert llama_loader.use_extra_buffers(True) is True  # configured wins


def test_no_amx_flag_or_no_cpuinfo_keeps_the_extra_buffers(cpuinfo: Path) -> None:
    assert not llama_loader.cpu_reports_amx()  # no file (macOS, Windows): nothing to avoid
    llama_loader.cpu_reports_amx.cache_clear()
    cpuinfo.write_text("flags\t\t: fpu avx2 avx512f amx_bf16_like\n")
    assert not llama_loader.cpu_reports_amx() and llama_loader.use_extra_buffers(None) is True
    assert llama_loader.use_extra_buffers(False) is False


def _evaluate(llm: object) -> np.ndarray:
    tokens = llm.tokenize(PROMPT, add_bos=True)  # type: ignore[attr-defined]
    assert len(tokens) > 32
    llm.eval(tokens)  # type: ignore[attr-defined]
    return np.asarray(llm.scores[len(tokens) - 1])  # type: ignore[attr-defined]


def test_without_extra_buffers_a_batch_evaluates_and_the_default_is_restored() -> None:
    import llama_cpp.llama_cpp as bindings

    default = bindings.llama_model_default_params
    llm = llama_loader.load_llama(False, model_path=str(resolve_model_path(SMOL)), n_ctx=256, verbose=False)
    try:
        assert llm.model_params.use_extra_bufts is False
        assert np.all(np.isfinite(_evaluate(llm)))
    finally:
        llm.close()
    assert bindings.llama_model_default_params is default
    assert bindings.llama_model_default_params().use_extra_bufts is True


def test_the_default_setting_evaluates_a_multi_token_batch_on_this_cpu() -> None:
    script = (
        "import numpy as np\n"
        "from underlay.providers.utils.llama_loader import load_llama\n"
        f"llm = load_llama(None, model_path={str(resolve_model_path(SMOL))!r}, n_ctx=256, verbose=False)\n"
        f"tokens = llm.tokenize({PROMPT!r}, add_bos=True)\n"
        "llm.eval(tokens)\n"
        "assert np.all(np.isfinite(np.asarray(llm.scores[len(tokens) - 1])))\n"
        "print('evaluated', len(tokens))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.startswith("evaluated ")


def test_loading_leaves_the_process_streams_alone() -> None:
    """llama-cpp-python's own quiet mode points fds 1 and 2 at /dev/null and swaps sys.stdout/sys.stderr,
    process-wide, while a model loads; in process (the SDK's embedded stack) the host program would lose
    its output for that time and could be left with a closed stream. Watch both from this thread while
    another loads a model quietly."""
    import os
    import threading

    streams = (sys.stdout, sys.stderr)
    fds = (os.fstat(1).st_ino, os.fstat(2).st_ino)
    seen: set[tuple[object, ...]] = set()
    loaded: list[object] = []
    loader = threading.Thread(
        target=lambda: loaded.append(
            llama_loader.load_llama(model_path=str(resolve_model_path(SMOL)), n_ctx=256, verbose=False)
        )
    )
    loader.start()
    while loader.is_alive():
        seen.add((sys.stdout, sys.stderr, os.fstat(1).st_ino, os.fstat(2).st_ino))
    loader.join()
    seen.add((sys.stdout, sys.stderr, os.fstat(1).st_ino, os.fstat(2).st_ino))
    assert loaded, "the model did not load"
    loaded[0].close()  # type: ignore[attr-defined]
    assert seen == {(*streams, *fds)}
