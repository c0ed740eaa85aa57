"""Credentials masked in what an MCP server sends back, where its text enters Underlay.

Why here: a failing MCP server may echo the request it got, headers included, and that text flows
into a tool-runtime error envelope, an invoke result, a Responses ``mcp_list_tools``/``mcp_call`` item
that is stored and served again, and log lines. The process redactor knows the run config's secrets
and the generic shapes (``Bearer ...``, ``api_key=...``), but not a caller's per-request
``authorization`` or headers, which may look like any word. The connection carries both the
configured and the per-request values, so every error and error result leaving the MCP client is
masked with them here, once, before anyone stores it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from underlay.api.errors import UnderlayError
from underlay.shared.redact import SECRET_WORDS, redact

if TYPE_CHECKING:
    from underlay.api.tool_runtime import McpConnection, ToolInvocationResult


def connection_secrets(connection: McpConnection | None) -> tuple[str, ...]:
    """Every header value the connection sends (and the credential after an auth scheme such as
    ``Bearer``), plus stdio environment values under secret-looking names."""
    if connection is None:
        return ()
    values: list[str] = []
    for value in connection.headers.values():
        values.append(value)
        scheme, _, credential = value.partition(" ")
        if credential and scheme.isalpha():
            values.append(credential.strip())
    if connection.stdio is not None:
        values += [v for k, v in connection.stdio.env.items() if any(w in k.lower() for w in SECRET_WORDS)]
    return tuple(v for v in values if len(v) >= 4)


def mask(text: str, connection: McpConnection | None) -> str:
    """``text`` with the connection's credentials, the config's secrets and generic secret shapes masked."""
    return redact(text, extra=connection_secrets(connection))


def mask_error(error: UnderlayError, connection: McpConnection | None) -> UnderlayError:
    """The same error, its message masked (in place, so its type, status and code are kept)."""
    masked = mask(error.message, connection)
    if masked != error.message:
        error.message = masked
        error.args = (masked,)
    return error


def mask_result(result: ToolInvocationResult, connection: McpConnection | None) -> ToolInvocationResult:
    """An error result's message and text parts masked (a server's error text may quote the request);
    a successful result is the tool's answer and is left as it is."""
    if not result.error_message:
        return result
    secrets = connection_secrets(connection)
    update: dict[str, object] = {"error_message": redact(result.error_message, extra=secrets)}
    if isinstance(result.content, str):
        update["content"] = redact(result.content, extra=secrets)
    elif result.content:
        update["content"] = [
            part.model_copy(update={"text": redact(part.text, extra=secrets)})
            if isinstance(getattr(part, "text", None), str)
            else part
            for part in result.content
        ]
    return result.model_copy(update=update)
