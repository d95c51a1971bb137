"""`maker` makes the same instances as the dataclass's own ``__init__``: same type, the very same field
values, equal, same repr, frozen and slotted; and it refuses a class it cannot make that way."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from altcraft.api.layouts import BatchItemLayout
from altcraft.ledger import Outcome, Settlement
from altcraft.makers import maker
from altcraft.mapping import Profile

PROFILES: list[tuple[Any, ...]] = [
    *(
        ("row-1", {"email": "a@example.org"}, "email:a@example.org", {"_fname": "Anna"}, b"{}", layout, None)
        for layout in BatchItemLayout
    ),
    ("", {}, "", {}, b"", BatchItemLayout.HEDGED, "custom_id"),
    ("k\x00\ud800", {"phone": "+79001234567"}, "phone:+79001234567", {"tags": ["a"]}, b"x" * 9, "odd", 0),
    (None, None, None, None, None, None, None),
]


def _made_alike(cls: type, values: tuple[Any, ...]) -> None:
    made, plain = maker(cls)(*values), cls(*values)
    assert type(made) is cls
    for item in dataclasses.fields(cls):
        assert getattr(made, item.name) is getattr(plain, item.name)
    assert made == plain
    assert repr(made) == repr(plain)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, dataclasses.fields(cls)[0].name, "changed")
    assert not hasattr(made, "__dict__")


@pytest.mark.parametrize("values", PROFILES)
def test_a_made_profile_is_the_profile_of_the_same_values(values: tuple[Any, ...]) -> None:
    _made_alike(Profile, values)


SETTLEMENTS: list[tuple[Any, ...]] = [
    (Outcome.LAUNCHED, None, None, "65a0c0ff0000000000000001"),
    (Outcome.FAILED, 400, "invalid email a***@example.org", None),
    (Outcome.UNCERTAIN, None, "no answer", None),
    ("launched", 0, "", ""),
    (Outcome.FAILED, -(2**31), "\x00\ud800", "x" * 300),
]


@pytest.mark.parametrize("values", SETTLEMENTS)
def test_a_made_settlement_is_the_settlement_of_the_same_values(values: tuple[Any, ...]) -> None:
    _made_alike(Settlement, values)


@pytest.mark.parametrize("outcome", [Outcome.SKIPPED, Outcome.REJECTED, "sending", None])
def test_a_made_settlement_is_checked_as_a_constructed_one(outcome: Any) -> None:
    message = "a settlement is launched, failed or uncertain"
    with pytest.raises(ValueError, match=message):
        Settlement(outcome, None, None, None)
    with pytest.raises(ValueError, match=message):
        maker(Settlement)(outcome, None, None, None)


def test_maker_takes_every_field_positionally() -> None:
    make = maker(Profile)
    with pytest.raises(TypeError):
        make("row-1", {}, "email:a", {})
    with pytest.raises(TypeError):
        make(source_key="row-1", match={}, ledger_key="k", data={}, encoded=b"", layout=None, key_field=None)


@dataclasses.dataclass(frozen=True)
class _NoSlots:
    value: int


@dataclasses.dataclass(slots=True)
class _NotFrozen:
    value: int


@pytest.mark.parametrize("cls", [_NoSlots, _NotFrozen, dict])
def test_maker_refuses_what_is_not_a_frozen_slotted_dataclass(cls: type) -> None:
    with pytest.raises(TypeError, match="is not a frozen dataclass with slots"):
        maker(cls)
