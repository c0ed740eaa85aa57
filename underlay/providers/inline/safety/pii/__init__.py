"""``inline::pii``: the shield's config and provider; the detectors and their sources are in :mod:`.detectors`.

Why two modules: the detectors compile a few dozen regular expressions and read the street-type list
when they are imported, which cost every start about 8 ms of CPU before any request had asked for a
check (bench/startup.py). The stack imports this package to build the shield; its first check imports
the detectors.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from underlay.api.safety import RunShieldResponse, SafetyViolation, Shield, ShieldMessage, ViolationLevel

ALL_KINDS = ("email", "phone", "credit_card", "iban", "us_ssn", "ip_address", "street_address", "person_name")


class Config(BaseModel):
    kinds: list[str] = Field(default_factory=lambda: list(ALL_KINDS), description="Which detectors run.")
    redact: bool = Field(default=True, description="Put the redacted messages in the violation's metadata.")
    violation_level: ViolationLevel = Field(
        default=ViolationLevel.error, description="error blocks; warn reports and lets content through."
    )


class PiiSafetyProvider:
    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def health(self) -> dict[str, Any]:
        return {"status": "OK"}

    async def run_shield(
        self, shield: Shield, messages: list[ShieldMessage], params: dict[str, Any]
    ) -> RunShieldResponse:
        from underlay.providers.inline.safety.pii.detectors import find_pii, redact

        kinds = params.get("kinds") or self.config.kinds
        per_message = [(m, find_pii(m.text(), kinds)) for m in messages]
        findings = [(i, f) for i, (_, fs) in enumerate(per_message) for f in fs]
        if not findings:
            return RunShieldResponse()
        labels = sorted({f.kind for _, f in findings})
        metadata: dict[str, Any] = {
            "categories": [],  # personal data has no OpenAI moderation category (MLCommons S7 "privacy")
            "underlay_categories": [f"pii:{k}" for k in labels],
            "findings": [{"message": i, "kind": f.kind, "start": f.start, "end": f.end} for i, f in findings],
        }
        if params.get("redact", self.config.redact):
            metadata["redacted"] = [redact(m.text(), fs) for m, fs in per_message]
        level = ViolationLevel(params.get("violation_level", self.config.violation_level))
        return RunShieldResponse(
            violation=SafetyViolation(
                violation_level=level,
                user_message=f"I can't share that: it contains personal data ({', '.join(labels)}).",
                metadata=metadata,
            )
        )


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> PiiSafetyProvider:
    return PiiSafetyProvider(provider_id, config)
