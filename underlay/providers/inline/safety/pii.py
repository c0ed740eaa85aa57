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

- ``street_address``: a house number with a street name and a street-type word, in the usual US/UK
  order (``221B Baker Street``, ``1600 Pennsylvania Ave NW``), the German/Dutch order
  (``Hauptstraße 5``, ``Kerkstraat 12``), French (``10 rue de Rivoli``) and Italian/Spanish/Portuguese
  (``Via Roma 12``, ``Calle Mayor 5``); and UK postcodes (``SW1A 1AA``, Royal Mail's format).
- ``person_name``: a given name from the US Census 1990 lists followed by a surname from the same
  lists, both capitalised (``Jonathan Harker``); or a capitalised word after an honorific
  (``Dr. Seward``) or after "my name is" / "name:". Given names that are also everyday words (Will,
  May, Grace, Bill...) only count after such a cue. The lists ship in ``pii_names.txt.gz``
  (``scripts/build_pii_gazetteer.py``).

Why checksums: a pattern alone flags order numbers and timestamps; Luhn and mod-97 cut those false
positives to the ~1 in 10 (Luhn) and ~1 in 97 (IBAN) of random digit strings that pass by chance.
Why gazetteers and context for names: without a statistical recogniser, a capitalised word pair is
as often a place or a product as a person; requiring both halves to be common names (or an explicit
cue) keeps precision high and misses rare or non-Anglophone names, a trade made on purpose.
"""

from __future__ import annotations

import functools
import gzip
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from underlay.api.safety import RunShieldResponse, SafetyViolation, Shield, ShieldMessage, ViolationLevel

ALL_KINDS = ("email", "phone", "credit_card", "iban", "us_ssn", "ip_address", "street_address", "person_name")

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


_STREET_TYPES = (
    r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Terrace|Way|Parkway|Pkwy"
    r"|Highway|Hwy|Circle|Close|Crescent|Square|Gardens|Grove|Mews|Row|Hill|Walk"
)
_CAP = r"[A-Z][a-zA-Z'\-]+"
_ADDRESSES = (
    # US / UK order: number, street name words, street type, optional directional.
    re.compile(
        rf"(?<![\w/.-])\d{{1,5}}[A-Za-z]?(?:[-/]\d{{1,4}})?,?\s+(?:{_CAP}\s+){{1,3}}(?:{_STREET_TYPES})\b"
        r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b)?"
    ),
    # German / Dutch / Scandinavian: compound street word, then the number.
    re.compile(
        r"\b[A-ZÄÖÜ][\wäöüß'-]*(?:straße|strasse|str\.|weg|allee|platz|gasse|damm|ufer|straat|laan|gracht|plein"
        r"|kade|gatan|vägen|gade|vej)\s+\d{1,4}[a-z]?\b"
    ),
    # French: number, street type, name.
    re.compile(
        r"(?<![\w/.-])\d{1,4}(?:\s?(?:bis|ter))?,?\s+(?:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai)"
        rf"\s+(?:de\s+la\s+|de\s+l'|du\s+|des\s+|de\s+)?{_CAP}"
    ),
    # Italian / Spanish / Portuguese: street type, name, number.
    re.compile(
        rf"\b(?:Via|Viale|Piazza|Corso|Calle|Avenida|Plaza|Paseo|Rua|Travessa)\s+(?:(?:de|del|da|do|dos|della|di)\s+)?"
        rf"{_CAP}(?:\s+{_CAP})?,?\s+(?:n\.?\s*[º°]?\s*)?\d{{1,4}}\b"
    ),
    # UK postcode (outward + inward code), capitals as Royal Mail prints them.
    re.compile(r"\b(?:[A-PR-UWYZ][A-HK-Y]?\d[A-Z\d]?|GIR)\s\d[ABD-HJLNP-UW-Z]{2}\b"),
)
# Given names that are everyday words too: a name only after a cue ("my name is", an honorific).
_AMBIGUOUS_GIVEN = frozenset(
    "Will May June April August Grace Hope Faith Joy Bill Mark Rose Art Dawn Eve Ruby Pearl Iris Lily Holly Ivy "
    "Violet Crystal Amber Jade Angel King Earl Prince Guy Pat Sue Don Ray Rich Chance Chase Hunter Lane Drew Frank "
    "Miles Norm Sterling Summer Autumn Sunny Star Gay Young Major Page Buck Bob Penny Sandy Carol Roman Else Per "
    "Long Hall Early Lincoln Jordan Paris Florence Georgia Virginia Carolina Dallas Austin Houston Chester Sydney "
    "China India Asia Africa America Christian Jesus Sherman Tex Cliff Dale Glen Glenn Wood Forest Sky".split()
)
# Capitalised words that follow a given name without being a surname (places, calendar, street types).
_NOT_SURNAME = frozenset(
    "Street Avenue Road Lane Drive Court Place Way Park Hill Square Bridge River Lake Beach Church Hall House "
    "Center Centre College School University Hospital Monday Tuesday Wednesday Thursday Friday Saturday Sunday "
    "January February March April May June July August September October November December".split()
)
_HONORIFIC = re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Rev)\.?\s+({_CAP}(?:\s+{_CAP})?)")
_NAME_CUE = re.compile(rf"\b(?:[Mm]y name is|[Mm]y name's|[Nn]ame:|[Ii] am called|[Cc]all me)\s+({_CAP}(?:\s+{_CAP})?)")
_PAIR = re.compile(rf"(?<![\w'-])(?=({_CAP})\s+({_CAP})\b)")
_GAZETTEER = Path(__file__).resolve().parent / "pii_names.txt.gz"


@functools.cache
def name_lists() -> tuple[frozenset[str], frozenset[str]]:
    """(given names, surnames) from the shipped gazetteer, title-cased."""
    given: set[str] = set()
    surnames: set[str] = set()
    target = given
    for line in gzip.decompress(_GAZETTEER.read_bytes()).decode().splitlines():
        if line == "# given":
            target = given
        elif line == "# surname":
            target = surnames
        elif line:
            target.add(line)
    return frozenset(given), frozenset(surnames)


def _names(text: str) -> list[tuple[int, int]]:
    """Spans of person names: cue + capitalised words, or given name + surname from the gazetteer."""
    given, surnames = name_lists()
    spans = [m.span(1) for m in _HONORIFIC.finditer(text)] + [m.span(1) for m in _NAME_CUE.finditer(text)]
    for m in _PAIR.finditer(text):  # a lookahead, so pairs overlap: "Ann Mary Smith" has two candidates
        first, last = m.group(1), m.group(2)
        if first in given and first not in _AMBIGUOUS_GIVEN and last in surnames and last not in _NOT_SURNAME:
            spans.append((m.start(1), m.end(2)))
    return spans


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
    if "street_address" in kinds:
        for pattern in _ADDRESSES:
            for m in pattern.finditer(text):
                add("street_address", m)
    if "person_name" in kinds:
        for start, end in _names(text):
            found.append(Finding("person_name", start, end, text[start:end]))
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
