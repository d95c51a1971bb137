"""Reconciliation verdicts, ledger keys read back as ``profiles/get`` requests, the launch marker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from altcraft.ledger import Outcome, Resolution, Settlement, UncertainContact
from altcraft.mapping import Mapper, ProfileMapping, identity_keys
from altcraft.reconciliation import (
    DEFAULT_GRACE,
    another_profile,
    by_task,
    judge,
    launch_marker,
    match_of,
    of_forms,
    sent_forms,
    with_marker,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
#: when the contacts below (uncertain since T0) are read back: their requests are past the grace
LATER = T0 + DEFAULT_GRACE


def contact(marker: str | None, delivery_mode: str | None = "batch") -> UncertainContact:
    claimed = T0 - timedelta(minutes=5)  # one request per contact: sent, and lost, well after the claim
    return UncertainContact(
        "email:anna@example.org",
        "h",
        marker,
        claimed,
        "dag/task/run",
        1,
        "b1",
        delivery_mode,
        uncertain_since=T0,
    )


REFUSED = Settlement(Outcome.FAILED, 400, "invalid field anna@example.org")


@pytest.mark.parametrize(
    ("said", "now", "outcome", "says"),
    [
        (Settlement(Outcome.LAUNCHED, profile_id="p1"), T0, Outcome.LAUNCHED, "task t1 reports it launched"),
        (REFUSED, LATER, Outcome.FAILED, "not processed (reconciled 2030-01-01T00:10:00+00:00: its Altcraft "
         "task t1 refused it: API 400: invalid field a***@e***.org)"),
        (REFUSED, LATER - timedelta(seconds=1), None, "refused it (API 400: invalid field a***@e***.org), "
         "but it became uncertain less than the grace (600 s) ago: not processed from 2030-01-01T00:10:00"),
        (Settlement(Outcome.UNCERTAIN, 500, "internal"), LATER, None, "nothing conclusive of it (API 500"),
        (Settlement(Outcome.UNCERTAIN, text="no result"), LATER, None, "conclusive of it (no result)"),
    ],
    ids=["launched", "refused", "refused within the grace", "another error", "no answer"],
)  # fmt: skip
def test_a_finished_altcraft_task_decides_what_its_result_proves(said, now, outcome, says):
    """Launched or refused by the task that carried the request (the grace applying to a resend as ever);
    anything else is left to the profile's reading, saying why. Contact data in Altcraft's text is masked."""
    verdict = by_task(contact(None, "async"), "t1", said, now)
    if outcome is None:
        assert isinstance(verdict, str) and says in verdict
    else:
        assert (verdict.outcome, verdict.profile_id) == (outcome, said.profile_id) and says in verdict.reason


@pytest.mark.parametrize("delivery_mode", ["single", "batch"])
@pytest.mark.parametrize(
    ("marker", "profile", "outcome", "says"),
    [
        (
            "AF_SYNC=abc",
            {"id": "p1", "AF_SYNC": "abc"},
            Outcome.LAUNCHED,
            "carries the request's launch marker",
        ),
        ("AF_SYNC=abc", {"id": "p1", "AF_SYNC": "old"}, Outcome.FAILED, "another request's"),
        ("AF_SYNC=abc", {"id": "p1"}, Outcome.FAILED, "AF_SYNC is none"),
        ("AF_SYNC=abc", None, Outcome.FAILED, "no such profile"),
        (None, None, Outcome.FAILED, "no such profile"),
        (
            None,
            {"id": "p1", "_createtime": "2030-01-01T00:00:00Z"},
            Outcome.UNCERTAIN,
            "carried no launch marker",
        ),
    ],
)
def test_verdicts_follow_the_evidence(marker, profile, outcome, says, delivery_mode):
    """A request sent synchronously was processed when its answer was lost, or never will be."""
    verdict = judge(contact(marker, delivery_mode), profile, LATER)
    assert verdict.outcome is outcome
    assert says in verdict.reason
    assert "anna" not in verdict.reason, "no contact data in reasons"


@pytest.mark.parametrize(
    ("delivery_mode", "says"),
    [
        ("async", "the request created an Altcraft task that may still be queued"),
        (None, "the ledger has no delivery mode for the request (claimed by an earlier version)"),
    ],
    ids=["async", "not-recorded"],
)
@pytest.mark.parametrize(
    ("marker", "profile", "outcome"),
    [
        ("AF_SYNC=abc", {"id": "p1", "AF_SYNC": "abc"}, Outcome.LAUNCHED),
        ("AF_SYNC=abc", {"id": "p1", "AF_SYNC": "old"}, Outcome.UNCERTAIN),
        ("AF_SYNC=abc", None, Outcome.UNCERTAIN),
        (None, None, Outcome.UNCERTAIN),
    ],
)
def test_a_request_that_may_still_be_queued_is_never_judged_not_processed(
    marker, profile, outcome, delivery_mode, says
):
    """Sent as an Altcraft task (or not known to be sent otherwise: a claim of an earlier version), a
    request may still wait in Altcraft's queue: only the marker is evidence."""
    verdict = judge(contact(marker, delivery_mode), profile, T0 + timedelta(days=30))
    assert verdict.outcome is outcome
    if outcome is Outcome.UNCERTAIN:
        assert says in verdict.reason


