"""Deployed agents as tools on ``/mcp``: ``ask_<name>`` runs the caller's agent ``<name>`` on one input.

Why tools and not prompts: an MCP host (an IDE, another agent) hands a tool call to the server and reads
the answer, which is what calling an agent is; the agent's loop, tools, knowledge and shields run here,
on the Responses engine, exactly as for ``model="agent/<name>"``. Tools are listed from the caller's
own agents (the access policy applies, as on ``GET /v1/agents``) on every ``tools/list``.

Client-side function tools cannot run for an MCP caller (it has no way to send their results back in
one tool call), so a turn that ends asking for one is answered with the request and ``isError`` unset:
the host sees which function the agent wanted and with which arguments.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types

from underlay.api.agents import AgentsApi
from underlay.api.pagination import ListQuery
from underlay.api.responses import CreateResponseRequest, ResponseObject

PREFIX = "ask_"
MAX_INPUT_CHARS = 100_000
"""One question's length limit, as for a prompt template: long material belongs in the agent's knowledge."""
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The question or task for the agent."}},
    "required": ["input"],
}


def _on(routers: dict[str, Any]) -> bool:
    return "agents" in routers and "responses" in routers


async def agent_tools(routers: dict[str, Any]) -> list[types.Tool]:
    """``ask_<name>`` for each agent the caller can read (at most 100, newest first)."""
    if not _on(routers):
        return []
    agents: AgentsApi = routers["agents"]
    page = await agents.list_agents(ListQuery(limit=100))
    named = {}  # one tool per name: a teammate's agent shared read-only may share a name with the caller's
    for agent in page.data:
        named.setdefault(agent.name, agent)
    return [
        types.Tool(
            name=f"{PREFIX}{agent.name}",
            description=agent.definition.description or f"Ask the deployed agent '{agent.name}'.",
            input_schema=INPUT_SCHEMA,
            meta={"underlay/agent_id": agent.id, "underlay/agent_version": agent.version},
        )
        for agent in named.values()
    ]


def is_agent_tool(routers: dict[str, Any], name: str) -> bool:
    return _on(routers) and name.startswith(PREFIX)


async def call_agent(routers: dict[str, Any], name: str, arguments: dict[str, Any]) -> types.CallToolResult:
    """Run one turn of the agent ``name`` names on ``arguments["input"]``; typed errors propagate."""
    question = arguments.get("input")
    if not isinstance(question, str) or not question.strip():
        return _error(f"{name} needs input: the question or task for the agent, as a string.")
    if len(question) > MAX_INPUT_CHARS:
        return _error(f"{name}: input is {len(question)} characters; at most {MAX_INPUT_CHARS} are allowed.")
    request = CreateResponseRequest(model=f"agent/{name.removeprefix(PREFIX)}", input=question, store=False)
    response = await routers["responses"].create_response(request)
    if not isinstance(response, ResponseObject):  # store=False without stream: always a finished response
        return _error(f"{name}: the agent did not give a finished response.")
    if response.status == "failed":
        return _error(f"{name}: {response.error.message if response.error else 'the response failed'}")
    calls = [
        {"name": item.get("name"), "arguments": item.get("arguments")}
        for item in response.output
        if item.get("type") == "function_call"
    ]
    text = response.output_text
    if calls and not text:
        text = "The agent asked for client functions an MCP caller cannot run: " + json.dumps(calls)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content={"output_text": response.output_text, "function_calls": calls, "response_id": response.id},
    )


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)
