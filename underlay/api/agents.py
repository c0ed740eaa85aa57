"""The Agents API: deployed agents as a versioned server resource that any client can call.

An agent definition is what an agent folder's ``agent.yaml`` says once it is resolved for one
environment: a model, instructions (or a stored prompt by id and version), Responses tools, shields and
the vector store its knowledge was synced into. Deploying one adds a *version* (1, 2, 3, ...); versions
are never rewritten, and one of them is the default, so a rollback is a change of default, not a copy.

Why the name is the handle (``/v1/agents/{name}``) and not an opaque id: callers name agents in places
built for model ids (``model="agent/support-bot@3"`` from any OpenAI client, an MCP tool name), so the
name must be short, stable and URL-safe. Names are scoped to their owner: two tenants may each deploy a
``support-bot`` and neither sees the other's.

A deployed agent runs on the Responses engine: its instructions, tools and shields, the caller's messages
as input. Function tools are declared only; their calls come back to the caller, as OpenAI's API does.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field, field_validator, model_validator

from underlay.api.base import ApiModel
from underlay.api.omit import omit_when_none
from underlay.api.pagination import ListQuery
from underlay.api.response_items import check_metadata
from underlay.api.routes import Handler, Route

__all__ = [
    "AGENT_MODEL_PREFIX",
    "AgentDefinition",
    "AgentDeleted",
    "AgentKnowledge",
    "AgentList",
    "AgentObject",
    "AgentPromptRef",
    "AgentsApi",
    "DeployAgentRequest",
    "MAX_AGENT_TOOLS",
    "ROUTES",
    "RetrieveAgentQuery",
    "SetAgentDefaultRequest",
    "TOOL_TYPES",
    "AgentVersionListQuery",
    "parse_agent_model",
]

AGENT_MODEL_PREFIX = "agent/"
"""``model="agent/<name>[@version]"`` in chat completions or Responses calls a deployed agent."""

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
"""The same names an agent folder's ``agent.yaml`` allows, so every folder can be deployed as it is."""
_NAME = re.compile(NAME_PATTERN)
MAX_AGENT_TOOLS = 64
MAX_INSTRUCTIONS_CHARS = 100_000
MAX_TOOL_JSON_CHARS = 64_000
"""One tool's definition, as JSON: a function's schema or an MCP server's settings, not a document."""
MAX_FILTER_JSON_CHARS = 1_000_000
"""A ``file_search`` tool's ``filters``, as JSON, counted apart from the tool: ``deploy`` writes one
naming every knowledge file's sha256 (10,000 files, the folder's limit, is about 670,000 characters)."""

TOOL_TYPES = ("file_search", "mcp", "function", "web_search", "web_search_preview")
"""The Responses tool types an agent may bind. ``function`` tools are client-side: declared here,
executed by whoever calls the agent."""


def parse_agent_model(model: str) -> tuple[str, int | None] | None:
    """``("support-bot", 3)`` for ``"agent/support-bot@3"``, ``(name, None)`` without ``@``; ``None``
    when ``model`` does not name an agent. Raises ``ValueError`` (with the fix) for a malformed one."""
    if not model.startswith(AGENT_MODEL_PREFIX):
        return None
    rest = model[len(AGENT_MODEL_PREFIX) :]
    name, sep, version = rest.partition("@")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"'{model[:80]}' does not name an agent; use agent/<name> or agent/<name>@<version>, where the "
            "name is lowercase letters, digits, '-', '_' and '.'"
        )
    if not sep:
        return name, None
    if not version.isdigit() or len(version) > 9 or int(version) < 1:
        raise ValueError(f"'{model[:80]}' has no valid version after '@'; use a positive number, e.g. agent/{name}@2")
    return name, int(version)


# ---------------------------------------------------------------------------------------------------
# The definition
# ---------------------------------------------------------------------------------------------------


