"""Claim → send → settle against the emulator over HTTP and a real ledger (PostgreSQL and SQLite)."""

from __future__ import annotations

import json
import math
import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa

from altcraft.api.matching import MatchingMode
from altcraft.delivery import DeliveryStopped, TasksStillRunning
from altcraft.ledger import Outcome, RelaunchPolicy
from altcraft.ledger.rules import IN_FLIGHT
from altcraft.ledger.schema import contacts_table, outcomes_table
from altcraft.modes import DeliveryMode
from tests.broken_contacts import BROKEN_CONTACTS, GOOD, MAPPING

from .conftest import (
    FAST,
    MARKER,
    contacts,
    in_batches,
    launch_counts,
    open_claims,
    pg_open_claims,
    run_ref,
)

TASK_ENDPOINT = "workflows/import_and_start_batch_task"


def assert_exactly_once(emulator, scenario_id, expected: int) -> None:
    counts = launch_counts(emulator, scenario_id)
    assert len(counts) == expected
    duplicates = {pid: n for pid, n in counts.items() if n > 1}
    assert not duplicates, f"launched more than once: {duplicates}"


@pytest.mark.parametrize("mode", list(DeliveryMode))
def test_every_delivery_mode_launches_each_contact_once(make_delivery, emulator, scenario_id, mode):
    delivery = make_delivery(mode=mode, batch_size=20)
    submitted = delivery.tasks
    summary = delivery.process(in_batches(contacts(50), 20))
    if mode == "async":
        assert len(submitted) == 3
        delivery.settle_tasks(submitted, timeout=60, poll_interval=0.05)
    assert (summary.found, summary.launched, summary.rejected) == (50, 50, 0)
    assert summary.requests == {"single": 50, "batch": 3, "async": 3}[mode]
    assert_exactly_once(emulator, scenario_id, 50)
    assert delivery.ledger.counts(delivery.scope, delivery.run)[Outcome.LAUNCHED] == 50
    query = (
        sa.select(contacts_table.c.delivery_mode)
        .distinct()
        .where(contacts_table.c.scenario_id == scenario_id)
    )
    with delivery.ledger.engine.connect() as conn:
        recorded = conn.execute(query).scalars().all()
    assert recorded == [mode], "every claim, in line or made ahead, records how its request is sent"


#: every launch option, with a False among them (a falsy value must be sent, not dropped)
LAUNCH_OPTIONS = {
    "content": {"promo": "Жди ☀", "amount": 120, "items": ["a", "b"]},
    "skip_triggers": True,
    "skip_invalid_subscriptions": True,
    "detect_geo": False,
}


@pytest.mark.parametrize("mode", list(DeliveryMode))
def test_launch_options_reach_altcraft_with_every_launch_in_every_mode(
    make_delivery, emulator, scenario_id, mode
):
    delivery = make_delivery(mode=mode, batch_size=3, **LAUNCH_OPTIONS)
    delivery.process(in_batches(contacts(5)))
    delivery.settle_tasks(delivery.tasks, timeout=60, poll_interval=0.05)
    journal = emulator.journal(scenario_id)
    assert sorted(entry["key"] for entry in journal) == sorted(c["email"] for c in contacts(5))
    assert [entry["options"] for entry in journal] == [LAUNCH_OPTIONS] * 5
    assert {entry["token_in"] == ["header", "body"] for entry in journal} == {True}, "default token_in_body"


def test_25000_contacts_in_batches_of_1000(make_delivery, emulator, scenario_id, ledger):
    if ledger.engine.dialect.name == "sqlite":
        pytest.skip("the large run is done once, on PostgreSQL")
    delivery = make_delivery(batch_size=1000)
    summary = delivery.process(in_batches(contacts(25_000), 5000))
    assert summary.launched == 25_000
    assert summary.requests == math.ceil(25_000 / 1000) == 25
    assert_exactly_once(emulator, scenario_id, 25_000)


@pytest.mark.parametrize("ledger", ["postgresql"], indirect=True)
def test_a_contact_of_the_chunk_being_settled_is_claimed_only_after_its_outcome(
    make_delivery, emulator, scenario_id, ledger
):
    """On PostgreSQL chunk 1 is settled while chunk 2 is claimed; one person in both: chunk 2's claim
    waits and reads chunk 1's launch, as if settled in line (not chunk 1's `sending` row).

    Chunk 1's request is held, and meanwhile a lock that stops chunk 1's settle (its contact UPDATE) but
    not a claim's ``SELECT ... FOR UPDATE`` is taken for 3 s."""
    emulator.add_faults(
        {"endpoint": "workflows/import_and_start_batch", "kind": "latency", "latency_ms": 1500, "count": 1}
    )

    def hold_settles() -> None:
        deadline = time.monotonic() + 60
        while emulator.state()["faults"][0]["hits"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with ledger.engine.connect() as conn, conn.begin():
            conn.exec_driver_sql(f"LOCK TABLE {contacts_table.name} IN SHARE MODE")
            time.sleep(3)

    holder = threading.Thread(target=hold_settles)
    holder.start()
    twice = [{"id": 1, "email": "anna@example.org"}, {"id": 2, "email": "Anna@example.org"}]
    summary = make_delivery(batch_size=1).process([twice])
    holder.join()

    assert (summary.launched, summary.skipped, summary.requests) == (1, 1, 1)
    with ledger.engine.connect() as conn:
        reasons = conn.execute(
            sa.select(outcomes_table.c.outcome, outcomes_table.c.reason)
            .where(outcomes_table.c.scenario_id == scenario_id)
            .order_by(outcomes_table.c.id)
        ).all()
    assert [outcome for outcome, _ in reasons] == ["launched", "skipped"]
    assert not reasons[1].reason.startswith(IN_FLIGHT), reasons[1].reason
    assert_exactly_once(emulator, scenario_id, 1)


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb"], indirect=True)
def test_chunks_settled_behind_keep_every_count_with_people_repeated_in_the_next_chunk(
    make_delivery, emulator, scenario_id, ledger
):
    """Ledgers with concurrent writers settle each chunk while the next is claimed and sent. Each person
    comes again, spelled otherwise, a chunk later: launched once, skipped once, the ledger agrees."""
    records = []
    for block in range(24):
        records += contacts(25, start=block * 25)
        records += [{**r, "email": r["email"].upper()} for r in contacts(25, start=(block - 1) * 25)][
            : 25 if block else 0
        ]
    delivery = make_delivery(batch_size=40)
    summary = delivery.process(in_batches(records, 100))
    assert (summary.found, summary.launched, summary.skipped) == (1175, 600, 575)
    assert {k: n for k, n in delivery.session.counts().items() if n} == {
        Outcome.LAUNCHED: 600,
        Outcome.SKIPPED: 575,
    }
    assert_exactly_once(emulator, scenario_id, 600)


def _hold_first_request(emulator, ledger, seconds: float = 1.5) -> None:
    """Hold a run's first batch request for ``seconds``; return once it is held and the run's next chunk is
    claimed in a transaction left open."""
    emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start_batch",
            "kind": "latency",
            "latency_ms": int(seconds * 1000),
            "count": 1,
        }
    )
    url = ledger.engine.url.render_as_string(hide_password=False)
    deadline = time.monotonic() + 60
    while not (emulator.state()["faults"][0]["hits"] and open_claims(url)):
        assert time.monotonic() < deadline, "the next chunk was not claimed while the first was sent"
        time.sleep(0.01)


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb"], indirect=True)
def test_a_run_claiming_contacts_claimed_ahead_by_another_waits_and_leaves_them_to_it(
    make_delivery, emulator, scenario_id, ledger
):
    """While run A's chunk 1 is sent, its chunk 2 is claimed in an open transaction. Run B, given the same
    20 contacts meanwhile, waits for A's commit and leaves chunk 2 to A: nobody is launched twice."""
    records = contacts(20)
    first = make_delivery(batch_size=10)
    done: dict[str, object] = {}
    runner = threading.Thread(target=lambda: done.update(summary=first.process([records])))
    runner.start()
    _hold_first_request(emulator, ledger)
    held = time.monotonic()
    second = make_delivery(run=run_ref(run_id="run-2"), batch_size=20)
    summary = second.process([records])
    waited = time.monotonic() - held
    runner.join(timeout=60)

    assert waited > 1.0, "B's claim waited for A's (1.5 s) chunk 1 request and the commit after it"
    assert (done["summary"].launched, done["summary"].skipped) == (20, 0)
    assert (summary.launched, summary.skipped) == (0, 20)
    assert_exactly_once(emulator, scenario_id, 20)


