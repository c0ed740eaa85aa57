"""Client-side functions from an agent's ``tools.py``: their JSON schemas, and running them locally.

Why on the caller's side: a function tool is the caller's code (a database lookup, a ticket system);
the server only sees its schema and asks for it to be called, as OpenAI's API does. The schema comes
from the signature's type hints (through pydantic, the same engine the server validates with) and the
description from the docstring, so a plain typed Python function is the whole declaration.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import ValidationError, create_model

from underlay.core.config import ConfigError

__all__ = ["ClientFunction", "function_from_callable", "load_functions"]

MAX_OUTPUT_CHARS = 64 * 1024


@dataclass
class ClientFunction:
    """One function: what the model sees (name, description, parameters) and how to call it."""

    name: str
    description: str
    parameters: dict[str, Any]
    call: Callable[..., Any]
    _model: Any = None

    def tool(self) -> dict[str, Any]:
        """The Responses API's ``function`` tool for it."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "strict": False,
        }

    def invoke(self, arguments: str) -> str:
        """Run it with the model's JSON arguments; a bad argument or a raised error becomes the output text
        the model reads (so it can correct itself), never an exception out of the agent loop. An ``async``
        function runs to its end on an event loop of its own."""
        try:
            result = self.call(**self._values(arguments))
            if inspect.isawaitable(result):
                result = asyncio.run(_await(result))
        except Exception as exc:  # the caller's code: report it to the model, keep the turn going
            return self._error(exc)
        return _text(result)

    async def ainvoke(self, arguments: str) -> str:
        """As :meth:`invoke`, from an event loop: an ``async`` function is awaited on it, and a plain one
        runs in a thread (``asyncio.to_thread``) so a slow lookup does not stall the loop's other turns."""
        try:
            values = self._values(arguments)
            if inspect.iscoroutinefunction(self.call):
                result = await self.call(**values)
            else:
                result = await asyncio.to_thread(self.call, **values)
            if inspect.isawaitable(result):  # a plain callable that returned a coroutine
                result = await result
        except Exception as exc:  # the caller's code: report it to the model, keep the turn going
            return self._error(exc)
        return _text(result)

    def _values(self, arguments: str) -> Any:
        raw = json.loads(arguments or "{}")
        return self._model.model_validate(raw).model_dump() if self._model is not None else raw

    def _error(self, exc: Exception) -> str:
        if isinstance(exc, ValidationError | json.JSONDecodeError):
            return f"error: invalid arguments for {self.name}: {str(exc).splitlines()[0][:300]}"
        return f"error: {self.name} failed: {type(exc).__name__}: {str(exc)[:300]}"


def _text(result: Any) -> str:
    text = result if isinstance(result, str) else json.dumps(result, default=str)
    return text[:MAX_OUTPUT_CHARS]


async def _await(value: Any) -> Any:
    return await value


def function_from_callable(func: Callable[..., Any]) -> ClientFunction:
    """A :class:`ClientFunction` from a typed Python function (parameters without a hint are strings)."""
    signature = inspect.signature(func)
    hints = get_type_hints(func)
    fields: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[name] = (hints.get(name, str), default)
    model = create_model(f"{func.__name__}_arguments", **fields)
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    doc = inspect.getdoc(func) or ""
    description = doc.split("\n\n")[0].replace("\n", " ").strip() or func.__name__
    return ClientFunction(func.__name__, description, schema, func, model)


def load_functions(path: Path, names: list[str] | None = None) -> dict[str, ClientFunction]:
    """The public functions defined in ``path`` (a ``tools.py``), or only ``names``."""
    module_name = f"underlay_agent_tools_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: cannot be imported as a Python module; check the file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ConfigError(
            f"{path}: importing it failed ({type(exc).__name__}: {str(exc)[:200]}); fix the file"
        ) from None
    found = {
        name: function_from_callable(value)
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module_name and not name.startswith("_")
    }
    if names:
        missing = [n for n in names if n not in found]
        if missing:
            raise ConfigError(
                f"{path}: no function {missing[0]!r}; define it or use one of: {', '.join(sorted(found)) or 'none'}"
            )
        found = {n: found[n] for n in names}
    return found
