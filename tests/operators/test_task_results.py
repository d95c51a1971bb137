"""`async` delivery when the finished task holds no per-contact results (counts only, or nothing)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from altcraft.api.errors import AltcraftUnexpectedAnswer
from altcraft.delivery import Delivery, DeliveryStopped
from altcraft.hooks.altcraft import AltcraftHook
from altcraft.ledger import Outcome
from altcraft.mapping import ProfileMapping
from altcraft.testing import emulator_process

from .conftest import EMAIL_MAPPING, contacts, in_batches, launch_counts, run_ref

RECORDINGS = Path(__file__).parents[1] / "fixtures" / "recordings"


def _run_async(delivery: Delivery, records: list[dict]) -> None:
    delivery.process(in_batches(records, 10))
    delivery.settle_tasks(delivery.tasks, timeout=60, poll_interval=0.05)


def test_counts_that_prove_success_settle_launched(make_delivery, emulator, scenario_id):
    emulator.config(task_result="counts", task_success_status="success", task_delay_seconds=0.05)
    delivery = make_delivery(mode="async", batch_size=10)
    _run_async(delivery, contacts(20))
    assert (delivery.summary.launched, delivery.summary.uncertain) == (20, 0)
    assert len(launch_counts(emulator, scenario_id)) == 20


@pytest.mark.parametrize("layout", ["counts", "none"])
def test_a_task_that_cannot_tell_who_launched_leaves_its_chunk_uncertain_loudly(
    make_delivery, emulator, scenario_id, layout, caplog
):
    emulator.config(task_result=layout, task_delay_seconds=0.05)
    emulator.add_faults(
        {"endpoint": "workflows/import_and_start_batch_task", "kind": "profile_error", "every": 4}
    )
    delivery = make_delivery(mode="async", batch_size=10)
    _run_async(delivery, contacts(10))
    assert (delivery.summary.launched, delivery.summary.uncertain) == (0, 10)
    rows = delivery.ledger.counts(delivery.scope, delivery.run)
    assert rows[Outcome.UNCERTAIN] == 10
    [record] = [r for r in caplog.records if r.levelname == "ERROR"]
    expected = "do not prove" if layout == "counts" else "without a result"
    assert expected in record.getMessage() and "UNCERTAIN" in record.getMessage()


def test_async_delivery_against_the_documented_task_answer(ledger):
    """The replayed documented tasks/status (export-like counts, no per-contact list) settles launched."""
    with emulator_process("--replay", str(RECORDINGS / "documented_examples.json")) as replaying:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", replaying.connection_json())
            hook = AltcraftHook()
            hook.get_conn()
            delivery = Delivery.create(
                hook,
                ledger,
                run_ref(),
                scenario_id=12,
                mapping=ProfileMapping.model_validate(EMAIL_MAPPING),
                key_column="id",
                mode="async",
                batch_size=10,
            )
            _run_async(delivery, contacts(15))
        assert (delivery.summary.launched, delivery.summary.uncertain) == (15, 0)
        assert len(replaying.journal(12)) == 15


@pytest.mark.parametrize("ledger", ["postgresql", "sqlite"], indirect=True)
def test_a_task_id_answered_for_two_batches_settles_both_uncertain(
    make_delivery, emulator, proxy, scenario_id
):
    """Altcraft answers the first task's id again for the second batch: neither batch can be settled from
    that task's results (they were one batch's), so both are uncertain and the run stops."""
    first: list[str] = []

    def same_id(body, answer, status):
        first.append(first[0] if first else answer["data"]["task_id"])
        return status, {**answer, "data": {"task_id": first[0]}}

    proxy.rewrite["workflows/import_and_start_batch_task"] = same_id
    delivery = make_delivery(mode="async", batch_size=5)
    with pytest.raises(DeliveryStopped, match="for two batches"):
        delivery.process(in_batches(contacts(15), 5))
    delivery.settle_tasks(delivery.tasks, timeout=60, poll_interval=0.05)

    assert len(first) == 2, "no batch was submitted after the reused id"
    s = delivery.summary
    assert (s.found, s.launched, s.uncertain, s.failed, s.pending) == (10, 0, 10, 0, 0)
    assert {o: n for o, n in delivery.session.counts().items() if n} == {Outcome.UNCERTAIN: 10}
    assert not delivery.tasks


@pytest.mark.parametrize("ledger", ["postgresql", "sqlite"], indirect=True)
def test_reconciliation_never_reads_a_task_id_answered_for_two_batches(
    make_delivery, emulator, proxy, scenario_id
):
    """Altcraft answers one task id (here: that of an earlier task, which refused its 5 contacts) for two
    batches: the sending try settles both uncertain, since the results may be either batch's. The first
    batch's task was recorded, though, and reconciliation read those results as its own: its 5 contacts,
    launched by their real task, were judged refused, not processed, and sent again."""
    task = "workflows/import_and_start_batch_task"
    emulator.add_faults({"endpoint": task, "kind": "profile_error", "code": 400, "text": "bad", "every": 1})
    refused = make_delivery(mode="async", batch_size=5, run=run_ref(run_id="r0", window="r0"))
    refused.process(in_batches(contacts(5, start=100)))
    [reused] = refused.tasks.values()
    refused.settle_tasks(refused.tasks, timeout=60, poll_interval=0.05)
    assert refused.summary.failed == 5
    emulator.clear_faults()
    proxy.rewrite[task] = lambda body, answer, status: (status, {**answer, "data": {"task_id": reused}})

    people = contacts(10)
    with pytest.raises(DeliveryStopped, match="for two batches"):
        make_delivery(mode="async", batch_size=5).process(in_batches(people, 5))
    deadline = time.monotonic() + 30  # their real tasks run (their ids were hidden by the reused one)
    while len(launch_counts(emulator, scenario_id)) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    reconciler = make_delivery(
        run=run_ref(run_id="r2", window="r2"), profiles_db_id=1, reconcile_grace=timedelta(0)
    )
    summary = reconciler.process(in_batches(people, 5))
    assert summary.reconciled == {"launched": 0, "not_processed": 0, "uncertain": 10, "deferred": 0}
    assert (summary.requests, summary.uncertain) == (0, 10)
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 10, "nobody launched twice"


@pytest.mark.parametrize("ledger", ["postgresql", "sqlite"], indirect=True)
def test_a_task_id_another_run_was_answered_too_settles_nobody(make_delivery, emulator, proxy, scenario_id):
    """Altcraft answers a later run the task id an earlier run's request got (that task launched its 5): the
    later run cannot see it among its own tasks, and read those results as its own: its 5 contacts, whose
    real task refused them, were settled launched and never sent. Both are recorded, so it sees the id
    shared and settles its contacts uncertain."""
    task = "workflows/import_and_start_batch_task"
    earlier = make_delivery(mode="async", batch_size=5, run=run_ref(run_id="r0", window="r0"))
    earlier.process(in_batches(contacts(5, start=100)))
    [reused] = earlier.tasks.values()
    assert earlier.hook.wait_for_task(reused, timeout=30, poll_interval=0.05).state.is_terminal
    proxy.rewrite[task] = lambda body, answer, status: (status, {**answer, "data": {"task_id": reused}})
    emulator.add_faults({"endpoint": task, "kind": "profile_error", "code": 400, "text": "bad", "every": 1})

    later = make_delivery(mode="async", batch_size=5)
    _run_async(later, contacts(5))
    assert (later.summary.launched, later.summary.uncertain) == (0, 5)
    assert len(launch_counts(emulator, scenario_id)) == 5, "the earlier run's only"


@pytest.mark.parametrize("ledger", ["sqlite"], indirect=True)
def test_the_status_of_another_task_settles_nobody(make_delivery, emulator, proxy, scenario_id):
    """``tasks/status`` answers with another task's id (and so maybe its results): nothing is settled from
    it; the contacts wait for a later read."""
    proxy.rewrite["tasks/status"] = lambda body, answer, status: (
        status,
        {**answer, "data": {**answer["data"], "task_id": "task_of_another_batch"}},
    )
    delivery = make_delivery(mode="async", batch_size=5)
    delivery.process(in_batches(contacts(5), 5))
    with pytest.raises(AltcraftUnexpectedAnswer, match="another task"):
        delivery.settle_tasks(delivery.tasks, timeout=60, poll_interval=0.05)
    assert (delivery.summary.launched, delivery.summary.pending) == (0, 5)
    assert len(delivery.tasks) == 1, "kept for the next try"


@pytest.mark.parametrize("ledger", ["sqlite"], indirect=True)
def test_several_profiles_for_one_contact_are_no_verdict(make_delivery, emulator, proxy, scenario_id):
    """``profiles/get`` answers a list of two profiles for a contact whose launch was lost: it stays
    uncertain, counted as a reconciliation that decided nothing, and is not sent again (it was read as "no
    such profile": not processed, resent)."""
    emulator.add_faults({"endpoint": "workflows/import_and_start_batch", "kind": "drop_after", "count": 1})
    first = make_delivery(batch_size=5)
    with pytest.raises(DeliveryStopped):
        first.process(in_batches(contacts(5), 5))
    proxy.rewrite["profiles/get"] = lambda body, answer, status: (
        200,
        {"error": 0, "error_text": "Successful operation", "data": [{"id": "p1"}, {"id": "p2"}]},
    )
    second = make_delivery(batch_size=5, profiles_db_id=1, run=run_ref(try_number=2))
    second.process(in_batches(contacts(5), 5))
    assert second.summary.reconciled == {"launched": 0, "not_processed": 0, "uncertain": 5, "deferred": 0}
    assert (second.summary.uncertain, second.summary.requests) == (5, 0)
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 5