@pytest.mark.parametrize("delivery_mode", ["single", "batch"])
@pytest.mark.parametrize(
    ("marker", "profile"),
    [("AF_SYNC=abc", {"id": "p1", "AF_SYNC": "old"}), ("AF_SYNC=abc", None), (None, None)],
)
def test_a_synchronous_request_within_the_grace_may_still_be_running(marker, profile, delivery_mode):
    """An answer lost to a client-side timeout does not stop the request: read before the grace has passed
    since the answer was lost (not since the claim, which may be older), a missing marker or profile
    proves nothing, so the contact is not sent again."""
    sent = contact(marker, delivery_mode)
    early = judge(sent, profile, LATER - timedelta(seconds=1))
    assert early.outcome is Outcome.UNCERTAIN
    assert (
        "answer was lost 599 s ago and Altcraft may still be processing the request (the grace is 600 s)"
        in early.reason
    )
    assert judge(sent, profile, LATER).outcome is Outcome.FAILED
    assert judge(sent, profile, T0 + timedelta(seconds=30), grace=timedelta(seconds=30)).outcome is (
        Outcome.FAILED
    )
    marked = judge(sent, {"id": "p1", "AF_SYNC": "abc"}, T0)
    assert marked.outcome is (Outcome.LAUNCHED if marker else Outcome.UNCERTAIN), "the marker needs no wait"


def test_a_profile_without_a_marker_its_database_cannot_show_proves_nothing():
    """Without the marker's field in the database (deleted since the send, or never a custom string
    field) no profile can show the marker: its absence is not "not processed". Another request's marker
    is still shown, and no profile is still absent."""
    unseen = "launch marker field 'AF_SYNC' does not exist in the database; create it (type string)"
    sent = contact("AF_SYNC=abc")
    verdict = judge(sent, {"id": "p1"}, LATER, marker_unseen=unseen)
    assert verdict.outcome is Outcome.UNCERTAIN
    assert f"the profile shows no AF_SYNC, but {unseen}" in verdict.reason
    assert judge(sent, {"id": "p1", "AF_SYNC": "old"}, LATER, marker_unseen=unseen).outcome is Outcome.FAILED
    assert judge(sent, None, LATER, marker_unseen=unseen).outcome is Outcome.FAILED
    assert judge(sent, {"id": "p1"}, LATER).outcome is Outcome.FAILED


ANNA = {"matching": "email", "email": "anna@example.org"}
SUBSCRIBED = [{"channel": "email", "email_data": {"email": "Anna@Example.org"}, "resource_id": 1}]
SMS_SUBSCRIBED = [{"channel": "sms", "phone_data": {"phone": "+79001234567"}, "resource_id": 1}]


