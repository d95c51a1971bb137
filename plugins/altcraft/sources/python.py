"""Contacts from Python: a callable ``fn(window=window, **kwargs)``, or records given up front.

`PythonSource`: the callable returns (or yields) records -- mappings of column to value -- or lists of
records; they are re-chunked to ``batch_size`` in the order given. Partitions pass each its time
sub-window. `IterableSource`: a fixed collection of records (an operator's ``contacts`` argument).

An item that is not a mapping is that item's error record (keyed ``item <n>``, its position from 1): the
mapper rejects it and the other records are delivered. A callable returning no iterable of records (None,
one mapping alone, text) fails the read.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from altcraft.sources.base import (
    Partition,
    Record,
    Source,
    SourceError,
    Window,
    check_partition,
    objects_or_errors,
    partition_window,
    rechunk,
)
from altcraft.spec_checks import checked, json_data, no_credentials, no_secret_names

_DOTTED = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def validate_callable_path(path: str, field: str = "callable") -> str:
    """Accept ``"package.module:function"`` (or ``module:Class.method``); nothing is imported here."""
    if not _DOTTED.fullmatch(path):
        raise ValueError(f"{field}: expected 'package.module:function', got {path!r}")
    return path


def import_callable(path: str) -> Callable[..., Any]:
    module_name, _, attribute = validate_callable_path(path).partition(":")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{path} is not callable")
    return target


def _flatten(items: Iterable[Any]) -> Iterator[Any]:
    for item in items:
        if isinstance(item, list | tuple):
            yield from item
        else:
            yield item


class PythonSource(Source):
    """Records produced by a function; see the module docstring."""

    def __init__(
        self,
        callable: str | Callable[..., Iterable[Any]],
        *,
        key_column: str,
        kwargs: Mapping[str, Any] | None = None,
    ):
        self.callable = validate_callable_path(callable) if isinstance(callable, str) else callable
        self.key_column = key_column
        self.kwargs = checked(
            "PythonSource", "kwargs", dict(kwargs or {}), no_secret_names, no_credentials, json_data
        )

    def describe(self) -> str:
        target = self.callable
        name = target if isinstance(target, str) else f"{target.__module__}:{target.__qualname__}"
        return f"python {name}"

    def batches(
        self, window: Window | None, batch_size: int, *, partition: Partition | None = None
    ) -> Iterator[list[Record]]:
        fn = import_callable(self.callable) if isinstance(self.callable, str) else self.callable
        produced = fn(window=partition_window(window, partition), **self.kwargs)
        if produced is None or isinstance(produced, Mapping | str | bytes):
            kind = "null" if produced is None else type(produced).__name__
            raise SourceError(
                f"{self.describe()}: returned {kind}, not records (an iterable of mappings, or of lists of "
                "them): one record alone would be read as its keys, text as its characters"
            )
        records = objects_or_errors(_flatten(produced), self.key_column, expected="a mapping")
        yield from rechunk(records, batch_size)


class IterableSource(Source):
    """Records given up front, in the order given. They carry no time: the window is not applied.

    Partition ``i`` of ``n`` takes the records at positions ``i, i + n, i + 2n, ...``.
    """

    def __init__(self, records: Iterable[Mapping[str, Any]], *, key_column: str):
        self.records = tuple(records)
        self.key_column = key_column

    def describe(self) -> str:
        return f"{len(self.records)} records given in code"

    def batches(
        self, window: Window | None, batch_size: int, *, partition: Partition | None = None
    ) -> Iterator[list[Record]]:
        records = list(objects_or_errors(self.records, self.key_column, expected="a mapping"))
        if partition is not None:
            index, count = check_partition(partition)
            records = records[index::count]
        yield from rechunk(records, batch_size)
