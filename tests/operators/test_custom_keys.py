"""A contact matched by a custom field is launched once whichever type its id is read as, and whichever
form an earlier version keyed it by: runs against the emulator over HTTP and real ledgers."""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from altcraft.batching import Chunk
from altcraft.delivery import _abandon
from altcraft.ledger import Claim, Outcome, RelaunchPolicy, Settlement
from altcraft.ledger.schema import contacts_table, outcomes_table
from altcraft.mapping import Profile
from tests.conftest import as_upgraded_from_an_earlier_version

from .conftest import launch_counts, run_ref

LEDGERS = ["postgresql", "mariadb", "sqlite"]

#: one id as an SQL integer, a JSON or REAL float, a numeric(10,2) column, CSV text; and 10**16 likewise
ONE_ID = [1, 1.0, Decimal("1.00"), "1"]
BIG_ID = [10**16, 1e16, Decimal("10000000000000000.00"), "10000000000000000"]


@pytest.fixture
def key_scenario(emulator, scenario_id) -> int:
    """The test's scenario on a database of its own with a custom field of each type to match on."""
    fields = [
        {"name": name, "type": kind} for name, kind in (("KS", "string"), ("KI", "int"), ("KF", "float"))
    ]
    emulator.seed(
        databases=[{"id": scenario_id, "name": f"Keys {scenario_id}", "fields": fields}],
        scenarios=[
            {"id": scenario_id, "name": "Welcome", "db_id": scenario_id, "is_active": True, "mode": "restart"}
        ],
    )
    return scenario_id


def custom(field: str, key_type: str | None) -> dict[str, Any]:
    """Custom matching on ``field`` from column ``crm``, declared as ``key_type`` (None: not declared)."""
    fields = {} if key_type is None else {field: {"source": "crm", "type": key_type}}
    return {"matching": "custom", "field_name": field, "key": {"field_value": "crm"}, "fields": fields}


FIELDS = {None: "KS", "string": "KS", "int": "KI", "float": "KF"}


@pytest.mark.parametrize("ledger", LEDGERS, indirect=True)
@pytest.mark.parametrize("key_type", list(FIELDS))
def test_one_id_read_as_int_float_decimal_and_text_is_launched_once(
    make_delivery, emulator, key_scenario, ledger, key_type
):
    """Four runs read one id as 1, 1.0, Decimal('1.00') and '1' (and 10**16 likewise): one launch each.
    Keyed by `str()` of the value, a string or undeclared key launched the id once per form (3 times)."""
    mapping = custom(FIELDS[key_type], key_type)
    for n, values in enumerate(zip(ONE_ID, BIG_ID, strict=True)):
        records = [{"id": f"s{i}", "crm": value} for i, value in enumerate(values)]
        summary = make_delivery(mapping=mapping, run=run_ref(run_id=f"r{n}", window=f"w{n}")).process(
            [records]
        )
        assert (summary.launched, summary.skipped, summary.rejected) == ((2, 0, 0) if n == 0 else (0, 2, 0))
    assert sorted(launch_counts(emulator, key_scenario).values()) == [1, 1]


def _launched_by_an_earlier_version(delivery, key: str, settlement: Settlement) -> None:
    """The ledger row an earlier version left for ``key`` (written by the ledger as it was then: the key
    is the only thing that changed), in a ledger upgraded from that version."""
    as_upgraded_from_an_earlier_version(delivery.ledger)
    run = run_ref(run_id="earlier", window="w0")
    claim = delivery.ledger.claim(delivery.scope, run, [(key, "s1")], RelaunchPolicy.parse("once"))
    assert claim.to_send == [key]
    delivery.ledger.settle(delivery.scope, run, claim, {key: settlement})


def _rows(delivery) -> list[tuple[str, str]]:
    query = sa.select(contacts_table.c.contact_key, contacts_table.c.status).where(
        contacts_table.c.platform == delivery.scope.platform,
        contacts_table.c.scenario_id == delivery.scope.scenario_id,
    )
    with delivery.ledger.engine.connect() as conn:
        return sorted(tuple(row) for row in conn.execute(query))