@pytest.mark.parametrize(
    ("profile", "match", "other"),
    [
        ({"email": "ANNA@example.org "}, ANNA, None),
        ({"email": "work@example.org", "subscriptions": SUBSCRIBED}, ANNA, None),
        ({"email": "boris@example.org", "subscriptions": SUBSCRIBED[:0]}, ANNA, "email"),
        ({"email": "boris@example.org", "subscriptions": [{"email": "b@example.org"}]}, ANNA, "email"),
        ({"id": "p1", "_fname": "Boris"}, ANNA, None),
        ({"phones": ["+7 (900) 123-45-67"]}, {"matching": "phone", "phone": "+79001234567"}, None),
        ({"phones": ["+79007654321"]}, {"matching": "phone", "phone": "+79001234567"}, "phone"),
        (
            {"phones": ["+79007654321"], "subscriptions": SMS_SUBSCRIBED},
            {"matching": "phone", "phone": "+7 900 123-45-67"},
            None,
        ),
        ({"subscriptions": SMS_SUBSCRIBED}, {"matching": "phone", "phone": "+79007654321"}, "phone"),
        (
            {"email": "boris@example.org", "phones": ["+79001234567"]},
            {"matching": "email_phone", "email": "anna@example.org", "phone": "+79001234567"},
            None,
        ),
        (
            {"email": "boris@example.org", "phones": ["+79007654321"]},
            {"matching": "email_phone", "email": "anna@example.org", "phone": "+79001234567"},
            "email and phone",
        ),
        ({"CRM_ID": 17}, {"matching": "custom", "field_name": "CRM_ID", "field_value": "17"}, None),
        (
            {"CRM_ID": "18"},
            {"matching": "custom", "field_name": "CRM_ID", "field_value": "17"},
            "custom field",
        ),
        ({"CRM_ID": "18"}, {"matching": "custom_sub", "field_name": "CRM_ID", "field_value": "17"}, None),
        ({"KF": 1.0}, {"matching": "custom", "field_name": "KF", "field_value": "1"}, None),
        ({"KF": 1e16}, {"matching": "custom", "field_name": "KF", "field_value": "10000000000000000"}, None),
        ({"KF": 1.0}, {"matching": "custom", "field_name": "KF", "field_value": "1.0"}, None),
        ({"KF": 1.5}, {"matching": "custom", "field_name": "KF", "field_value": "1"}, "custom field"),
        ({"KS": "1"}, {"matching": "custom", "field_name": "KS", "field_value": "1.00"}, "custom field"),
    ],
    ids=[
        "same-email",
        "email-in-a-subscription",
        "other-email",
        "other-subscription",
        "email-not-shown",
        "same-phone",
        "other-phone",
        "phone-in-a-subscription",  # profiles/get nests it: "phone_data" - for SMS (Subscription object page)
        "other-phone-subscription",
        "either-key",
        "neither-key",
        "same-custom",
        "other-custom",
        "custom-sub-not-a-profile-field",
        "float-field-of-a-number-key",  # a float field shows 1.0 for the key custom:1
        "float-field-of-a-large-key",
        "float-field-of-an-earlier-key",  # custom:1.0, written by an earlier version
        "other-float",
        "text-is-compared-as-text",
    ],
)
def test_an_answer_about_another_profile_is_told_by_what_it_shows(profile, match, other):
    """The marker names the try, which sent other contacts too: a profile read back is evidence only
    when it is the contact's. Matching by email looks in the profile's email and its subscriptions."""
    assert another_profile(profile, match) == other
    verdict = judge(contact("AF_SYNC=abc"), {**profile, "AF_SYNC": "abc"}, LATER, match=match)
    assert verdict.outcome is (Outcome.UNCERTAIN if other else Outcome.LAUNCHED)
    if other:
        assert f"the answer is another profile's (its {other} is not the contact's)" in verdict.reason
        assert verdict.profile_id is None and "anna" not in verdict.reason
    assert judge(contact("AF_SYNC=abc"), {**profile}, LATER, match=match).outcome is (
        Outcome.UNCERTAIN if other else Outcome.FAILED
    ), "nor is a profile without the marker evidence, when it is another's"


