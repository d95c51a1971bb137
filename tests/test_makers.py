"""`maker` makes the same instances as the dataclass's own ``__init__``: same type, the very same field
values, equal, same repr, frozen and slotted; and it refuses a class it cannot make that way. `records_maker`
makes the records ``dict(zip(names, row))`` makes."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from altcraft.api.layouts import BatchItemLayout
from altcraft.ledger import Outcome, Settlement
from altcraft.makers import maker, records_maker
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


#: names that are no identifier, that are the maker's own variable names, or that are code
ODD_NAMES = (
    "k0",
    "v1",
    "rows",
    "records",
    "__builtins__",
    "",
    "a b",
    "'\"",
    "x}; import os; {",
    "\x00\ud800\n",
)
NAME_SETS: list[tuple[str, ...]] = [
    ("id", "email", "first_name", "phone", "loyalty", "created_at"),
    ("id",),
    (),
    ODD_NAMES,
    ("id", "same", "other", "same", "same"),
    tuple(f"c{i}" for i in range(1700)),
]


@pytest.mark.parametrize("names", NAME_SETS, ids=lambda names: f"{len(names)} names")
def test_records_are_those_dict_of_zip_makes(names: tuple[str, ...]) -> None:
    values = [None, 0, -1, 2**70, 1.5, "", "é\x00", b"\xff", {"a": [1]}, [], True, object()]
    rows = [tuple(values[(r + i) % len(values)] for i in range(len(names))) for r in range(len(values))]
    rows.append(list(rows[0]))

    made, plain = records_maker(names)(rows), [dict(zip(names, row)) for row in rows]

    assert [list(record) for record in made] == [list(record) for record in plain]
    assert all(
        all(value is plain_record[name] for name, value in record.items())
        for record, plain_record in zip(made, plain, strict=True)
    )
    assert records_maker(names)([]) == []


def test_a_row_of_another_length_is_refused() -> None:
    make = records_maker(("id", "email"))
    for row in [(1,), (1, "a", "b")]:
        with pytest.raises(ValueError):
            make([row])
