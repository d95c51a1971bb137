"""The garbage collector around an API call (`altcraft.emulator.app._frozen_after`): no automatic pass
during the call, one pass after it, what it left frozen, and the collector handed back as it was."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from altcraft.emulator.app import _frozen_after
from altcraft.emulator.state import ApiError


@pytest.fixture
def passes():
    """The generations of the collector's passes while the test runs."""
    seen: list[int] = []

    def record(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(record)
    try:
        yield seen
    finally:
        gc.callbacks.remove(record)
        gc.unfreeze()


def test_a_call_runs_without_automatic_passes_then_one_pass_freezes_what_it_left(passes):
    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    with _frozen_after():
        kept = [[n] for n in range(50_000)]  # 70 passes of the young generation, were the collector on
        assert passes == []
    assert passes == [2]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen + len(kept)


def test_a_failed_call_freezes_nothing_and_leaves_the_collector_as_it_was(passes):
    frozen = gc.get_freeze_count()
    with pytest.raises(ApiError), _frozen_after():
        raise ApiError(400, "refused")
    assert passes == [] and gc.isenabled() and gc.get_freeze_count() == frozen
    gc.disable()
    try:
        with _frozen_after():
            pass
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()
