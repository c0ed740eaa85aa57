"""The client the public MCP conformance suite launches, built on Underlay's own MCP client provider.

Usage (the suite appends the server URL and sets ``MCP_CONFORMANCE_SCENARIO`` and, for some scenarios,
``MCP_CONFORMANCE_CONTEXT``)::

    npx @modelcontextprotocol/conformance client \\
        --command ".venv/bin/python scripts/mcp_conformance_client.py" --suite all

Why a script and not a test: the suite is a Node program that starts its own servers per scenario
and judges the traffic; this is only the client side. It does what a caller of Underlay's tool
runtime would: list the server's tools, call each one, and react to what Underlay's MCP client
reports. An ``mcp_authorization_required`` answer is handled like a person with a browser would:
open the authorization URL, take the redirect's code, hand it to the provider's callback (what
``GET /v1/tool-runtime/oauth/callback`` does), and try again. An ``elicitation_required`` answer is
accepted with the requested schema's defaults. Pre-registered or client-credentials clients from the
scenario context become the provider's ``oauth.clients``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from underlay.api.errors import UnderlayError
from underlay.api.tool_runtime import ElicitationResponse, McpConnection, ToolCallContext
from underlay.providers.remote.tool_runtime.model_context_protocol.config import Config, OAuthClient, OAuthConfig
from underlay.providers.remote.tool_runtime.model_context_protocol.provider import AuthorizationNeeded, McpToolRuntime

REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"  # never contacted: the redirect is read, not followed


class MemoryKV:
    """The KV store interface the provider uses, in memory (one scenario, one process)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def set(self, key: str, value: str, expires_in: float | None = None) -> None:
        self.data[key] = value

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


def _clients(url: str, scenario: str, context: dict[str, Any]) -> dict[str, OAuthClient]:
    client_id = context.get("client_id")
    if not client_id:
        return {}
    grant = "client_credentials" if "client-credentials" in scenario else "authorization_code"
    secret = context.get("client_secret")
    method = "client_secret_basic" if secret else "none"
    client = OAuthClient(
        client_id=client_id,
        client_secret=secret,
        grant_type=grant,
        token_endpoint_auth_method=method,
        private_key=context.get("private_key_pem"),
        signing_algorithm=context.get("signing_algorithm") or "RS256",
    )
    return {url: client}


def _argument(schema: dict[str, Any]) -> Any:
    if "default" in schema:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind in ("number", "integer"):
        return 1
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return "test"


def _arguments(input_schema: dict[str, Any]) -> dict[str, Any]:
    properties = input_schema.get("properties") or {}
    return {name: _argument(prop) for name, prop in properties.items() if name in (input_schema.get("required") or [])}


def _defaults(requested: dict[str, Any]) -> dict[str, Any]:
    return {name: prop["default"] for name, prop in (requested.get("properties") or {}).items() if "default" in prop}


async def _authorize(runtime: McpToolRuntime, url: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        redirect = await client.get(url, follow_redirects=False)
    location = redirect.headers.get("location")
    if not location:
        raise SystemExit(f"the authorization server did not redirect (HTTP {redirect.status_code})")
    query = parse_qs(urlsplit(location).query)
    code = query.get("code", [""])[0]
    state = query.get("state", [""])[0]
    iss = query.get("iss", [None])[0]
    await runtime.complete_authorization(state, code, iss)


async def main(url: str) -> int:
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    oauth = OAuthConfig(
        token_key=secrets.token_urlsafe(32),
        redirect_uri=REDIRECT_URI,
        client_name="Underlay conformance client",
        clients=_clients(url, scenario, context),
    )
    runtime = McpToolRuntime("conformance", Config(connect_timeout=20, timeout=30, oauth=oauth))
    runtime.use_kvstore(MemoryKV())
    connection = McpConnection(name=url, uri=url)
    try:
        tools = []
        for _ in range(3):
            try:
                tools = await runtime.list_runtime_tools(
                    ToolCallContext(connection=connection, principal="conformance")
                )
                break
            except AuthorizationNeeded as needed:
                await _authorize(runtime, needed.url)
        for tool in tools:
            answers: list[ElicitationResponse] = []
            for _ in range(4):
                call = ToolCallContext(connection=connection, principal="conformance", elicitation_responses=answers)
                result = await runtime.invoke_tool(tool.name, _arguments(tool.input_schema), call)
                if result.error_code == "mcp_authorization_required":
                    await _authorize(runtime, result.metadata["authorization_url"])
                    continue
                if result.error_code == "elicitation_required":
                    question = result.metadata["elicitation"]
                    content = _defaults(question.get("requested_schema") or {})
                    answers = [*answers, ElicitationResponse(id=question["id"], action="accept", content=content)]
                    continue
                print(f"{tool.name}: {result.error_code or 'ok'} {result.text()[:200]}")
                break
    finally:
        await runtime.shutdown()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main(sys.argv[-1])))
    except UnderlayError as error:  # one line, like the server's own errors
        print(f"mcp_conformance_client: {error.message}", file=sys.stderr)
        sys.exit(1)
