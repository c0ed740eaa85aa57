"""``llama_cpp``, imported on first attribute access.

Importing llama-cpp-python loads its shared library (hundreds of milliseconds). The server imports
this provider at start-up only to list models, so the import waits until a model is really loaded.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class _LazyModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        module = importlib.import_module(self.__name__)
        value = getattr(module, name)
        setattr(self, name, value)
        return value


llama_cpp = _LazyModule("llama_cpp")
