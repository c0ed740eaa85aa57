"""``inline::llama-guard``: a real Llama Guard model, served by an inference provider, as a shield.

Why a separate type from ``inline::guard-prompt``: the name promises Meta's trained safety classifier
(Llama Guard 3 / 4 on vLLM, Ollama or any OpenAI-compatible server), whose figures are far above a
general chat model asked to play guard. So this type refuses a model whose name does not say Llama
Guard, at start-up with one config line (an old config that pointed it at the embedded chat model is
told to rename it ``inline::guard-prompt``) and per request for a ``model`` param.

By default the conversation goes as is (``prompt_style: native``): a Llama Guard chat template builds
the guard prompt and the S1-S14 list itself. ``instruction`` sends our guard prompt instead, for a
server that serves the model without its template. Verdicts are read as in :mod:`.prompt`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from underlay.api.errors import ConfigError, InvalidRequestError
from underlay.api.safety import RunShieldResponse, Shield, ShieldMessage
from underlay.providers.safety.guard.prompt import (
    HAZARDS,
    OPENAI_CATEGORIES,
    GuardPromptSafetyProvider,
    Verdict,
    guard_prompt,
    parse_verdict,
)
from underlay.providers.safety.guard.prompt import Config as GuardPromptConfig

__all__ = ["HAZARDS", "OPENAI_CATEGORIES", "Verdict", "guard_prompt", "parse_verdict", "Config"]

EXAMPLES = "e.g. vllm/meta-llama/Llama-Guard-3-1B or ollama/llama-guard3:1b"


def is_llama_guard_model(model: str) -> bool:
    """Whether a model id names a Llama Guard model (``Llama-Guard-3-8B``, ``llama-guard3:1b``, ...)."""
    return "llamaguard" in re.sub(r"[^a-z]", "", model.lower())


class Config(GuardPromptConfig):
    model: str = Field(description=f"A Llama Guard model the inference API serves ({EXAMPLES}).")
    prompt_style: Literal["native", "instruction"] = Field(
        default="native",
        description="native: the conversation as is (the model's chat template builds the guard prompt); "
        "instruction: our guard prompt in one user message, for a server without that template.",
    )


class LlamaGuardSafetyProvider(GuardPromptSafetyProvider):
    config: Config

    def __init__(self, provider_id: str, config: Config, inference: Any) -> None:
        super().__init__(provider_id, config, inference)
        self.native = config.prompt_style == "native"

    async def run_shield(
        self, shield: Shield, messages: list[ShieldMessage], params: dict[str, Any]
    ) -> RunShieldResponse:
        model = self.guard_model(shield, params)
        if not is_llama_guard_model(model):
            raise InvalidRequestError(
                f"shield '{shield.identifier}' is inline::llama-guard and needs a Llama Guard model, not "
                f"'{model[:100]}'; name one ({EXAMPLES}) or use a shield of type inline::guard-prompt",
                param="params.model",
            )
        return await super().run_shield(shield, messages, params)


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> LlamaGuardSafetyProvider:
    if not is_llama_guard_model(config.model):
        raise ConfigError(
            f"providers.safety[{provider_id}].config.model: inline::llama-guard needs a Llama Guard model "
            f"({EXAMPLES}), not '{config.model[:100]}'; for a guard prompt over a general chat model rename "
            "provider_type to inline::guard-prompt (the shield it served was renamed guard-prompt)"
        )
    return LlamaGuardSafetyProvider(provider_id, config, deps["inference"])
