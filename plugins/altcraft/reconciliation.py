"""Decide uncertain contacts from Altcraft's own answer: was the launching request processed?

No documented Altcraft read says "this profile entered scenario X" (``subscribers/history_get`` lists
message events only). ``profiles/get`` returns a profile's fields, so the evidence is made ours: the
optional **launch marker**, a custom profile field written in ``data`` of the launching request itself,
set to the sending try's id. Reading the profile back then tells, per contact:

* the profile carries that request's marker → it was processed: ``launched``;
* there is no profile, or the request carried a marker and the profile has none or another one → it was
  not processed: ``failed`` (the next claim sends it again, under the relaunch policy);
* anything else (a profile exists, the request carried no marker; the read failed) → still ``uncertain``,
  with the evidence noted.

A request that created an Altcraft task (``async`` delivery) may still be waiting in Altcraft's queue when
the profile is read, so only the marker is evidence there: without it the contact stays ``uncertain``.
How the request was sent is read from the ledger, which records it with each claim
(``UncertainContact.delivery_mode``), never taken from the reconciling run: another pipeline into the same
scenario, or the same one after its spec changed, may send differently. A claim without a recorded mode
(made by a version that did not record it) counts as possibly queued too: only a mode known to answer
after processing (``single``, ``batch``: :data:`~altcraft.modes.SYNCHRONOUS`) lets a missing marker or
profile mean "not processed". Judging a contact not processed while its task still waits would launch it
twice; leaving it uncertain costs at most a contact that waits for ``resend_uncertain`` or a check by hand.

An ``async`` request whose Altcraft task the ledger recorded (``altcraft_tasks``: the try that submitted it
may have died, and its Airflow task state with it) is first judged by that task's result (:func:`by_task`,
read as the sending try reads it: :func:`altcraft.delivery.task_settlements`); only what the task does not
prove is looked up.

A synchronous request is no proof either while it may still be running: an answer lost to a client-side
timeout or a dropped connection leaves Altcraft free to finish the request later. So "not processed" also
waits until ``grace`` (:data:`DEFAULT_GRACE`, ten minutes) has passed since the contact became uncertain
(its answer was lost then, at or after the send); read earlier, a missing marker or profile leaves the
contact ``uncertain``, to be decided by a later read.

Pure functions: the delivery makes the calls and the ledger records the verdicts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from altcraft.api.matching import MatchingMode
from altcraft.api.models import DatabaseField
from altcraft.ledger import Outcome, Resolution, Settlement, UncertainContact
from altcraft.ledger.rules import DEFAULT_GRACE, grace_left  # DEFAULT_GRACE: also this module's to import
from altcraft.mapping import FieldSpec, ProfileMapping
from altcraft.masking import scrub
from altcraft.modes import SYNCHRONOUS, DeliveryMode
from altcraft.validation import email_sent_forms, number_key, text_number_key

#: How many uncertain contacts one try looks up in Altcraft unless told (``reconcile_max_lookups``): a
#: backlog (an outage's) is worked through by successive runs, the longest waiting first (a contact checked
#: and left undecided goes behind the others), none holding its task for hours.
DEFAULT_MAX_LOOKUPS = 10_000


def launch_marker(field_name: str, run_key: str, try_number: int) -> str:
    """``FIELD=value`` for one task try: 16 hex of ``sha256(run_key \\n try_number)``.

    A contact is sent at most once per try, and the value must be known before profiles are encoded
    (once, before the claim), so the marker identifies the try rather than the claim's batch.
    """
    value = hashlib.sha256(f"{run_key}\n{try_number}".encode()).hexdigest()[:16]
    return f"{field_name}={value}"


def with_marker(mapping: ProfileMapping, marker: str) -> ProfileMapping:
    """``mapping`` that also writes the marker's field (a constant) into every profile's ``data``."""
    field_name, _, value = marker.partition("=")
    if field_name in mapping.fields:
        raise ValueError(f"launch marker field {field_name!r} is also mapped from the source")
    fields = {**mapping.fields, field_name: FieldSpec(const=value)}
    return mapping.model_copy(update={"fields": fields})


def match_of(contact_key: str, mapping: ProfileMapping) -> dict[str, Any]:
    """The ``profiles/get`` matching fields of a ledger key, by the matching mode it was recorded (and sent)
    under, whatever the reconciling pipeline's ``mapping`` matches by now (its matching changed, or another
    pipeline sent the contact): that mode's keys are all in the ledger key, except the field of ``custom``
    modes, which only a pipeline matching on a field (the same one: docs/ledger.md) knows; ``resource_id``
    is the mapping's (:func:`sent_forms` reads it without too). Raises ValueError saying why the key cannot
    be looked up from ``mapping``."""
    mode, _, rest = contact_key.partition(":")
    if mode not in _MODES:
        raise ValueError("its ledger key starts with no known matching mode")
    matching = MatchingMode(mode)
    names = matching.key_fields
    # "|" may be in an email or a push subscription id, never in an E.164 phone or a push provider
    parts = rest.rsplit("|", 1) if names[-1] == "phone" else rest.split("|", len(names) - 1)
    if len(parts) != len(names):
        raise ValueError(f"its ledger key does not hold the {len(names)} keys of matching {mode}")
    match: dict[str, Any] = {"matching": mode, **{n: v for n, v in zip(names, parts, strict=True) if v}}
    if matching.needs_field_name:
        if not mapping.matching.needs_field_name or not mapping.field_name:
            raise ValueError(
                f"it was sent with matching {mode}, and this pipeline (matching {mapping.matching.value}) "
                "does not know the field matched on: reconcile it from a pipeline matching on that field, "
                "or check it in Altcraft, then resend it (resend_uncertain) or set its row by hand "
                "(docs/ledger.md)"
            )
        match["field_name"] = mapping.field_name
    if mapping.resource_id is not None and mode in _RESOURCE_MODES:
        match["resource_id"] = mapping.resource_id
    return match


def sent_forms(match: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every ``profiles/get`` match of a contact (:func:`match_of`) in a form its request may have carried,
    to read each (:func:`of_forms`): ``match``, with the ASCII form of an IDN email too
    (`email_sent_forms`: the ledger keeps one form, the request carried the source's), and each again without
    ``resource_id`` (the request may have been narrowed to another resource, or to none: the ledger does not
    record which)."""
    emails = email_sent_forms(match["email"]) if "email" in match else (None,)
    forms = [dict(match) if email is None else {**match, "email": email} for email in emails]
    if "resource_id" in match:
        forms += [{k: v for k, v in form.items() if k != "resource_id"} for form in forms]
    return forms


