"""Stored prompts (the Prompts API) as MCP prompts on ``/mcp``.

Why: an MCP host lets its user pick a prompt from a menu; serving the caller's stored prompts there
means the instructions a team keeps in ``/v1/prompts`` are the same ones an IDE or agent host offers,
with no copy to drift. Each prompt is listed under its id (``pmpt_...``) at its default version, its
declared variables as required arguments; getting it renders the template with the arguments, by the
same bounded substitution the Responses API uses. Everything goes through the prompts router as the
caller, so the access policy applies: another tenant's prompt is unknown here, as it is over REST.
The ``pmpt_`` names are Underlay's: an upstream tool group's prompt with such a name is never used.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError

from underlay.api.errors import NotFoundError, UnderlayError
from underlay.api.pagination import ListQuery
from underlay.api.prompts import Prompt, RetrievePromptQuery, render_template

PREFIX = "pmpt_"
LISTED = 100
"""How many of the caller's prompts (newest first) a listing shows."""


def _title(prompt: Prompt) -> str:
    title = prompt.metadata.get("title")
    if title:
        return title
    first = prompt.prompt.strip().splitlines()[0] if prompt.prompt.strip() else prompt.id
    return first if len(first) <= 60 else first[:57] + "..."


def _as_mcp(prompt: Prompt) -> types.Prompt:
    return types.Prompt(
        name=prompt.id,
        title=_title(prompt),
        description=f"Stored prompt, version {prompt.version} (its default).",
        arguments=[types.PromptArgument(name=name, required=True) for name in prompt.variables],
    )


async def stored_prompts(routers: dict[str, Any]) -> list[types.Prompt]:
    """The caller's prompts, as MCP lists them (none when the prompts API is off)."""
    router = routers.get("prompts")
    if router is None:
        return []
    try:
        page = await router.list_prompts(ListQuery(limit=LISTED))
    except UnderlayError as exc:
        raise MCPError(types.INTERNAL_ERROR, exc.message) from None
    return [_as_mcp(p) for p in page.data]


async def get_stored_prompt(
    routers: dict[str, Any], name: str, arguments: dict[str, str]
) -> types.GetPromptResult | None:
    """The rendered prompt, or ``None`` when ``name`` is not a stored prompt's kind of name."""
    router = routers.get("prompts")
    if router is None or not name.startswith(PREFIX):
        return None
    try:
        prompt: Prompt = await router.retrieve_prompt(name, RetrievePromptQuery())
    except NotFoundError:
        raise MCPError(types.INVALID_PARAMS, f"Unknown prompt '{name[:100]}'; prompts/list shows yours.") from None
    except UnderlayError as exc:
        raise MCPError(types.INTERNAL_ERROR, exc.message) from None
    what = f"prompt '{prompt.id}' version {prompt.version}"
    try:
        text = render_template(prompt.prompt, prompt.variables, arguments, param="arguments", what=what)
    except UnderlayError as exc:
        raise MCPError(types.INVALID_PARAMS, exc.message) from None
    return types.GetPromptResult(
        description=f"{_title(prompt)} (version {prompt.version})",
        messages=[types.PromptMessage(role="user", content=types.TextContent(type="text", text=text))],
    )
