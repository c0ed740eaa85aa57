"""inline::pii: each detector on real-looking data, the checksums that keep false positives out, redaction."""

from __future__ import annotations

import asyncio

import pytest

from underlay.api.safety import Shield, ShieldMessage
from underlay.providers.inline.safety.pii import Config, PiiSafetyProvider
from underlay.providers.inline.safety.pii.detectors import card_ok, find_pii, iban_ok, luhn_ok, redact


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


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("ring 020 7946 0958 after six", "020 7946 0958"),  # UK national format, trunk prefix 0
        ("ring +44 (0)20 7946 0958 after six", "+44 (0)20 7946 0958"),  # trunk prefix kept in brackets
        ("Tel. (030) 123456 bitte", "(030) 123456"),  # German area code in brackets
        ("Tel. +49 (0)30 901820 bitte", "+49 (0)30 901820"),
        ("Tel. 030/1234567 bitte", "030/1234567"),
        ("Tel. 0049 30 901820 bitte", "0049 30 901820"),  # 00 international prefix
        ("mobile 07700900123 today", "07700900123"),  # unbroken UK mobile, 11 digits
        ("desk (415) 555-2671 x123 today", "(415) 555-2671 x123"),
        ("desk 415.555.2671 ext. 45 today", "415.555.2671 ext. 45"),
        ("desk 001-415-555-2671x99 today", "001-415-555-2671x99"),  # 001 prefix; not a card
        ("desk +1-415-555-2671 today", "+1-415-555-2671"),
    ],
)
def test_detects_phone_formats(text: str, value: str) -> None:
    assert [(f.kind, f.text) for f in find_pii(text)] == [("phone", value)]


@pytest.mark.parametrize(
    "text",
    [
        "ISBN 0306406152 and ISBN-13: 978-0-306-40615-7",  # ISBN-10 looks like a UK number
        "released on 05.02.2021 as 2.10.3",  # dates and versions with dots
        "UPC 012345678905 on the box",  # 12 unbroken digits starting with 0: a barcode
        "EAN 0700607484257 on the box",  # 13
        "order 2024-0012345 due 2024-03-05",
        "room 0123, build 20240115",  # too short / no trunk-prefix shape
        "call 555-123-4567",  # NANP exchange cannot start with 1
    ],
)
def test_phone_lookalikes(text: str) -> None:
    assert [f.text for f in find_pii(text) if f.kind == "phone"] == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("maestro 676220519513 thanks", "676220519513"),  # 12-digit Maestro (IIN 6762)
        ("maestro 6759 6498 2643 8453 thanks", "6759 6498 2643 8453"),
        ("diners 30569309025904 thanks", "30569309025904"),
        ("jcb 3530111333300000 thanks", "3530111333300000"),
        ("mc 2223000048400011 thanks", "2223000048400011"),  # Mastercard 2-series
        ("visa 4532015112830 thanks", "4532015112830"),  # legacy 13-digit Visa outside GS1 Germany's range
    ],
)
def test_detects_card_iin_ranges(text: str, value: str) -> None:
    assert [(f.kind, f.text) for f in find_pii(text)] == [("credit_card", value)]


@pytest.mark.parametrize(
    ("digits", "passes_luhn"),
    [
        ("1202739601087", True),  # EAN-13: no card network issues 13 digits starting with 1
        ("6296557283551", True),  # EAN-13: UnionPay (62) issues 16-19 digits only
        ("4006381333924", True),  # EAN-13 from GS1 Germany (400-440): would otherwise be a 13-digit Visa
        ("9780306406157", False),  # ISBN-13
        ("123456789012", False),  # 12 digits outside Maestro's IINs
    ],
)
def test_card_lookalikes(digits: str, passes_luhn: bool) -> None:
    assert luhn_ok(digits) is passes_luhn  # the Luhn-valid ones show the IIN rule is what rejects them
    assert not card_ok(digits)
    assert [f for f in find_pii(f"code {digits} here") if f.kind == "credit_card"] == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("We moved to 25492 Alvarez Harbors last spring.", "25492 Alvarez Harbors"),  # USPS C1 suffixes
        ("Ship it to 382 Dominguez Fork today", "382 Dominguez Fork"),
        ("Ship it to 90 Elm Xing today", "90 Elm Xing"),  # C1 standard abbreviation
        ("Ship it to 811 Weiss Villages Suite 134.", "811 Weiss Villages Suite 134"),  # C2 unit after it
        ("Ship it to 350 5th Avenue today", "350 5th Avenue"),
        ("Delivery address: 67 Knight corners", "67 Knight corners"),  # lower-case type, street after a person
        ("Delivery address: Flat 36\nElaine forges", "Flat 36\nElaine forges"),
        ("Adresse: Edelgard-Striebitz-Straße 73, Berlin", "Edelgard-Striebitz-Straße 73"),
        ("Adresse: Wielochring 5, Köln", "Wielochring 5"),
        ("Adresse: Theodor-Heuss-Ring 12a, Köln", "Theodor-Heuss-Ring 12a"),
        ("Adresse: Lindenallee 3 in Bonn", "Lindenallee 3"),
        ("Adresse: Hauptstr. 14-16 in Bonn", "Hauptstr. 14-16"),
    ],
)
def test_detects_more_street_forms(text: str, value: str) -> None:
    assert [(f.kind, f.text) for f in find_pii(text) if f.kind == "street_address"] == [("street_address", value)]


@pytest.mark.parametrize(
    "text",
    [
        "Top 5 Data Points of the year",  # a ranking, not a house number
        "Version 3 Release Candidate",
        "the 12 blue lights and 3 Main points",  # lower-case type without a person's name
        "Spring 2024 and String 5 and Engineering 101",  # English -ring words are no German streets
        "I drove Route 66 past John Street",
        "Copyright 2016-2020 Stony Brook University",  # years, not a house number range
    ],
)
def test_street_lookalikes(text: str) -> None:
    assert [f.text for f in find_pii(text) if f.kind == "street_address"] == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Cecilia Dippel will join the call.", "Cecilia Dippel"),  # surname by its German ending
        ("Approved by Maria Kühnert-Schaaf yesterday.", "Maria Kühnert-Schaaf"),  # double-barrelled, non-ASCII
        ("Approved by Anna-Marie Bender yesterday.", "Anna-Marie Bender"),  # hyphenated given name
        ("Emily Butler-Nelson will join the call.", "Emily Butler-Nelson"),
    ],
)
def test_detects_european_names(text: str, value: str) -> None:
    assert [(f.kind, f.text) for f in find_pii(text)] == [("person_name", value)]


@pytest.mark.parametrize(
    "text",
    [
        "George Washington Bridge traffic is heavy.",  # a place named after a person
        "Queen Victoria Station and Albert Hall",
        "Victoria Tower and Thomas Cathedral",
    ],
)
def test_name_lookalikes(text: str) -> None:
    assert [f.text for f in find_pii(text) if f.kind == "person_name"] == []


@pytest.mark.parametrize(
    "text",
    [
        "x = 2.363930180244284474e-01",  # decimals of a float, Luhn-valid at a card IIN by chance
        "4 47 84 10 90 12 36 48 21 36 5 1",  # a row of small integers
        "https://example.com/photos/someone/6056698931/",  # a URL path segment, not a phone
    ],
)
def test_digit_data_lookalikes(text: str) -> None:
    assert find_pii(text) == []