def of_forms(verdicts: Sequence[Resolution]) -> Resolution:
    """The verdict on a contact from those of its `sent_forms` (in their order): ``launched`` if one
    shows the launch; else ``uncertain`` if one proves nothing; ``failed`` only when every form says not
    processed, as the request carried one of them."""
    return next(
        (v for v in verdicts if v.outcome is Outcome.LAUNCHED),
        next((v for v in verdicts if v.outcome is Outcome.UNCERTAIN), verdicts[-1]),
    )


_MODES = frozenset(mode.value for mode in MatchingMode)
_RESOURCE_MODES = {"email", "email_sub", "phone", "phone_sub", "email_phone", "email_phone_sub"}


def judge(
    contact: UncertainContact,
    profile: dict[str, Any] | None,
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
    *,
    match: Mapping[str, Any] | None = None,
    marker_unseen: str | None = None,
) -> Resolution:
    """The verdict on one uncertain contact from its profile as ``profiles/get`` gave it (None: absent)
    when asked with ``match`` (:func:`match_of`; None: the answer is not checked against it), at ``now`` (the
    ledger database's time, read before the profile: the one clock its rows were written by).
    ``marker_unseen``: why no profile of the database can show the marker's field
    (:func:`marker_field_problem`), so a profile without it proves nothing; None: one can.

    A profile that is not the one asked for (:func:`another_profile`) proves nothing: the marker names the
    try, which sent other contacts too. No "not processed" while the contact's request may still run
    (:func:`may_still_run`).
    """
    at = now.isoformat(timespec="seconds")
    other = None if profile is None or match is None else another_profile(profile, match)
    if other:
        return Resolution(
            Outcome.UNCERTAIN,
            f"still uncertain (reconciled {at}: the answer is another profile's (its {other} is not the "
            "contact's), which says nothing of this contact)",
        )
    verdict = _judge(contact, profile, at, marker_unseen)
    running = may_still_run(contact, now, grace)
    if running is not None and verdict.outcome is Outcome.FAILED:
        return Resolution(
            Outcome.UNCERTAIN,
            f"still uncertain (reconciled {at}: no launch marker yet, but {running})",
            verdict.profile_id,
        )
    return verdict


