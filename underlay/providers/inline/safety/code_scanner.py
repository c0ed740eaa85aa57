"""``inline::code-scanner``: insecure-code findings in text (usually model output), by rules of our own.

CodeShield needs packages and rule files that are not available offline, so these are hand-written
line rules. Each names the CWE entry (MITRE's Common Weakness Enumeration) it detects an instance of;
the languages are Python first, with the few rules that read the same in JavaScript, PHP or shell.
They look for the unsafe *pattern*, not data flow, so they err towards flagging: a finding means
"a reviewer should look", which is the right default for code an assistant hands to a user.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from underlay.api.safety import RunShieldResponse, SafetyViolation, Shield, ShieldMessage, ViolationLevel


@dataclass(frozen=True)
class Rule:
    rule_id: str
    cwe: str
    description: str
    pattern: re.Pattern[str]


def _r(rule_id: str, cwe: str, description: str, pattern: str) -> Rule:
    return Rule(rule_id, cwe, description, re.compile(pattern, re.IGNORECASE))


RULES: tuple[Rule, ...] = (
    _r(
        "eval-of-input",
        "CWE-95",
        "eval/exec of user-controlled input (code injection)",
        r"\b(?:eval|exec)\s*\(\s*(?:input\s*\(|request\.|sys\.argv|req\.(?:body|query|params)|\$_(?:GET|POST|REQUEST))",
    ),
    _r(
        "shell-true-formatted",
        "CWE-78",
        "a shell command built by string formatting and run with shell=True (OS command injection)",
        r"subprocess\.\w+\([^)\n]*(?:f[\"']|%\s*\(|\.format\(|\+\s*\w)[^)\n]*shell\s*=\s*True",
    ),
    _r(
        "os-system-formatted",
        "CWE-78",
        "os.system/os.popen with a formatted string (OS command injection)",
        r"\bos\.(?:system|popen)\s*\(\s*(?:f[\"']|[\"'][^\"'\n]*[\"']\s*(?:%|\+|\.format))",
    ),
    _r(
        "sql-string-formatting",
        "CWE-89",
        "SQL built by string formatting instead of bound parameters (SQL injection)",
        r"\.execute(?:many)?\s*\(\s*(?:f[\"'](?:select|insert|update|delete|drop)\b"
        r"|[\"'](?:select|insert|update|delete|drop)\b[^\"'\n]*[\"']\s*(?:%|\+|\.format))",
    ),
    _r(
        "hardcoded-secret",
        "CWE-798",
        "a credential written into the source",
        r"(?:password|passwd|secret|api_?key|access_?token|private_?key)\w*[\"']?\s*[:=]\s*[\"'][^\"'\s]{6,}[\"']"
        r"|\bAKIA[0-9A-Z]{16}\b|-----BEGIN (?:RSA |EC )?PRIVATE KEY-----",
    ),
    _r(
        "weak-password-hash",
        "CWE-916",
        "a fast, unsalted hash (MD5/SHA-1) used for passwords",
        r"hashlib\.(?:md5|sha1)\s*\([^)\n]*pass|(?:md5|sha1)\s*\(\s*\$?pass",
    ),
    _r(
        "tls-verification-disabled",
        "CWE-295",
        "TLS certificate verification switched off",
        r"verify\s*=\s*False|ssl\._create_unverified_context|CERT_NONE|rejectUnauthorized\s*:\s*false"
        r"|NODE_TLS_REJECT_UNAUTHORIZED\s*=\s*[\"']?0",
    ),
    _r(
        "pickle-untrusted",
        "CWE-502",
        "unpickling data that may come from outside (deserialization of untrusted data)",
        r"\b(?:pickle|cPickle|dill)\.loads?\s*\(\s*(?!open\()[^)\n]*(?:request|recv|data|body|payload|input|socket)",
    ),
    _r(
        "yaml-unsafe-load",
        "CWE-502",
        "yaml.load without a safe loader (arbitrary object construction)",
        r"\byaml\.load\s*\((?![^)\n]*Loader\s*=\s*(?:yaml\.)?(?:Safe|CSafe)Loader)[^)\n]*\)",
    ),
    _r(
        "flask-debug",
        "CWE-489",
        "a web app run with the debugger on (remote code execution through the debug console)",
        r"\.run\([^)\n]*debug\s*=\s*True",
    ),
    _r(
        "insecure-random-token",
        "CWE-338",
        "random (not secrets) used for a token, password or key",
        r"(?:token|password|secret|key)\w*\s*=\s*[^\n]*\brandom\.(?:random|randint|choice|choices)\b",
    ),
)


@dataclass(frozen=True)
class CodeFinding:
    rule_id: str
    cwe: str
    description: str
    line: int
    snippet: str


def scan(text: str, rules: tuple[Rule, ...] = RULES) -> list[CodeFinding]:
    """Every rule hit in ``text``, by line (1-based)."""
    out: list[CodeFinding] = []
    for number, line in enumerate(text.splitlines(), start=1):
        for rule in rules:
            if rule.pattern.search(line):
                out.append(CodeFinding(rule.rule_id, rule.cwe, rule.description, number, line.strip()[:200]))
    return out


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
        self.rules = tuple(r for r in RULES if r.rule_id not in set(config.disabled_rules))

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def health(self) -> dict[str, Any]:
        return {"status": "OK", "rules": len(self.rules)}

    async def run_shield(
        self, shield: Shield, messages: list[ShieldMessage], params: dict[str, Any]
    ) -> RunShieldResponse:
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
