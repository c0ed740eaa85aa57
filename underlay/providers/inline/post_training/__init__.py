"""Post-training providers that train in this machine's processes; the spec the entry point names."""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

HUGGINGFACE = ProviderSpec(
    api="fine_tuning",
    provider_type="inline::huggingface",
    config_class="underlay.providers.inline.post_training.huggingface:HuggingFaceTrainerConfig",
    factory="underlay.providers.inline.post_training.huggingface:create_provider",
    pip_packages=("transformers", "peft", "gguf", "torch"),
    extras=("train",),
    description="LoRA supervised fine-tuning with transformers + PEFT on CPU (GPU when present); serves the "
    "result as a GGUF on the embedded llama.cpp provider.",
)
