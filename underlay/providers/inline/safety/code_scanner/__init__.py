"""``inline::code-scanner``: the shield's config and provider; the rules and the scanner are in :mod:`.rules`.

Why two modules: the rules are regular expressions compiled when their module is imported, which cost
every start about 3 ms of CPU before any request had asked for a scan (bench/startup.py). The stack
imports this package to build the shield; the first scan (or health check) imports the rules.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from underlay.api.safety import RunShieldResponse, SafetyViolation, Shield, ShieldMessage, ViolationLevel

if TYPE_CHECKING:
    from underlay.providers.inline.safety.code_scanner.rules import Rule


class Config(BaseModel):
    disabled_rules: list[str] = Field(default_factory=list, description="Rule ids to skip.")
    roles: list[str] = Field(
        default_factory=lambda: ["assistant"],
        description="Which messages are scanned: the model's code by default, not the user's question.",
    )
    violation_level: ViolationLevel = ViolationLevel.error


class CodeScannerSafetyProvider:
    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config

    @functools.cached_property
    def rules(self) -> tuple[Rule, ...]:
        """The rules this shield runs: all but ``disabled_rules``."""
        from underlay.providers.inline.safety.code_scanner.rules import RULES

        return tuple(r for r in RULES if r.rule_id not in set(self.config.disabled_rules))

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def health(self) -> dict[str, Any]:
        return {"status": "OK", "rules": len(self.rules)}

    async def run_shield(
        self, shield: Shield, messages: list[ShieldMessage], params: dict[str, Any]
    ) -> RunShieldResponse:
        from underlay.providers.inline.safety.code_scanner.rules import scan

        roles = set(params.get("roles") or self.config.roles)
        if params.get("source") == "moderation":  # moderation input has no author: scan it whatever its role
            roles = {m.role for m in messages}
        findings = [f for m in messages if m.role in roles for f in scan(m.text(), self.rules)]
        if not findings:
            return RunShieldResponse()
        cwes = sorted({f.cwe for f in findings})
        return RunShieldResponse(
            violation=SafetyViolation(
                violation_level=ViolationLevel(params.get("violation_level", self.config.violation_level)),
                user_message=f"I can't provide that code: it has security weaknesses ({', '.join(cwes)}).",
                metadata={
                    "categories": [],  # insecure code is outside OpenAI's moderation taxonomy
                    "underlay_categories": [f"code:{f.rule_id}" for f in findings],
                    "findings": [f.__dict__ for f in findings],
                },
            )
        )


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> CodeScannerSafetyProvider:
    return CodeScannerSafetyProvider(provider_id, config)
