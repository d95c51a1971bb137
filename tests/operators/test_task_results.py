"""`async` delivery when the finished task holds no per-contact results (counts only, or nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from altcraft.delivery import Delivery
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