class AgentPromptRef(ApiModel):
    """A stored prompt (``/v1/prompts``) as the agent's instructions; ``version`` unset: its default."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    version: int | None = Field(default=None, ge=1)
    variables: dict[str, str] | None = None


class AgentKnowledge(ApiModel):
    """Where the agent's knowledge folder was synced: the vector store, and each file's content hash
    (relative path → sha256 hex) in this version. The store is shared by the agent's versions; the
    version's ``file_search`` tool filters it to these hashes (the files' ``sha256`` attribute)."""

    model_config = ConfigDict(extra="forbid")

    vector_store_id: str | None = Field(default=None, max_length=128)
    files: dict[str, str] = Field(default_factory=dict, max_length=100_000)


class AgentDefinition(ApiModel):
    """What one version of an agent is. Immutable once deployed."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    description: str | None = Field(default=None, max_length=2_000)
    model: str = Field(min_length=1, max_length=256)
    instructions: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS_CHARS)
    prompt: AgentPromptRef | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_AGENT_TOOLS)
    guardrails: list[str] = Field(default_factory=list, max_length=16)
    """Shield ids, checked on the input and the output as Responses' ``guardrails`` are."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=1, le=1_000)
    tool_choice: str | dict[str, Any] | None = Field(
        default=None,
        description="The first model turn's tool choice, as Responses takes it: auto, required, none, or "
        '{"type": "file_search"} to search before answering (a small model needs the nudge).',
    )
    metadata: dict[str, str] = Field(default_factory=dict)
    knowledge: AgentKnowledge | None = None

    _metadata = field_validator("metadata")(check_metadata)

    @field_validator("model")
    @classmethod
    def _not_an_agent(cls, value: str) -> str:
        if value.startswith(AGENT_MODEL_PREFIX):
            raise ValueError("an agent's model is a model id, not another agent ('agent/...')")
        return value

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(value, str) and value not in ("auto", "required", "none"):
            raise ValueError("tool_choice is auto, required, none, or an object such as {'type': 'file_search'}")
        if isinstance(value, dict) and len(json.dumps(value, default=str)) > 1_000:
            raise ValueError("tool_choice is over 1000 characters as JSON")
        return value

    @field_validator("tools")
    @classmethod
    def _tools(cls, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, tool in enumerate(tools):
            kind = tool.get("type")
            if kind not in TOOL_TYPES:
                raise ValueError(f"tools[{index}].type must be one of {', '.join(TOOL_TYPES)} (got {str(kind)[:40]!r})")
            rest = {k: v for k, v in tool.items() if not (kind == "file_search" and k == "filters")}
            if len(json.dumps(rest, default=str)) > MAX_TOOL_JSON_CHARS:
                raise ValueError(f"tools[{index}] is over {MAX_TOOL_JSON_CHARS} characters as JSON")
            if kind == "file_search" and len(json.dumps(tool.get("filters"), default=str)) > MAX_FILTER_JSON_CHARS:
                raise ValueError(f"tools[{index}].filters is over {MAX_FILTER_JSON_CHARS} characters as JSON")
            if kind == "function" and not isinstance(tool.get("name"), str):
                raise ValueError(f"tools[{index}] is a function tool without a 'name'")
            if kind == "mcp" and not isinstance(tool.get("server_label"), str):
                raise ValueError(f"tools[{index}] is an mcp tool without a 'server_label'")
            if kind == "file_search" and not isinstance(tool.get("vector_store_ids"), list):
                raise ValueError(f"tools[{index}] is a file_search tool without 'vector_store_ids'")
        return tools

    @model_validator(mode="after")
    def _one_instruction_source(self) -> AgentDefinition:
        if self.instructions is not None and self.prompt is not None:
            raise ValueError("give instructions or prompt, not both")
        return self


class DeployAgentRequest(AgentDefinition):
    """``POST /v1/agents``: the definition; a new name makes version 1, a known one the next version."""

    set_as_default: bool = True

    def definition(self) -> AgentDefinition:
        return AgentDefinition.model_validate(self.model_dump(exclude={"set_as_default"}))


# ---------------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------------


class AgentObject(ApiModel):
    """One version of a deployed agent. ``id`` is the agent's (every version shares it)."""

    id: str
    object: Literal["agent"] = "agent"
    name: str
    version: int
    is_default: bool
    default_version: int
    latest_version: int
    created_at: int
    definition: AgentDefinition


class AgentList(ApiModel):
    object: Literal["list"] = "list"
    data: list[AgentObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    _omit = omit_when_none("first_id", "last_id")


class AgentDeleted(ApiModel):
    id: str
    name: str
    object: Literal["agent.deleted"] = "agent.deleted"
    deleted: bool = True


# ---------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------


class SetAgentDefaultRequest(ApiModel):
    """Roll back (or forward): make ``version`` the one ``agent/<name>`` runs."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)


class RetrieveAgentQuery(ApiModel):
    """``version`` unset: the default version."""

    version: int | None = Field(default=None, ge=1)


class AgentVersionListQuery(ApiModel):
    """An agent's versions by number: ``after`` is a version number (the cursor), ``desc`` newest first."""

    after: int | None = Field(default=None, ge=0)
    limit: int = Field(default=20, ge=1, le=100)
    order: Literal["asc", "desc"] = "desc"

    @field_validator("after", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return None if value == "" else value


# ---------------------------------------------------------------------------------------------------
# The router's contract and the routes
# ---------------------------------------------------------------------------------------------------


class AgentsApi(Protocol):
    """The agents router: one method per route below, as the current principal.

    The inference and Responses routers call :meth:`retrieve_agent` to resolve ``agent/<name>[@v]``, so
    a caller can only run an agent it may read.
    """

    async def deploy_agent(self, params: DeployAgentRequest) -> AgentObject: ...

    async def list_agents(self, query: ListQuery) -> AgentList:
        """Each agent once, at its default version."""
        ...

    async def retrieve_agent(self, agent_name: str, query: RetrieveAgentQuery) -> AgentObject: ...

    async def list_agent_versions(self, agent_name: str, query: AgentVersionListQuery) -> AgentList: ...

    async def set_default_agent_version(self, agent_name: str, params: SetAgentDefaultRequest) -> AgentObject: ...

    async def delete_agent(self, agent_name: str) -> AgentDeleted:
        """The agent and every version of it."""
        ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("agents",), **kwargs)


_A = "/v1/agents/{agent_name}"

ROUTES: list[Route] = [
    _route(
        "POST",
        "/v1/agents",
        AgentsApi.deploy_agent,
        "Deploy an agent (a new name is version 1; a known one gets the next version)",
        body=DeployAgentRequest,
        response=AgentObject,
    ),
    _route("GET", "/v1/agents", AgentsApi.list_agents, "List agents", query=ListQuery, response=AgentList),
    _route(
        "GET",
        _A,
        AgentsApi.retrieve_agent,
        "Retrieve an agent (its default version, or ?version=N)",
        query=RetrieveAgentQuery,
        response=AgentObject,
    ),
    _route(
        "GET",
        f"{_A}/versions",
        AgentsApi.list_agent_versions,
        "List an agent's versions",
        query=AgentVersionListQuery,
        response=AgentList,
    ),
    _route(
        "POST",
        f"{_A}/set_default_version",
        AgentsApi.set_default_agent_version,
        "Make a version the agent's default (rollback)",
        body=SetAgentDefaultRequest,
        response=AgentObject,
    ),
    _route("DELETE", _A, AgentsApi.delete_agent, "Delete an agent and all its versions", response=AgentDeleted),
]
