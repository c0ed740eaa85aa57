"""Leave optional fields out of a response when they have no value, as OpenAI does.

OpenAI's API reference marks some fields optional (absent when unset) and others required but
nullable. A strict client or a conformance suite tells the two apart: ``"tool_calls": null`` on a
message that called no tool, or ``"first_id": null`` on an empty list, is a value OpenAI never sends.
The openai SDK declares the optional ones ``Optional[...] = None``; those are the fields named here.
Required-but-nullable fields (``message.content``, ``message.refusal``) keep their ``null``.
"""

from __future__ import annotations

from typing import Any

from pydantic import SerializerFunctionWrapHandler, model_serializer

__all__ = ["omit_when_none", "without_none"]


def omit_when_none(*fields: str) -> Any:
    """A model serializer that drops ``fields`` from the output when their value is ``None``.

    Assign it in a model's body (``_omit = omit_when_none("system_fingerprint")``); subclasses inherit
    it. It runs after the model's own serialization, so aliases, extras and ``exclude`` still apply.
    """
    names = frozenset(fields)

    @model_serializer(mode="wrap")
    def _without_empty(self: Any, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in names:
                if name in data and data[name] is None:
                    del data[name]
        return data

    return _without_empty


def without_none(data: dict[str, Any], *fields: str) -> dict[str, Any]:
    """``data`` minus ``fields`` whose value is ``None`` (for responses built as plain dicts)."""
    return {k: v for k, v in data.items() if not (k in fields and v is None)}
