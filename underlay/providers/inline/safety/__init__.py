"""In-process safety providers: PII detection, insecure-code rules and the prompt-injection classifier;
the specs the entry points name. (The guard prompt and Llama Guard are in ``underlay.providers.safety.guard``.)"""

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


PROMPT_GUARD = ProviderSpec(
    api="safety",
    provider_type="inline::prompt-guard",
    config_class="underlay.providers.inline.safety.prompt_guard:Config",
    factory="underlay.providers.inline.safety.prompt_guard:create_provider",
    description="Prompt-injection and jailbreak detection by a small classifier trained on public prompts.",
)
