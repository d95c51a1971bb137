"""The delivery on the in-process emulator (no HTTP, no Airflow) and a SQLite ledger: fast checks of the
exactly-once flow; tests/operators/test_delivery.py covers the same over HTTP and on PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa

from altcraft.api.errors import REFUSAL_CODES
from altcraft.delivery import Delivery, DeliveryStopped, TasksStillRunning, _settlements_for_results
from altcraft.emulator.in_process import InProcessAltcraft
from altcraft.emulator.state import DEFAULT_TOKEN, Emulator, demo_seed
from altcraft.ledger import Ledger, Outcome, RelaunchPolicy, RunRef, Settlement
from altcraft.mapping import ProfileMapping
from altcraft.modes import DeliveryMode

SCENARIO = 12  # active, on database 1, in the demo seed
MAPPING = ProfileMapping.model_validate({"matching": "email", "key": {"email": "email"}})


@pytest.fixture
def altcraft() -> InProcessAltcraft:
    return InProcessAltcraft(Emulator(demo_seed(), token=DEFAULT_TOKEN))


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}"))


def records(n: int) -> list[dict]:
    return [{"id": i, "email": f"user{i}@example.org"} for i in range(n)]


def delivery(altcraft, ledger, *, try_number: int = 1, **options) -> Delivery:
    run = RunRef("welcome", "import_and_launch", "run-1", try_number, "w1")
    return Delivery.create(
        altcraft, ledger, run, scenario_id=SCENARIO, mapping=MAPPING, key_column="id", **options
    )


def launched(altcraft: InProcessAltcraft) -> list[str]:
    return [entry["profile_id"] for entry in altcraft.emulator.launches(SCENARIO)]


@pytest.mark.parametrize("mode", list(DeliveryMode))
def test_every_mode_launches_each_contact_once(altcraft, ledger, mode):
    first = delivery(altcraft, ledger, mode=mode, batch_size=4)
    first.process([records(10)])
    first.settle_tasks(first.tasks, timeout=5, poll_interval=0)
    again = delivery(altcraft, ledger, try_number=2, mode=mode, batch_size=4).process([records(10)])
    assert (first.summary.launched, again.launched, again.skipped) == (10, 0, 10)
    assert len(launched(altcraft)) == len(set(launched(altcraft))) == 10


def test_recover_settles_the_earlier_tries_tasks_and_marks_its_unsettled_contacts_uncertain(altcraft, ledger):
    crashed = delivery(altcraft, ledger, mode=DeliveryMode.ASYNC, batch_size=5)
    crashed.process([records(5)])  # one task submitted, never settled: the try "died"
    in_flight = ledger.claim(
        crashed.scope, crashed.run, [("email:late@example.org", "99")], RelaunchPolicy("once")
    )
    assert in_flight.to_send and len(crashed.tasks) == 1

    retry = delivery(altcraft, ledger, try_number=2)
    recovered = retry.recover(crashed.tasks, timeout=5, poll_interval=0)

    assert recovered == ["email:late@example.org"] and not crashed.tasks
    states = ledger.contact_states(retry.scope)
    assert states.pop("email:late@example.org") == "uncertain"
    assert set(states.values()) == {"launched"} and len(states) == 5
    assert ledger.counts(retry.scope, crashed.run)[Outcome.UNCERTAIN] == 1, (
        "recorded for the try that sent it"
    )
    assert ledger.counts(retry.scope, crashed.run)[Outcome.LAUNCHED] == 5
    assert not any(ledger.counts(retry.scope, retry.run).values()), "nothing twice in the retry's name"
    assert retry.summary.earlier_tries == {"launched": 5, "failed": 0, "uncertain": 1}
    assert (retry.summary.found, retry.summary.launched, retry.summary.uncertain) == (0, 0, 0)


def test_a_task_still_running_stays_in_the_book(altcraft, ledger):
    sent = delivery(altcraft, ledger, mode=DeliveryMode.ASYNC)
    sent.process([records(3)])
    with pytest.raises(TasksStillRunning):
        sent.settle_tasks(sent.tasks, timeout=None)
    assert len(sent.tasks) == 1


def test_a_task_that_fails_part_way_leaves_its_whole_chunk_uncertain(altcraft, ledger):
    """The scenario is switched off while its task runs: the task fails after launching two contacts."""
    sent = delivery(altcraft, ledger, mode=DeliveryMode.ASYNC, batch_size=10)
    sent.process([records(10)])
    [task_id] = sent.tasks.values()
    for _ in range(2):  # each read moves the in-process task on by one tenth: one contact
        assert altcraft.get_task_status(task_id).status == "running"
    altcraft.call("workflows/deactivate", {"id": SCENARIO})

    sent.settle_tasks(sent.tasks, timeout=5, poll_interval=0)

    assert altcraft.get_task_status(task_id).status == "failed" and not sent.tasks
    assert [e["key"] for e in altcraft.emulator.launches(SCENARIO)] == [
        "user0@example.org",
        "user1@example.org",
    ]
    assert set(ledger.contact_states(sent.scope).values()) == {"uncertain"}
    assert len(ledger.contact_states(sent.scope)) == 10, "launched or not, Altcraft cannot say which"
    assert (sent.summary.launched, sent.summary.uncertain, sent.summary.pending) == (0, 10, 0)
    altcraft.call("workflows/activate", {"id": SCENARIO})
    retry = delivery(altcraft, ledger, try_number=2, mode=DeliveryMode.ASYNC).process([records(10)])
    assert (retry.uncertain, retry.requests) == (10, 0), "never resent blindly"


def test_a_contact_met_again_in_a_later_chunk_is_reconciled_once(altcraft, ledger):
    first = delivery(altcraft, ledger)
    first.process([records(1)])  # the profile now exists in Altcraft
    doubt = RunRef("welcome", "import_and_launch", "run-0", 1, "w0")
    claim = ledger.claim(
        first.scope, doubt, [("email:user0@example.org", "0")], RelaunchPolicy("once"), relaunch=True
    )
    ledger.settle(first.scope, doubt, claim, {})  # no answer: uncertain, and no marker to decide it

    again = delivery(altcraft, ledger, try_number=2, batch_size=1, profiles_db_id=1)
    again.process([records(1), records(1)])  # the same contact in two chunks

    assert again.summary.reconciled == {"launched": 0, "not_processed": 0, "uncertain": 1, "deferred": 0}
    assert ledger.contact_states(again.scope) == {"email:user0@example.org": "uncertain"}
    assert len(launched(altcraft)) == 1


def test_a_delivery_asked_to_stop_reads_no_further_profile(altcraft, ledger):
    """``stop`` (the task's on_kill) also ends a reconciliation: no profile is read after it, and the
    contacts not read yet stay uncertain, untouched, for the next try."""
    first = delivery(altcraft, ledger)
    doubt = RunRef("welcome", "import_and_launch", "run-0", 1, "w0")
    keys = [(f"email:user{i}@example.org", str(i)) for i in range(3)]
    claim = ledger.claim(first.scope, doubt, keys, RelaunchPolicy("once"), delivery_mode="batch")
    ledger.settle(first.scope, doubt, claim, {})  # no answer: uncertain; no profile, so "not processed"

    stopping = delivery(altcraft, ledger, try_number=2, profiles_db_id=1, reconcile_grace=timedelta(0))
    stopping.stop()
    with pytest.raises(DeliveryStopped, match="asked to stop"):
        stopping.reconcile()

    assert stopping.summary.reconciled == {"launched": 0, "not_processed": 0, "uncertain": 0, "deferred": 0}
    assert set(ledger.contact_states(first.scope).values()) == {"uncertain"}, "none read, none decided"


def test_a_combined_mode_contact_met_under_another_key_is_reconciled_before_its_claim(altcraft, ledger):
    """Anna is sent by her email alone and the answer is lost (her request was processed: the marker is on
    her profile). Met again with her phone too, under another ledger key of the same contact, she is
    reconciled before the claim, as any uncertain contact of a chunk is, and found launched; she was not
    looked up (her row is under the first key's hash), so the claim met her uncertain and the try failed."""
    mapping = ProfileMapping.model_validate(
        {
            "matching": "email_phone",
            "key": {"email": "email", "phone": "phone"},
            "fields": {"phones": {"source": "phone", "type": "phone"}},
            "default_region": "RU",
        }
    )
    options = {"mapping": mapping, "key_column": "id", "launch_marker_field": "CRM_ID", "profiles_db_id": 1}
    run = RunRef("welcome", "import_and_launch", "run-1", 1, "w1")
    first = Delivery.create(altcraft, ledger, run, scenario_id=SCENARIO, **options)
    claim = first.session.claim(
        [("email_phone:anna@example.org|", "1")],
        first.policy,
        marker=first.marker,
        delivery_mode="batch",
        aliases={"email_phone:anna@example.org|": ["email:anna@example.org"]},
    )
    altcraft.call(
        "workflows/import_and_start",
        {
            "workflow_id": SCENARIO,
            "email": "anna@example.org",
            "data": {"CRM_ID": first.marker.partition("=")[2]},
        },
    )
    first.session.settle(claim, {})  # no answer: uncertain

    retry = Delivery.create(altcraft, ledger, replace(run, try_number=2), scenario_id=SCENARIO, **options)
    summary = retry.process([[{"id": 1, "email": "anna@example.org", "phone": "+79001234567"}]])

    assert summary.reconciled == {"launched": 1, "not_processed": 0, "uncertain": 0, "deferred": 0}
    assert (summary.uncertain, summary.skipped, summary.requests) == (0, 1, 0)
    assert set(ledger.contact_states(retry.scope).values()) == {"launched"}
    assert len(launched(altcraft)) == 1


def _settlement_of(result: tuple) -> Settlement:
    """A result's settlement by the rule itself: launched with its profile id on error 0, failed on a code
    that refuses the profile, else uncertain (the code does not say the profile was not launched)."""
    code, text, profile_id = result
    if code == 0:
        return Settlement(Outcome.LAUNCHED, profile_id=profile_id)
    if code in REFUSAL_CODES:
        return Settlement(Outcome.FAILED, code=code, text=text)
    reason = (
        f"Altcraft answered error {code} for this profile ({text}), which does not say it was not launched"
    )
    return Settlement(Outcome.UNCERTAIN, code=code, text=reason)


def test_settlements_of_an_answer_follow_the_rule_result_by_result():
    """Over results of every kind (error codes, texts and profile ids, usual and hostile) and repeated keys:
    the same keys in the same order, each settlement equal to the rule's, with the very same values."""
    codes = [0, 0, 1, 400, 404, 402, 500, -1, 2**31 - 1, -(2**31)]
    texts = [None, "", "Invalid email", "\x00\ud800", "ünï" * 100]
    ids = [None, "", "65a0c0ff0000000000000001", "\ud800", "x" * 255]
    results = [(c, t, i) for c in codes for t in texts for i in ids]
    keys = [f"email:u{n % 150}@example.org" for n in range(len(results))]  # later results of a key win

    made = _settlements_for_results(keys, results)
    plain = {key: _settlement_of(result) for key, result in zip(keys, results, strict=True)}
    assert list(made) == list(plain)
    for key, settlement in made.items():
        assert type(settlement) is Settlement
        assert settlement == plain[key]
        passed_on = (
            "code",
            "profile_id",
            *(("text",) if settlement.outcome is not Outcome.UNCERTAIN else ()),
        )
        assert all(getattr(settlement, name) is getattr(plain[key], name) for name in passed_on)
    assert {_settlement_of(result).outcome for result in results} == {
        Outcome.LAUNCHED,
        Outcome.FAILED,
        Outcome.UNCERTAIN,
    }
    with pytest.raises(ValueError):
        _settlements_for_results(keys[:-1], results)
