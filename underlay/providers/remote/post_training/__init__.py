"""Post-training providers whose training runs in another service; the spec the entry point names."""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

OPENAI = ProviderSpec(
    api="fine_tuning",
    provider_type="remote::openai",
    config_class="underlay.providers.remote.post_training.openai:Config",
    factory="underlay.providers.remote.post_training.openai:create_provider",
    description="Fine-tuning jobs forwarded to OpenAI (or a service that clones its fine-tuning and files API); "
    "tuned models are served by a remote::openai inference provider.",
)