@pytest.mark.parametrize(
    ("mapping", "key", "match"),
    [
        (
            {"matching": "email", "key": {"email": "e"}},
            "email:anna@example.org",
            {"email": "anna@example.org"},
        ),
        ({"matching": "phone", "key": {"phone": "p"}}, "phone:+79001234567", {"phone": "+79001234567"}),
        (
            {"matching": "custom", "field_name": "CRM_ID", "key": {"field_value": "id"}},
            "custom:A|1",
            {"field_value": "A|1", "field_name": "CRM_ID"},
        ),
        (
            {"matching": "email_phone", "key": {"email": "e", "phone": "p"}},
            "email_phone:|+79001234567",
            {"phone": "+79001234567"},
        ),
        (
            {"matching": "email_phone", "key": {"email": "e", "phone": "p"}, "resource_id": 3},
            "email_phone:anna@example.org|+79001234567",
            {"email": "anna@example.org", "phone": "+79001234567", "resource_id": 3},
        ),
        (  # "|" is valid in an email's local part: the key's last "|" ends the email (a phone has none)
            {"matching": "email_phone", "key": {"email": "e", "phone": "p"}},
            "email_phone:a|b@example.org|+79001234567",
            {"email": "a|b@example.org", "phone": "+79001234567"},
        ),
        (
            {"matching": "email_phone", "key": {"email": "e", "phone": "p"}},
            "email_phone:a|b@example.org|",
            {"email": "a|b@example.org"},
        ),
        # recorded under another matching mode (the pipeline's changed, or another pipeline sent it): looked
        # up by the mode it was sent with
        ({"matching": "email", "key": {"email": "e"}}, "phone:+79001234567", {"phone": "+79001234567"}),
        (
            {"matching": "email_phone", "key": {"email": "e", "phone": "p"}, "resource_id": 3},
            "email:anna@example.org",
            {"email": "anna@example.org", "resource_id": 3},
        ),
        (
            {"matching": "email", "key": {"email": "e"}},
            "email_phone:anna@example.org|+79001234567",
            {"email": "anna@example.org", "phone": "+79001234567"},
        ),
    ],
)
def test_a_ledger_key_reads_back_as_the_profiles_get_match(mapping, key, match):
    expected = {"matching": key.partition(":")[0], **match}
    assert match_of(key, ProfileMapping.model_validate(mapping)) == expected


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("custom:A1", "does not know the field matched on"),
        ("push_sub:fcm", "does not hold the 2 keys of matching push_sub"),
        ("anna@example.org", "no known matching mode"),
    ],
)
def test_a_ledger_key_that_cannot_be_looked_up_says_why_without_its_value(key, says):
    mapping = ProfileMapping.model_validate({"matching": "email", "key": {"email": "e"}})
    with pytest.raises(ValueError, match=says) as raised:
        match_of(key, mapping)
    assert "anna" not in str(raised.value) and "A1" not in str(raised.value)


def test_the_marker_is_per_try_and_goes_into_every_profile():
    first, second = launch_marker("AF_SYNC", "dag/task/run", 1), launch_marker("AF_SYNC", "dag/task/run", 2)
    assert first.startswith("AF_SYNC=") and len(first.partition("=")[2]) == 16 and first != second
    mapping = ProfileMapping.model_validate({"matching": "email", "key": {"email": "email"}})
    profile = Mapper(with_marker(mapping, first), source_key_column="id").map(
        {"id": 1, "email": "anna@example.org"}
    )
    assert profile.data == {"AF_SYNC": first.partition("=")[2]}
    clash = ProfileMapping.model_validate(
        {"matching": "email", "key": {"email": "email"}, "fields": {"AF_SYNC": "x"}}
    )
    with pytest.raises(ValueError, match="also mapped"):
        with_marker(clash, first)


def test_the_probe_can_tell_whether_the_marker_field_fits():
    from altcraft.api.models import DatabaseField
    from altcraft.reconciliation import marker_field_problem

    fields = [
        DatabaseField(name="AF_SYNC", type="string", is_custom=True),
        DatabaseField(name="LOYALTY", type="int", is_custom=True),
        DatabaseField(name="email", type="string"),
    ]
    assert marker_field_problem(fields, "AF_SYNC") is None
    assert "does not exist" in marker_field_problem(fields, "AF_MISSING")
    assert "custom string field" in marker_field_problem(fields, "LOYALTY")
    assert "custom string field" in marker_field_problem(fields, "email")


