"""MCP elicitation in the Responses API: a server's question during an ``mcp`` call reaches the client as an
approval request carrying the question, and approving it with ``elicitation_content`` answers it.

Real pieces: the embedded Qwen model (the call is forced with ``tool_choice``), the SDK's MCP fixture
server (its ``ask_name`` tool elicits a name), the ``openai`` client.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.integration.harness import QWEN, RunningServer, start_server
from tests.integration.mcp_fixtures import McpFixtureServer
from tests.integration.test_responses_api import _config


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpFixtureServer]:
    server = McpFixtureServer(tmp_path_factory.mktemp("mcp-elicit"), name="desk").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    running: RunningServer = start_server(_config(), tmp_path_factory.mktemp("responses-elicit"), timeout=300)
    yield running.openai(timeout=300)
    running.stop()


def _tool(server: McpFixtureServer) -> dict[str, Any]:
    return {
        "type": "mcp",
        "server_label": "desk",
        "server_url": server.url,
        "require_approval": "never",
        "allowed_tools": ["ask_name"],
    }


def test_a_servers_question_is_an_approval_request_answered_next_time(
    client: openai.OpenAI, mcp_server: McpFixtureServer
) -> None:
    tool = _tool(mcp_server)
    first = client.responses.create(
        model=QWEN,
        input="Greet someone with the ask_name tool.",
        tools=[tool],
        tool_choice={"type": "mcp", "server_label": "desk", "name": "ask_name"},
        max_output_tokens=40,
        extra_body={"max_infer_iters": 2},
    )
    assert first.status == "completed" and first.error is None, first.model_dump_json()[:1500]
    call = next(o for o in first.output if o.type == "mcp_call")
    assert call.status == "incomplete" and call.output is None
    request = next(o for o in first.output if o.type == "mcp_approval_request")
    assert request.name == "ask_name" and request.server_label == "desk"
    question = (request.model_extra or {})["elicitation"]
    assert question["message"] == "What name should I greet?" and "name" in question["requested_schema"]["properties"]

    bad = {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(
            model=QWEN,
            previous_response_id=first.id,
            input=[{**bad, "elicitation_content": {"name": {"nested": True}}}],
            tools=[tool],
            max_output_tokens=10,
        )
    assert refused.value.body["param"] == "input[0].elicitation_content"  # type: ignore[index]

    second = client.responses.create(
        model=QWEN,
        previous_response_id=first.id,
        input=[{**bad, "elicitation_content": {"name": "Ada"}}],
        tools=[tool],
        tool_choice="none",
        max_output_tokens=30,
    )
    answered = second.output[0]
    assert answered.type == "mcp_call" and answered.approval_request_id == request.id
    assert answered.status == "completed" and answered.output == "Hello, Ada!"
