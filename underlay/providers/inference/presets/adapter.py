"""The config classes and factories behind the OpenAI-compatible presets, built from the table.

Each preset row of :mod:`underlay.providers.inference.presets` becomes a ``<name>_config``
class and a ``create_<name>`` factory here, which its ``ProviderSpec`` names. Everything else is the
shared OpenAI-compatible base: retries, streaming, error mapping, credentials per request.

Where the host lives: ``base_url`` in the config, else the preset's ``*_BASE_URL`` / ``*_URL``
environment variable, else the preset's default. A local server's bare ``http://host:port`` gets
``/v1`` appended, as for vLLM.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic import Field, SecretStr, field_validator

from underlay.providers.inference.presets import PRESETS, Preset
from underlay.providers.utils.openai_compat import (
    OpenAICompatInferenceProvider,
    OpenAICompatSettings,
    check_http_url,
    with_v1,
)

__all__ = ["PresetConfig", "PresetInferenceProvider", "config_class", "provider_class"]


class PresetConfig(OpenAICompatSettings):
    """Where the host lives and its key; both usually come from the environment."""

    preset: ClassVar[Preset]

    base_url: str = Field(
        default="",
        validate_default=True,
        description="The OpenAI-compatible base URL (default: the preset's environment variable, then its default).",
    )
    api_key: SecretStr | None = Field(default=None, description="The API key (a secret); default from the environment.")

    @field_validator("base_url")
    @classmethod
    def _resolve_base_url(cls, value: str) -> str:
        preset = cls.preset
        value = value or os.environ.get(preset.url_env, "") or (preset.base_url or "")
        if not value:
            raise ValueError(
                f"{preset.label} needs an address: set base_url in the config or the {preset.url_env} "
                "environment variable"
            )
        value = check_http_url(value)
        return value if preset.hosted else with_v1(value)

    def endpoint(self) -> str:
        return self.base_url.rstrip("/")

    def configured_api_key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None


class PresetInferenceProvider(OpenAICompatInferenceProvider):
    """The shared base with the preset's key variable and per-request key name."""

    preset: ClassVar[Preset]


def _build(preset: Preset) -> tuple[type[PresetConfig], type[PresetInferenceProvider]]:
    camel = "".join(part.capitalize() for part in preset.ident.split("_"))
    config = type(
        f"{camel}Config",
        (PresetConfig,),
        {"preset": preset, "__doc__": f"{preset.label}: the key from ${preset.key_env} is usually all it needs."},
    )
    provider = type(
        f"{camel}InferenceProvider",
        (PresetInferenceProvider,),
        {
            "preset": preset,
            "api_key_env": preset.key_env,
            "provider_data_key": preset.provider_data_key,
            "requires_api_key": preset.hosted,
            "__doc__": f"``{preset.provider_type}``: {preset.label}.",
        },
    )
    return config, provider


_CONFIGS: dict[str, type[PresetConfig]] = {}
_PROVIDERS: dict[str, type[PresetInferenceProvider]] = {}


def _factory(name: str) -> Any:
    async def create_provider(provider_id: str, config: PresetConfig, deps: dict[str, Any]) -> PresetInferenceProvider:
        return _PROVIDERS[name](provider_id, config)

    create_provider.__name__ = f"create_{PRESETS[name].ident}"
    return create_provider


for _preset in PRESETS.values():
    _CONFIGS[_preset.name], _PROVIDERS[_preset.name] = _build(_preset)
    # The names each ProviderSpec points to (see Preset.spec).
    globals()[f"{_preset.ident}_config"] = _CONFIGS[_preset.name]
    globals()[f"create_{_preset.ident}"] = _factory(_preset.name)


def config_class(name: str) -> type[PresetConfig]:
    """The config class of the preset called ``name`` (``together``, ``groq``…)."""
    return _CONFIGS[name]


def provider_class(name: str) -> type[PresetInferenceProvider]:
    """The provider class of the preset called ``name``."""
    return _PROVIDERS[name]