@pytest.mark.parametrize("ledger", ["postgresql"], indirect=True)
def test_a_claim_made_ahead_whose_connection_is_lost_is_made_again_in_line(
    make_delivery, emulator, scenario_id, ledger, caplog
):
    """The server ends the open transaction of chunk 2's claim while chunk 1 is sent: its commit fails,
    chunk 2 is claimed again in line and every contact is launched once."""
    delivery = make_delivery(batch_size=10)
    done: dict[str, object] = {}
    runner = threading.Thread(target=lambda: done.update(summary=delivery.process([contacts(30)])))
    runner.start()
    _hold_first_request(emulator, ledger)
    with ledger.engine.connect() as conn:
        url = ledger.engine.url.render_as_string(hide_password=False)
        ended = conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) {pg_open_claims(url)}").all()
    runner.join(timeout=60)

    assert ended == [(True,)]
    assert "Claiming ahead failed" in caplog.text
    assert (done["summary"].found, done["summary"].launched, done["summary"].skipped) == (30, 30, 0)
    assert delivery.session.counts()[Outcome.LAUNCHED] == 30
    assert_exactly_once(emulator, scenario_id, 30)


def test_rerunning_the_same_window_launches_nobody_again(make_delivery, emulator, scenario_id):
    make_delivery().process(in_batches(contacts(30)))
    rerun = make_delivery(run=run_ref(try_number=2)).process(in_batches(contacts(30)))
    assert (rerun.launched, rerun.skipped, rerun.requests) == (0, 30, 0)
    other_pipeline = make_delivery(run=run_ref(dag_id="other_pipeline", run_id="x", window="w9"))
    assert other_pipeline.process(in_batches(contacts(30))).skipped == 30
    assert_exactly_once(emulator, scenario_id, 30)


def test_contacts_in_flight_in_an_overlapping_run_are_counted_as_left_to_it(
    make_delivery, emulator, scenario_id
):
    """An overlapping event run skips what another run is sending, and says so: the operator then keeps
    its source position, so a later run reads those contacts again should the other run fail."""
    busy = make_delivery(run=run_ref(run_id="run-a"))
    profiles = [busy.mapper.map(record) for record in contacts(5)]
    claim = busy.session.claim([(p.ledger_key, p.source_key) for p in profiles], busy.policy)
    assert len(claim.to_send) == 5  # committed as `sending`, never settled: run-a is still sending them
    overlapping = make_delivery(run=run_ref(run_id="run-b", window="w2"))
    summary = overlapping.process(in_batches(contacts(12)))
    assert (summary.launched, summary.skipped, summary.in_flight_elsewhere) == (7, 5, 5)
    again = make_delivery(run=run_ref(run_id="run-c", window="w3"))
    later = again.process(in_batches(contacts(12)))
    assert (later.skipped, later.in_flight_elsewhere) == (12, 5)
    assert_exactly_once(emulator, scenario_id, 7)


def test_relaunch_true_launches_again_but_once_per_run(make_delivery, emulator, scenario_id):
    make_delivery().process(in_batches(contacts(10)))
    again = make_delivery(run=run_ref(run_id="run-2", window="w2"), relaunch=True)
    assert again.process(in_batches(contacts(10))).launched == 10
    retry = make_delivery(run=run_ref(run_id="run-2", window="w2", try_number=2), relaunch=True)
    assert retry.process(in_batches(contacts(10))).skipped == 10
    assert sorted(set(launch_counts(emulator, scenario_id).values())) == [2]


def test_every_run_policy_relaunches_in_a_new_window_only(make_delivery, emulator, scenario_id):
    make_delivery(policy="every_run").process(in_batches(contacts(5)))
    same_window = make_delivery(policy="every_run", run=run_ref(run_id="backfill-1"))
    assert same_window.process(in_batches(contacts(5))).skipped == 5
    next_window = make_delivery(policy="every_run", run=run_ref(run_id="run-2", window="w2"))
    assert next_window.process(in_batches(contacts(5))).launched == 5


def test_per_profile_errors_fail_those_and_the_next_run_retries_only_them(
    make_delivery, emulator, scenario_id
):
    emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start_batch",
            "kind": "profile_error",
            "code": 400,
            "text": "rejected by Altcraft",
            "every": 4,
            "count": None,
        }
    )
    first = make_delivery(batch_size=10).process(in_batches(contacts(40)))
    assert first.failed == 10 and first.launched == 30
    emulator.clear_faults()
    second = make_delivery(batch_size=10, run=run_ref(run_id="run-2", window="w2")).process(
        in_batches(contacts(40))
    )
    # chunks are claimed as read, so each source chunk with a failed contact makes one small request
    assert (second.launched, second.skipped, second.requests) == (10, 30, 4)
    assert_exactly_once(emulator, scenario_id, 40)


