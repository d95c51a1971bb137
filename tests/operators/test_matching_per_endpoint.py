"""The operator refuses, at parse time, a matching mode the docs do not list for its endpoint."""

from __future__ import annotations

import pytest

from altcraft.modes import DeliveryMode
from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator

MAPPING = {"matching": "phone_sub", "key": {"phone": "phone"}}


def _operator(**kwargs):
    return ImportAndLaunchScenarioOperator(
        task_id="launch", scenario_id=12, mapping=MAPPING, contacts=[], key_column="id", **kwargs
    )


@pytest.mark.parametrize("delivery", list(DeliveryMode))
def test_undocumented_matching_is_refused_unless_allowed(delivery):
    with pytest.raises(
        ValueError, match="matching 'phone_sub' is not documented for workflows/import_and_start"
    ):
        _operator(delivery=delivery)
    assert _operator(delivery=delivery, allow_undocumented_matching=True).matching == "phone_sub"
