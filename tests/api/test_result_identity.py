"""`altcraft.api.result_identity`: what a per-contact result says about whom it answers, against the contact
sent at its position."""

from __future__ import annotations

import pytest

from altcraft.api.result_identity import contact_values, item_identity, key_identity, keys_misattributed

OK = {"error": 0, "error_text": "Successful operation"}
EMAILS = ["email:anna@example.org", "email:user@пример.рф"]


@pytest.mark.parametrize(
    ("keys", "echoes"),
    [
        (EMAILS, [{"email": "Anna@Example.org"}, {"email": "user@xn--e1afmkfd.xn--p1ai"}]),
        (["phone:+79001234567"], [{"phone": "+7 (900) 123-45-67"}]),
        (["custom:123"], [{"field_value": 123}]),
        (["custom:1", "custom:0.00001"], [{"field_value": 1.0}, {"field_value": 1e-05}]),  # a float field's
        (["email_phone:a@b.org|+79001234567"], [{"email": "a@b.org", "phone": "79001234567"}]),
        (["email_phone:|+79001234567"], [{"email": "other@b.org", "phone": "+79001234567"}]),
        (
            ["push_sub:android-firebase|tok|en"],
            [{"provider": "android-firebase", "subscription_id": "tok|en"}],
        ),
        (["profile_id:65a0"], [{"profile_id": "65a0"}]),
        (EMAILS, [{"profile_id": "65a0"}, {"profile_id": "65a1"}]),  # not a value we sent
        (EMAILS, [{"index": 0}, {"index": 1}]),
        (EMAILS, [{"index": 1}, {"index": 2}]),
        (EMAILS, [{"email": None}, {"email": ""}]),
        (EMAILS, ["not an object", None]),  # left to the reader, which refuses it
        (EMAILS, [{}, {}, {"email": "someone@else.org"}]),  # a third result: a count the caller checks
    ],
    ids=[
        "email-case-and-idn",
        "phone-punctuation",
        "custom-int",
        "custom-float",
        "combined",
        "combined-email-not-sent",
        "push",
        "profile-id-matching",
        "profile-id-of-other-matching",
        "index-0",
        "index-1",
        "empty-echo",
        "not-objects",
        "beyond-the-sent",
    ],
)
def test_results_naming_the_contact_at_their_position_pass(keys, echoes):
    assert keys_misattributed(keys, [{**OK, **e} if isinstance(e, dict) else e for e in echoes]) is None


@pytest.mark.parametrize(
    ("keys", "echoes", "reason"),
    [
        (EMAILS, [{"email": "user@пример.рф"}, {}], "result 1 names another contact (email)"),
        (["phone:+79001234567"], [{"phone": "+79001234568"}], "result 1 names another contact (phone)"),
        (["profile_id:65a0", "profile_id:65a1"], [{}, {"profile_id": "65a0"}], "result 2 names another"),
        (
            ["custom:1", "custom:2"],
            [{}, {"field_value": 1.0}],
            "result 2 names another contact (field_value)",
        ),
        (["custom:1"], [{"field_value": "1.0"}], "result 1 names another contact (field_value)"),  # text
        (EMAILS, [{"index": 1}, {"index": 0}], "result 2 gives index 0"),
        (EMAILS, [{"index": 0}, {"index": 2}], "result 2 gives index 2"),
        (EMAILS, [{"index": 5}, {}], "result 1 gives index 5"),
        (EMAILS, [{"index": "0"}, {}], "result 1 gives index str"),
        (EMAILS, [{"index": True}, {}], "result 1 gives index bool"),
    ],
)
def test_a_result_naming_another_contact_is_named_without_its_value(keys, echoes, reason):
    why = keys_misattributed(keys, [{**OK, **e} for e in echoes])
    assert why is not None and why.startswith(reason)
    assert "@" not in why and "+7900" not in why and "65a" not in why


def test_nothing_to_check_without_a_result_list_or_keys():
    assert keys_misattributed(EMAILS, {"result": []}) is None
    assert keys_misattributed([], [{"email": "a@b.org"}]) is None
    assert keys_misattributed(["legacy-key"], [{"email": "a@b.org"}]) is None


def test_identities_of_keys_and_import_items():
    assert key_identity("email_phone:a@b.org|") == {"email": "a@b.org"}
    assert key_identity("custom:A:1|2") == {"field_value": "A:1|2"}
    assert item_identity({"email": "a@b.org", "_fname": "A", "phone": ""}, "email_phone") == {
        "email": "a@b.org"
    }
    assert item_identity("not an item", "email") == {}


@pytest.mark.parametrize(
    ("keys", "values"),
    [
        (["phone:+4930123"], ("+4930123",)),
        (["email_phone:anna@example.org|+4930123"], ("anna@example.org", "+4930123")),
        (["push_sub:firebase|sub-123456"], ("sub-123456",)),  # not the provider's name
        (["custom:A-1"], ("A-1",)),
        (["email:a@example.org", "email:b@example.org"], ()),  # a batch: no one contact's text
        ([], ()),
    ],
)
def test_contact_values_are_the_matching_values_of_a_lone_contact(keys, values):
    assert contact_values(keys) == values


def test_contact_values_take_the_emails_and_phones_of_the_contacts_data_whatever_field_carries_them():
    from altcraft.api.result_identity import contact_values
    from altcraft.masking import MAX_KNOWN_VALUES

    data = {"_fname": "Anna", "phones": "+4930123", "_lname": "anna@example.org", "_bdate": "1990-01-02"}
    assert set(contact_values(["custom:A-1"], data)) == {"A-1", "+4930123", "anna@example.org"}
    assert contact_values(["a", "b"], data) == ()  # several contacts: `request_values`
    many = {f"f{n}": f"+4930{n:04d}" for n in range(20)}
    assert len(contact_values(["email:a@b.org"], many)) == MAX_KNOWN_VALUES


def test_request_values_take_every_contacts_keys_and_data_in_any_layout():
    from altcraft.api.result_identity import request_values

    items = [{"phone": "+79001234567", "data": {"phones": "+4930123", "_fname": "Anna"}}, {"data": {"x": 1}}]
    assert set(request_values(["phone:+79001234567", "phone:+79001234568"], items)) == {
        "+79001234567",
        "+79001234568",
        "+4930123",
    }


def test_texts_about_a_request_read_its_contacts_values_once_and_only_for_several():
    import json

    from altcraft.api.result_identity import texts_about

    single = {"phone": "+79001234567", "data": {"phones": "+4930123"}}
    known, about = texts_about(["phone:+79001234567"], single)
    assert set(known) == {"+79001234567", "+4930123"} and about is None
    raw = json.dumps([{"data": {"phones": "+4930123"}}, {"data": {"phones": "+4930124"}}]).encode()
    known, about = texts_about(["email:a@b.org", "email:c@d.org"], {}, raw)
    assert known == () and set(about()) == {"a@b.org", "c@d.org", "+4930123", "+4930124"}
    assert about() is about()  # read once, whatever the retries
    assert texts_about([], {"db_id": 12345678, "data": {"phones": "+4930123"}}) == (("+4930123",), None)
    assert texts_about([], {"email": "a@b.org", "data": {"x": "y"}}) == (("a@b.org",), None)
    assert texts_about([], {"matching": "email"}) == ((), None)
    known, about = texts_about([], {"data": [{"email": "a@b.org"}, {"email": "c@d.org"}]})
    assert known == () and set(about()) == {"a@b.org", "c@d.org"}
    assert set(texts_about(["email:a@b.org"], {}, b"not json")[0]) == {"a@b.org"}
