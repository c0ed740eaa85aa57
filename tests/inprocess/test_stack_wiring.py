"""How the stack wires routers to each other: by constructor, in dependency order, never afterwards.

A real stack (storage, registry, the echo plugin through its entry point, real shields) is started in
process and its object graph inspected: the guarded inference router gets the safety router when it is
built; model-backed shields call an unguarded one (they send ``guardrails: []`` anyway, and it breaks
the cycle); the Responses provider receives the optional routers it uses with its dependencies, since
they are built before it. ``test_safety_api`` covers the same wiring through the HTTP API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.inprocess.harness import echo_config
from underlay.core.apis import API_TABLE, api_order
from underlay.core.config import parse_run_config
from underlay.core.routers.inference import InferenceRouter
from underlay.core.stack import Stack

ECHO = {"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}


@pytest.fixture
async def stack(tmp_path: Path, echo_plugin: Path) -> AsyncIterator[Stack]:
    config = echo_config(
        tmp_path,
        apis=["responses", "inference", "tool_runtime", "files", "safety"],  # responses first on purpose
        providers={
            "inference": [ECHO],
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
            "tool_runtime": [{"provider_id": "mcp", "provider_type": "remote::model-context-protocol"}],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin"}],
            "safety": [
                {"provider_id": "pii", "provider_type": "inline::pii"},
                {"provider_id": "echo-guard", "provider_type": "inline::guard-prompt", "config": {"model": "echo"}},
            ],
        },
        shields=[{"shield_id": "echo-guard", "provider_id": "echo-guard"}],
        telemetry={"enabled": False},
    )
    stack = Stack(parse_run_config(config, source="<stack wiring test>"))
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()


def test_optional_dependencies_are_built_first() -> None:
    order = api_order(["responses", "tool_runtime", "files", "safety", "vector_stores"])
    for dependency in ("inference", "conversations", "tool_runtime", "files", "safety", "vector_stores"):
        assert order.index(dependency) < order.index("responses"), order
    assert order.index("vector_stores") < order.index("tool_runtime")  # file_search searches vector stores
    assert api_order(["responses"]) == ["inference", "conversations", "responses"]  # optional ones stay off


async def test_routers_receive_their_dependencies_when_built(stack: Stack) -> None:
    inference, safety = stack.inference_router, stack.safety_router
    assert inference is not None and safety is not None
    assert inference.safety is safety  # guardrails, given to the constructor
    assert stack.routers["inference"] is inference and stack.routers["safety"] is safety

    guard = stack.providers["safety"]["echo-guard"]
    assert isinstance(guard.inference, InferenceRouter) and guard.inference.safety is None
    assert guard.inference.models is inference.models and guard.inference.providers is inference.providers

    responses = stack.providers["responses"]["builtin"]
    assert responses.deps["tool_runtime"] is stack.tool_runtime_router is not None
    assert responses.deps["files"] is stack.files_router is not None
    assert responses.deps["safety"] is safety
    assert responses.deps["inference"] is inference
    assert responses.deps["conversations"] is stack.conversations_router is not None
    assert not hasattr(responses, "routers")  # no live view of the stack's table to look things up in later
    assert stack.vector_stores_router is None and "vector_stores" not in responses.deps  # off: not passed


async def test_typed_accessors_check_the_router_type(stack: Stack) -> None:
    assert stack.models_router is None  # not switched on: None, not an error
    accessors = {name.removesuffix("_router") for name in dir(Stack) if name.endswith("_router")}
    assert accessors - {"", "instrument"} == set(API_TABLE)  # one typed accessor per built-in API
    stack.routers["models"] = object()  # a wrong object under an API's name is refused, not returned
    with pytest.raises(TypeError, match="models router is a object, not a ModelsRouter"):
        _ = stack.models_router
    del stack.routers["models"]
