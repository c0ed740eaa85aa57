"""Loading a ``llama_cpp.Llama`` with or without llama.cpp's extra weight layouts.

llama.cpp's CPU backend can place weights in "extra" buffer types: repacked layouts for faster kernels
and, on Intel CPUs with AMX, tiles for AMX matrix multiplication. On hosts that report AMX (e.g.
Sapphire Rapids under some sandboxes and VMs) ``ggml_backend_amx_mul_mat`` segfaults on the first
batch of more than one token, taking the whole server (or the caller's process, in process) down with
it: single-token decoding works, so a short smoke test passes and the first real prompt crashes.

llama-cpp-python has no argument for the model parameter that turns the extra types off
(``use_extra_bufts``); its ``Llama.__init__`` reads ``llama_model_default_params()`` once. So
:func:`load_llama` swaps that function for the length of one constructor call, under a lock.

Whether the types are used: ``True``/``False`` as configured; ``None`` (the default) means on, except
on CPUs that report AMX, where a crash is worse than the slower non-AMX matmul.

Second, with ``verbose=False`` llama-cpp-python hides llama.cpp's load-time chatter by pointing file
descriptors 1 and 2 at ``/dev/null`` and swapping ``sys.stdout``/``sys.stderr`` for the length of the
load: process-wide, from whatever thread loads the model. In a server that is only untidy; in process
(the SDK's embedded stack, an agent run with no server) it silences the host program's own output for
that second and races with anything else that swaps those streams (a test runner's capture, a CLI's
redirect), which can leave ``sys.stderr`` pointing at a stream that has since been closed. So the
swap is replaced by a no-op before the first load; llama.cpp's own log lines still go through
llama-cpp-python's log callback, which prints errors only when ``verbose`` is off.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
_LOCK = threading.Lock()


@functools.cache
def cpu_reports_amx() -> bool:
    """True when the CPU flags (Linux ``/proc/cpuinfo``) include AMX tiles; False elsewhere."""
    try:
        with CPUINFO.open(encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return "amx_tile" in line.split()
    except OSError:
        return False
    return False


def use_extra_buffers(configured: bool | None) -> bool:
    """The setting to load with: the configured one, else off exactly when the CPU reports AMX."""
    return configured if configured is not None else not cpu_reports_amx()


class _KeepStdio:
    """Stands in for llama-cpp-python's ``suppress_stdout_stderr``: leaves the process's streams alone."""

    def __init__(self, disable: bool = True) -> None:
        self.disable = disable

    def __enter__(self) -> _KeepStdio:
        return self

    def __exit__(self, *_: object) -> None:
        return None


def keep_stdio() -> None:
    """Stop llama-cpp-python from swapping the process's stdout and stderr while it loads (idempotent)."""
    import llama_cpp._internals as internals
    import llama_cpp.llama as high_level

    high_level.suppress_stdout_stderr = _KeepStdio  # type: ignore[misc,assignment]
    internals.suppress_stdout_stderr = _KeepStdio  # type: ignore[misc,assignment]


def without_extra_buffers(default: Callable[[], Any]) -> Callable[[], Any]:
    """``default`` (llama.cpp's model-parameter defaults) with the extra buffer types turned off."""

    def params() -> Any:
        value = default()
        value.use_extra_bufts = False
        return value

    return params


def extra_buffers_off_for_process() -> None:
    """Turn the extra buffer types off for every model this process loads, where the CPU needs it.

    For code that constructs ``Llama`` itself and cannot go through :func:`load_llama` (llama-cpp-python's
    own server, run by the tests as an upstream)."""
    import llama_cpp.llama_cpp as bindings

    if not use_extra_buffers(None):
        bindings.llama_model_default_params = without_extra_buffers(bindings.llama_model_default_params)


def load_llama(extra_buffers: bool | None = None, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(**kwargs)``, with llama.cpp's extra buffer types as :func:`use_extra_buffers` says,
    and without llama-cpp-python's process-wide stdio swap (see the module's docstring)."""
    import llama_cpp
    import llama_cpp.llama_cpp as bindings

    keep_stdio()

    if use_extra_buffers(extra_buffers):
        return llama_cpp.Llama(**kwargs)
    with _LOCK:
        default = bindings.llama_model_default_params
        bindings.llama_model_default_params = without_extra_buffers(default)
        try:
            return llama_cpp.Llama(**kwargs)
        finally:
            bindings.llama_model_default_params = default
