"""Faster construction of the slotted frozen dataclasses made once per contact (`Profile`, `Settlement`).

A frozen dataclass's ``__init__`` stores each field with ``object.__setattr__`` (its own ``__setattr__``
refuses); `maker` makes the same instance by storing each field through its slot, about 0.04 us a field
less, and the call of ``__init__`` less. The instance is the dataclass's own: equal, frozen, same fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def maker(cls: type[T]) -> Callable[..., T]:
    """``cls(*values)`` for the value of every field of ``cls`` in order, positional only, then its
    ``__post_init__`` if it has one.

    :raises TypeError: ``cls`` is not a frozen dataclass with slots.
    """
    if not (is_dataclass(cls) and cls.__dataclass_params__.frozen and "__slots__" in cls.__dict__):
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    names = [f.name for f in fields(cls)]
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    namespace.update({f"store_{name}": getattr(cls, name).__set__ for name in names})
    lines = [f"def make({', '.join(names)}, /):", "    obj = new(cls)"]
    lines += [f"    store_{name}(obj, {name})" for name in names]
    lines += ["    obj.__post_init__()"] if hasattr(cls, "__post_init__") else []
    # as dataclasses make __init__: source text of the class's own field names (identifiers), no input
    exec("\n".join([*lines, "    return obj"]), namespace)  # ruff: ignore[exec-builtin]
    return namespace["make"]
