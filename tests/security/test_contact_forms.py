"""Defects 7 and 8: a UTF-8 BOM loses no contacts; an IDN address goes out in the form the source gave."""

from __future__ import annotations

import json

import pytest

from altcraft.mapping import Mapper, ProfileMapping
from altcraft.sources import FileSource
from altcraft.validation import email_identity, normalize_email

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    ("name", "content", "encoding"),
    [
        ("contacts.csv", BOM + b"id,email\n1,a@example.org\n2,b@example.org\n", "utf-8"),
        ("contacts.jsonl", BOM + b'{"id": 1, "email": "a@example.org"}\n{"id": 2}\n', "utf-8"),
        ("contacts.csv", BOM + b"id;email\n1;a@example.org\n2;b@example.org\n", "utf-8-sig"),
        ("contacts.csv", "id,email\n1,a@example.org\n2,b@example.org\n".encode("utf-16"), "utf-16"),
    ],
)
def test_csv_with_a_utf8_bom_keeps_its_contacts(tmp_path, name, content, encoding):
    (tmp_path / name).write_bytes(content)
    source = FileSource(
        str(tmp_path),
        key_column="id",
        format="jsonl" if name.endswith("jsonl") else "csv",
        window_by="mtime",
        encoding=encoding,
        delimiter=";" if b";" in content else ",",
    )
    records = [record for batch in source.batches(None, 10) for record in batch]
    assert [str(record.get("id")) for record in records] == ["1", "2"], records
    assert all(not key.startswith("\ufeff") for record in records for key in record)


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("user@xn--80ak6aa92e.com", "user@xn--80ak6aa92e.com"),  # a Cyrillic look-alike of apple.com
        ("User@XN--80AK6AA92E.COM", "User@xn--80ak6aa92e.com"),
        ("user@пример.рф", "user@пример.рф"),
        ("user@ПРИМЕР.РФ", "user@пример.рф"),
        ("Anna@Example.ORG", "Anna@example.org"),
    ],
)
def test_idn_email_is_sent_in_the_form_the_source_gave(given, sent):
    assert normalize_email(given) == sent
    mapping = ProfileMapping.model_validate({"matching": "email", "key": {"email": "email"}})
    profile = Mapper(mapping, source_key_column="id").map({"id": 1, "email": given})
    assert profile.match["email"] == sent
    assert profile.ledger_key == f"email:{email_identity(sent)}".lower()
    assert json.loads(profile.encoded or json.dumps(profile.batch_item()))["email"] == sent


def test_both_forms_of_an_idn_address_are_one_contact_in_the_ledger():
    """The ledger keeps the Unicode form it always used, so nobody is launched again after an upgrade."""
    mapping = ProfileMapping.model_validate({"matching": "email", "key": {"email": "email"}})
    mapper = Mapper(mapping, source_key_column="id")
    forms = ("u@xn--e1afmkfd.xn--p1ai", "U@XN--E1AFMKFD.XN--P1AI", "u@пример.рф")
    assert {mapper.map({"id": 1, "email": form}).ledger_key for form in forms} == {"email:u@пример.рф"}
