"""Answers that do not say what Altcraft did are read as neither success nor refusal.

A contact is recorded ``failed`` (sent again by a later claim) only on an answer that refuses it (the
documented refusal codes, with nothing reported on profiles), and ``launched`` only on a result that says so
with its code. Anything else -- an undocumented or non-refusal code, an error answer that also reports on
profiles, a result without its code, a task whose counts or results cannot be read, a ``profiles/get``
404 that may be about the database -- leaves the contact ``uncertain``: never resent blindly.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from altcraft.delivery import DeliveryStopped
from altcraft.ledger import Outcome

from .conftest import MARKER, contacts, in_batches, launch_counts, run_ref

BATCH = "workflows/import_and_start_batch"


def _states(delivery) -> dict[Outcome, int]:
    return {outcome: n for outcome, n in delivery.session.counts().items() if n}


@pytest.mark.parametrize(
    ("status", "answer"),
    [
        (200, {"error": 1, "error_text": "Some profiles were not imported"}),
        (400, {"error": 400, "error_text": "Bad request"}),
        (402, {"error": 402, "error_text": "Tariff limit reached"}),
        (408, {"error": 408, "error_text": "Request timeout"}),
    ],
    ids=[
        "undocumented-code-with-results",
        "refusal-code-with-results",
        "tariff-limit",
        "undocumented-status",
    ],
)
def test_an_error_answer_that_does_not_refuse_the_request_leaves_it_uncertain(
    make_delivery, emulator, proxy, scenario_id, status, answer
):
    """Altcraft processed the batch (the emulator launched every contact), and its answer carries an error
    code that is not a refusal, or a refusal beside per-profile results: nobody is recorded failed, and the
    next try sends nobody again."""
    proxy.rewrite[BATCH] = lambda body, upstream, _: (
        status,
        {**answer, **({"result": upstream["result"]} if answer["error"] in (1, 400) else {})},
    )
    with pytest.raises(DeliveryStopped):
        make_delivery(batch_size=5).process(in_batches(contacts(5), 5))
    proxy.rewrite.clear()

    again = make_delivery(batch_size=5, run=run_ref(try_number=2))
    summary = again.process(in_batches(contacts(5), 5))
    assert (summary.launched, summary.uncertain, summary.requests) == (0, 5, 0)
    assert _states(again) == {Outcome.UNCERTAIN: 5}
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 5


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413])
def test_a_request_refused_as_a_whole_fails_and_the_next_try_sends_it(
    make_delivery, emulator, scenario_id, status
):
    """The emulator refuses the request before processing it: the contacts failed, and the next try
    launches each once."""
    emulator.add_faults({"endpoint": BATCH, "kind": "status", "status": status, "count": 1})
    with pytest.raises(DeliveryStopped):
        make_delivery(batch_size=5).process(in_batches(contacts(5), 5))
    again = make_delivery(batch_size=5, run=run_ref(try_number=2))
    assert again.process(in_batches(contacts(5), 5)).launched == 5
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 5


@pytest.mark.parametrize(
    ("code", "outcome"), [(400, Outcome.FAILED), (500, Outcome.UNCERTAIN), (1, Outcome.UNCERTAIN)]
)
def test_a_profile_error_is_a_failure_only_when_its_code_refuses_the_profile(
    make_delivery, emulator, scenario_id, code, outcome
):
    emulator.add_faults(
        {"endpoint": BATCH, "kind": "profile_error", "code": code, "text": "odd", "every": 2, "count": None}
    )
    summary = make_delivery(batch_size=10).process(in_batches(contacts(10)))
    assert (summary.launched, summary.failed, summary.uncertain) == (
        5,
        5 if outcome is Outcome.FAILED else 0,
        5 if outcome is Outcome.UNCERTAIN else 0,
    )


@pytest.mark.parametrize(
    "missing", [{"drop": True}, {"error": None}, {"error": ""}], ids=["no-key", "null", "empty"]
)
def test_a_result_without_its_error_code_is_not_read_as_launched(
    make_delivery, emulator, proxy, scenario_id, missing
):
    """Every other result of the answer has lost its code: the batch is uncertain, not launched."""

    def without_codes(body, upstream, status):
        results = []
        for n, item in enumerate(upstream["result"]):
            if n % 2:
                item = {k: v for k, v in item.items() if k != "error"}
                if not missing.get("drop"):
                    item["error"] = missing["error"]
            results.append(item)
        return status, {**upstream, "result": results}

    proxy.rewrite[BATCH] = without_codes
    with pytest.raises(DeliveryStopped, match="uncertain"):
        make_delivery(batch_size=6).process(in_batches(contacts(6), 6))
    proxy.rewrite.clear()
    again = make_delivery(batch_size=6, run=run_ref(try_number=2))
    assert again.process(in_batches(contacts(6), 6)).requests == 0
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 6


def _task_result(result):
    def rewrite(body, upstream, status):
        data = upstream.get("data") or {}
        if data.get("status") in ("completed", "success"):
            data = {**data, "result": result(data.get("result"))}
        return status, {**upstream, "data": data}

    return rewrite


def _last(given: dict, entry) -> dict:
    """The per-profile task result with its last entry replaced by ``entry(last)``."""
    return {**given, "result": [*given["result"][:-1], entry(given["result"][-1])]}


@pytest.mark.parametrize(
    ("layout", "result"),
    [
        ("counts", lambda given: {"total": 4, "type": "database"}),
        ("counts", lambda given: {"total": 4, "errors": [], "failed_count": 2}),
        ("counts", lambda given: {"total": 4.5, "errors": []}),
        ("per_profile", lambda given: _last(given, lambda last: None)),
        (
            "per_profile",
            lambda given: _last(given, lambda last: {**last, "profile_id": {"email": "user3@example.org"}}),
        ),
        ("per_profile", lambda given: _last(given, lambda last: {"error_text": "Successful operation"})),
    ],
    ids=[
        "no-error-count",
        "failed-count",
        "fractional-total",
        "unreadable-entry",
        "odd-profile-id",
        "no-code",
    ],
)
def test_a_finished_task_whose_results_prove_nothing_settles_its_contacts_uncertain(
    make_delivery, emulator, proxy, scenario_id, layout, result, caplog
):
    """The contacts are settled (not left ``sending`` for every later try to trip over), uncertain, and no
    contact data of the answer reaches the log."""
    emulator.config(task_result=layout, task_delay_seconds=0.05)
    proxy.rewrite["tasks/status"] = _task_result(result)
    delivery = make_delivery(mode="async", batch_size=4)
    delivery.process(in_batches(contacts(4), 4))
    delivery.settle_tasks(delivery.tasks, timeout=60, poll_interval=0.05)
    assert (delivery.summary.launched, delivery.summary.uncertain, delivery.summary.pending) == (0, 4, 0)
    assert _states(delivery) == {Outcome.UNCERTAIN: 4}
    assert not delivery.tasks
    assert "user3@example.org" not in caplog.text


def _reconciled(make_delivery, emulator, fault: str, db_id: int):
    """Try 1 loses the answer of its batch of 3 (`fault`); try 2 reads the contacts back from database
    ``db_id`` at once (no grace) and sends what that proves unsent. Try 2's summary."""
    emulator.add_faults({"endpoint": BATCH, "kind": fault, "count": 1})
    with pytest.raises(DeliveryStopped):
        make_delivery(batch_size=3).process(in_batches(contacts(3), 3))
    again = make_delivery(
        batch_size=3, run=run_ref(try_number=2), profiles_db_id=db_id, reconcile_grace=timedelta(0)
    )
    return again.process(in_batches(contacts(3), 3))


