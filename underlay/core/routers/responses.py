"""The responses router: hands each call to the Responses provider (normally the one ``inline::builtin``).

Thin by design; the loop, storage and background work live in the provider. With several providers
configured, the first one serves (a Responses deployment has one engine).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from underlay.api.responses import (
    CompactedResponse,
    CompactRequest,
    CreateResponseRequest,
    InputItemList,
    InputItemsQuery,
    ListResponsesQuery,
    ResponseDeleted,
    ResponseEvent,
    ResponseList,
    ResponseObject,
    ResponsesApi,
    ResponsesProvider,
    RetrieveResponseQuery,
)
from underlay.core.access import acting_for, require_create
from underlay.core.routers.agents import AgentsRouter, agent_request, resolve_agent


class ResponsesRouter(ResponsesApi):
    def __init__(self, providers: dict[str, Any], agents: AgentsRouter | None = None) -> None:
        self.provider: ResponsesProvider = next(iter(providers.values()))
        self.agents = agents
        """The agents router when that API is on: ``model="agent/<name>[@version]"`` runs a deployed agent."""

    async def create_response(self, params: CreateResponseRequest) -> ResponseObject | AsyncIterator[ResponseEvent]:
        agent = await resolve_agent(self.agents, params.model)
        if agent is not None:
            params = agent_request(agent, params)
        if params.store is not False:  # refuse before any model time is spent, not when storing the result
            require_create("response", "")
        return await self.provider.create_response(params)

    async def get_response(
        self, response_id: str, query: RetrieveResponseQuery
    ) -> ResponseObject | AsyncIterator[ResponseEvent]:
        return await self.provider.get_response(response_id, query)

    async def delete_response(self, response_id: str) -> ResponseDeleted:
        with acting_for("delete"):  # refused before the provider cancels a running job, not after
            return await self.provider.delete_response(response_id)

    async def cancel_response(self, response_id: str) -> ResponseObject:
        with acting_for("update"):
            return await self.provider.cancel_response(response_id)

    async def list_responses(self, query: ListResponsesQuery) -> ResponseList:
        return await self.provider.list_responses(query)

    async def list_input_items(self, response_id: str, query: InputItemsQuery) -> InputItemList:
        return await self.provider.list_input_items(response_id, query)

    async def compact_response(self, params: CompactRequest) -> CompactedResponse:
        return await self.provider.compact_response(params)
