"""The fast paths of email and phone validation agree with email-validator and phonenumbers on every value.

`altcraft.validation` skips email-validator for a simple address on a domain it has accepted before, and
``phonenumbers.parse`` for ``+`` and digits. This compares both, value by value, with the plain libraries
over a generated corpus (many shapes on shared domains, every region's example numbers and their
perturbations, random digit strings) and the hostile values of the other tests: the same verdict, the same
normalised output, and where the fast path builds a phone number, the very object ``parse`` returns.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator

import phonenumbers
import pytest
from email_validator import EmailNotValidError, validate_email
from phonenumbers import (
    PhoneMetadata,
    PhoneNumberFormat,
    PhoneNumberType,
    ValidationResult,
    national_significant_number,
)

from altcraft import validation
from altcraft.validation import ValidationError
from tests.broken_contacts import BROKEN_CONTACTS, VALID_CONTACTS
from tests.security import test_contact_forms

SEED = 20250117
ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
DOMAINS = [
    "example.org",
    "Example.ORG",
    "EXAMPLE.org",
    "gmail.com",
    "mail.ru",
    "yandex.ru",
    "sub.domain.example.co.uk",
    "xn--80ak6aa92e.com",
    "XN--80AK6AA92E.COM",
    "xn--e1afmkfd.xn--p1ai",
    "пример.рф",
    "ПРИМЕР.РФ",
    "münchen.de",
    "xn--mnchen-3ya.de",
    "localhost",
    "example.invalid",
    "example.test",
    "example.local",
    "com",
    "example.123",
    "1.2.3.4",
    "[192.0.2.1]",
    "-example.org",
    "example-.org",
    "exa_mple.com",
    "example.org.",
    ".example.org",
    "example..org",
    "xn--zz.com",
    "a" * 63 + ".com",
    "a" * 64 + ".com",
    ".".join(["b" * 63] * 3) + ".com",  # 195 characters: long addresses cross the 254 limit
    ".".join(["c" * 60] * 4),
    "例え.jp",
    "example.org>",
    "example.org ",
    "",
]
SPECIAL_LOCALS = [
    "anna",
    "Anna.Petrova",
    "a",
    "postmaster",
    "PostMaster",
    "Abuse",
    "info",
    "user+tag",
    "o'brien",
    "{weird}|~^`",
    ".anna",
    "anna.",
    "an..na",
    "an na",
    '"anna petrova"',
    '"anna"',
    "anna(comment)",
    "<anna",
    "анна",
    "müller",
    "a" * 64,
    "a" * 65,
    "a" * 180,
    "",
    "Anna <anna",
]


def email_corpus() -> list[str]:
    """Every local part on every domain, then random dot-atoms on the common domains, in shuffled order
    (so a domain is often first seen with an invalid or over-long address)."""
    rng = random.Random(SEED)
    values = [f"{local}@{domain}" for local in SPECIAL_LOCALS for domain in DOMAINS]
    for _ in range(20_000):
        words = ["".join(rng.choices(ATEXT, k=rng.randint(1, 12))) for _ in range(rng.randint(1, 4))]
        local = ".".join(words)
        if rng.random() < 0.05:
            local = rng.choice([f".{local}", f"{local}.", local.replace(".", "..") + "..x", local * 8])
        values.append(f"{local}@{rng.choice(DOMAINS[:14])}")
    values += ["anna.example.org", "anna@@example.org", "a@b@example.org", "@example.org", "anna@"]
    values += hostile("email")
    rng.shuffle(values)
    return values


def hostile(column: str) -> list[str]:
    """The text values of ``column`` in the broken and valid contacts of the other tests."""
    records = [record for record, *_ in BROKEN_CONTACTS] + [record for record, *_ in VALID_CONTACTS]
    values = [record.get(column) for record in records]
    if column == "email":
        forms = test_contact_forms.test_idn_email_is_sent_in_the_form_the_source_gave.pytestmark[0].args[1]
        values += [given for given, _ in forms] + [sent for _, sent in forms]
    return [value.strip() for value in values if isinstance(value, str) and len(value) < 10_000]


def plain_email(value: str) -> tuple[bool, str]:
    """email-validator alone: (accepted, the address as `normalize_email` sends it or the reason)."""
    try:
        info = validate_email(value, check_deliverability=False)
    except EmailNotValidError as error:
        return False, str(error)
    domain = info.ascii_domain if value.rpartition("@")[2].isascii() else info.domain
    return True, f"{info.local_part}@{domain}"


def test_email_fast_path_agrees_with_email_validator_on_every_value():
    validation._EMAIL_DOMAINS.clear()
    validation._email_validated.cache_clear()  # each domain is first seen here, not in an earlier test
    fast = 0
    for value in email_corpus():
        local, _, domain = value.partition("@")
        known = validation._EMAIL_DOMAINS.get(domain)
        took_fast = validation._simple_address(value, local, domain) and bool(
            validation._email_fast(value, local, known)
        )
        fast += took_fast
        expected_ok, expected = plain_email(value)
        try:
            got = validation._email(value)
        except ValidationError as error:
            assert not expected_ok, f"{value!r}: refused ({error.reason}), email-validator sends {expected!r}"
            with pytest.raises(ValidationError) as reference:
                validation._email_checked(value)
            assert error.reason == reference.value.reason, value
            continue
        assert expected_ok, f"{value!r}: accepted as {got!r}, email-validator refuses it: {expected}"
        assert got == expected, value
    assert fast > 15_000, f"the fast path took only {fast} values: the comparison proves little"


def plain_identity(value: str) -> str:
    """email-validator's address where the domain holds an ASCII-encoded label (``xn--`` in any case),
    the address as it is otherwise: what `email_identity` returns, without its shortcuts."""
    if "xn--" not in value.rpartition("@")[2].lower():
        return value
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        return value


def test_email_identity_agrees_with_email_validator_on_every_value():
    """An address without ``--`` is its own identity without a look at its domain; the others as
    `plain_identity`, in every case."""
    values = email_corpus()
    values += [value.upper() for value in values] + [value.title() for value in values]
    encoded = 0
    for value in values:
        encoded += "xn--" in value.lower()
        assert validation.email_identity(value) == plain_identity(value), value
    assert encoded > 2_000, f"only {encoded} addresses with an encoded label: the comparison proves little"


def phone_corpus() -> Iterator[tuple[str, str | None]]:
    """(value, default region): each region's example numbers of every type, in E.164 and national form,
    perturbed (national prefix after the country code, leading zeros, a digit more or less, last digits
    changed), and random digit strings after a ``+``."""
    rng = random.Random(SEED)
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    examples = []
    for region in regions:
        for kind in vars(PhoneNumberType).values():
            if isinstance(kind, int):
                number = phonenumbers.example_number_for_type(region, kind)
                if number is not None:
                    examples.append((region, number))
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            examples.append((None, number))
    for region, number in examples:
        e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
        code, national = str(number.country_code), e164[1 + len(str(number.country_code)) :]
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(
            number.country_code, phonenumbers.region_code_for_country_code(number.country_code)
        )
        prefix = (metadata.national_prefix or "") if metadata else ""
        variants = [
            e164,
            f"+{code}{prefix}{national}",
            f"+{code}0{national}",
            f"+{code}00{national}",
            e164 + "5",
            e164[:-1],
            e164[:-2] + "".join(rng.choices(string.digits, k=2)),
            e164[:-4] + "".join(rng.choices(string.digits, k=4)),
            f"+{code} {national}",
            phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL),
        ]
        for value in variants:
            yield value, None
            yield value, region
        yield phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL), region
    for _ in range(20_000):
        yield "+" + str(rng.randint(1, 9)) + "".join(rng.choices(string.digits, k=rng.randint(2, 18))), None
    for value in hostile("phone"):
        yield value, "RU"
        yield value, None


def parsed_phone_corpus() -> Iterator[tuple[str, str | None, phonenumbers.PhoneNumber]]:
    """(value, default region, phonenumbers' number) for each value of `phone_corpus` that parses."""
    for value, region in phone_corpus():
        try:
            yield value, region, phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            continue


def plain_phone(value: str, region: str | None) -> tuple[bool, str]:
    """phonenumbers alone: (valid, E.164 or why not)."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as error:
        return False, str(error)
    if phonenumbers.is_possible_number_with_reason(number) != phonenumbers.ValidationResult.IS_POSSIBLE:
        return False, "not possible"
    if not phonenumbers.is_valid_number(number):
        return False, "not valid"
    return True, phonenumbers.format_number(number, PhoneNumberFormat.E164)


def test_phone_fast_path_builds_what_phonenumbers_parses_and_agrees_on_every_value():
    built = valid_built = 0
    for value, region in phone_corpus():
        if validation._E164_TEXT.fullmatch(value):
            parts = validation._e164_parts(value)
            if parts is not None:  # what parse finds, and its E.164 form is the text as is
                built += 1
                number = phonenumbers.parse(value, region)
                assert parts == (number.country_code, national_significant_number(number)), value
                assert phonenumbers.format_number(number, PhoneNumberFormat.E164) == value, value
        expected_ok, expected = plain_phone(value, region)
        try:
            got = validation._phone(value, region)
        except ValidationError as error:
            # our own checks refuse more than phonenumbers (letters, no + without a region): never less
            assert (
                not expected_ok
                or not validation._PHONE_CHARS.fullmatch(value)
                or (not value.startswith("+") and region is None)
            ), f"{value!r} ({region}): refused ({error.reason}), phonenumbers sends {expected}"
            continue
        assert expected_ok, f"{value!r} ({region}): accepted as {got!r}, phonenumbers refuses: {expected}"
        assert got == expected, (value, region)
        valid_built += validation._E164_TEXT.fullmatch(value) is not None
    assert built > 15_000, f"the fast path built only {built} numbers: the comparison proves little"
    assert valid_built > 2_000, f"only {valid_built} valid numbers took the fast path"


def _phone_outcome(value: str, region: str | None) -> str:
    """`validation._phone`'s number, or its reason for refusing."""
    try:
        return validation._phone(value, region)
    except ValidationError as error:
        return f"refused: {error.reason}"


def test_phone_checked_again_right_away_gets_what_a_first_check_gets():
    """`_phone` answers the number it accepted just before (`_last_phone`) only for the same text and the
    same default region: each value of the corpus checked with its region twice, then with none, another
    region and its own again, in a row, gets what it gets checked first (a national number accepted with its
    region is still refused without one)."""
    sample = list(phone_corpus())[::5]
    calls = [(value, r) for value, region in sample for r in (region, region, None, "US", region)]
    first = []
    for value, region in calls:
        validation._last_phone = (None, None, "")
        first.append(_phone_outcome(value, region))
    in_a_row = [_phone_outcome(value, region) for value, region in calls]
    assert in_a_row == first
    repeated = sum(
        a == b and not outcome.startswith("refused")
        for a, b, outcome in zip(calls, calls[1:], first[1:], strict=False)
    )
    national = sum(
        value[:1] != "+" and not outcome.startswith("refused")
        for (value, _), outcome in zip(calls, first, strict=True)
    )
    assert repeated > 2_000 and national > 100, f"{repeated} repeats, {national} national: proves little"


def test_phone_validity_agrees_with_phonenumbers_on_every_number():
    """`_is_valid_number` (patterns compiled once per country code) and ``phonenumbers.is_valid_number``
    give the same verdict for every number the corpus parses to, whatever the path that built it."""
    numbers = valid = 0
    for value, region, number in parsed_phone_corpus():
        expected = phonenumbers.is_valid_number(number)
        nsn = national_significant_number(number)
        assert validation._is_valid_number(number.country_code, nsn) is expected, (value, region)
        numbers += 1
        valid += expected
    assert numbers > 30_000 and valid > 3_000, (
        f"{numbers} numbers, {valid} valid: the comparison proves little"
    )


def test_phone_possibility_by_code_and_length_agrees_with_phonenumbers_on_every_number():
    """`_impossible` (asked once per country code and length) gives what
    ``phonenumbers.is_possible_number_with_reason`` gives each number the corpus parses to."""
    reasons = validation._phone_reasons()[0]
    numbers, impossible = 0, set()
    for value, region, number in parsed_phone_corpus():
        possible = phonenumbers.is_possible_number_with_reason(number)
        expected = (
            None
            if possible == ValidationResult.IS_POSSIBLE
            else reasons.get(possible, "is not a possible number")
        )
        nsn = national_significant_number(number)
        assert validation._impossible(number.country_code, len(nsn)) == expected, (value, region)
        numbers += 1
        impossible.add(possible)
    assert numbers > 30_000 and len(impossible) >= 4, f"{numbers} numbers, results {impossible}"


def test_phone_validity_compiles_for_every_country_code_and_length():
    """Every region's general and type patterns, joined into one pattern per length, compile (a metadata
    pattern that could not be joined would fail here, not on a contact)."""
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        for length in range(1, 18):
            for region in validation._regions(code):
                region.pattern_for(length)


def test_phone_regions_known_without_phonenumbers_are_the_ones_it_supports():
    """`PHONE_REGIONS` spares a spec's ``default_region`` the import of phonenumbers: it must be the
    library's list, and `supported_region` must say of every two-letter code what the library says."""
    codes = (a + b for a in string.ascii_uppercase for b in string.ascii_uppercase)

    assert validation.PHONE_REGIONS == phonenumbers.SUPPORTED_REGIONS
    assert [
        code
        for code in codes
        if validation.supported_region(code) != (code in phonenumbers.SUPPORTED_REGIONS)
    ] == []
