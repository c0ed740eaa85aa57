"""``inline::pii``: personal data found by patterns plus checksums, optionally redacted.

Rules and where each comes from:

- ``email``: the common ``local@domain.tld`` form (a practical subset of RFC 5322 addr-spec).
- ``phone``: international ``+CC`` numbers (ITU-T E.164: at most 15 digits) and the North American
  ``(NXX) NXX-XXXX`` form (NANP: area code and exchange start with 2-9).
- ``credit_card``: 13-19 digits (ISO/IEC 7812 primary account numbers) that pass the Luhn check
  (ISO/IEC 7812-1 Annex B); groups of 4 separated by spaces or dashes are accepted.
- ``iban``: country code, two check digits and up to 30 alphanumerics (ISO 13616) whose mod-97
  remainder is 1 (ISO 7064 MOD 97-10).
- ``us_ssn``: ``AAA-GG-SSSS`` excluding the numbers the Social Security Administration never issues
  (area 000, 666 or 900-999; group 00; serial 0000).
- ``ip_address``: dotted IPv4 (RFC 791) with each octet 0-255, and full or ``::``-compressed IPv6
  (RFC 4291), validated with :mod:`ipaddress`.

Why checksums: a pattern alone flags order numbers and timestamps; Luhn and mod-97 cut those false
positives to the ~1 in 10 (Luhn) and ~1 in 97 (IBAN) of random digit strings that pass by chance.
Names and street addresses need a statistical recogniser and are not detected here.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from underlay.api.safety import RunShieldResponse, SafetyViolation, Shield, ShieldMessage, ViolationLevel

ALL_KINDS = ("email", "phone", "credit_card", "iban", "us_ssn", "ip_address")

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}"
    r"|\(?[2-9]\d{2}\)?[ .-]?[2-9]\d{2}[ .-]?\d{4})(?!\w)"
)
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_SSN = re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check: double every second digit from the right, sum digits, divisible by 10."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    """ISO 7064 MOD 97-10: move the first four characters to the end, letters to 10-35, remainder 1."""
    raw = candidate.replace(" ", "").upper()
    if not 15 <= len(raw) <= 34:
        return False
    rearranged = raw[4:] + raw[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


@dataclass(frozen=True)
class Finding:
    kind: str
    start: int
    end: int
    text: str


def find_pii(text: str, kinds: tuple[str, ...] | list[str] = ALL_KINDS) -> list[Finding]:
    """Every PII finding in ``text``, earliest first, without overlaps (the longest match wins)."""
    found: list[Finding] = []

    def add(kind: str, match: re.Match[str]) -> None:
        found.append(Finding(kind, match.start(), match.end(), match.group(0)))

    if "email" in kinds:
        for m in _EMAIL.finditer(text):
            add("email", m)
    if "iban" in kinds:
        for m in _IBAN.finditer(text):
            if iban_ok(m.group(0)):
                add("iban", m)
    if "credit_card" in kinds:
        for m in _CARD.finditer(text):
            digits = re.sub(r"\D", "", m.group(0))
            if 13 <= len(digits) <= 19 and luhn_ok(digits):
                add("credit_card", m)
    if "us_ssn" in kinds:
        for m in _SSN.finditer(text):
            add("us_ssn", m)
    if "ip_address" in kinds:
        for m in _IPV4.finditer(text):
            try:
                ipaddress.IPv4Address(m.group(0))
            except ValueError:
                continue
            add("ip_address", m)
        for m in _IPV6.finditer(text):
            try:
                ipaddress.IPv6Address(m.group(0))
            except ValueError:
                continue
            add("ip_address", m)
    if "phone" in kinds:
        for m in _PHONE.finditer(text):
            if len(re.sub(r"\D", "", m.group(0))) <= 15:
                add("phone", m)
    found.sort(key=lambda f: (f.start, -(f.end - f.start)))
    kept: list[Finding] = []
    for f in found:
        if kept and f.start < kept[-1].end:
            continue  # e.g. a card number also matches the phone pattern: the first, longer rule wins
        kept.append(f)
    return kept


def redact(text: str, findings: list[Finding]) -> str:
    """``text`` with each finding replaced by ``[KIND]``."""
    out, last = [], 0
    for f in findings:
        out.append(text[last : f.start])
        out.append(f"[{f.kind.upper()}]")
        last = f.end
    out.append(text[last:])
    return "".join(out)


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