@pytest.mark.parametrize("ledger", LEDGERS, indirect=True)
@pytest.mark.parametrize(
    ("key_type", "old_key"),
    [
        (None, "custom:1.0"),  # a float read for a text key
        ("string", "custom:1.00"),  # a numeric(10,2) column
        (None, "custom:1.000000"),
        ("float", "custom:1.0"),  # a float key: str(1.0)
        ("int", "custom:1.0"),  # the field was declared float then
    ],
)
def test_a_contact_an_earlier_version_keyed_otherwise_is_not_launched_again(
    make_delivery, emulator, key_scenario, ledger, key_type, old_key
):
    """A contact launched under the old key is found under it: skipped in every later run, whatever type
    its id is read as (one row, no second launch)."""
    mapping = custom(FIELDS[key_type], key_type)
    _launched_by_an_earlier_version(
        make_delivery(mapping=mapping), old_key, Settlement(Outcome.LAUNCHED, profile_id="p")
    )
    for n, value in enumerate(ONE_ID, start=1):
        delivery = make_delivery(mapping=mapping, run=run_ref(run_id=f"r{n}", window=f"w{n}"))
        summary = delivery.process([[{"id": "s1", "crm": value}]])
        assert (summary.launched, summary.skipped) == (0, 1), value
    assert emulator.journal(scenario_id=key_scenario) == []
    assert _rows(delivery) == [(old_key, "launched")], "one row: the earlier one, skipped as it is"
    history = delivery.ledger.history("custom:1", delivery.scope)
    assert (history.contact["contact_key"], len(history.outcomes)) == (old_key, 5), "its launch, 4 skips"


@pytest.mark.parametrize("ledger", LEDGERS, indirect=True)
def test_an_uncertain_contact_keyed_otherwise_stays_uncertain_and_reconciliation_finds_it(
    make_delivery, emulator, key_scenario, ledger
):
    """Uncertain under the old key: not resent blindly, and found by its new key where reconciliation
    looks uncertain contacts up."""
    mapping = custom("KS", "string")
    delivery = make_delivery(mapping=mapping)
    _launched_by_an_earlier_version(delivery, "custom:1.00", Settlement(Outcome.UNCERTAIN, text="timeout"))
    later = make_delivery(mapping=mapping, run=run_ref(run_id="r1", window="w1"))
    summary = later.process([[{"id": "s1", "crm": 1}]])
    assert (summary.launched, summary.uncertain) == (0, 1)
    assert emulator.journal(scenario_id=key_scenario) == []
    found = later.ledger.uncertain_contacts(later.scope, ["custom:1"])
    assert [contact.contact_key for contact in found] == ["custom:1.00"], (
        "the row, with the key it was sent by"
    )


@pytest.mark.parametrize("ledger", ["postgresql"], indirect=True)
def test_a_text_key_and_a_number_standing_for_one_earlier_row_are_one_contact(
    make_delivery, emulator, key_scenario, ledger
):
    """Text ``1.0`` is its own key (a text key keeps its text), and the number 1's former form too: in one
    claim both stand for the row the earlier version wrote, so one of them is a duplicate, none is sent."""
    mapping = custom("KS", "string")
    _launched_by_an_earlier_version(
        make_delivery(mapping=mapping), "custom:1.0", Settlement(Outcome.LAUNCHED, profile_id="p")
    )
    summary = make_delivery(mapping=mapping, run=run_ref(run_id="r1", window="w1")).process(
        [[{"id": "s1", "crm": "1.0"}, {"id": "s2", "crm": 1}]]
    )
    assert (summary.launched, summary.skipped) == (0, 2)
    assert emulator.journal(scenario_id=key_scenario) == []


BAD = {
    "int": {1.5: "has a fractional part, expected an integer", True: "expected an integer, got bool"},
    "float": {2**53 + 1: "is a number a float cannot hold exactly", float("inf"): "is not a finite number"},
    None: {float("nan"): "is not a finite number", False: "expected text, got bool"},
}


@pytest.mark.parametrize("ledger", LEDGERS, indirect=True)
@pytest.mark.parametrize("key_type", list(BAD))
def test_values_that_are_no_key_are_rejected_naming_the_field_and_the_others_launched(
    make_delivery, emulator, key_scenario, ledger, key_type
):
    field = FIELDS[key_type]
    records = [{"id": f"bad{i}", "crm": value} for i, value in enumerate(BAD[key_type])]
    delivery = make_delivery(mapping=custom(field, key_type))
    summary = delivery.process([[*records, {"id": "good", "crm": 7}]])
    assert (summary.launched, summary.rejected) == (1, 2)
    query = sa.select(outcomes_table.c.source_key, outcomes_table.c.reason).where(
        outcomes_table.c.scenario_id == key_scenario, outcomes_table.c.outcome == Outcome.REJECTED.value
    )
    with delivery.ledger.engine.connect() as conn:
        reasons = dict(conn.execute(query).all())
    assert reasons == {f"bad{i}": f"{field}: {reason}" for i, reason in enumerate(BAD[key_type].values())}
    assert len(emulator.journal(scenario_id=key_scenario)) == 1


