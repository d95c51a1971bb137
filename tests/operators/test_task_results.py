"""`async` delivery when the finished task holds no per-contact results (counts only, or nothing)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from altcraft.delivery import Delivery, DeliveryMode, LaunchTarget
from altcraft.hooks.altcraft import AltcraftHook
from altcraft.ledger import Outcome, RelaunchPolicy, Scope
from altcraft.mapping import ProfileMapping, compile_mapping
from altcraft.testing import emulator_process

from .conftest import EMAIL_MAPPING, contacts, in_batches, launch_counts, run_ref

RECORDINGS = Path(__file__).parents[1] / "fixtures" / "recordings"


def _run_async(delivery: Delivery, records: list[dict]) -> None:
    submitted: dict[str, str] = {}
    delivery.on_task_submitted = submitted.__setitem__
    delivery.process(in_batches(records, 10))
    for batch_id, task_id in submitted.items():
        status = delivery.hook.get_task_status(task_id)
        deadline = time.monotonic() + 30
        while not status.state.is_terminal and time.monotonic() < deadline:
            time.sleep(0.05)
            status = delivery.hook.get_task_status(task_id)
        delivery.settle_task(delivery.ledger.claim_of(delivery.scope, batch_id), status)


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
            mapping = ProfileMapping.model_validate(EMAIL_MAPPING)
            delivery = Delivery(
                hook=hook,
                ledger=ledger,
                scope=Scope(platform=hook.base_url, scenario_id=12),
                run=run_ref(),
                target=LaunchTarget(scenario_id=12, matching="email"),
                mapper=compile_mapping(mapping, source_key_column="id"),
                mode=DeliveryMode.ASYNC,
                policy=RelaunchPolicy.parse("once"),
                batch_size=10,
            )
            _run_async(delivery, contacts(15))
        assert (delivery.summary.launched, delivery.summary.uncertain) == (15, 0)
        assert len(replaying.journal(12)) == 15