def _marked_retry(make_delivery, db_id: int):
    """Try 2 of a batch of 3 carrying the launch marker: it reads its uncertain contacts back from database
    ``db_id`` at once (no grace)."""
    return make_delivery(
        batch_size=3,
        run=run_ref(try_number=2),
        launch_marker_field=MARKER,
        profiles_db_id=db_id,
        reconcile_grace=timedelta(0),
    )


def test_a_profile_lookup_404_for_a_database_that_does_not_exist_proves_nothing(
    make_delivery, emulator, scenario_id
):
    """Reconciling against a database id Altcraft does not have (a spec edited since): its 404 is not "no
    such profile", so the contacts stay uncertain instead of being sent again (checked, and counted so)."""
    summary = _reconciled(make_delivery, emulator, "drop_after", db_id=999)
    assert summary.reconciled == {"launched": 0, "not_processed": 0, "uncertain": 3, "deferred": 0}
    assert (summary.uncertain, summary.requests) == (3, 0)
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 3


@pytest.mark.parametrize(
    "answer",
    [{"error": 0, "error_text": "Successful operation"}, {"error": 0, "data": "none"}],
    ids=["no-data", "data-not-a-profile"],
)
def test_a_profile_lookup_answer_without_a_profile_or_its_absence_proves_nothing(
    make_delivery, emulator, proxy, scenario_id, answer
):
    proxy.rewrite["profiles/get"] = lambda body, upstream, status: (200, answer)  # read by try 2 only
    summary = _reconciled(make_delivery, emulator, "drop_after", db_id=1)
    assert (summary.uncertain, summary.requests) == (3, 0)
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 3


