"""What a provider declares about itself (``ProviderSpec``) and what every provider instance offers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from underlay.api.base import ApiModel

__all__ = ["Api", "Provider", "ProviderInfo", "ProviderSpec"]


class Api(StrEnum):
    """The APIs a run config can switch on. External packages may add more by entry point."""

    inference = "inference"
    models = "models"
    files = "files"
    vector_io = "vector_io"
    vector_stores = "vector_stores"
    conversations = "conversations"
    prompts = "prompts"
    tool_runtime = "tool_runtime"
    responses = "responses"
    safety = "safety"


@dataclass(frozen=True)
class ProviderSpec:
    """The registry entry for one provider type.

    ``factory`` is a dotted path ``module:function``; the function is called as
    ``await factory(provider_id, config, deps)`` where ``config`` is an instance of ``config_class`` and ``deps``
    maps each API in ``api_dependencies`` to its router. Keeping it a string means listing providers
    (``underlay providers``) never imports their heavy dependencies.
    """

    api: str
    provider_type: str
    config_class: str
    factory: str
    pip_packages: tuple[str, ...] = ()
    extras: tuple[str, ...] = ()
    api_dependencies: tuple[str, ...] = ()
    optional_api_dependencies: tuple[str, ...] = ()
    description: str = ""
    secret_fields: tuple[str, ...] = field(default=("api_key", "password", "token", "secret"))

    @property
    def is_remote(self) -> bool:
        return self.provider_type.startswith("remote::")


@runtime_checkable
class Provider(Protocol):
    """Lifecycle every provider instance implements."""

    provider_id: str

    async def initialize(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def health(self) -> dict[str, Any]: ...


class ProviderInfo(ApiModel):
    """One configured provider as ``GET /v1/providers`` shows it (secrets redacted)."""

    api: str
    provider_id: str
    provider_type: str
    config: dict[str, Any]
    health: dict[str, Any] | None = None
