"""The base class of the contract's models: each compiles its validator on first use, not on import.

Why: a server imports every switched-on API's models at start, about 240 classes here, and pydantic
compiles each one's validator and serializer when the class is created. Most of them (response objects,
stream events, list pages) are not needed until a request returns one, and some never are in a given
deployment. Deferring the build (pydantic's ``defer_build``) took about a tenth of the CPU and a few
megabytes off every ``underlay run`` (bench/startup.py); validation, serialization and JSON schemas are
the same, built by the first request, ``model_validate`` or schema that needs them.

A provider author's own models may subclass :class:`ApiModel` too, or keep :class:`pydantic.BaseModel`;
either works wherever the contract takes a model.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ApiModel"]


class ApiModel(BaseModel):
    """A :class:`pydantic.BaseModel` whose validator and serializer are built when first needed."""

    model_config = ConfigDict(defer_build=True)
