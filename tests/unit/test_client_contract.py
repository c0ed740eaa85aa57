"""The SDK stays in step with the contract, and ``import underlay`` stays light.

- Each SDK method marked ``@sends(Model)`` takes exactly ``Model``'s fields as keyword arguments, with
  the same ones required, so a field added to (or renamed in) ``underlay.api`` and not to the SDK fails
  here rather than for a user.
- The SDK's paths come from the route tables; ids are percent-encoded, ``{x:path}`` ones keep slashes.
- The defaults: ``UNDERLAY_BASE_URL`` / ``UNDERLAY_API_KEY``, else a local server and ``"none"``; an
  ``OPENAI_API_KEY`` in the environment is never sent to an Underlay server.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

import underlay
from underlay.api.safety import SafetyApi
from underlay.api.telemetry import TelemetryApi
from underlay.client import AsyncUnderlay, Underlay, _wire
from underlay.client.resources import models, providers, safety, telemetry, tools, vector_io


def marked_methods() -> Iterator[tuple[str, Any, type[BaseModel]]]:
    for module in (models, providers, safety, telemetry, tools, vector_io):
        for cls_name, cls in vars(module).items():
            if not inspect.isclass(cls) or cls.__module__ != module.__name__:
                continue
            for name, member in vars(cls).items():
                model = getattr(member, "__underlay_request__", None)
                if model is not None:
                    yield f"{cls_name}.{name}", member, model


MARKED = list(marked_methods())


def test_every_resource_with_a_request_model_is_marked() -> None:
    names = {name for name, _, _ in MARKED}
    assert {"UnderlayModels.register", "AsyncUnderlayModels.register", "UnderlaySafety.run_shield"} <= names
    assert {"ToolRuntime.invoke_tool", "AsyncToolRuntime.list_tools", "VectorIO.query", "AsyncTraces.list"} <= names
    assert len(MARKED) == 22


@pytest.mark.parametrize(("name", "method", "model"), MARKED, ids=[m[0] for m in MARKED])
def test_keyword_arguments_are_the_request_models_fields(name: str, method: Any, model: type[BaseModel]) -> None:
    parameters = {
        p.name: p
        for p in inspect.signature(method).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY  # path parameters are positional; options are **kwargs
    }
    assert set(parameters) == set(model.model_fields), name
    for field_name, field in model.model_fields.items():
        required = parameters[field_name].default is inspect.Parameter.empty
        assert required == field.is_required(), f"{name}: {field_name} required={required}"


def test_paths_come_from_the_route_tables_and_ids_are_encoded() -> None:
    assert _wire.route_path(SafetyApi.run_shield) == ("POST", "/safety/run-shield")
    assert _wire.route_path(SafetyApi.retrieve_shield, shield_id="team/pii") == ("GET", "/shields/team/pii")
    assert _wire.route_path(TelemetryApi.get_trace, trace_id="a/../b?c") == ("GET", "/telemetry/traces/a%2F..%2Fb%3Fc")


def test_defaults_read_underlays_environment_not_openais(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-must-not-leak")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://api.openai.com/v1")
    monkeypatch.delenv("UNDERLAY_API_KEY", raising=False)
    monkeypatch.delenv("UNDERLAY_BASE_URL", raising=False)
    client = Underlay()
    assert (str(client.base_url), client.api_key) == ("http://127.0.0.1:8321/v1/", "none")
    monkeypatch.setenv("UNDERLAY_API_KEY", "ul-key")
    monkeypatch.setenv("UNDERLAY_BASE_URL", "http://10.0.0.5:9000/v1")
    for made in (Underlay(), AsyncUnderlay()):
        assert (str(made.base_url), made.api_key) == ("http://10.0.0.5:9000/v1/", "ul-key")
    explicit = Underlay(base_url="http://h:1/v1", api_key="k")
    assert (str(explicit.base_url), explicit.api_key) == ("http://h:1/v1/", "k")
    copied = explicit.with_options(timeout=3)
    assert isinstance(copied, Underlay) and (str(copied.base_url), copied.api_key) == ("http://h:1/v1/", "k")


def test_it_is_the_openai_client() -> None:
    client = Underlay(base_url="http://h:1/v1")
    assert isinstance(client, openai.OpenAI) and isinstance(AsyncUnderlay(base_url="http://h:1/v1"), openai.AsyncOpenAI)
    assert isinstance(client.models, openai.resources.Models)  # OpenAI's list/retrieve/delete, plus register
    assert hasattr(client.safety, "cases") and hasattr(client.safety, "run_shield")  # OpenAI's safety kept
    assert client.max_retries == openai.DEFAULT_MAX_RETRIES


def test_import_underlay_is_light_and_exports_the_clients_lazily() -> None:
    code = (
        "import sys, underlay\n"
        "assert 'openai' not in sys.modules and 'underlay.client' not in sys.modules, 'eager import'\n"
        "from underlay import Underlay, AsyncUnderlay\n"
        "import underlay.client as c\n"
        "assert Underlay is c.Underlay and AsyncUnderlay is c.AsyncUnderlay\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = underlay.Nope
