"""Safety providers that call other services; the specs the entry points name."""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

PASSTHROUGH = ProviderSpec(
    api="safety",
    provider_type="remote::passthrough",
    config_class="underlay.providers.remote.safety.passthrough:Config",
    factory="underlay.providers.remote.safety.passthrough:create_provider",
    description="Any OpenAI-compatible /v1/moderations endpoint.",
)

BEDROCK = ProviderSpec(
    api="safety",
    provider_type="remote::bedrock",
    config_class="underlay.providers.remote.safety.bedrock:Config",
    factory="underlay.providers.remote.safety.bedrock:create_provider",
    pip_packages=("aiobotocore==3.10.0",),
    extras=("s3",),
    description="An Amazon Bedrock guardrail (ApplyGuardrail).",
)