def by_task(
    contact: UncertainContact, task_id: str, said: Settlement, now: datetime, grace: timedelta = DEFAULT_GRACE
) -> Resolution | str:
    """The verdict on a contact from the finished Altcraft task its request created, given what the task's
    result ``said`` of it (its settlement), or why that proves nothing (then the profile is looked up).

    Launched: ``launched``. Refused: not processed, ``failed``, once ``grace`` has passed since the contact
    became uncertain (:func:`~altcraft.ledger.rules.grace_left`, as every resend waits for); within it, why
    it waits. Any other answer (an error that is no refusal, no result for it): why it proves nothing.
    """
    at, since = now.isoformat(timespec="seconds"), contact.uncertain_since
    if said.outcome is Outcome.LAUNCHED:
        return Resolution(
            Outcome.LAUNCHED,
            f"reconciled {at}: its Altcraft task {task_id} reports it launched",
            said.profile_id,
        )
    answer = (
        scrub(said.text or "no text") if said.code is None else f"API {said.code}: {scrub(said.text or '')}"
    )
    if said.outcome is not Outcome.FAILED:
        return f"its Altcraft task {task_id} says nothing conclusive of it ({answer})"
    left = grace_left(since, now, grace)
    if left is not None:
        until = (since + grace).isoformat(timespec="seconds")
        return (
            f"its Altcraft task {task_id} refused it ({answer}), but it became uncertain less than the grace "
            f"({grace.total_seconds():.0f} s) ago: not processed from {until}"
        )
    return Resolution(
        Outcome.FAILED, f"not processed (reconciled {at}: its Altcraft task {task_id} refused it: {answer})"
    )


#: Why a contact's profile is not looked up when the scenario's database is not known (its ``workflows/list``
#: answer names none, and no ``db_id`` is set): only an Altcraft task recorded for its request can decide it.
NO_DATABASE_ID = (
    "no profile lookup was possible: no Altcraft database id is known (set db_id on the operator, "
    "scenario.db_id in a pipeline spec)"
)


def unread(why: str, now: datetime) -> Resolution:
    """The verdict on a contact whose profile was not read (``why``, free of contact data: the read failed,
    or it cannot be looked up): still uncertain, with why as its evidence."""
    return Resolution(
        Outcome.UNCERTAIN, f"still uncertain (reconciled {now.isoformat(timespec='seconds')}: {why})"
    )


def another_profile(profile: Mapping[str, Any], match: Mapping[str, Any]) -> str | None:
    """The matching fields by which ``profile``, as ``profiles/get`` answered ``match``, is another
    contact's profile, or None. Only what the answer shows is compared: the email among the profile's
    ``email`` and its subscriptions' addresses (matching by email looks in both), the phone among its
    ``phones`` and its subscriptions' numbers, a ``custom`` field's value in that field. One asked key found
    is enough (combined modes find a profile by either); a key the answer does not show proves nothing."""
    asked = {
        name: _asked(name, match[name])
        for name in ("email", "phone", "field_value")
        if name in match and (name != "field_value" or match.get("matching") == "custom")
    }
    shown: dict[str, set[Compared | None]] = {}
    for name in asked:
        values = {_normal(name, v) for v in _shown(profile, name, match.get("field_name"))} - {None}
        if values:
            shown[name] = values
    if not shown or any(asked[name] & values for name, values in shown.items()):
        return None
    return " and ".join("custom field" if name == "field_value" else name for name in shown)


def _shown(profile: Mapping[str, Any], name: str, field_name: str | None) -> Iterator[Any]:
    """The values of one matching key that a ``profiles/get`` answer shows: profile fields, subscriptions."""
    if name == "field_value":
        value = profile.get(field_name or "")
        yield from value if isinstance(value, list) else [value]
        return
    value = profile.get("phones" if name == "phone" else "email")
    yield from value if isinstance(value, list) else [value]
    for sub in profile.get("subscriptions") or ():
        if isinstance(sub, Mapping):
            yield sub.get(name)
            # profiles/get nests the address: '"email_data" - for Email subscriptions, "phone_data" - for
            # SMS/Viber/WhatsApp' (developer-guide/objects/Subscription-status_2195807)
            nested = sub.get(f"{name}_data")
            if isinstance(nested, Mapping):
                yield nested.get(name)


