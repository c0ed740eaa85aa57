"""``inline::huggingface``: LoRA fine-tuning with transformers + PEFT in a child process.

The factory lives here (not in :mod:`.provider`) so the provider's home is this whole package:
``provider`` (server side), ``worker`` (the training process), ``data`` and ``export`` belong to it.
Nothing heavy is imported until a provider is created.
"""

from __future__ import annotations

from typing import Any

from underlay.providers.inline.post_training.huggingface.config import HuggingFaceTrainerConfig

__all__ = ["HuggingFaceTrainerConfig", "create_provider"]


async def create_provider(provider_id: str, config: Any, deps: dict[str, Any]) -> Any:
    from underlay.providers.inline.post_training.huggingface.provider import HuggingFaceTrainer

    return HuggingFaceTrainer(provider_id, config)