def test_bad_contacts_are_rejected_with_reasons_and_the_rest_delivered(make_delivery, emulator, scenario_id):
    broken = [record for record, _field, _reason in BROKEN_CONTACTS]
    valid = [{**GOOD, "id": f"good-{i}", "email": f"good{i}@example.org"} for i in range(20)]
    delivery = make_delivery(mapping=MAPPING)
    summary = delivery.process(in_batches(broken + valid))
    assert summary.rejected == len(broken) >= 30
    assert summary.launched == 20
    assert_exactly_once(emulator, scenario_id, 20)
    assert sum(summary.reasons.values()) == len(broken)


LIMIT = 20_000
LONG_TOKEN = "t0k3n-" * 80  # 480 characters: the body's token takes most of the room kept for it


@pytest.mark.parametrize("mode", [DeliveryMode.BATCH, DeliveryMode.ASYNC])
def test_requests_fill_up_to_max_request_bytes_and_never_beyond(
    make_delivery, emulator, scenario_id, monkeypatch, mode
):
    """Requests of many multi-byte profiles, with a long token in the body, against the emulator's 413 limit.

    The exact limit takes every request; a limit 5 % lower refuses the first full one (413: failed, not
    uncertain, and nothing processed), so the requests do come near ``max_request_bytes``.
    """
    emulator.seed(tokens=[{"token": LONG_TOKEN, "databases": "*", "scenarios": "*"}])
    connection = {"conn_type": "altcraft", "host": emulator.url, "password": LONG_TOKEN, "extra": FAST}
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", json.dumps(connection))
    records = [{**c, "first_name": "Ж" * (20 + c["id"] % 37)} for c in contacts(300)]
    options = {"max_request_bytes": LIMIT, "content": {"promo": "Ж" * 50}}

    emulator.config(max_body_bytes=LIMIT - LIMIT // 20)
    refused = make_delivery(mode=mode, run=run_ref(run_id="too-tight"), **options)
    with pytest.raises(DeliveryStopped, match="Altcraft error 413"):
        refused.process(in_batches(records))
    assert set(refused.ledger.contact_states(refused.scope).values()) == {"failed"}
    assert refused.summary.failed == refused.summary.found > 0 and emulator.journal(scenario_id) == []

    emulator.config(max_body_bytes=LIMIT)
    delivery = make_delivery(mode=mode, **options)
    summary = delivery.process(in_batches(records))
    delivery.settle_tasks(delivery.tasks, timeout=60, poll_interval=0.05)
    assert (summary.launched, summary.failed, summary.uncertain) == (300, 0, 0)
    assert summary.requests >= 4, "the byte limit, not the batch size, cut the chunks"
    assert_exactly_once(emulator, scenario_id, 300)


def test_dry_run_sends_and_writes_nothing(make_delivery, emulator, scenario_id):
    make_delivery().process(in_batches(contacts(5)))
    preview = make_delivery(run=run_ref(run_id="r2", window="w2"), dry_run=True)
    summary = preview.process(in_batches([*contacts(8), {"id": 99, "email": "nope"}]))
    assert (summary.launched, summary.skipped, summary.rejected, summary.requests) == (3, 5, 1, 0)
    assert len(emulator.journal(scenario_id=scenario_id)) == 5
    assert not any(preview.ledger.counts(preview.scope, preview.run).values())
    assert all("@example.org" not in line for line in preview.sample)


def _mode_mapping(mode: str) -> dict:
    email_sub = [{"channel": "email", "resource_id": 1, "source": "email"}]
    sms_sub = [{"channel": "sms", "resource_id": 1, "source": "phone"}]
    phones = {"phones": {"source": "phone", "type": "phone"}}
    return {
        "email": {"key": {"email": "email"}},
        "email_profile": {"key": {"email": "email"}},
        "email_sub": {"key": {"email": "email"}, "subscriptions": email_sub},
        "phone": {"key": {"phone": "phone"}, "fields": phones},
        "phone_sub": {"key": {"phone": "phone"}, "subscriptions": sms_sub},
        "profile_id": {"key": {"profile_id": "profile_id"}},
        "push_sub": {"key": {"provider": "push_provider", "subscription_id": "push_id"}},
        "custom": {"key": {"field_value": "id"}, "field_name": "CRM_ID"},
        "custom_sub": {"key": {"field_value": "chat"}, "field_name": "id"},
        "email_phone": {"key": {"email": "email", "phone": "phone"}, "fields": phones},
        "email_phone_sub": {
            "key": {"email": "email", "phone": "phone"},
            "subscriptions": email_sub + sms_sub,
        },
    }[mode] | {"matching": mode, "default_region": "RU"}


@pytest.mark.parametrize("mode", list(MatchingMode))
def test_every_matching_mode_launches_once_and_is_recognised_on_rerun(
    make_delivery, emulator, scenario_id, mode
):
    records = [
        {**c, "push_provider": "android-firebase", "push_id": f"push-{c['id']}", "chat": f"tg-{c['id']}"}
        for c in contacts(6, start=700)
    ]
    if mode == "profile_id":  # profile_id matching only updates: the profiles must exist
        emulator.seed(profiles=[{"db_id": 1, "fields": {"email": c["email"]}} for c in records])
        by_email = {p["fields"]["email"]: p["id"] for p in emulator.profiles(db_id=1)}
        records = [{**c, "profile_id": by_email[c["email"]]} for c in records]
    first = make_delivery(mapping=_mode_mapping(mode)).process(in_batches(records))
    assert (first.launched, first.rejected, first.failed) == (6, 0, 0)
    again = make_delivery(mapping=_mode_mapping(mode), run=run_ref(run_id="r2", window="w2"))
    assert again.process(in_batches(records)).skipped == 6
    assert_exactly_once(emulator, scenario_id, 6)


def test_uncertain_contacts_are_resent_only_when_asked(make_delivery, emulator, scenario_id):
    emulator.add_faults(
        {"endpoint": "workflows/import_and_start_batch", "kind": "drop_after", "every": 1, "count": 1}
    )
    with pytest.raises(DeliveryStopped):
        make_delivery(batch_size=5).process(in_batches(contacts(5)))
    later = make_delivery(run=run_ref(run_id="r2", window="w2")).process(in_batches(contacts(5)))
    assert (later.uncertain, later.launched) == (5, 0), "uncertain contacts are never resent blindly"
    early = make_delivery(run=run_ref(run_id="r3", window="w3"), resend_uncertain=True)
    early_summary = early.process(in_batches(contacts(5)))
    assert (early_summary.uncertain, early_summary.launched) == (5, 0), "not within the reconciliation grace"
    resend = make_delivery(
        run=run_ref(run_id="r4", window="w4"), resend_uncertain=True, reconcile_grace=timedelta(0)
    )
    assert resend.process(in_batches(contacts(5))).launched == 5
    assert (
        sorted(launch_counts(emulator, scenario_id).values()) == [2] * 5
    )  # the drop happened after processing


def test_a_delivery_that_stops_closes_its_source_at_once(make_delivery, emulator):
    """The source's reader (a SQL cursor whose transaction holds a lock on the table) stayed open, its
    prefetch worker blocked, for as long as the stopping error's traceback lived: a `DROP TABLE` of the
    source hung after a failed `dag.test()`."""
    closed = threading.Event()

    def batches():
        try:
            yield from in_batches(contacts(30), 3)
        finally:
            closed.set()

    emulator.add_faults({"endpoint": "workflows/import_and_start_batch", "kind": "drop_before", "count": 1})
    with pytest.raises(DeliveryStopped) as stopped:
        make_delivery(batch_size=3).process(batches())

    assert closed.wait(5), "the reader is closed while the error is still held"
    assert stopped.value.__traceback__ is not None


def test_a_pipeline_switched_from_async_to_batch_never_resends_a_task_that_may_still_be_queued(
    make_delivery, emulator, marker_scenario
):
    """The spec said ``async`` when the contacts were sent (the task submission's answer was lost, the task
    runs seconds later) and ``batch`` when the next run reconciles them before it has: how the ledger
    recorded they were sent decides (an Altcraft task, maybe still queued), not how this run sends."""
    emulator.config(tasks_held=True)  # queued until the next run has reconciled, on a loaded machine too
    emulator.add_faults(
        {"endpoint": "workflows/import_and_start_batch_task", "kind": "drop_after", "count": 1}
    )
    marked = {"profiles_db_id": marker_scenario, "launch_marker_field": MARKER}
    with pytest.raises(DeliveryStopped):
        make_delivery(mode="async", batch_size=6, **marked).process(in_batches(contacts(6)))

    switched = make_delivery(mode="batch", run=run_ref(run_id="r2", window="w2"), **marked)
    summary = switched.process(in_batches(contacts(6)))
    assert summary.reconciled == {"launched": 0, "not_processed": 0, "uncertain": 6, "deferred": 0}
    assert (summary.requests, summary.uncertain) == (0, 6), "nobody sent again"
    assert {task["status"] for task in emulator.state()["tasks"]} == {"queued"}, "the task had not run yet"
    emulator.config(tasks_held=False)
    deadline = time.monotonic() + 30
    while len(launch_counts(emulator, marker_scenario)) < 6 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert_exactly_once(emulator, marker_scenario, 6)


#: A run knowing the scenario's database (where profiles are looked up), and one knowing none: the
#: scenario's answer names none and no ``db_id`` is set. Both read a dead try's recorded task.
DATABASE_IDS = pytest.mark.parametrize("db_id", [1, None], ids=["database known", "no database id"])

#: What a contact's note says when its profile could not be looked up for want of a database id.
NO_DATABASE_ID = "no Altcraft database id is known"


def submit_and_die(make_delivery, people: list[dict], **options) -> str:
    """A try that submits its Altcraft task and dies before reading it: its contacts stay ``sending``, the
    task id is in the dead try's Airflow task state (here: dropped) and the ledger. The task then finishes
    in Altcraft. Returns its id."""
    dead = make_delivery(mode="async", batch_size=len(people), **options)
    dead.process(in_batches(people))
    [task_id] = dead.tasks.values()
    assert dead.hook.wait_for_task(task_id, timeout=30, poll_interval=0.05).state.is_terminal
    return task_id


def meet_stale(make_delivery, ledger, people: list[dict], run_id: str = "r2") -> None:
    """A later claim meets the dead try's claim stale, its task unread (as a claim alone does): its contacts
    become uncertain, and nobody is sent."""
    ledger.stale_after = timedelta(0)
    items = [(f"email:{person['email']}", str(person["id"])) for person in people]
    run = run_ref(run_id=run_id, window=run_id)
    claim = ledger.claim(make_delivery().scope, run, items, RelaunchPolicy.parse("once"))
    assert (len(claim.uncertain), claim.to_send) == (len(people), [])


def uncertain_notes(ledger, scenario_id: int) -> list[str]:
    query = sa.select(contacts_table.c.error_text).where(
        contacts_table.c.scenario_id == scenario_id, contacts_table.c.status == "uncertain"
    )
    with ledger.engine.connect() as conn:
        return list(conn.execute(query).scalars())


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb", "sqlite"], indirect=True)
@DATABASE_IDS
def test_the_task_of_a_try_that_died_settles_the_contacts_a_later_run_met_stale(
    make_delivery, emulator, scenario_id, ledger, db_id
):
    """The try that submitted the task died; another run met its claim stale (6 uncertain). The task's id
    was only in the dead try's Airflow task state, so reconciliation could only look the profiles up, and a
    profile proves nothing of a task that may still be queued: 6 uncertain for good, though the task had
    launched them. Now the ledger keeps the task id and reconciliation reads its result first, with a
    database id known or not (knowing none, it reconciled nothing)."""
    people = contacts(6)
    submit_and_die(make_delivery, people)
    meet_stale(make_delivery, ledger, people)

    reconciler = make_delivery(run=run_ref(run_id="r3", window="r3"), profiles_db_id=db_id)
    assert reconciler.reconcile() == {Outcome.LAUNCHED: 6}
    assert reconciler.standing() == NO_STANDING
    summary = reconciler.process(in_batches(people))
    assert (summary.skipped, summary.requests) == (6, 0), "launched once, by the task"
    assert_exactly_once(emulator, scenario_id, 6)


def test_contacts_a_dead_tries_task_refused_are_resent_only_after_the_grace(
    make_delivery, emulator, scenario_id, ledger
):
    """The dead try's task refused every second contact (400): those were not launched. Reconciliation
    reads the task: the others are launched; the refused ones stay uncertain within the grace (as every
    resend waits for it), then are judged not processed and sent again, once."""
    emulator.add_faults(
        {"endpoint": TASK_ENDPOINT, "kind": "profile_error", "code": 400, "text": "bad field", "every": 2}
    )
    people = contacts(6)
    task_id = submit_and_die(make_delivery, people)
    emulator.clear_faults()
    meet_stale(make_delivery, ledger, people)

    early = make_delivery(run=run_ref(run_id="r3", window="r3"), profiles_db_id=1)
    early.process(in_batches(people))
    assert early.summary.reconciled == {"launched": 3, "not_processed": 0, "uncertain": 3, "deferred": 0}
    assert (early.summary.requests, early.summary.uncertain) == (0, 3), "nobody resent within the grace"
    notes = uncertain_notes(ledger, scenario_id)
    assert len(notes) == 3 and all(f"task {task_id} refused it (API 400: bad field)" in n for n in notes)

    late = make_delivery(
        run=run_ref(run_id="r4", window="r4"), profiles_db_id=1, reconcile_grace=timedelta(0)
    )
    summary = late.process(in_batches(people))
    assert summary.reconciled == {"launched": 0, "not_processed": 3, "uncertain": 0, "deferred": 0}
    assert (summary.launched, summary.skipped, summary.requests) == (3, 3, 1)
    assert_exactly_once(emulator, scenario_id, 6)


def test_a_dead_tries_task_that_cannot_be_read_leaves_its_contacts_uncertain_saying_so(
    make_delivery, emulator, scenario_id, ledger
):
    """``tasks/status`` fails (503s past the retries): the task proves nothing, the profiles cannot either
    (an async request), so the contacts stay uncertain, counted and noted, and nobody is sent; once the
    task can be read, it decides."""
    people = contacts(4)
    task_id = submit_and_die(make_delivery, people)
    meet_stale(make_delivery, ledger, people)
    emulator.add_faults({"endpoint": "tasks/status", "kind": "status", "status": 503})

    blind = make_delivery(
        run=run_ref(run_id="r3", window="r3"), profiles_db_id=1, reconcile_grace=timedelta(0)
    )
    summary = blind.process(in_batches(people))
    assert summary.reconciled == {"launched": 0, "not_processed": 0, "uncertain": 4, "deferred": 0}
    assert (summary.uncertain, summary.requests) == (4, 0)
    notes = uncertain_notes(ledger, scenario_id)
    assert len(notes) == 4 and all(f"its Altcraft task {task_id} could not be read" in n for n in notes)

    emulator.clear_faults()
    again = make_delivery(run=run_ref(run_id="r4", window="r4"), profiles_db_id=1)
    assert again.reconcile() == {Outcome.LAUNCHED: 4}
    assert_exactly_once(emulator, scenario_id, 4)


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb", "sqlite"], indirect=True)
def test_a_retry_reads_its_task_by_the_keys_it_sent_when_another_run_took_some_of_them_over(
    make_delivery, emulator, scenario_id, ledger
):
    """The try that submitted a task of 6 died; another run met 3 of them stale (made uncertain) before a
    retry of the first came back for the task. The retry read the task's 6 positional results against only
    the 3 contacts still ``sending``, so it could not tell who was launched and settled those 3 uncertain
    too. Now it reads them by the keys the request was sent (``altcraft_tasks``): the 3 are launched."""
    people = contacts(6)
    dead = make_delivery(mode="async", batch_size=6)
    dead.process(in_batches(people))
    tasks = dict(dead.tasks)
    meet_stale(make_delivery, ledger, people[:3])

    retry = make_delivery(mode="async", run=run_ref(try_number=2))
    retry.recover(tasks, timeout=30, poll_interval=0.05)
    assert retry.summary.earlier_tries == {"launched": 3, "failed": 0, "uncertain": 0}
    assert sorted(ledger.contact_states(retry.scope).values()) == ["launched"] * 3 + ["uncertain"] * 3
    assert_exactly_once(emulator, scenario_id, 6)


@pytest.mark.parametrize("taken", [3, 6])
def test_a_live_try_whose_task_contacts_another_run_took_over_leaves_none_pending(
    make_delivery, emulator, scenario_id, ledger, taken
):
    """A try waits for its Altcraft task past ``stale_after``; another run meets some or all of its contacts
    stale and makes them uncertain. The try settled only those still ``sending`` and left the others
    ``pending``: counted neither launched nor uncertain, so the operator ended the try green, its summary
    saying ``pending`` for contacts whose task had finished. Now they count as what their row says: uncertain
    (reconciliation decides them by the task it reads)."""
    people = contacts(6)
    live = make_delivery(mode="async", batch_size=6)
    live.process(in_batches(people))
    assert live.summary.pending == 6
    meet_stale(make_delivery, ledger, people[:taken])

    live.settle_tasks(live.tasks, timeout=30, poll_interval=0.05)
    summary = live.summary
    assert (summary.pending, summary.launched, summary.uncertain) == (0, 6 - taken, taken)
    assert summary.found == summary.launched + summary.uncertain
    assert live.tasks == {}
    assert set(launch_counts(emulator, scenario_id).values()) <= {1}, "nobody sent twice"


def first_to_meet(make_delivery, ledger, run_id: str = "r2", db_id: int | None = 1, **options):
    """The first run after the dead try whose claims meet its contacts (the claim stale at once:
    ``stale_after`` 0), reconciling (profiles looked up in ``db_id``, if known), in chunks of 3 (on
    PostgreSQL and MariaDB the second one claimed ahead, while the first is sent)."""
    ledger.stale_after = timedelta(0)
    run = run_ref(run_id=run_id, window=run_id)
    return make_delivery(run=run, profiles_db_id=db_id, batch_size=3, **options)


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb", "sqlite"], indirect=True)
@DATABASE_IDS
def test_the_first_run_to_meet_a_dead_tries_claim_settles_it_from_its_task(
    make_delivery, emulator, scenario_id, ledger, db_id
):
    """The try that submitted the task died, leaving its 6 contacts ``sending``; the task launched them.
    The first run to meet the claim stale made them uncertain unread, failed, and only a later run read the
    task. Now that first run reads it before its claims decide: 6 launched (recorded for the dead try, which
    sent them), nobody sent again, nothing left uncertain. Reading a task needs no database id: a run
    knowing none made them uncertain unread, as a claim alone does."""
    people = contacts(6)
    submit_and_die(make_delivery, people)

    first = first_to_meet(make_delivery, ledger, db_id=db_id)
    summary = first.process(in_batches(people))

    assert summary.reconciled == {"launched": 6, "not_processed": 0, "uncertain": 0, "deferred": 0}
    assert (summary.skipped, summary.uncertain, summary.requests) == (6, 0, 0)
    assert first.standing() == NO_STANDING
    assert ledger.counts(first.scope, run_ref())[Outcome.LAUNCHED] == 6, "the dead try's launches"
    assert_exactly_once(emulator, scenario_id, 6)


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb", "sqlite"], indirect=True)
@pytest.mark.parametrize("grace", [None, timedelta(0)], ids=["default grace", "grace passed"])
@DATABASE_IDS
def test_the_first_run_to_meet_a_dead_tries_claim_resends_what_its_task_refused_after_the_grace(
    make_delivery, emulator, scenario_id, ledger, grace, db_id
):
    """The dead try's task refused every second contact (400) and launched the others. The first run to
    meet the claim records the 3 launched and sends them to nobody; the 3 refused ones it sends once the
    grace has passed since it found them (as every resend waits), else a later run does; with a database id
    known or not."""
    emulator.add_faults(
        {"endpoint": TASK_ENDPOINT, "kind": "profile_error", "code": 400, "text": "bad field", "every": 2}
    )
    people = contacts(6)
    task_id = submit_and_die(make_delivery, people)
    emulator.clear_faults()

    options = {"db_id": db_id} | ({} if grace is None else {"reconcile_grace": grace})
    first = first_to_meet(make_delivery, ledger, **options)
    summary = first.process(in_batches(people))

    if grace is None:
        assert summary.reconciled == {"launched": 3, "not_processed": 0, "uncertain": 3, "deferred": 0}
        assert (summary.skipped, summary.uncertain, summary.requests) == (3, 3, 0), "not within the grace"
        notes = uncertain_notes(ledger, scenario_id)
        assert len(notes) == 3 and all(f"task {task_id} refused it (API 400: bad field)" in n for n in notes)
        late = first_to_meet(make_delivery, ledger, "r3", db_id, reconcile_grace=timedelta(0))
        summary = late.process(in_batches(people))
        assert summary.reconciled == {"launched": 0, "not_processed": 3, "uncertain": 0, "deferred": 0}
    else:
        assert summary.reconciled == {"launched": 3, "not_processed": 3, "uncertain": 0, "deferred": 0}
    assert (summary.launched, summary.skipped, summary.uncertain) == (3, 3, 0)
    assert_exactly_once(emulator, scenario_id, 6)


def met_undecided(
    make_delivery, ledger, scenario_id: int, people: list[dict], says: str, db_id: int | None = 1
) -> None:
    """The first run to meet the dead try's claim, past the grace, sends nobody: its contacts stay
    uncertain, each checked and its note saying why (``says``; with no database id, that too)."""
    first = first_to_meet(make_delivery, ledger, db_id=db_id, reconcile_grace=timedelta(0))
    summary = first.process(in_batches(people))
    assert summary.reconciled == {"launched": 0, "not_processed": 0, "uncertain": len(people), "deferred": 0}
    assert (summary.uncertain, summary.requests) == (len(people), 0)
    notes = uncertain_notes(ledger, scenario_id)
    assert len(notes) == len(people) and all(says in note for note in notes)
    if db_id is None:
        assert all(f"{NO_DATABASE_ID} (set db_id" in note for note in notes), notes[0]


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb", "sqlite"], indirect=True)
@DATABASE_IDS
def test_a_dead_tries_task_still_running_leaves_the_contacts_the_first_run_meets_uncertain(
    make_delivery, emulator, scenario_id, ledger, db_id
):
    """The dead try's task is still queued when the first run meets its claim: the task proves nothing yet,
    nor does a profile of an async request, so nothing is sent (even past the grace), the 6 are uncertain,
    their notes naming the task (and, knowing no database id, that no profile was looked up and which
    setting gives one); the task then launches each of them once."""
    emulator.config(tasks_held=True)  # queued while the run below reads it, on a loaded machine too
    people = contacts(6)
    dead = make_delivery(mode="async", batch_size=6)
    dead.process(in_batches(people))
    [task_id] = dead.tasks.values()

    met_undecided(
        make_delivery, ledger, scenario_id, people, f"its Altcraft task {task_id} is still 'queued'", db_id
    )
    emulator.config(tasks_held=False)
    assert dead.hook.wait_for_task(task_id, timeout=30, poll_interval=0.1).state.is_terminal
    assert_exactly_once(emulator, scenario_id, 6)


@pytest.mark.parametrize("ledger", ["sqlite"], indirect=True)
def test_a_task_status_we_do_not_recognise_is_waited_on_and_said_never_guessed(
    make_delivery, emulator, scenario_id, ledger, caplog
):
    """Altcraft ends the task with a status we do not recognise (``completed_with_errors``): the try waits
    for it as running until its timeout, warns once naming the task and the status, and fails saying the
    task still reported it; its contacts are never guessed launched or not launched: the first run to meet
    them leaves them uncertain, each note saying what the task last reported."""
    emulator.config(task_success_status="completed_with_errors", task_delay_seconds=0.01)
    people = contacts(3)
    sent = make_delivery(mode="async", batch_size=3)
    sent.process(in_batches(people))
    [task_id] = sent.tasks.values()
    said = f"Altcraft task {task_id} still reported unrecognised status 'completed_with_errors'"
    with caplog.at_level("WARNING"), pytest.raises(TasksStillRunning, match=f"^{said} after 0.3 s; "):
        sent.settle_tasks(sent.tasks, timeout=0.3, poll_interval=0.02)
    warned = [r.getMessage() for r in caplog.records if "do not recognise" in r.getMessage()]
    assert len(warned) == 1 and task_id in warned[0] and "'completed_with_errors'" in warned[0], warned
    assert list(sent.tasks.values()) == [task_id], "the next try re-attaches to it"

    met_undecided(make_delivery, ledger, scenario_id, people, f"its {said}")


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb", "sqlite"], indirect=True)
def test_a_task_id_recorded_for_two_claims_proves_nothing_to_the_first_run_to_meet_them(
    make_delivery, emulator, proxy, scenario_id, ledger
):
    """Altcraft answered the dead try's request with an earlier run's task id (that task launched the
    earlier run's 5): the id is recorded for two claims, so its result may be the other request's and
    proves nothing. The first run to meet the dead try's claim sends nobody and leaves the 6 uncertain,
    saying why, though their own task (its id hidden) launched them."""
    earlier = make_delivery(mode="async", batch_size=5, run=run_ref(run_id="r0", window="r0"))
    earlier.process(in_batches(contacts(5, start=100)))
    [reused] = earlier.tasks.values()
    assert earlier.hook.wait_for_task(reused, timeout=30, poll_interval=0.05).state.is_terminal
    proxy.rewrite[TASK_ENDPOINT] = lambda _body, answer, status: (
        status,
        answer | {"data": {"task_id": reused}},
    )
    people = contacts(6)
    make_delivery(mode="async", batch_size=6).process(in_batches(people))  # and dies
    deadline = time.monotonic() + 30
    while len(launch_counts(emulator, scenario_id)) < 11 and time.monotonic() < deadline:
        time.sleep(0.05)

    met_undecided(make_delivery, ledger, scenario_id, people, f"task id {reused} for another request too")
    assert_exactly_once(emulator, scenario_id, 11)


class WorkerKilled(Exception):
    """The worker running a try was killed."""


@contextmanager
def killed_before_settling(ledger):
    """The try's worker is killed once its request is out: its settle's first write to the contact rows
    fails, so nothing it sent is settled and its claim stays ``sending``, as a kill leaves it."""

    def kill(conn, cursor, statement, *args) -> None:
        if statement.startswith("UPDATE altcraft_contacts"):
            raise WorkerKilled

    sa.event.listen(ledger.engine, "before_cursor_execute", kill)
    try:
        yield
    finally:
        sa.event.remove(ledger.engine, "before_cursor_execute", kill)


def send_and_die(make_delivery, ledger, people: list[dict], **options) -> None:
    """A try (run ``run-1``) that sends ``people`` in one request, Altcraft launching them, and is killed
    before it records the answer; no retry follows, and no later run reads these contacts again."""
    dying = make_delivery(batch_size=len(people), **options)
    with killed_before_settling(ledger), pytest.raises(WorkerKilled):
        dying.process(in_batches(people))
    assert sorted(ledger.contact_states(dying.scope).values()) == ["sending"] * len(people)


NO_STANDING = {"uncertain": 0, "failed": 0, "stale_sending": 0}


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb", "sqlite"], indirect=True)
@pytest.mark.parametrize("mode", ["single", "batch"])
def test_a_whole_scenario_reconciliation_settles_a_dead_claim_no_run_meets_again(
    make_delivery, emulator, marker_scenario, ledger, mode
):
    """A try sent 6 contacts (Altcraft launched them, each carrying the try's marker) and was killed before
    recording it; no retry was left, and no later run's source yields them. Reconciling the whole scenario
    read only ``uncertain`` contacts: the 6 stayed ``sending`` for good, and the standing counted them
    nowhere. Now, hours later, they are counted as ``stale_sending``, and a run reconciling the scenario
    makes them uncertain and finds them launched by their marker: recorded for the dead try, sent again to
    nobody."""
    marked = {"profiles_db_id": marker_scenario, "launch_marker_field": MARKER}
    send_and_die(make_delivery, ledger, contacts(6), mode=mode, **marked)
    ledger.stale_after = timedelta(0)  # hours pass

    reconciler = make_delivery(run=run_ref(run_id="r2", window="r2"), **marked)
    assert reconciler.standing() == {**NO_STANDING, "stale_sending": 6}
    assert reconciler.reconcile() == {Outcome.LAUNCHED: 6}
    assert reconciler.standing() == NO_STANDING
    summary = reconciler.process(in_batches(contacts(2, start=100)))
    assert (summary.launched, summary.requests) == (2, 1)
    assert ledger.counts(reconciler.scope, run_ref())[Outcome.LAUNCHED] == 6, "the dead try's launches"
    assert_exactly_once(emulator, marker_scenario, 8)


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb", "sqlite"], indirect=True)
@DATABASE_IDS
def test_a_whole_scenario_reconciliation_settles_a_dead_async_claim_from_its_task(
    make_delivery, emulator, scenario_id, ledger, db_id
):
    """The try that submitted its Altcraft task died and no run meets its 6 contacts again: a whole-scenario
    reconciliation reads their recorded task, which launched them (their profiles, sent async, prove
    nothing), and nobody is sent again. With no database id known it reconciled nothing (``{}``), the 6
    left ``sending``, though reading a task needs none."""
    submit_and_die(make_delivery, contacts(6))
    ledger.stale_after = timedelta(0)

    reconciler = make_delivery(run=run_ref(run_id="r2", window="r2"), profiles_db_id=db_id)
    assert reconciler.standing() == {**NO_STANDING, "stale_sending": 6}
    assert reconciler.reconcile() == {Outcome.LAUNCHED: 6}
    assert reconciler.summary.reconciled == {"launched": 6, "not_processed": 0, "uncertain": 0, "deferred": 0}
    assert reconciler.standing() == NO_STANDING
    assert_exactly_once(emulator, scenario_id, 6)


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb", "sqlite"], indirect=True)
def test_with_no_database_id_a_whole_scenario_reconciliation_leaves_what_only_a_profile_decides_saying_so(
    make_delivery, emulator, marker_scenario, ledger, caplog
):
    """A dead claim of a batch request has no Altcraft task, and knowing no database id the reconciliation
    cannot look its profiles up: the claim is made uncertain (as a claim meeting it would, its note kept),
    nothing is judged or counted as checked, and the log says how many were left and which setting gives a
    database id. With one, the marker then decides them."""
    marked = {"launch_marker_field": MARKER}
    send_and_die(make_delivery, ledger, contacts(6), **marked)
    ledger.stale_after = timedelta(0)

    blind = make_delivery(run=run_ref(run_id="r2", window="r2"), **marked)
    assert blind.reconcile() == {}
    assert blind.summary.reconciled == {"launched": 0, "not_processed": 0, "uncertain": 0, "deferred": 0}
    assert blind.standing() == {**NO_STANDING, "uncertain": 6}
    notes = uncertain_notes(ledger, marker_scenario)
    assert len(notes) == 6 and all("claim by run" in note and "never settled" in note for note in notes)
    said = [r.getMessage() for r in caplog.records if NO_DATABASE_ID in r.getMessage()]
    assert len(said) == 1 and "6 uncertain contact(s)" in said[0] and "set db_id" in said[0], said

    seeing = make_delivery(run=run_ref(run_id="r3", window="r3"), profiles_db_id=marker_scenario, **marked)
    assert seeing.reconcile() == {Outcome.LAUNCHED: 6}
    assert_exactly_once(emulator, marker_scenario, 6)


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb", "sqlite"], indirect=True)
def test_a_whole_scenario_reconciliation_leaves_a_claim_in_flight_alone(
    make_delivery, emulator, marker_scenario, ledger
):
    """A claim younger than ``stale_after`` (6 h) may be another run's live try: a whole-scenario
    reconciliation neither expires nor reads it, and the standing does not count it stale."""
    marked = {"profiles_db_id": marker_scenario, "launch_marker_field": MARKER}
    send_and_die(make_delivery, ledger, contacts(6), **marked)

    reconciler = make_delivery(run=run_ref(run_id="r2", window="r2"), **marked)
    assert reconciler.reconcile() == {}
    assert reconciler.summary.reconciled == {"launched": 0, "not_processed": 0, "uncertain": 0, "deferred": 0}
    assert reconciler.standing() == NO_STANDING
    assert sorted(ledger.contact_states(reconciler.scope).values()) == ["sending"] * 6
    assert_exactly_once(emulator, marker_scenario, 6)


def test_pausing_passes_every_item_on_in_order_without_reading_ahead():
    from altcraft.delivery import pausing

    read: list[int] = []

    def source():
        for i in range(1000):
            read.append(i)
            yield i

    items = pausing(source(), every=0)  # a pause before every item
    assert next(items) == 0 and read == [0]
    assert list(items) == list(range(1, 1000)) and read == list(range(1000))
    assert list(pausing([], every=0)) == []


def test_prefetch_keeps_order_raises_errors_and_stops_its_worker():
    import threading

    from altcraft.delivery import prefetch

    assert list(prefetch(iter(range(100)), depth=2)) == list(range(100))

    def broken():
        yield 1
        raise ValueError("source went away")

    with pytest.raises(ValueError, match="source went away"):
        list(prefetch(broken()))

    consumed = prefetch(iter(range(10**9)), depth=2)
    assert next(consumed) == 0
    consumed.close()  # the consumer stops early (e.g. the run stopped): the worker must end too
    for thread in threading.enumerate():
        if thread.name == "altcraft-prefetch":
            thread.join(timeout=2)
            assert not thread.is_alive()


def test_behind_runs_one_call_at_a_time_and_raises_its_error_in_the_caller():
    from altcraft.delivery import Behind

    behind = Behind("test-behind")
    events: list[str] = []
    release = threading.Event()

    def slow() -> None:
        release.wait(5)
        events.append("first written")

    behind.start(slow, lambda: events.append("first counted"), ["a", "b"])
    assert behind.keys == {"a", "b"} and events == []  # the caller goes on while it runs
    threading.Timer(0.2, release.set).start()
    behind.start(lambda: events.append("second written"), lambda: events.append("second counted"), ["c"])
    assert events[:2] == ["first written", "first counted"]  # the second started only after the first

    def broken() -> None:
        raise RuntimeError("ledger went away")

    behind.start(broken, lambda: events.append("never counted"), ["d"])
    with pytest.raises(RuntimeError, match="ledger went away"):
        behind.finish()
    assert "never counted" not in events and events[-1] == "second counted" and behind.keys == frozenset()
    behind.finish()  # nothing running: nothing to do
    behind.close()


@pytest.mark.parametrize(
    "email", ["anna@xn--e1afmkfd.xn--p1ai", "anna@пример.рф"], ids=["sent-ascii", "sent-unicode"]
)
def test_an_idn_contact_is_looked_up_in_every_form_it_may_have_been_sent_in(
    make_delivery, emulator, scenario_id, email
):
    """The ledger keeps an IDN address in one form (Unicode), whichever form was sent; Altcraft keeps the
    form sent and is not known to equate the two. Reconciliation looked up only the ledger's form: a contact
    sent as ``xn--`` was "not found", judged not processed, and launched twice."""
    emulator.add_faults({"endpoint": "workflows/import_and_start_batch", "kind": "drop_after", "count": 1})
    people = [{"id": 1, "email": email}]
    with pytest.raises(DeliveryStopped):
        make_delivery().process(in_batches(people))

    again = make_delivery(
        run=run_ref(run_id="r2", window="w2"), profiles_db_id=1, reconcile_grace=timedelta(0)
    )
    summary = again.process(in_batches(people))

    assert summary.reconciled["not_processed"] == 0, "its profile exists, in the form it was sent in"
    assert summary.launched == 0
    assert_exactly_once(emulator, scenario_id, 1)


@pytest.mark.parametrize("sent_under", [1, None], ids=["resource-1", "any-resource"])
def test_a_sub_contact_is_not_judged_absent_by_a_lookup_narrowed_to_another_resource(
    make_delivery, emulator, scenario_id, sent_under
):
    """Matching ``email_sub`` narrowed by ``resource_id``: the contact was sent under resource 1 (or no
    resource), and reconciled by the pipeline after its spec moved to resource 2. Its lookup, narrowed to
    resource 2, found no profile: judged not processed, it was launched a second time."""
    subscribed = {"matching": "email_sub", "key": {"email": "email"}}
    before = subscribed | {"subscriptions": [{"channel": "email", "resource_id": 1, "source": "email"}]}
    if sent_under is not None:
        before |= {"resource_id": sent_under}
    after = subscribed | {
        "resource_id": 2,
        "subscriptions": [{"channel": "email", "resource_id": 2, "source": "email"}],
    }
    emulator.add_faults({"endpoint": "workflows/import_and_start_batch", "kind": "drop_after", "count": 1})
    people = contacts(1)
    with pytest.raises(DeliveryStopped):
        make_delivery(mapping=before).process(in_batches(people))

    again = make_delivery(
        mapping=after, run=run_ref(run_id="r2", window="w2"), profiles_db_id=1, reconcile_grace=timedelta(0)
    )
    summary = again.process(in_batches(people))

    assert summary.reconciled["not_processed"] == 0, "the profile is there, under resource 1"
    assert summary.launched == 0
    assert_exactly_once(emulator, scenario_id, 1)


def test_a_combined_mode_contact_whose_email_holds_a_bar_is_known_by_its_phone_alone(
    make_delivery, emulator, scenario_id
):
    """``a|b@example.org`` is a valid email; the ledger split its key at the first ``|`` and recorded the
    aliases ``email:a`` and ``phone:b@example.org|+7…``, so the person met again by phone alone was a new
    contact, and Altcraft, finding the profile by that phone, launched it a second time."""
    mapping = _mode_mapping("email_phone")
    make_delivery(mapping=mapping).process([[{"id": 1, "email": "a|b@example.org", "phone": "+79001234567"}]])

    again = make_delivery(mapping=mapping, run=run_ref(run_id="r2", window="w2"))
    summary = again.process([[{"id": 1, "email": None, "phone": "+79001234567"}]])

    assert (summary.launched, summary.skipped) == (0, 1)
    assert_exactly_once(emulator, scenario_id, 1)
