"""An import whose answer is lost is uncertain; its message does not claim a count it does not know."""

from __future__ import annotations

import pytest

from altcraft.api.errors import AltcraftDeliveryUncertain
from altcraft.api.models import ImportBatchRequest, ImportProfileRequest

PEOPLE = [{"email": f"p{n}@example.org", "data": {"email": f"p{n}@example.org"}} for n in range(3)]
IMPORTS = {
    "profiles/import": lambda hook: hook.import_profile(
        ImportProfileRequest(db_id=1, email="p0@example.org", data={"email": "p0@example.org"})
    ),
    "profiles/import_batch": lambda hook: hook.import_profiles(
        ImportBatchRequest(db_id=1, matching="email", data=PEOPLE)
    ),
}


@pytest.mark.parametrize("endpoint", IMPORTS)
def test_an_import_with_a_lost_answer_names_no_count_it_does_not_know(hook, emulator, endpoint):
    emulator.add_faults({"endpoint": endpoint, "kind": "drop_after", "count": 1})
    with pytest.raises(AltcraftDeliveryUncertain) as failure:
        IMPORTS[endpoint](hook)
    message = str(failure.value)
    assert failure.value.keys == [], "imports carry no ledger keys"
    assert "0 profile(s)" not in message
    assert f"Delivery uncertain for the profile(s) sent to {endpoint}" in message


def test_a_launch_with_keys_names_their_count():
    failure = AltcraftDeliveryUncertain("workflows/start", ["email:a@example.org"], ConnectionError("lost"))
    assert str(failure).startswith("Delivery uncertain for 1 profile(s) sent to workflows/start: lost.")