Compared = str | tuple[str, str]
"""A matching value as `another_profile` compares it: text, or ``("number", key text)`` of a number."""


def _asked(name: str, value: Any) -> set[Compared | None]:
    """The forms a profile may show the asked ``value`` (text of a ledger key) in: itself, and a custom
    field's number (``1.0`` of a float field) for a key that writes one (``custom:1``, or ``custom:1.0`` of
    an earlier version)."""
    forms = {_normal(name, value)}
    number = text_number_key(str(value)) if name == "field_value" else None
    return forms if number is None else {*forms, ("number", number)}


def _normal(name: str, value: Any) -> Compared | None:
    """A matching value as compared: emails without case, phones by their digits, a custom field's number in
    its key's form (`altcraft.validation.number_key`), others as text."""
    if value is None or value == "" or isinstance(value, Mapping | list):
        return None
    number = number_key(value) if name == "field_value" else None
    if number is not None:
        return ("number", number)
    text = str(value).strip()
    if name == "email":
        return text.casefold()
    return "".join(ch for ch in text if ch.isdigit()) if name == "phone" else text


def may_still_run(contact: UncertainContact, now: datetime, grace: timedelta = DEFAULT_GRACE) -> str | None:
    """Why the contact's request may still be processed by Altcraft, or None when a missing marker or
    profile means it was not: its recorded delivery mode answers only after processing
    (:data:`~altcraft.modes.SYNCHRONOUS`) and ``grace`` has passed since its answer was lost
    (:func:`~altcraft.ledger.rules.grace_left`)."""
    if contact.delivery_mode == DeliveryMode.ASYNC:
        return "the request created an Altcraft task that may still be queued"
    if contact.delivery_mode not in SYNCHRONOUS:
        return (
            "the ledger has no delivery mode for the request (claimed by an earlier version): it may be an "
            "Altcraft task still queued"
        )
    if grace_left(contact.uncertain_since, now, grace) is not None:
        age = now - contact.uncertain_since
        return (
            f"its answer was lost {max(age.total_seconds(), 0):.0f} s ago and Altcraft may still be "
            f"processing the request (the grace is {grace.total_seconds():.0f} s)"
        )
    return None


def _judge(
    contact: UncertainContact, profile: dict[str, Any] | None, at: str, marker_unseen: str | None
) -> Resolution:
    if profile is None:
        return Resolution(Outcome.FAILED, f"not processed (reconciled {at}: Altcraft has no such profile)")
    profile_id = str(profile.get("id") or "") or None
    if contact.launch_marker:
        field_name, _, value = contact.launch_marker.partition("=")
        found = profile.get(field_name)
        if found == value:
            return Resolution(
                Outcome.LAUNCHED,
                f"reconciled {at}: the profile carries the request's launch marker {contact.launch_marker}",
                profile_id,
            )
        seen = "none" if found in (None, "") else "another request's"
        if seen == "none" and marker_unseen:
            return Resolution(
                Outcome.UNCERTAIN,
                f"still uncertain (reconciled {at}: the profile shows no {field_name}, but {marker_unseen})",
                profile_id,
            )
        return Resolution(
            Outcome.FAILED,
            f"not processed (reconciled {at}: the profile's {field_name} is {seen}, "
            f"not the request's {value})",
            profile_id,
        )
    created = profile.get("_createtime") or "unknown"
    return Resolution(
        Outcome.UNCERTAIN,
        f"still uncertain (reconciled {at}: the profile exists, created {created}, and the request "
        "carried no launch marker; set launch_marker_field to let reconciliation decide)",
        profile_id,
    )


def marker_field_problem(fields: Sequence[DatabaseField], field_name: str) -> str | None:
    """Why ``field_name`` cannot carry the launch marker in a database with these fields, or None.

    For the conformance probe (``databases/fields_get``): the field must exist, be custom and hold text.
    """
    found = next((f for f in fields if f.name == field_name), None)
    if found is None:
        return f"launch marker field {field_name!r} does not exist in the database; create it (type string)"
    if not found.is_custom or not found.holds_text:
        return f"launch marker field {field_name!r} must be a custom string field (it is {found.type})"
    return None
