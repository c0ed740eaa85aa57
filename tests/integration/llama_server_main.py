"""Runs ``python -m llama_cpp.server`` with llama.cpp's extra buffer types as Underlay's loader would.

On CPUs that report AMX, llama.cpp's AMX matmul crashes on the first multi-token batch (see
``underlay/providers/utils/llama_loader.py``). The embedded engine turns those buffer types off through
``load_llama``; llama-cpp-python's own server constructs ``Llama`` itself, so this launcher applies the
same default for the whole server process and then runs the server's ``__main__`` with its arguments.
"""

from __future__ import annotations

import runpy

from underlay.providers.utils.llama_loader import extra_buffers_off_for_process


def main() -> None:
    extra_buffers_off_for_process()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
