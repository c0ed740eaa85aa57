"""The prompts router: the Prompts API over its SQL store.

Thin: templates and variables are checked by the contract's models, ownership by the store's queries.
The Responses engine reads prompts through :meth:`PromptsRouter.retrieve_prompt` as the caller, so a
response can only use a prompt its caller may read.
"""

from __future__ import annotations

from underlay.api.pagination import ListQuery
from underlay.api.prompts import (
    CreatePromptRequest,
    CreatePromptVersionRequest,
    Prompt,
    PromptDeleted,
    PromptList,
    PromptsApi,
    RetrievePromptQuery,
    SetDefaultVersionRequest,
    VersionListQuery,
)
from underlay.core.stores.prompts import PromptStore


def _listed(prompts: list[Prompt], has_more: bool) -> PromptList:
    return PromptList(
        data=prompts,
        first_id=prompts[0].id if prompts else None,
        last_id=prompts[-1].id if prompts else None,
        has_more=has_more,
    )


class PromptsRouter(PromptsApi):
    def __init__(self, store: PromptStore) -> None:
        self.store = store

    async def create_prompt(self, params: CreatePromptRequest) -> Prompt:
        return await self.store.create(params.prompt, params.variables or [], params.metadata)

    async def list_prompts(self, query: ListQuery) -> PromptList:
        prompts, has_more = await self.store.page(after=query.after, limit=query.limit, order=query.order)
        return _listed(prompts, has_more)

    async def retrieve_prompt(self, prompt_id: str, query: RetrievePromptQuery) -> Prompt:
        return await self.store.get(prompt_id, query.version)

    async def list_prompt_versions(self, prompt_id: str, query: VersionListQuery) -> PromptList:
        versions, has_more = await self.store.versions(
            prompt_id, after=query.after, limit=query.limit, order=query.order
        )
        # Every version shares the prompt's id; the cursor for the next page is a version number (after=N).
        return _listed(versions, has_more)

    async def create_prompt_version(self, prompt_id: str, params: CreatePromptVersionRequest) -> Prompt:
        return await self.store.add_version(
            prompt_id, params.prompt, params.variables or [], params.metadata, params.set_as_default
        )

    async def set_default_version(self, prompt_id: str, params: SetDefaultVersionRequest) -> Prompt:
        return await self.store.set_default(prompt_id, params.version)

    async def delete_prompt(self, prompt_id: str) -> PromptDeleted:
        await self.store.delete(prompt_id)
        return PromptDeleted(id=prompt_id)