@pytest.mark.parametrize(
    "page",
    [b"<html><body><h1>404 Not Found</h1></body></html>", b'{"message": "Not Found"}'],
    ids=["html-page", "json-without-error-code"],
)
def test_a_profile_lookup_404_without_an_altcraft_error_code_proves_nothing(
    make_delivery, emulator, proxy, scenario_id, page
):
    """A 404 whose body is not an Altcraft answer (a proxy's or router's page: the guide's answers carry
    "error — error code; error_text — error description", developer-guide/api-interaction) says the path
    was not found, not the profile: while ``databases/get`` finds the database, the contacts (launched, the
    answer lost) stay uncertain instead of being sent again."""
    proxy.rewrite["profiles/get"] = lambda body, upstream, status: (404, page)
    summary = _reconciled(make_delivery, emulator, "drop_after", db_id=1)
    assert summary.reconciled == {"launched": 0, "not_processed": 0, "uncertain": 3, "deferred": 0}
    assert (summary.uncertain, summary.requests) == (3, 0)
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 3


def test_a_single_launch_404_without_an_altcraft_error_code_stops_the_run(make_delivery, emulator, proxy):
    """A 404 page for the launching path (no Altcraft ``error`` code) says the path was not found, not "no
    such profile": every contact would get it. The run stops at the first contact (not processed, so
    failed) instead of recording each contact refused in turn."""
    page = b"<html><body><h1>404 Not Found</h1></body></html>"
    proxy.rewrite["workflows/import_and_start"] = lambda body, upstream, status: (404, page)
    delivery = make_delivery(mode="single", batch_size=5)
    with pytest.raises(DeliveryStopped):
        delivery.process(in_batches(contacts(5), 5))
    assert delivery.summary.requests == 1
    assert _states(delivery) == {Outcome.FAILED: 5}


def test_a_profile_absent_from_a_database_that_exists_was_not_processed(make_delivery, emulator, scenario_id):
    """The request was refused before Altcraft processed it, its answer lost: no profile in the (existing)
    database, so the contacts were not processed and are sent once more."""
    summary = _reconciled(make_delivery, emulator, "drop_before", db_id=1)
    assert summary.reconciled["not_processed"] == 3
    assert summary.launched == 3
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 3