@pytest.mark.parametrize("ledger", LEDGERS, indirect=True)
def test_a_contact_sent_again_under_its_new_key_keeps_its_one_row(
    make_delivery, emulator, key_scenario, ledger
):
    """A contact that failed under the old key is sent again (an Altcraft task, settled later by its claim's
    rows in key order): its row now carries the key it was sent by, and no second row is made."""
    mapping = custom("KS", None)
    failed = Settlement(Outcome.FAILED, code=400, text="bad request")
    _launched_by_an_earlier_version(make_delivery(mapping=mapping), "custom:1.0", failed)
    delivery = make_delivery(mapping=mapping, mode="async", run=run_ref(run_id="r1", window="w1"))
    delivery.process([[{"id": "s1", "crm": Decimal("1.00")}, {"id": "s2", "crm": 2}]])
    delivery.settle_tasks(delivery.tasks, timeout=60, poll_interval=0.05)
    assert _rows(delivery) == [("custom:1", "launched"), ("custom:2", "launched")]
    assert sorted(launch_counts(emulator, key_scenario).values()) == [1, 1]


@pytest.mark.parametrize("ledger", LEDGERS, indirect=True)
def test_a_selected_contact_an_earlier_version_keyed_otherwise_is_relaunched(
    make_delivery, emulator, key_scenario, ledger
):
    """The page selects a contact by its row's hash: the row of ``custom:1.00``. Read as 1 its key is
    ``custom:1``, whose own hash was compared with the selection: skipped as not selected, never relaunched,
    while its claim would have found that row. The selection finds it as the claim does."""
    mapping = custom("KS", "string")
    delivery = make_delivery(mapping=mapping)
    _launched_by_an_earlier_version(delivery, "custom:1.00", Settlement(Outcome.LAUNCHED, profile_id="p"))
    relaunch = make_delivery(mapping=mapping, run=run_ref(run_id="r1", window="w1"), relaunch=True)
    relaunch.only = frozenset({delivery.scope.contact_hash("custom:1.00")})
    summary = relaunch.process([[{"id": "s1", "crm": Decimal("1.00")}, {"id": "s2", "crm": 2}]])
    assert (summary.launched, summary.skipped) == (1, 1)
    assert len(emulator.journal(scenario_id=key_scenario)) == 1
    assert _rows(relaunch) == [("custom:1", "launched")], "its one row, rekeyed as sent"


def _chunk(*keys: str) -> Chunk:
    profiles = [Profile(f"s{n}", {"field_value": key}, key, {}) for n, key in enumerate(keys)]
    return Chunk(profiles, [b"{}"] * len(profiles))


@pytest.mark.parametrize("ledger", ["postgresql", "mariadb"], indirect=True)
def test_a_chunk_standing_for_a_row_of_the_chunks_in_flight_is_not_claimed_beside_them(
    make_delivery, key_scenario, ledger
):
    """``custom:1`` and text ``1.0`` are two keys of one row when an earlier version wrote ``custom:1.0``.
    A chunk's claim was opened ahead (its rows locked, the transaction held until the chunk being sent is
    sent) when its keys differed from those being sent and settled: a settle waiting for that lock, while
    the sender waited for the settle to start the next, hung the run. It now waits for the settle first,
    and is claimed in line after a chunk being sent."""
    delivery = make_delivery(mapping=custom("KS", "string"))
    as_upgraded_from_an_earlier_version(delivery.ledger)
    sending = Claim("sending-batch", ["custom:1"], {})
    settled = threading.Event()
    with delivery._overlapping():
        delivery._behind.start(lambda: time.sleep(0.2) or settled.set(), lambda: None, ["custom:1"])
        waited = _ahead_then_rolled_back(delivery, _chunk("custom:1.0"), Claim("other", ["custom:7"], {}))
        assert waited and settled.is_set(), "claimed while the chunk standing for its row was being settled"
        assert not _ahead_then_rolled_back(delivery, _chunk("custom:1.0"), sending)
        assert not _ahead_then_rolled_back(delivery, _chunk("custom:1.5"), Claim("b", ["custom:1.50"], {}))
        assert _ahead_then_rolled_back(delivery, _chunk("custom:2"), sending), "sharing no row: ahead"


@pytest.mark.parametrize("ledger", ["sqlite"], indirect=True)
def test_chunks_of_a_ledger_without_former_forms_share_a_row_only_by_a_key_in_both(make_delivery, ledger):
    """A ledger bearing `CANONICAL_KEYS` has no row under a form an earlier version wrote: two chunks share a
    row only by a key in both (a claim of ``custom:1.0`` finds no row of ``custom:1`` there). Unmarked, the
    former forms count."""
    delivery = make_delivery(mapping=custom("KS", "string"))
    assert not ledger.former_forms
    assert delivery._share_rows(["custom:1", "custom:2"], {"custom:2"})
    assert not delivery._share_rows(["custom:1"], {"custom:1.0"})
    as_upgraded_from_an_earlier_version(ledger)
    assert ledger.former_forms
    assert delivery._share_rows(["custom:1"], {"custom:1.0"})


def _ahead_then_rolled_back(delivery, piece: Chunk, sending: Claim) -> bool:
    """Whether ``piece`` is claimed ahead of ``sending``'s send (that claim rolled back)."""
    ahead = delivery._claim_ahead(piece, sending)
    if ahead is not None:
        _abandon(ahead)
    return ahead is not None
