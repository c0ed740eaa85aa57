"""The Models API: registered models in OpenAI's shape, with Underlay's metadata beside it."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import Field

from underlay.api.base import ApiModel
from underlay.api.routes import Route

__all__ = [
    "DeletedModel",
    "Model",
    "ModelList",
    "ModelType",
    "ModelsApi",
    "OpenAIModel",
    "ROUTES",
    "RegisterModelRequest",
]


class ModelType(StrEnum):
    llm = "llm"
    embedding = "embedding"


class Model(ApiModel):
    """A model as stored in the routing table.

    ``identifier`` is what clients send (``provider_id/model`` or an alias); ``provider_resource_id``
    is the name the provider itself knows.
    """

    identifier: str
    provider_id: str
    provider_resource_id: str
    model_type: ModelType = ModelType.llm
    aliases: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    source: Literal["config", "discovered", "api"] = "config"
    created: int = 0

    @property
    def context_length(self) -> int | None:
        """Tokens the model holds for prompt and completion together, when its provider said so."""
        value = self.metadata.get("context_length")
        try:
            return int(value) if value is not None and int(value) > 0 else None
        except (TypeError, ValueError):
            return None

    def check_output_tokens(self, field: str, value: int | None) -> None:
        """Refuse an output limit the model can never reach (400 naming ``field``), before any work.

        Why here and not upstream: a limit past the context is either silently clamped or fails deep in
        the provider with a message about its own parameter names; the client should learn the limit.
        The prompt takes at least one token, so the most a completion can get is the context minus one.
        """
        context = self.context_length
        if value is None or context is None or value < context:
            return
        from underlay.api.errors import InvalidRequestError

        raise InvalidRequestError(
            f"Invalid '{field}': {value} is more than model '{self.identifier}' can produce; its context "
            f"length is {context} tokens for prompt and completion together, so '{field}' must be at most "
            f"{context - 1}.",
            param=field,
            code="invalid_value",
        )

    def to_openai(self) -> OpenAIModel:
        return OpenAIModel(
            id=self.identifier,
            created=self.created,
            owned_by=self.provider_id,
            provider_id=self.provider_id,
            provider_resource_id=self.provider_resource_id,
            model_type=self.model_type,
            context_length=self.metadata.get("context_length"),
            embedding_dimension=self.metadata.get("embedding_dimension"),
            aliases=self.aliases,
            metadata=self.metadata,
        )


class OpenAIModel(ApiModel):
    """OpenAI's model object plus Underlay extras (extra fields are ignored by the OpenAI SDK)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    provider_id: str
    provider_resource_id: str
    model_type: ModelType
    context_length: int | None = None
    embedding_dimension: int | None = None
    aliases: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ModelList(ApiModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


class RegisterModelRequest(ApiModel):
    model_id: str = Field(description="The id clients will use.")
    provider_id: str | None = Field(default=None, description="Which provider serves it.")
    provider_model_id: str | None = Field(default=None, description="The provider's own name for it.")
    model_type: ModelType = ModelType.llm
    metadata: dict[str, Any] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list)


class DeletedModel(ApiModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True


class ModelsApi(Protocol):
    async def list_models(self) -> ModelList: ...

    async def retrieve_model(self, model_id: str) -> OpenAIModel: ...

    async def register_model(self, params: RegisterModelRequest) -> OpenAIModel: ...

    async def delete_model(self, model_id: str) -> DeletedModel: ...


ROUTES: list[Route] = [
    Route("GET", "/v1/models", ModelsApi.list_models, response=ModelList, summary="List models", tags=("models",)),
    Route(
        "GET",
        "/v1/models/{model_id:path}",
        ModelsApi.retrieve_model,
        response=OpenAIModel,
        summary="Retrieve a model",
        tags=("models",),
    ),
    Route(
        "POST",
        "/v1/models",
        ModelsApi.register_model,
        body=RegisterModelRequest,
        response=OpenAIModel,
        summary="Register a model with a provider",
        tags=("models",),
    ),
    Route(
        "DELETE",
        "/v1/models/{model_id:path}",
        ModelsApi.delete_model,
        response=DeletedModel,
        summary="Unregister a model",
        tags=("models",),
    ),
]