def test_the_database_of_absent_profiles_is_asked_for_once(make_delivery, emulator, proxy, scenario_id):
    """Each absent profile's 404 needs the database to exist to mean "no profile"; one ``databases/get``
    per try says so for all of them."""
    asked: list[int] = []

    def counted(body, upstream, status):
        asked.append(body["id"])
        return status, upstream

    proxy.rewrite["databases/get"] = counted
    summary = _reconciled(make_delivery, emulator, "drop_before", db_id=1)
    assert summary.reconciled["not_processed"] == 3
    assert asked == [1]


@pytest.mark.parametrize("marked", [True, False], ids=["marker-of-the-same-try", "no-marker"])
def test_a_profile_lookup_answered_with_another_contacts_profile_proves_nothing(
    make_delivery, emulator, proxy, marker_scenario, marked
):
    """Try 1 launches user0 and user2; user1's result is an error 500 (not launched, recorded uncertain).
    Try 2's read of user1 is answered with user0's profile. The marker is the try's, not the contact's, so
    that profile carries the very marker user1's request had (or, without it, none): neither proves what
    happened to user1, who stays uncertain instead of being recorded launched without proof (or sent
    again)."""
    emulator.add_faults({"endpoint": BATCH, "kind": "profile_error", "every": 2, "count": 1})
    first = make_delivery(batch_size=3, launch_marker_field=MARKER, profiles_db_id=marker_scenario)
    assert (first.process(in_batches(contacts(3), 3)).uncertain, first.summary.launched) == (1, 2)
    other = {"db_id": marker_scenario, "email": "user0@example.org"}
    answer = emulator.post("profiles/get", other).json()
    if not marked:
        del answer["data"][MARKER]
    proxy.rewrite["profiles/get"] = lambda body, upstream, status: (200, answer)

    again = _marked_retry(make_delivery, marker_scenario)
    summary = again.process(in_batches(contacts(3), 3))

    assert summary.reconciled == {"launched": 0, "not_processed": 0, "uncertain": 1, "deferred": 0}
    assert (summary.uncertain, summary.requests) == (1, 0)
    row = again.ledger.history("email:user1@example.org", again.scope).contact
    assert (row["status"], row["launch_count"]) == ("uncertain", 0)
    assert "the answer is another profile's (its email is not the contact's)" in row["error_text"]
    assert len(launch_counts(emulator, marker_scenario)) == 2, "user1 was never launched, nor sent again"


def test_a_profile_without_a_marker_its_database_cannot_hold_proves_nothing(
    make_delivery, emulator, proxy, marker_scenario
):
    """Try 1's batch is processed (each profile got its marker) and its answer lost; then the marker's field
    is deleted from the database (the proxy answers its fields and profiles without it). A profile without
    the marker says nothing then, since none could show one: the contacts stay uncertain, saying why,
    instead of being judged not processed and launched a second time."""
    emulator.add_faults({"endpoint": BATCH, "kind": "drop_after", "count": 1})
    with pytest.raises(DeliveryStopped):
        make_delivery(batch_size=3, launch_marker_field=MARKER).process(in_batches(contacts(3), 3))
    proxy.rewrite["databases/fields_get"] = lambda body, upstream, status: (
        status,
        {**upstream, "data": [field for field in upstream["data"] if field["name"] != MARKER]},
    )
    proxy.rewrite["profiles/get"] = lambda body, upstream, status: (
        status,
        {**upstream, "data": {name: v for name, v in upstream["data"].items() if name != MARKER}},
    )

    again = _marked_retry(make_delivery, marker_scenario)
    summary = again.process(in_batches(contacts(3), 3))

    assert summary.reconciled == {"launched": 0, "not_processed": 0, "uncertain": 3, "deferred": 0}
    assert (summary.uncertain, summary.requests) == (3, 0)
    row = again.ledger.history("email:user1@example.org", again.scope).contact
    assert f"launch marker field {MARKER!r} does not exist in the database" in row["error_text"]
    assert sorted(launch_counts(emulator, marker_scenario).values()) == [1] * 3, "nobody launched twice"