def test_the_marker_check_reads_the_documented_fields_layout():
    """The one fields answer the guide shows (resources/fields_get, developer-guide/resources/2195591):
    ``{"category": "custom", "title", "name", "required", "type"}``, text fields of type ``unicode``."""
    from altcraft.api.models import DatabaseField
    from altcraft.reconciliation import marker_field_problem

    documented = [
        {"category": "custom", "title": "Sync", "name": "AF_SYNC", "required": False, "type": "unicode"},
        {
            "category": "custom",
            "title": "New_field_1",
            "name": "api_new_field_1",
            "required": False,
            "type": "int",
        },
        {
            "category": "system",
            "title": "Device model",
            "name": "_device_model",
            "required": False,
            "type": "unicode",
        },
    ]
    fields = [DatabaseField.model_validate(item) for item in documented]
    assert [f.is_custom for f in fields] == [True, True, False]
    assert marker_field_problem(fields, "AF_SYNC") is None
    assert "custom string field" in marker_field_problem(fields, "api_new_field_1")
    assert "custom string field" in marker_field_problem(fields, "_device_model")


@pytest.mark.parametrize(
    ("match", "forms"),
    [
        ({"email": "anna@example.org"}, [{"email": "anna@example.org"}]),
        ({"email": "анна@пример.рф"}, [{"email": "анна@пример.рф"}, {"email": "анна@xn--e1afmkfd.xn--p1ai"}]),
        (
            {"email": "a@пример.рф", "phone": "+79001234567"},
            [
                {"email": "a@пример.рф", "phone": "+79001234567"},
                {"email": "a@xn--e1afmkfd.xn--p1ai", "phone": "+79001234567"},
            ],
        ),
        ({"phone": "+79001234567"}, [{"phone": "+79001234567"}]),
        (
            {"phone": "+79001234567", "resource_id": 2},
            [{"phone": "+79001234567", "resource_id": 2}, {"phone": "+79001234567"}],
        ),
        (
            {"email": "a@пример.рф", "resource_id": 2},
            [
                {"email": "a@пример.рф", "resource_id": 2},
                {"email": "a@xn--e1afmkfd.xn--p1ai", "resource_id": 2},
                {"email": "a@пример.рф"},
                {"email": "a@xn--e1afmkfd.xn--p1ai"},
            ],
        ),
    ],
)
def test_a_contact_is_looked_up_in_every_form_its_request_may_have_carried(match, forms):
    assert sent_forms({"matching": "x", **match}) == [{"matching": "x", **form} for form in forms]


LAUNCHED, FAILED, UNSURE = (
    Resolution(o, o.value) for o in (Outcome.LAUNCHED, Outcome.FAILED, Outcome.UNCERTAIN)
)


@pytest.mark.parametrize(
    ("verdicts", "verdict"),
    [
        ([FAILED, FAILED], FAILED),
        ([FAILED, UNSURE, FAILED], UNSURE),
        ([UNSURE, LAUNCHED], LAUNCHED),
        ([FAILED, LAUNCHED, UNSURE], LAUNCHED),
        ([FAILED], FAILED),
    ],
)
def test_not_processed_needs_every_form_to_say_so(verdicts, verdict):
    assert of_forms(verdicts) is verdict


@pytest.mark.parametrize(
    ("key", "components"),
    [
        ("email_phone:anna@example.org|+79001234567", ("email:anna@example.org", "phone:+79001234567")),
        ("email_phone:a|b@example.org|+79001234567", ("email:a|b@example.org", "phone:+79001234567")),
        ("email_phone_sub:a|b@example.org|", ("email:a|b@example.org",)),
        ("email_phone:|+79001234567", ("phone:+79001234567",)),
    ],
)
def test_a_combined_key_splits_into_its_components_with_a_bar_in_the_email(key, components):
    """With the email ``a|b@example.org`` (valid) the aliases were ``email:a`` and
    ``phone:b@example.org|+79001234567``: the same person met by phone alone was a new contact."""
    assert identity_keys(key) == components
