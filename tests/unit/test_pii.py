"""inline::pii: each detector on real-looking data, the checksums that keep false positives out, redaction."""

from __future__ import annotations

import asyncio

import pytest

from underlay.api.safety import Shield, ShieldMessage
from underlay.providers.inline.safety.pii import Config, PiiSafetyProvider, find_pii, iban_ok, luhn_ok, redact


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("write to jane.doe+work@example.co.uk today", "email", "jane.doe+work@example.co.uk"),
        ("call +44 20 7946 0958 after six", "phone", "+44 20 7946 0958"),
        ("or (415) 555-2671 in the US", "phone", "(415) 555-2671"),
        ("card 4111 1111 1111 1111 exp 12/29", "credit_card", "4111 1111 1111 1111"),
        ("amex 378282246310005.", "credit_card", "378282246310005"),
        ("pay to GB82 WEST 1234 5698 7654 32 please", "iban", "GB82 WEST 1234 5698 7654 32"),
        ("IBAN DE89370400440532013000", "iban", "DE89370400440532013000"),
        ("ssn 123-45-6789", "us_ssn", "123-45-6789"),
        ("server at 192.168.10.254 is down", "ip_address", "192.168.10.254"),
        ("v6 2001:db8::8a2e:370:7334 here", "ip_address", "2001:db8::8a2e:370:7334"),
    ],
)
def test_detects(text: str, kind: str, value: str) -> None:
    found = find_pii(text)
    assert [(f.kind, f.text) for f in found] == [(kind, value)]


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 shipped",  # fails Luhn
        "IBAN GB82 WEST 1234 5698 7654 33",  # fails mod-97
        "ssn 666-12-3456 and 123-00-4567",  # never issued
        "version 10.0.300.1 and 999.1.1.1",  # not IPv4 octets / not an address
        "meeting on 2024-01-15 at 10:30, ticket #48213",
        "nothing personal here",
    ],
)
def test_ignores_lookalikes(text: str) -> None:
    assert find_pii(text) == []


def test_checksums() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert iban_ok("NL91ABNA0417164300") and not iban_ok("NL91ABNA0417164301")


def test_redaction_keeps_the_rest() -> None:
    text = "mail a.b@example.org or card 5555 5555 5555 4444."
    assert redact(text, find_pii(text)) == "mail [EMAIL] or card [CREDIT_CARD]."


def test_provider_violation_and_kinds() -> None:
    provider = PiiSafetyProvider("pii", Config())
    shield = Shield(identifier="pii", provider_id="pii", provider_resource_id="pii")
    messages = [ShieldMessage(role="user", content="I'm bob@example.com, 192.168.0.1")]
    answer = asyncio.run(provider.run_shield(shield, messages, {}))
    assert answer.violation is not None
    assert answer.violation.metadata["underlay_categories"] == ["pii:email", "pii:ip_address"]
    assert answer.violation.metadata["redacted"] == ["I'm [EMAIL], [IP_ADDRESS]"]
    only_email = asyncio.run(
        provider.run_shield(shield, [ShieldMessage(role="user", content="192.168.0.1")], {"kinds": ["email"]})
    )
    assert only_email.violation is None
