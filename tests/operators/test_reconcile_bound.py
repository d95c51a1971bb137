"""``reconcile_max_lookups``: a try checks at most that many uncertain contacts in Altcraft, oldest first,
and leaves the others as they are for later runs (emulator over HTTP, PostgreSQL ledger). A backlog (an
outage's) made one try look up every uncertain contact of the scenario at Altcraft's rate limit: hours
inside one task try, its own contacts waiting."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from altcraft.delivery import DeliveryStopped, Summary
from altcraft.ledger import Outcome
from altcraft.ledger.rules import NOT_RECONCILED
from altcraft.ledger.schema import outcomes_table
from altcraft.operators.import_and_launch import NOT_LOOKED_UP, _left_undone, _problems

from .conftest import MARKER, contacts, in_batches, launch_counts, run_ref
from .test_delivery import submit_and_die

ON_POSTGRESQL = pytest.mark.parametrize("ledger", ["postgresql"], indirect=True)


def lose_one_by_one(
    make_delivery, emulator, people: list[dict], kind: str, marker: str | None = MARKER
) -> None:
    """Each person sent by a run of its own whose answer is lost (``drop_after``: Altcraft launched them;
    ``drop_before``: it did not): uncertain, each a little later than the one before. ``marker``: the
    launch marker field the requests carry (None: none)."""
    for person in people:
        emulator.add_faults({"endpoint": "workflows/import_and_start_batch", "kind": kind, "count": 1})
        run = run_ref(run_id=f"lost-{person['id']}")
        with pytest.raises(DeliveryStopped):
            make_delivery(run=run, launch_marker_field=marker).process([[person]])


def recorded_lookups(proxy) -> list[str]:
    """The emails ``profiles/get`` is asked for from now on, in order."""
    asked: list[str] = []

    def record(body: dict, answer: dict, status: int) -> tuple[int, dict]:
        asked.append(body["email"])
        return status, answer

    proxy.rewrite["profiles/get"] = record
    return asked


def bounded(make_delivery, marker_scenario: int, run: int, **options):
    settings = {"launch_marker_field": MARKER, "reconcile_grace": timedelta(0), "reconcile_max_lookups": 3}
    return make_delivery(
        run=run_ref(run_id=f"r{run}", window=f"r{run}"),
        profiles_db_id=marker_scenario,
        **settings | options,
    )


@ON_POSTGRESQL
def test_a_whole_scenario_reconciliation_looks_up_its_bound_oldest_first_and_later_runs_go_on(
    make_delivery, emulator, marker_scenario, ledger, proxy
):
    """7 uncertain contacts (Altcraft launched them), at most 3 lookups a try: 3, 3, then 1, each the oldest
    left, each contact read once; the others stay uncertain, counted deferred; nobody is sent again."""
    people = contacts(7)
    lose_one_by_one(make_delivery, emulator, people, "drop_after")
    asked = recorded_lookups(proxy)

    for run, (decided, deferred) in enumerate([(3, 4), (3, 1), (1, 0)], start=2):
        reconciler = bounded(make_delivery, marker_scenario, run)
        assert reconciler.reconcile() == {Outcome.LAUNCHED: decided}
        verdicts = {"launched": decided, "not_processed": 0, "uncertain": 0, "deferred": deferred}
        assert reconciler.summary.reconciled == verdicts
        assert reconciler.standing()["uncertain"] == deferred, "the others are left uncertain"

    assert asked == [person["email"] for person in people], "3, 3 and 1 lookups, oldest first, none twice"
    assert sorted(launch_counts(emulator, marker_scenario).values()) == [1] * 7


@ON_POSTGRESQL
def test_contacts_a_try_did_not_look_up_are_never_resent_even_with_resend_uncertain(
    make_delivery, emulator, marker_scenario, ledger, proxy
):
    """7 uncertain contacts Altcraft never processed, met again by runs with ``resend_uncertain`` and 2
    new contacts: each run looks 3 up (not processed: sent again) and sends none of the others, which
    stay uncertain until a later run looks them up. Without the hold ``resend_uncertain`` sent them
    unchecked."""
    people = contacts(7)
    lose_one_by_one(make_delivery, emulator, people, "drop_before")
    asked = recorded_lookups(proxy)
    records = people + contacts(2, start=100)

    first = bounded(make_delivery, marker_scenario, 2, resend_uncertain=True).process(in_batches(records))
    assert first.reconciled == {"launched": 0, "not_processed": 3, "uncertain": 0, "deferred": 4}
    assert (first.launched, first.uncertain) == (5, 4), "the 3 looked up and the 2 new; 4 left"
    assert held_reasons(ledger, marker_scenario, "r2") == [NOT_RECONCILED] * 4
    assert asked == [person["email"] for person in people[:3]]

    for run, (resent, left) in enumerate([(3, 1), (1, 0)], start=3):
        summary = bounded(make_delivery, marker_scenario, run, resend_uncertain=True).process(
            in_batches(records)
        )
        assert (summary.reconciled["not_processed"], summary.reconciled["deferred"]) == (resent, left)
        assert (summary.launched, summary.uncertain, summary.skipped) == (resent, left, 9 - resent - left)
    assert asked == [person["email"] for person in people]
    assert sorted(launch_counts(emulator, marker_scenario).values()) == [1] * 9, "nobody launched twice"


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb", "sqlite"], indirect=True)
@pytest.mark.parametrize("whole", [True, False], ids=["whole_scenario", "met_by_a_claim"])
def test_contacts_checked_and_left_undecided_go_behind_so_bounded_runs_reach_every_one(
    make_delivery, emulator, marker_scenario, ledger, proxy, whole
):
    """4 uncertain contacts no lookup decides (2 sent without a launch marker, 2 not processed but lost
    within the grace), then one Altcraft launched; at most 3 lookups a try, by a whole-scenario
    reconciliation or the claim of a run meeting all 5. A contact checked and left undecided goes behind
    those waiting longer: the second run checks the last undecided one and the launched one, the third the
    2 of the first 3 it did not check. Before, they kept their place among the oldest and every run checked
    the same 3: the launched one was never reached. Nobody is sent again."""
    people = contacts(5)
    lose_one_by_one(make_delivery, emulator, people[:2], "drop_after", marker=None)
    lose_one_by_one(make_delivery, emulator, people[2:4], "drop_before")
    lose_one_by_one(make_delivery, emulator, people[4:], "drop_after")
    asked = recorded_lookups(proxy)
    emails = [person["email"] for person in people]

    for run, (launched, deferred) in enumerate([(0, 2), (1, 2), (0, 1)], start=2):
        reconciler = bounded(make_delivery, marker_scenario, run, reconcile_grace=timedelta(hours=1))
        if whole:
            reconciler.reconcile()
        else:
            reconciler.process(in_batches(people))
        verdicts = {"launched": launched, "not_processed": 0, "uncertain": 3 - launched, "deferred": deferred}
        assert reconciler.summary.reconciled == verdicts, f"run {run}"

    first, second, third = asked[:3], asked[3:6], asked[6:]
    assert first == emails[:3] and second[:2] == emails[3:], "the 3 oldest, then the 2 never checked"
    assert sorted(third[:2] + second[2:]) == emails[:3], "then those checked longest ago"
    assert sorted(launch_counts(emulator, marker_scenario).values()) == [1] * 3, "nobody launched twice"


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb", "sqlite"], indirect=True)
def test_with_no_database_id_contacts_no_task_decides_go_behind_so_bounded_runs_reach_the_others(
    make_delivery, emulator, scenario_id, ledger
):
    """No database id known: 4 uncertain contacts sent in batch requests (no Altcraft task to read, no
    profile to look up) take a try's turn and stay as they are; behind them a dead try's Altcraft task
    launched one more. At most 3 checks a try: the first passes over 3, the second reaches the task's
    contact. Before, the 3 oldest kept their place and every run passed over the same 3. Nobody is sent
    again."""
    lose_one_by_one(make_delivery, emulator, contacts(4), "drop_after", marker=None)
    submit_and_die(make_delivery, contacts(1, start=4))
    ledger.stale_after = timedelta(0)

    for run, launched in [(2, 0), (3, 1)]:
        reconciler = make_delivery(run=run_ref(run_id=f"r{run}", window=f"r{run}"), reconcile_max_lookups=3)
        reconciler.reconcile()
        verdicts = {"launched": launched, "not_processed": 0, "uncertain": 0, "deferred": 2}
        assert reconciler.summary.reconciled == verdicts, f"run {run}"
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 5, "nobody launched twice"


def held_reasons(ledger, scenario_id: int, run_id: str) -> list[str]:
    """How each ``uncertain`` outcome of run ``run_id`` ends (after the contact's time and run)."""
    query = sa.select(outcomes_table.c.reason).where(
        outcomes_table.c.scenario_id == scenario_id,
        outcomes_table.c.run_id == run_id,
        outcomes_table.c.outcome == Outcome.UNCERTAIN.value,
    )
    with ledger.engine.connect() as conn:
        return [reason.split("; ", 1)[1] for reason in conn.execute(query).scalars()]


def test_contacts_left_unchecked_fail_a_reconciling_run_and_a_green_one_says_so():
    """A reconciling try that decided 4 and left 2 unchecked is no clean success: it fails saying so unless
    ``max_uncertain_ratio`` allows 2 of 6, and then its last log line says what it left."""
    summary = Summary(found=2, launched=2)
    summary.reconciled.update(launched=4, deferred=2)

    assert _problems(summary, 0.1, 0.0, 0.0, reconciling=True) == ("", "", f"2 {NOT_LOOKED_UP}.")
    assert _problems(summary, 0.1, 0.0, 0.5, reconciling=True) == ("", "", "")
    assert _left_undone(summary, moved_past=False) == f"2 {NOT_LOOKED_UP}"
