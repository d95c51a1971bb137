"""The fault matrix in every delivery mode, against the emulator over HTTP and a real ledger.

30 contacts in chunks of 10 (C1 = 0-9, C2 = 10-19, C3 = 20-29), sent in order (a chunk is sent in ledger-key
order, which is the numeric order within a decade). Altcraft refuses some profiles on its own: contact 3
has a value its typed field refuses (400) and contacts 5 and 12 match two profiles each (409). One
injected fault per case stops the run: a refusal of the whole request (401, 403, 429 with no retry left:
failed, sent again by the next try) or a request that may have been processed (5xx, a connection dropped
before or after processing, a timeout: uncertain, never resent). Single mode also gets a transient 404 for
contact 6. Each try runs as the operator runs it (recover, process, settle tasks); tries repeat until one
finishes. After try 1 and at the end, the ledger's state of every contact and the set of contacts the
emulator processed (its journal) are pinned exactly.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa

from altcraft.delivery import Delivery, DeliveryStopped
from altcraft.ledger import Ledger
from altcraft.modes import DeliveryMode

from .conftest import EMAIL_MAPPING, FAST, PG_URL, contacts, in_batches, run_ref

N, CHUNK = 30, 10
C1, C2, C3 = range(0, 10), range(10, 20), range(20, 30)
BAD_VALUE, TWINS = 3, (5, 12)
REFUSED = {BAD_VALUE, *TWINS}
NOT_FOUND_ONCE = 6  # single mode: a transient 404 on its request
STOPPED_SINGLY = 14  # single mode: the run-stopping fault hits the 15th request, this contact's
MAPPING = {**EMAIL_MAPPING, "fields": {**EMAIL_MAPPING["fields"], "LOYALTY": "points"}}
ENDPOINTS = {
    DeliveryMode.SINGLE: "workflows/import_and_start",
    DeliveryMode.BATCH: "workflows/import_and_start_batch",
    DeliveryMode.ASYNC: "workflows/import_and_start_batch_task",
}


@dataclass(frozen=True)
class Case:
    """A run-stopping fault: what its request's contacts become, and whether Altcraft did it anyway."""

    rule: dict[str, Any]
    outcome: str  # of the stopped request's contacts in its try: "failed" or "uncertain"
    processed: bool = False  # the emulator processed the stopped request anyway
    connection: dict[str, Any] = field(default_factory=dict)


CASES = {
    "401": Case({"kind": "status", "status": 401}, "failed"),
    "403": Case({"kind": "status", "status": 403}, "failed"),
    "429-exhausted": Case(
        {"kind": "status", "status": 429, "retry_after": 0}, "failed", connection={"rate_limit_retries": 0}
    ),
    "503": Case({"kind": "status", "status": 503}, "uncertain"),
    "drop_before": Case({"kind": "drop_before"}, "uncertain"),
    "drop_after": Case({"kind": "drop_after"}, "uncertain", processed=True),
    "timeout": Case(
        {"kind": "latency", "latency_ms": 4000}, "uncertain", processed=True, connection={"timeout": 1.5}
    ),
}


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    """PostgreSQL only: the matrix is about the delivery, and both dialects run tests/ledger/test_store.py."""
    engine = sa.create_engine(PG_URL)
    ledger = Ledger(engine)
    ledger.ensure_schema()
    yield ledger
    engine.dispose()


def records() -> list[dict[str, Any]]:
    return [{**c, "points": "many" if c["id"] == BAD_VALUE else "5"} for c in contacts(N)]


def email(i: int) -> str:
    return f"user{i}@example.org"


def seed_twins(emulator) -> None:
    """Two profiles for each twin's email (one by field, one by subscription): its launch is a 409."""
    emulator.seed(
        profiles=[
            profile
            for i in TWINS
            for profile in (
                {"db_id": 1, "fields": {"email": email(i)}},
                {"db_id": 1, "subscriptions": [{"channel": "email", "resource_id": 1, "email": email(i)}]},
            )
        ]
    )


def run_tries(make_delivery, mode: DeliveryMode, after_first_try) -> Delivery:
    """Tries of one task instance as the operator makes them, until one is not stopped."""
    book: dict[str, str] = {}  # the operator's task_state_store
    for attempt in range(1, 6):
        delivery = make_delivery(
            mode=mode, batch_size=CHUNK, mapping=MAPPING, run=run_ref(try_number=attempt), tasks=book
        )
        try:
            delivery.recover(book, timeout=60, poll_interval=0.05)
            delivery.process(in_batches(records(), CHUNK))
            delivery.settle_tasks(book, timeout=60, poll_interval=0.05)
            stopped = False
        except DeliveryStopped:
            stopped = True
        summary = delivery.summary
        assert summary.found == sum(
            getattr(summary, k) for k in ("launched", "skipped", "rejected", "failed", "uncertain", "pending")
        ), f"try {attempt}'s summary adds up: {summary}"
        if attempt == 1:
            assert stopped, "the fault stops the first try"
            after_first_try(delivery)
        if not stopped:
            return delivery
    raise AssertionError("the run never finished")


