"""A run limited to selected contacts (the Altcraft page's "relaunch selected"): only they are sent."""

from __future__ import annotations

from collections import Counter

import pytest
import sqlalchemy as sa

from altcraft.delivery import NOT_SELECTED
from altcraft.operators.arguments import hashes

from .conftest import contacts, in_batches, run_ref


def test_a_relaunch_of_selected_contacts_sends_only_them(make_delivery, emulator, ledger, scenario_id):
    first = make_delivery().process(in_batches(contacts(6)))
    assert first.launched == 6
    delivery = make_delivery(run=run_ref(run_id="run-2", window="w2"), relaunch=True)
    picked = {delivery.scope.contact_hash(f"email:user{i}@example.org") for i in (1, 4)}
    delivery.only = frozenset(picked)
    second = delivery.process(in_batches(contacts(6)))
    assert (second.launched, second.skipped) == (2, 4)
    journal = Counter(entry["key"] for entry in emulator.journal(scenario_id))
    assert journal == {f"user{i}@example.org": 2 if i in (1, 4) else 1 for i in range(6)}
    with ledger.engine.connect() as conn:
        query = "SELECT outcome, reason FROM altcraft_outcomes WHERE run_id = 'run-2' AND scenario_id = :s"
        rows = conn.execute(sa.text(query), {"s": scenario_id}).all()
    assert Counter(rows) == {("launched", None): 2, ("skipped", NOT_SELECTED): 4}


def test_only_contacts_parameter_is_a_list_of_ledger_hashes():
    digest = "a" * 64
    assert hashes("only_contacts", f'["{digest}"]') == {digest}
    assert hashes("only_contacts", [digest]) == {digest}
    assert all(hashes("only_contacts", empty) is None for empty in ("[]", "", None))
    for bad in ('["anna@example.org"]', "not json", "{}1"):
        with pytest.raises(ValueError, match="only_contacts"):
            hashes("only_contacts", bad)


COMBINED = {
    "matching": "email_phone",
    "key": {"email": "email", "phone": "phone"},
    "fields": {"phones": {"source": "phone", "type": "phone"}},
    "default_region": "RU",
}


def test_a_selected_contact_whose_row_is_under_another_key_is_relaunched(
    make_delivery, emulator, ledger, scenario_id
):
    """The page selects a contact by its row's hash. Anna was first launched by her email alone; read again
    with her phone too, her key is another, whose own hash was compared with the selection: she was skipped
    as not selected, never relaunched. A claim finds her row through her email; so does the selection."""
    first = make_delivery(mapping=COMBINED)
    assert first.process([[{"id": "a", "email": "anna@example.org"}]]).launched == 1
    [key] = ledger.contact_states(first.scope)
    delivery = make_delivery(mapping=COMBINED, run=run_ref(run_id="run-2", window="w2"), relaunch=True)
    delivery.only = frozenset({first.scope.contact_hash(key)})
    records = [
        {"id": "a", "email": "anna@example.org", "phone": "+79001234567"},
        {"id": "b", "email": "boris@example.org"},
    ]
    second = delivery.process([records])
    assert (second.launched, second.skipped) == (1, 1)
    assert len(emulator.journal(scenario_id)) == 2, "Anna's first launch and her relaunch"
