"""Per-contact results are read by position; one that names another contact than the one sent there settles
nobody in its batch.

No page documents the order of a batch's results, nor any item id an answer echoes (docs/api-conformance.md).
Read by position, an answer in another order swaps outcomes: a refused contact recorded launched (never sent),
a launched one recorded failed (sent again: a double launch). Where a result says whom it answers -- the
``profile_id`` under ``profile_id`` matching (documented), an echoed matching value or index (not) -- it is
checked, and a mismatch leaves the whole batch uncertain.
"""

from __future__ import annotations

import pytest

from altcraft.api.errors import AltcraftDeliveryUncertain, AltcraftUnexpectedAnswer
from altcraft.api.models import BatchLaunchRequest, ImportBatchRequest
from altcraft.delivery import DeliveryStopped
from altcraft.hooks.altcraft import AltcraftHook
from altcraft.ledger import Outcome

from .conftest import contacts, in_batches, launch_counts, run_ref

BATCH = "workflows/import_and_start_batch"
TASK = "workflows/import_and_start_batch_task"
BY_PROFILE_ID = {"matching": "profile_id", "key": {"profile_id": "profile_id"}}
#: a profile id no profile has: Altcraft refuses that item (404), launching the others
NOBODY = "65a0c0ffee00000000000bad"


def _states(delivery) -> dict[Outcome, int]:
    return {outcome: n for outcome, n in delivery.session.counts().items() if n}


def _existing(emulator, n: int) -> list[dict]:
    """``n`` contacts whose profiles exist (``profile_id`` matching only updates), keyed by profile id."""
    records = contacts(n, start=900)
    emulator.seed(profiles=[{"db_id": 1, "fields": {"email": c["email"]}} for c in records])
    ids = {p["fields"]["email"]: p["id"] for p in emulator.profiles(db_id=1)}
    return [{**c, "profile_id": ids[c["email"]]} for c in records]


def _refused_first(emulator) -> list[dict]:
    """A contact Altcraft refuses, then four it launches: rotated, the refusal lands on a launched one."""
    return [{"id": 899, "email": "nobody@example.org", "profile_id": NOBODY}, *_existing(emulator, 4)]


def test_batch_results_in_another_order_settle_nobody_and_nobody_is_sent_twice(
    make_delivery, emulator, scenario_id
):
    emulator.add_faults({"endpoint": BATCH, "kind": "reorder_results", "count": 1})
    records = _refused_first(emulator)
    delivery = make_delivery(mapping=BY_PROFILE_ID, batch_size=5)
    with pytest.raises(DeliveryStopped, match="names another contact"):
        delivery.process(in_batches(records, 5))
    assert _states(delivery) == {Outcome.UNCERTAIN: 5}

    again = make_delivery(mapping=BY_PROFILE_ID, batch_size=5, run=run_ref(try_number=2))
    assert (again.process(in_batches(records, 5)).requests, _states(again)) == (0, {Outcome.UNCERTAIN: 5})
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 4


def test_batch_results_in_order_are_settled_one_by_one(make_delivery, emulator, scenario_id):
    """The check costs nothing when the answer is in order: the refusal is a failure, the rest launched."""
    summary = make_delivery(mapping=BY_PROFILE_ID, batch_size=5).process(
        in_batches(_refused_first(emulator), 5)
    )
    assert (summary.launched, summary.failed, summary.uncertain) == (4, 1, 0)


def test_task_results_in_another_order_settle_the_task_uncertain(
    make_delivery, emulator, scenario_id, caplog
):
    emulator.config(task_delay_seconds=0.05)
    emulator.add_faults({"endpoint": TASK, "kind": "reorder_results", "count": 1})
    delivery = make_delivery(mapping=BY_PROFILE_ID, mode="async", batch_size=5)
    delivery.process(in_batches(_refused_first(emulator), 5))
    delivery.settle_tasks(delivery.tasks, timeout=60, poll_interval=0.05)
    assert (delivery.summary.launched, delivery.summary.failed, delivery.summary.uncertain) == (0, 0, 5)
    assert _states(delivery) == {Outcome.UNCERTAIN: 5}
    assert "out of order" in caplog.text and NOBODY not in caplog.text


def _echoing(key: str, base: int, rotate: bool):
    """A server that echoes, with each result, the ``email`` (``key="email"``) or the ``index`` (from
    ``base``) of the item it answers -- neither documented -- and answers in order or rotated by one."""

    def rewrite(body, upstream, status):
        results = [
            {**result, key: item["email"] if key == "email" else n + base}
            for n, (item, result) in enumerate(zip(body["data"], upstream["result"], strict=True))
        ]
        return status, {**upstream, "result": results[1:] + results[:1] if rotate else results}

    return rewrite


@pytest.mark.parametrize(("key", "base"), [("email", 0), ("index", 0), ("index", 1)])
@pytest.mark.parametrize("rotate", [False, True], ids=["in-order", "rotated"])
def test_a_result_that_echoes_whom_it_answers_is_checked(
    make_delivery, emulator, proxy, scenario_id, key, base, rotate, caplog
):
    proxy.rewrite[BATCH] = _echoing(key, base, rotate)
    delivery = make_delivery(batch_size=4)
    if not rotate:
        assert delivery.process(in_batches(contacts(4), 4)).launched == 4
        return
    with pytest.raises(DeliveryStopped, match=r"not the contact sent there|names another contact"):
        delivery.process(in_batches(contacts(4), 4))
    assert _states(delivery) == {Outcome.UNCERTAIN: 4}
    assert "user1@example.org" not in caplog.text


@pytest.mark.parametrize("skip_triggers", [False, True])
def test_an_import_batch_answer_in_another_order_is_refused(emulator, skip_triggers):
    """``profiles/import_batch`` through the hook: the answer cannot be read by position, so it is not read
    at all (uncertain where the import may have fired triggers)."""
    emulator.add_faults({"endpoint": "profiles/import_batch", "kind": "reorder_results", "count": 1})
    items = [{"profile_id": NOBODY}] + [{"profile_id": c["profile_id"]} for c in _existing(emulator, 2)]
    request = ImportBatchRequest(db_id=1, matching="profile_id", skip_triggers=skip_triggers, data=items)
    hook = AltcraftHook()
    expected = AltcraftUnexpectedAnswer if skip_triggers else AltcraftDeliveryUncertain
    with pytest.raises(expected, match="names another contact"):
        hook.import_profiles(request)
    assert [r.error for r in hook.import_profiles(request).result] == [404, 0, 0]
    hook.close()


def test_a_scenario_batch_answer_in_another_order_is_uncertain_through_the_hook(emulator, scenario_id):
    """``import_and_start_batch`` called without ledger keys: the request's own items say whom each result
    should name."""
    emulator.add_faults({"endpoint": BATCH, "kind": "reorder_results", "count": 1})
    items = [{"profile_id": NOBODY}] + [{"profile_id": c["profile_id"]} for c in _existing(emulator, 2)]
    request = BatchLaunchRequest(workflow_id=scenario_id, matching="profile_id", data=items)
    hook = AltcraftHook()
    with pytest.raises(AltcraftDeliveryUncertain, match="names another contact"):
        hook.import_and_start_batch(request)
    assert [r.error for r in hook.import_and_start_batch(request).result] == [404, 0, 0]
    hook.close()