def states(delivery: Delivery) -> dict[int, str]:
    """Ledger state of every contact that has a row, by contact number."""
    by_key = delivery.ledger.contact_states(delivery.scope)
    numbers = {f"email:{email(i)}": i for i in range(N)}
    return {numbers[key]: state for key, state in by_key.items()}


def processed(emulator, scenario_id: int, expected: set[int]) -> set[int]:
    """The contacts the emulator launched, once its background work (delayed requests, tasks) is over."""
    deadline = time.monotonic() + 30
    while True:
        journal = emulator.journal(scenario_id)
        busy = any(task["status"] in ("queued", "running") for task in emulator.state()["tasks"])
        if (len(journal) >= len(expected) and not busy) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    counts = Counter(entry["key"] for entry in journal)
    assert set(counts.values()) <= {1}, f"launched more than once: {counts}"
    numbers = {email(i): i for i in range(N)}
    return {numbers[key] for key in counts}


def expected_states(mode: DeliveryMode, case: Case) -> tuple[dict[int, str], dict[int, str]]:
    """(after try 1, at the end): the ledger state of every contact with a row."""
    if mode is DeliveryMode.SINGLE:
        first = dict.fromkeys([*C1, *C2], "launched")
        first |= dict.fromkeys([*REFUSED, NOT_FOUND_ONCE], "failed")
        first |= dict.fromkeys(range(STOPPED_SINGLY + 1, C2.stop), "failed")  # released unsent
        first[STOPPED_SINGLY] = case.outcome
        stopped = {STOPPED_SINGLY}
    elif mode is DeliveryMode.BATCH:
        first = dict.fromkeys(C1, "launched") | {BAD_VALUE: "failed", TWINS[0]: "failed"}
        first |= dict.fromkeys(C2, case.outcome)
        stopped = set(C2)
    else:  # C1's task is in flight: the next try's recover() settles it
        first = dict.fromkeys(C1, "sending") | dict.fromkeys(C2, case.outcome)
        stopped = set(C2)
    final = dict.fromkeys(range(N), "launched") | dict.fromkeys(REFUSED, "failed")
    if case.outcome == "uncertain":
        final |= dict.fromkeys(stopped, "uncertain")
    return first, final


def expected_processed(mode: DeliveryMode, case: Case, final: dict[int, str]) -> set[int]:
    """Launched contacts, and those of the stopped request when Altcraft processed it regardless."""
    stopped = {STOPPED_SINGLY} if mode is DeliveryMode.SINGLE else set(C2)
    done = {i for i, state in final.items() if state == "launched"}
    return done | (stopped - REFUSED if case.processed else set())


def stopper(mode: DeliveryMode, case: Case) -> list[dict[str, Any]]:
    """The fault rules: the run-stopping one first (so it counts every request), then single mode's 404."""
    endpoint = ENDPOINTS[mode]
    at = STOPPED_SINGLY + 1 if mode is DeliveryMode.SINGLE else 2
    rules = [{"endpoint": endpoint, **case.rule, "every": at, "count": 1}]
    if mode is DeliveryMode.SINGLE:
        every = NOT_FOUND_ONCE + 1
        rules.append({"endpoint": endpoint, "kind": "status", "status": 404, "every": every, "count": 1})
    return rules


@pytest.mark.parametrize("mode", list(DeliveryMode))
@pytest.mark.parametrize("name", list(CASES))
def test_fault_matrix_pins_who_was_launched_failed_and_uncertain(
    make_delivery, emulator, scenario_id, monkeypatch, mode, name
):
    case = CASES[name]
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", emulator.connection_json(**(FAST | case.connection)))
    emulator.config(task_delay_seconds=0.05)
    seed_twins(emulator)
    emulator.add_faults(*stopper(mode, case))
    first, final = expected_states(mode, case)

    def after_first_try(delivery: Delivery) -> None:
        assert states(delivery) == first

    delivery = run_tries(make_delivery, mode, after_first_try)

    assert states(delivery) == final
    expected = expected_processed(mode, case, final)
    assert processed(emulator, scenario_id, expected) == expected


@pytest.mark.parametrize("mode", list(DeliveryMode))
def test_rate_limited_requests_are_retried_and_nothing_stops(make_delivery, emulator, scenario_id, mode):
    emulator.config(task_delay_seconds=0.05)
    seed_twins(emulator)
    rule = {"kind": "status", "status": 429, "retry_after": 0, "every": 2, "count": 3}
    emulator.add_faults({"endpoint": ENDPOINTS[mode], **rule})
    delivery = make_delivery(mode=mode, batch_size=CHUNK, mapping=MAPPING)
    delivery.process(in_batches(records(), CHUNK))
    delivery.settle_tasks(delivery.tasks, timeout=60, poll_interval=0.05)

    final = dict.fromkeys(range(N), "launched") | dict.fromkeys(REFUSED, "failed")
    assert states(delivery) == final
    assert emulator.state()["faults"][0]["hits"] == (3 if mode is DeliveryMode.SINGLE else 2)
    launched = {i for i, state in final.items() if state == "launched"}
    assert processed(emulator, scenario_id, launched) == launched
