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
