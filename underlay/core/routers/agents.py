"""The agents router: the Agents API over its SQL store.

Thin: definitions are checked by the contract's models, ownership by the store's queries. The inference
and Responses routers resolve ``agent/<name>[@version]`` through :meth:`AgentsRouter.retrieve_agent` as
the caller, so a caller can only run an agent it may read.
"""

from __future__ import annotations

import json
import time

from pydantic import ValidationError

from underlay.api.agents import (
    AgentDeleted,
    AgentList,
    AgentObject,
    AgentsApi,
    AgentVersionListQuery,
    DeployAgentRequest,
    RetrieveAgentQuery,
    SetAgentDefaultRequest,
    parse_agent_model,
)
from underlay.api.errors import InvalidRequestError, NotFoundError
from underlay.api.pagination import ListQuery
from underlay.api.responses import CreateResponseRequest
from underlay.core.identity import current_principal
from underlay.core.stores.agents import AgentStore


def _listed(agents: list[AgentObject], has_more: bool) -> AgentList:
    return AgentList(
        data=agents,
        first_id=agents[0].id if agents else None,
        last_id=agents[-1].id if agents else None,
        has_more=has_more,
    )


RESOLVE_TTL_S = 1.0
"""How long a resolved ``agent/<name>`` is reused by this process. Why a cache: resolving costs two SQL
reads, and on SQLite those wait their turn behind the server's background writes (spans, job claims),
which added ~10 ms to a call (bench/agent_invoke.py). Writes made through this process clear it at once;
a deploy, rollback or delete made through another worker is seen within this many seconds."""
_RESOLVE_CACHE_SIZE = 1024


class AgentsRouter(AgentsApi):
    def __init__(self, store: AgentStore) -> None:
        self.store = store
        self._resolved: dict[tuple[str | None, str, str, int | None], tuple[float, AgentObject]] = {}

    async def resolve(self, name: str, version: int | None) -> AgentObject:
        """The agent a caller's ``model="agent/<name>[@version]"`` runs: as :meth:`retrieve_agent`, reused
        for :data:`RESOLVE_TTL_S` per principal (keyed by its id and attributes, so access is unchanged)."""
        principal = current_principal()
        key = (principal.id, json.dumps(principal.attributes, sort_keys=True, default=str), name, version)
        now = time.monotonic()
        hit = self._resolved.get(key)
        if hit is not None and now - hit[0] < RESOLVE_TTL_S:
            return hit[1]
        agent = await self.store.get(name, version)
        if len(self._resolved) >= _RESOLVE_CACHE_SIZE:
            self._resolved.clear()
        self._resolved[key] = (now, agent)
        return agent

    async def deploy_agent(self, params: DeployAgentRequest) -> AgentObject:
        self._resolved.clear()
        return await self.store.deploy(params.definition(), params.set_as_default)

    async def list_agents(self, query: ListQuery) -> AgentList:
        agents, has_more = await self.store.page(after=query.after, limit=query.limit, order=query.order)
        return _listed(agents, has_more)

    async def retrieve_agent(self, agent_name: str, query: RetrieveAgentQuery) -> AgentObject:
        return await self.store.get(agent_name, query.version)

    async def list_agent_versions(self, agent_name: str, query: AgentVersionListQuery) -> AgentList:
        versions, has_more = await self.store.versions(
            agent_name, after=query.after, limit=query.limit, order=query.order
        )
        return _listed(versions, has_more)

    async def set_default_agent_version(self, agent_name: str, params: SetAgentDefaultRequest) -> AgentObject:
        self._resolved.clear()
        return await self.store.set_default(agent_name, params.version)

    async def delete_agent(self, agent_name: str) -> AgentDeleted:
        self._resolved.clear()
        agent_id = await self.store.delete(agent_name)
        return AgentDeleted(id=agent_id, name=agent_name)


def agent_request(agent: AgentObject, params: CreateResponseRequest) -> CreateResponseRequest:
    """``params`` (whose model named ``agent``) as the Responses request that runs the agent's loop.

    The agent's model, instructions or prompt, tools and shields, with the caller's input. What the
    caller adds is kept: its instructions follow the agent's, its tools (client-side functions) join the
    agent's, its shields join the agent's, and its sampling settings override the agent's defaults.
    """
    spec = agent.definition
    body = params.model_dump(exclude_none=True)
    body["model"] = spec.model
    if spec.prompt is not None:
        if params.prompt is not None:
            raise InvalidRequestError(
                f"Agent '{agent.name}' takes its instructions from a stored prompt; leave out prompt.",
                param="prompt",
            )
        version = None if spec.prompt.version is None else str(spec.prompt.version)
        body["prompt"] = {"id": spec.prompt.id, "version": version, "variables": spec.prompt.variables}
    elif spec.instructions:
        extra = params.instructions
        body["instructions"] = spec.instructions if not extra else f"{spec.instructions}\n\n{extra}"
    if spec.tools:
        body["tools"] = [*spec.tools, *body.get("tools", [])]
    if spec.guardrails:
        extra_shields = body.get("guardrails") or []
        body["guardrails"] = list(dict.fromkeys([*spec.guardrails, *extra_shields]))
    for name in ("temperature", "max_output_tokens", "max_tool_calls", "tool_choice"):
        value = getattr(spec, name)
        if value is not None and body.get(name) is None:
            body[name] = value
    try:
        return CreateResponseRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequestError(
            f"Agent '{agent.name}' version {agent.version} cannot run with this request: {where}: {first['msg']}.",
            param=where or None,
        ) from None


async def resolve_agent(agents: AgentsRouter | None, model: str) -> AgentObject | None:
    """The agent ``model`` names (``agent/<name>[@version]``), as the caller; ``None`` for a plain model."""
    try:
        parsed = parse_agent_model(model)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="model", code="invalid_agent_model") from None
    if parsed is None:
        return None
    if agents is None:
        raise InvalidRequestError(
            f"'{model[:80]}' names a deployed agent, but the agents API is off on this server; add agents to apis.",
            param="model",
        )
    name, version = parsed
    try:
        return await agents.resolve(name, version)
    except NotFoundError as exc:
        raise NotFoundError(
            "Agent", model, param="model", hint="List the agents you can call with GET /v1/agents."
        ) from exc
