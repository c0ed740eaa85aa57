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


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("I live at 221B Baker Street, London.", "221B Baker Street"),
        ("Ship it to 1600 Pennsylvania Ave NW, Washington DC.", "1600 Pennsylvania Ave NW"),
        ("Our office: 42 Elm Grove Road, Leeds", "42 Elm Grove Road"),
        ("Adresse: Hauptstraße 5, 10115 Berlin", "Hauptstraße 5"),
        ("woont op Kerkstraat 12 in Utrecht", "Kerkstraat 12"),
        ("chez moi au 10 rue de Rivoli", "10 rue de Rivoli"),
        ("abito in Via Roma 12, Milano", "Via Roma 12"),
        ("vivo en Calle Mayor 5, Madrid", "Calle Mayor 5"),
        ("the postcode is SW1A 1AA", "SW1A 1AA"),
    ],
)
def test_detects_street_addresses(text: str, value: str) -> None:
    assert [(f.kind, f.text) for f in find_pii(text)] == [("street_address", value)]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("My name is Jonathan Harker.", "Jonathan Harker"),
        ("Please forward this to Mary Johnson in accounts.", "Mary Johnson"),
        ("Dr. Seward will see you now", "Seward"),
        ("name: Lucy Westenra", "Lucy Westenra"),
        ("my name is Will Turner", "Will Turner"),  # an everyday-word given name counts after a cue
    ],
)
def test_detects_person_names(text: str, value: str) -> None:
    assert [(f.kind, f.text) for f in find_pii(text)] == [("person_name", value)]


@pytest.mark.parametrize(
    "text",
    [
        "Route 66 runs from Chicago to Santa Monica.",
        "Read chapter 5 and the 3 Main points of Section 2.",
        "We met Will Power at the May Day parade; the Grace Period is 30 days.",
        "John Street is closed on Monday.",  # a street, not a person
        "Microsoft Word and Google Chrome are installed on New York City laptops.",
        "Python 3 Way of doing things",
        "Version 2 Update 14 shipped in April 2024.",
        "the United Nations met in Paris Hilton hotels",
    ],
)
def test_name_and_address_lookalikes(text: str) -> None:
    assert [(f.kind, f.text) for f in find_pii(text) if f.kind in ("person_name", "street_address")] == []


def test_names_and_addresses_redact() -> None:
    text = "Mary Johnson lives at 12 Oak Lane."
    assert redact(text, find_pii(text)) == "[PERSON_NAME] lives at [STREET_ADDRESS]."
