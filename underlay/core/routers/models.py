"""The models router: the Models API over the routing table."""

from __future__ import annotations

from underlay.api.errors import InvalidRequestError
from underlay.api.models import DeletedModel, Model, ModelList, ModelsApi, OpenAIModel, RegisterModelRequest
from underlay.core.routing.models import ModelsRoutingTable


class ModelsRouter(ModelsApi):
    def __init__(self, table: ModelsRoutingTable) -> None:
        self.table = table

    async def list_models(self) -> ModelList:
        return ModelList(data=[m.to_openai() for m in await self.table.list()])

    async def retrieve_model(self, model_id: str) -> OpenAIModel:
        return (await self.table.get(model_id, param=None)).to_openai()

    async def register_model(self, params: RegisterModelRequest) -> OpenAIModel:
        provider_id = params.provider_id
        if provider_id is None:
            if len(self.table.providers) != 1:
                raise InvalidRequestError(
                    f"provider_id is required when several providers are configured "
                    f"({', '.join(sorted(self.table.providers))}).",
                    param="provider_id",
                )
            provider_id = next(iter(self.table.providers))
        model = Model(
            identifier=params.model_id,
            provider_id=provider_id,
            provider_resource_id=params.provider_model_id or params.model_id,
            model_type=params.model_type,
            metadata=params.metadata,
            aliases=params.aliases,
            source="api",
        )
        return (await self.table.register(model)).to_openai()

    async def delete_model(self, model_id: str) -> DeletedModel:
        model = await self.table.unregister(model_id)
        return DeletedModel(id=model.identifier)
