"""In-process safety providers: PII detection, insecure-code rules, a guard prompt over any model, Llama
Guard and the prompt-injection classifier; the specs the entry points name."""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

PII = ProviderSpec(
    api="safety",
    provider_type="inline::pii",
    config_class="underlay.providers.inline.safety.pii:Config",
    factory="underlay.providers.inline.safety.pii:create_provider",
    description="Personal data (emails, phones, cards with Luhn, IBAN with mod-97, US SSN, IPs); redaction.",
)

CODE_SCANNER = ProviderSpec(
    api="safety",
    provider_type="inline::code-scanner",
    config_class="underlay.providers.inline.safety.code_scanner:Config",
    factory="underlay.providers.inline.safety.code_scanner:create_provider",
    description="Insecure-code rules (injection, shell=True, secrets, weak hashes, TLS off...), each with a CWE.",
)

GUARD_PROMPT = ProviderSpec(
    api="safety",
    provider_type="inline::guard-prompt",
    config_class="underlay.providers.inline.safety.guard_prompt:Config",
    factory="underlay.providers.inline.safety.guard_prompt:create_provider",
    api_dependencies=("inference",),
    description="Any chat model asked a guard prompt with the MLCommons hazards (S1-S14); weak on small models.",
)

LLAMA_GUARD = ProviderSpec(
    api="safety",
    provider_type="inline::llama-guard",
    config_class="underlay.providers.inline.safety.llama_guard:Config",
    factory="underlay.providers.inline.safety.llama_guard:create_provider",
    api_dependencies=("inference",),
    description="A real Llama Guard model served by an inference provider (vLLM, Ollama...); refuses other models.",
)

PROMPT_GUARD = ProviderSpec(
    api="safety",
    provider_type="inline::prompt-guard",
    config_class="underlay.providers.inline.safety.prompt_guard:Config",
    factory="underlay.providers.inline.safety.prompt_guard:create_provider",
    description="Prompt-injection and jailbreak detection by a small classifier trained on public prompts.",
)
