"""``inline::pii``'s detectors: personal data found by patterns plus checksums, optionally redacted.

The shield that runs them (its config and provider, what the stack builds at start) is the package,
:mod:`underlay.providers.inline.safety.pii`, which imports this module on its first check.

Rules and where each comes from:

- ``email``: the common ``local@domain.tld`` form (a practical subset of RFC 5322 addr-spec).
- ``phone``: international numbers after ``+`` or the ``00`` prefix (ITU-T E.164: at most 15 digits),
  with the ``(0)`` trunk prefix people print anyway (``+44 (0)20 7946 0958``); the North American
  ``(NXX) NXX-XXXX`` form (NANP: area code and exchange start with 2-9, optional ``+1``/``001``); national
  numbers with the trunk prefix 0 (``020 7946 0958``, ``(030) 123456``, ``030/1234567``; unbroken ones
  10-11 digits, so 12-13-digit barcodes stay out); each with an optional extension (``x123``, ``ext. 45``).
- ``credit_card``: 12-19 digits (ISO/IEC 7812 primary account numbers) that start with a card network's
  issuer identification number at a length that network issues (Maestro 12-19, Amex 15, Mastercard 16...)
  and pass the Luhn check (ISO/IEC 7812-1 Annex B); groups separated by spaces or dashes are accepted.
  Requiring the IIN is what keeps Luhn-valid EAN-13 barcodes out; 13-digit numbers in GS1 Germany's
  400-440 range are not taken for legacy 13-digit Visa numbers.
- ``iban``: country code, two check digits and up to 30 alphanumerics (ISO 13616) whose mod-97
  remainder is 1 (ISO 7064 MOD 97-10).
- ``us_ssn``: ``AAA-GG-SSSS`` excluding the numbers the Social Security Administration never issues
  (area 000, 666 or 900-999; group 00; serial 0000).
- ``ip_address``: dotted IPv4 (RFC 791) with each octet 0-255, and full or ``::``-compressed IPv6
  (RFC 4291), validated with :mod:`ipaddress`.

- ``street_address``: a house number (or ``Flat 3``/``Suite 12``) with a street name and a street type from
  USPS Publication 28 Appendix C1 (``pii_street_suffixes.txt``: every suffix name and abbreviation, plus
  British ones such as Close and Parade), in the US/UK order (``221B Baker Street``, ``1600 Pennsylvania
  Ave NW``, ``811 Weiss Villages Suite 134``); the German/Dutch order with compounds and hyphenated names
  (``Hauptstraße 5``, ``Theodor-Heuss-Ring 12a``, ``Kerkstraat 12``), French (``10 rue de Rivoli``) and
  Italian/Spanish/Portuguese (``Via Roma 12``, ``Calle Mayor 5``); and UK postcodes (``SW1A 1AA``).
  A lower-case street type (``67 Knight corners``) counts only when the street is named after a person,
  since "3 Main points" has the same shape; a number after "top", "version", "chapter"... is no house number.
- ``person_name``: a given name followed by a surname, both capitalised (``Jonathan Harker``); or a
  capitalised word after an honorific (``Dr. Seward``) or after "my name is" / "name:". Given names come
  from the US Census 1990 lists (``pii_names.txt.gz``, public domain) and, when an operator has built it,
  from a local list of German-speaking and Benelux names (``pii_given_names_eu.txt.gz``: GFDL data, so it
  is not shipped); the surname from the census list, a
  double-barrelled one (``Kühnert-Schaaf``) or a word with a typical German/Dutch surname ending
  (``Dippel``, ``Hermighausen``). Given names that are also everyday words (Will, May, Grace, Bill...)
  only count after a cue; a pair followed by Bridge, Hospital, Street... is a place. Both lists are built
  by ``scripts/build_pii_gazetteer.py``.

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

from underlay.providers.inline.safety.pii import ALL_KINDS

# The word lists ship beside the package (pyproject's package data for underlay.providers.inline.safety).
_DATA = Path(__file__).resolve().parent.parent

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")
# Extensions as written after a number: "x123", "ext. 45", "extension 7", German "Durchwahl"/"Dw.".
_EXT = r"(?:\s?(?:x|ext\.?|extension|Durchwahl|Dw\.?)\s?\d{1,6})?"
_PHONES = (
    # International: "+" or the "00" international prefix, a country code, an optional "(0)" trunk prefix that
    # national habit keeps in print (ITU-T E.123 says drop it; people don't), an optional area code in brackets.
    re.compile(
        r"(?<![\w+])(?:\+|00)[1-9]\d{0,2}[ .-]?(?:\(0\)[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,5}(?:[ ./-]?\d{1,5}){0,5}"
        + _EXT
        + r"(?![\w+])"
    ),
    # North American Numbering Plan: optional "+1"/"1"/"001", area code and exchange start with 2-9.
    re.compile(
        r"(?<![\w+./-])(?:(?:\+?1|001)[ .-]?)?(?:\([2-9]\d{2}\)|[2-9]\d{2})[ .-]?[2-9]\d{2}[ .-]?\d{4}"
        + _EXT
        + r"(?![\w.-]?\d)"
    ),
    # National format with the trunk prefix 0 (UK, Germany, most of Europe): "(030) 123456", "(0151)4960236",
    # "020 7946 0958", "030/1234567", "01174960794". No dots: "05.02.2021" is a date.
    re.compile(
        r"(?<![\w+./-])(?:\(0\d{1,5}\)[ /-]?\d{3,9}|0[1-9]\d{1,4}(?:[ /-]?\d{2,8}){1,4})" + _EXT + r"(?![\w./-]?\d)"
    ),
)
_ISBN_BEFORE = re.compile(r"ISBN(?:-1[03])?:?\s*$", re.IGNORECASE)
# Unbroken, or in groups of 3-6 after a first group of 4 (4-4-4-4, Amex 4-6-5): "4 47 84 10 90" is a data row.
# Not after "." or "/": decimals and URL path segments.
_CARD = re.compile(r"(?<![\d./-])(?:\d{12,19}|\d{4}(?:[ -]\d{3,6}){2,4})(?![\d-]|\.\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_SSN = re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")


_SUFFIX_FILE = _DATA / "pii_street_suffixes.txt"
# Two-letter abbreviations are everyday tokens ("Is", "Pr", "Br"); only these common ones count.
_SHORT_ABBREVIATIONS = frozenset({"St", "Rd", "Dr", "Ct", "Pl", "Ln", "Sq", "Wy"})


def street_suffixes() -> str:
    """A regex alternation of street types from the shipped USPS Publication 28 C1 list (plus UK types).

    Full names match capitalised or lower case ("Harbors", "harbors": British addresses often write the type
    in lower case); abbreviations only capitalised, with an optional full stop, and at least three letters
    unless a common one ("St", "Rd").
    """
    words: set[str] = set()
    for line in _SUFFIX_FILE.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, *abbreviation = line.split()
        words.update({name.capitalize(), name.lower()})
        for abbr in abbreviation:
            if abbr != name and (len(abbr) > 2 or abbr.capitalize() in _SHORT_ABBREVIATIONS):
                words.add(abbr.capitalize() + r"\.?")
    return "|".join(sorted(words, key=len, reverse=True))


_STREET_TYPES = street_suffixes()
_CAP = r"[A-Z][a-zA-Z'\-]+"
_STREET_WORD = rf"(?:{_CAP}|\d{{1,3}}(?:st|nd|rd|th))"
# USPS Publication 28 C2 secondary unit designators (and the UK "Flat"/"Studio"), before or after the street.
_UNIT = r"(?:Apartment|Apt\.?|Suite|Ste\.?|Unit|Flat|Studio|Room|Rm\.?|Floor|Fl\.?|Building|Bldg\.?|#)"
# Words that put a number in front of capitalised words without it being a house number ("Top 5 Data Points").
_NOT_HOUSE_NUMBER = re.compile(
    r"(?:\b(?:top|best|version|v|chapter|page|section|figure|fig|table|step|level|season|episode|part|route|rte"
    r"|highway|interstate|platform|gate|room|no|number|item|rank|ranked|over|under|about|than|only|all)\.?"
    r"|[#$€£%])\s*$",
    re.IGNORECASE,
)
# German "-ring" compounds collide with English "-ring" words: Spring, String, Bring, Monitoring, Engineering.
_ENGLISH_RING = re.compile(r"(?:[aeiou]ring|pring|tring|bring)\s", re.IGNORECASE)
_ADDRESSES = (
    # US / UK order: house number (or a flat/suite before the street), street name words, street type,
    # optional directional, optional secondary unit after it.
    re.compile(
        rf"(?<![\w/.,-])(?:\d{{1,5}}[A-Za-z]?(?:[-/]\d{{1,4}})?,?\s+|{_UNIT}\s*\d{{1,4}}[A-Za-z]?,?\s+)"
        rf"(?P<street>(?:{_STREET_WORD}\s+){{1,3}})(?P<type>{_STREET_TYPES})(?![\w'-])"
        r"(?:\s+(?:N|S|E|W|NE|NW|SE|SW)\b)?"
        rf"(?:,?\s+{_UNIT}\s*\d{{1,5}}[A-Za-z]?\b)?"
    ),
    # German / Dutch / Scandinavian: compound street word (or hyphenated "Theodor-Heuss-Ring"), then the number.
    re.compile(
        r"\b[A-ZÄÖÜ][\wäöüß'-]+?(?i:straße|strasse|str\.|weg|ring|allee|platz|gasse|damm|ufer|steig|stieg|pfad"
        r"|chaussee|promenade|graben|markt|straat|laan|gracht|plein|kade|gatan|vägen|gade|vej)\s+\d{1,4}\s?[a-z]?"
        r"(?:[-/]\d{1,4}[a-z]?)?(?!\w)"
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


_YEAR_RANGE = re.compile(r"(?:19|20)\d\d\s*[-/–]\s*(?:19|20)?\d\d\b")
# Census surnames that are first of all English adjectives or counting words ("3 Main points", "5 Key areas").
_WORD_SURNAMES = frozenset(
    "Main Major Minor Key Big Little Long Short Young Old New Good Best Black White Brown Green Gray Grey Red "
    "Blue Gold Silver Strong Sharp Wise Rich Small Large Free High Low Hard Bright Quick Swift Fast Early Late "
    "Top First Last Next Few Many More Most Great Grand Noble Able Hale Bland Light Dark".split()
)


def address_ok(match: re.Match[str], text: str) -> bool:
    """Drop the look-alikes a street pattern alone lets through: ranked lists, versions, English -ring words."""
    if match.re is _ADDRESSES[0]:
        if _NOT_HOUSE_NUMBER.search(text[max(0, match.start() - 16) : match.start()]):
            return False
        if _YEAR_RANGE.match(match.group(0)):
            return False  # "2016-2020 Stony Brook": a copyright line's years, not a house number range
        if match.group("type")[0].islower():
            # "3 Main points", "12 blue lights": a counted noun phrase has the same shape as a British address
            # with a lower-case street type. Take the latter only when the street is named after a person.
            given, surnames = name_lists()
            words = match.group("street").split()
            return not any(w in _WORD_SURNAMES for w in words) and any(w in given or w in surnames for w in words)
        return True
    return not (match.re is _ADDRESSES[1] and _ENGLISH_RING.search(match.group(0)))


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
_NOT_SURNAME |= frozenset(
    "Bridge Tunnel Tower River Theater Theatre Corner Water Border Winter Summer Hotel Center Cathedral Palace "
    "Castle Museum "
    "Gallery Library Airport Harbor Harbour Island Valley Mountain Station Line Terminal Stadium Arena Market "
    "Memorial Institute Foundation Award Prize Cup Fund Trust Group Club Company Bank Chapel Abbey".split()
)
# Letters of the Latin-1 supplement as in "José", "Kühnert", "Ødegaard" (a name word may start with one).
_NAME_WORD = r"[A-ZÀ-ÖØ-Þ][a-zA-ZÀ-ÖØ-öø-ÿ'\-]+"
# Endings typical of German and Dutch surnames (Dippel, Hermighausen, Kühnert, Fischer, Janssen): after a
# known given name they make a surname the US census list lacks plausible.
_SURNAME_ENDING = re.compile(
    r"(?:mann|hausen|berg|stein|feld|hoff|hof|bach|dorf|brock|beck|meier|meyer|maier|mayer|huber|ke|el|er|ert"
    r"|ner|ler|inger|ling|itz|ow|sen|ssen|dt|ch|ijk|ink)$"
)
_HONORIFIC = re.compile(rf"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Rev)\.?\s+({_CAP}(?:\s+{_CAP})?)")
_NAME_CUE = re.compile(rf"\b(?:[Mm]y name is|[Mm]y name's|[Nn]ame:|[Ii] am called|[Cc]all me)\s+({_CAP}(?:\s+{_CAP})?)")
_PAIR = re.compile(rf"(?<![\w'-])(?=({_NAME_WORD})\s+({_NAME_WORD})(?:\s+({_NAME_WORD}))?)")
_GAZETTEER = _DATA / "pii_names.txt.gz"
_GAZETTEER_EU = _DATA / "pii_given_names_eu.txt.gz"


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
    if _GAZETTEER_EU.exists():  # optional, built locally (GFDL data: not shipped, see the build script)
        text = gzip.decompress(_GAZETTEER_EU.read_bytes()).decode()
        given.update(line for line in text.splitlines() if line and line[0] != "#")
    return frozenset(given), frozenset(surnames)


def _is_given(word: str, given: frozenset[str]) -> bool:
    """A listed, unambiguous given name; a hyphenated one ("Anna-Marie") when every part is."""
    parts = word.split("-")
    return all(p in given and p not in _AMBIGUOUS_GIVEN for p in parts)


def _is_surname(word: str, surnames: frozenset[str]) -> bool:
    """A listed surname, a double-barrelled one ("Kühnert-Schaaf"), or a word with a typical surname ending."""
    if word in _NOT_SURNAME:
        return False
    if word in surnames:
        return True
    parts = word.split("-")
    if len(parts) > 1:
        return all(len(p) > 1 and p[0].isupper() and p[1:].islower() for p in parts)
    return word[1:].islower() and len(word) > 3 and bool(_SURNAME_ENDING.search(word))


def _names(text: str) -> list[tuple[int, int]]:
    """Spans of person names: cue + capitalised words, or given name + surname from the gazetteer."""
    given, surnames = name_lists()
    spans = [m.span(1) for m in _HONORIFIC.finditer(text)] + [m.span(1) for m in _NAME_CUE.finditer(text)]
    for m in _PAIR.finditer(text):  # a lookahead, so pairs overlap: "Ann Mary Smith" has two candidates
        first, last, after = m.group(1), m.group(2), m.group(3)
        if after in _NOT_SURNAME:
            continue  # "George Washington Bridge", "John Hopkins Hospital": a place named after a person
        if _is_given(first, given) and _is_surname(last, surnames):
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


# Issuer identification number ranges (ISO/IEC 7812-1; the networks' published IIN tables): (low, high) prefix
# of equal length, and the PAN lengths that network issues. A Luhn-valid string outside these is not flagged:
# that is what keeps EAN-13 barcodes (GS1 prefixes 000-139, 300-969...) and order numbers out.
_CARD_IINS: tuple[tuple[str, str, frozenset[int]], ...] = (
    ("4", "4", frozenset({13, 16, 19})),  # Visa (13 digits is legacy, see _GS1_GERMANY)
    ("51", "55", frozenset({16})),  # Mastercard
    ("2221", "2720", frozenset({16})),  # Mastercard 2-series
    ("34", "34", frozenset({15})),  # American Express
    ("37", "37", frozenset({15})),
    ("300", "305", frozenset(range(14, 20))),  # Diners Club
    ("36", "36", frozenset(range(14, 20))),
    ("38", "39", frozenset(range(16, 20))),
    ("6011", "6011", frozenset(range(16, 20))),  # Discover
    ("644", "649", frozenset(range(16, 20))),
    ("65", "65", frozenset(range(16, 20))),
    ("3528", "3589", frozenset(range(16, 20))),  # JCB
    ("1800", "1800", frozenset({15})),  # JCB legacy
    ("2131", "2131", frozenset({15})),
    ("62", "62", frozenset(range(16, 20))),  # UnionPay
    ("2200", "2204", frozenset(range(16, 20))),  # Mir
    ("5018", "5018", frozenset(range(12, 20))),  # Maestro: 12-19 digits
    ("5020", "5020", frozenset(range(12, 20))),
    ("5038", "5038", frozenset(range(12, 20))),
    ("5893", "5893", frozenset(range(12, 20))),
    ("6304", "6304", frozenset(range(12, 20))),
    ("6759", "6759", frozenset(range(12, 20))),
    ("6761", "6763", frozenset(range(12, 20))),
    ("5019", "5019", frozenset({16})),  # Dankort
    ("637", "639", frozenset({16})),  # InstaPayment
    ("60", "60", frozenset({16})),  # RuPay
    ("9792", "9792", frozenset({16})),  # Troy
)
# EAN-13 barcodes from GS1 Germany (prefixes 400-440) look exactly like a legacy 13-digit Visa number; one in
# ten passes Luhn. Visa has issued 16 digits for decades, so a 13-digit "4" number in that range is not flagged.
_GS1_GERMANY = ("400", "440")


def card_ok(digits: str) -> bool:
    """A plausible payment card number: a known IIN range at a length that network issues, and the Luhn check."""
    n = len(digits)
    if n == 13 and _GS1_GERMANY[0] <= digits[:3] <= _GS1_GERMANY[1]:
        return False
    for low, high, lengths in _CARD_IINS:
        if n in lengths and low <= digits[: len(low)] <= high:
            return luhn_ok(digits)
    return False


def phone_ok(candidate: str, before: str) -> bool:
    """7-15 digits (E.164 allows at most 15, extension and "(0)" trunk prefix aside), and not an ISBN."""
    number = re.split(r"\s?(?:x|ext|extension|Durchwahl|Dw)", candidate.replace("(0)", ""), maxsplit=1)[0]
    if number.startswith("00"):
        number = number[2:]
    digits = re.sub(r"\D", "", number)
    if number.isdigit() and number.startswith("0"):
        # An unbroken national number is 10-11 digits (UK, most German ones); 12-13 unbroken digits starting
        # with 0 are UPC-A / EAN-13 barcodes far more often than phones.
        return 10 <= len(digits) <= 11 and not _ISBN_BEFORE.search(before)
    return 7 <= len(digits) <= 15 and not _ISBN_BEFORE.search(before)


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
            if card_ok(digits):
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
                if address_ok(m, text):
                    add("street_address", m)
    if "person_name" in kinds:
        for start, end in _names(text):
            found.append(Finding("person_name", start, end, text[start:end]))
    if "phone" in kinds:
        for pattern in _PHONES:
            for m in pattern.finditer(text):
                if phone_ok(m.group(0), text[max(0, m.start() - 12) : m.start()]):
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
