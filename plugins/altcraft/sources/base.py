"""The contract every contact source follows: a data window, a state store and the `Source` base class.

How a consumer (the operator) reads a source::

    source = spec.build(state=context["asset_state_store"][asset])
    for batch in source.batches(window, batch_size, partition=None):
        deliver(batch)          # every record of the batch is sent and recorded
    source.commit()             # only now: saves watermarks / marks files processed

`commit()` must be called once, after the last batch was fully handled, and never after a failure:
a retried run then sees exactly the same batches again. Stateless sources commit nothing.

Partitions: ``partition=(index, count)`` lets ``count`` mapped tasks share one window. SQL, REST and
Python sources give partition ``i`` the time sub-window ``Window.part(i, count)``; files are dealt by
file, records given up front by position. The union of all partitions is the unpartitioned result,
with no overlap.

Bad input rows that must not stop a run (a broken JSON line, undecodable bytes) are yielded as
*error records* (`error_record`, from `altcraft.records`): the mapper turns them into rejections.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, Protocol

from altcraft.records import (
    ERROR_FIELD,
    JSON_DECODER,
    UNDECODABLE,
    ErrorRecord,
    Record,
    error_record,
    named_twice,
)
from altcraft.spec_checks import check_timezone
from altcraft.validation import in_utc_range

__all__ = [
    "ERROR_FIELD",
    "ErrorRecord",
    "Record",
    "error_record",
]  # re-exported: the records every source yields

Partition = tuple[int, int]


class SourceError(RuntimeError):
    """A source could not be read (unreachable system, unexpected answer, misuse of `commit`)."""


@dataclass(frozen=True)
class Window:
    """A data interval ``[start, end)``. Both ends must be timezone-aware; they are kept in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"Window.{name} must be timezone-aware, got {value!r}")
            if not in_utc_range(value):
                raise ValueError(f"Window.{name} is no time of the years 1 to 9999 in UTC: {value!r}")
            utc = value.astimezone(UTC)  # a plain datetime: pendulum arithmetic can drop a foreign tzinfo
            plain = datetime(*utc.timetuple()[:6], utc.microsecond, tzinfo=UTC)
            object.__setattr__(self, name, plain)
        if self.end < self.start:
            raise ValueError(f"Window ends before it starts: {self.key()}")

    def contains(self, ts: datetime) -> bool:
        """Whether the aware timestamp falls in ``[start, end)``."""
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise ValueError(f"cannot place a naive timestamp in a window: {ts!r}")
        return self.start <= ts < self.end

    def shifted(self, lookback: timedelta) -> Window:
        """The interval moved back by ``lookback``, for systems whose rows land late.

        Consecutive shifted windows stay contiguous, so shifting neither skips nor repeats a row.
        """
        return Window(self.start - lookback, self.end - lookback)

    def part(self, index: int, count: int) -> Window:
        """Sub-window ``index`` of ``count`` equal, contiguous sub-windows (microsecond boundaries)."""
        check_partition((index, count))
        span = self.end - self.start
        return Window(self.start + span * index // count, self.start + span * (index + 1) // count)

    def key(self) -> str:
        """ISO 8601 interval in UTC, e.g. ``2024-01-01T00:00:00+00:00/2024-01-02T00:00:00+00:00``."""
        return f"{self.start.isoformat()}/{self.end.isoformat()}"


class StateStore(Protocol):
    """Where a source remembers progress across runs; Airflow's ``asset_state_store[asset]`` fits.

    Values must be JSON (Airflow stores them as JSON) and not ``None``.
    """

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...


class MemoryStateStore:
    """A dict-backed `StateStore` that, like Airflow's, accepts only JSON values other than ``None``."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self._data[key]) if key in self._data else default

    def set(self, key: str, value: Any) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self._data[key] = json.dumps(value)

    def __iter__(self) -> Iterator[str]:
        """The keys set so far, sorted."""
        return iter(sorted(self._data))


class Source(ABC):
    """Where contacts come from. See the module docstring for the calling sequence.

    A plain source remembers nothing between runs (`commit` saves nothing, and it has no ``state``) and
    cannot be polled (`probe` refuses); `Stateful` sources keep progress in ``state``.
    """

    key_column: str
    #: whether every record holds every column the source has, NULL or empty ones too (a table's, a CSV
    #: header's): a column a mapping reads that a record lacks is then no column of the source, and the
    #: record is rejected naming it (`altcraft.mapping.Mapper`); False where records vary (JSON, APIs)
    complete_records = False
    #: the zone of the source's naive times (SQL columns, file and REST timestamps): the mapping reads its
    #: naive values in it, and writes date-times in it unless it names a zone (`altcraft.mapping.Mapper`,
    #: `altcraft.mapping.in_source_zone`); None: the source has none (the mapping's zone is theirs)
    timezone: str | None = None
    #: whether ``timezone`` is the UTC a source of naive times takes when given none: a mapping naming
    #: another zone and reading dates or date-times from it is refused (`altcraft.mapping.naive_times_moved`)
    timezone_defaulted = False

    @abstractmethod
    def batches(
        self, window: Window | None, batch_size: int, *, partition: Partition | None = None
    ) -> Iterator[list[Record]]:
        """Lists of 1..batch_size records in a deterministic order; never the whole window at once."""

    @abstractmethod
    def describe(self) -> str:
        """One line for logs and docs, without secrets."""

    def __repr__(self) -> str:
        """`describe`, so a mapped task's partial arguments (serialized with ``str()``) are the same at
        every parse: an object's default repr holds its memory address, a new DAG version every parse."""
        return f"{type(self).__name__}({self.describe()})"

    def commit(self) -> None:
        """Save the progress of the last, fully consumed `batches` iteration to the state store."""
        return None  # a plain source remembers nothing

    @property
    def tracks_progress(self) -> bool:
        """Whether `commit` moves a position kept between runs (a watermark, processed files): past it, no
        retry or later run reads the records again."""
        return False

    @property
    def ignores_window(self) -> bool:
        """Whether `batches` reads the records past a position kept in ``state`` (a watermark), whatever the
        window: runs starting from one position read the same records, and `start_position` names it."""
        return False

    def start_position(self) -> str:
        """The stored position the next `batches` reads from, as canonical JSON text (``null``: none yet),
        fixed for that read: another run committing meanwhile does not move it. Only if `ignores_window`."""
        raise SourceError(f"{self.describe()}: reads by window, from no stored position")

    def probe(self, since: Any) -> tuple[int, str | None]:
        """For a watcher trigger: how many rows are past ``since`` and the newest, never the rows."""
        raise SourceError(f"{self.describe()}: cannot be polled for new rows")

    def close_probe(self) -> None:
        """Release what `probe` keeps open between calls."""
        return None  # a plain source keeps nothing open


#: A source that remembers nothing between runs: the `Source` defaults (the earlier mixin's name).
Stateless = Source


class Stateful(Source):
    """A source that keeps progress in ``state``: `batches` notes it, `commit` saves it, and only after
    `batches` was read to its end, so a failed run reads the same records again."""

    #: where the progress is kept between runs (watermark, processed files, position); None: nowhere
    state: StateStore | None = None
    _complete = False
    _start: tuple[Any] | None = None  # the position `start_position` fixed for the next read

    def start_position(self) -> str:
        if not self.ignores_window:
            return super().start_position()
        self._start = (self._stored(),)
        return json.dumps(self._start[0], sort_keys=True, separators=(",", ":"))

    def _start_value(self) -> Any:
        """The stored position this read starts from: the one `start_position` fixed, else the stored one."""
        start, self._start = self._start, None
        return self._stored() if start is None else start[0]

    def _stored(self) -> Any:
        """The position kept in ``state`` now (JSON; None: none yet), of a source that `ignores_window`."""
        raise SourceError(f"{self.describe()}: reads by window, from no stored position")

    def _position_store(self) -> StateStore:
        """``state``, which a source reading past a stored position cannot do without."""
        if self.state is None:
            raise SourceError(f"{self.describe()}: needs a state store for its position")
        return self.state

    def batches(
        self, window: Window | None, batch_size: int, *, partition: Partition | None = None
    ) -> Iterator[list[Record]]:
        check_batch_size(batch_size)
        self._complete = False
        yield from self._read_batches(window, batch_size, partition)
        self._complete = True

    def commit(self) -> None:
        if not self.tracks_progress:
            return
        if not self._complete:
            raise SourceError(f"{self.describe()}: commit() before batches() was fully consumed")
        if self.state is not None:
            self._save(self.state)

    @property
    def tracks_progress(self) -> bool:
        """Whether this configuration keeps progress at all."""
        return True

    @abstractmethod
    def _read_batches(
        self, window: Window | None, batch_size: int, partition: Partition | None
    ) -> Iterator[list[Record]]:
        """The batches, noting the progress they make (reset it first)."""

    @abstractmethod
    def _save(self, state: StateStore) -> None:
        """Save the progress noted by the last full `_read_batches`."""


def json_answer(content: bytes) -> Any:
    """The JSON of an HTTP answer (UTF-8, or the UTF-16/32 its first bytes show), each byte not valid there
    read as a lone surrogate (`UNDECODABLE`): a value holding one is that record's rejection naming its field
    (`altcraft.validation.check_text`), and the answer's other records are delivered. ``Response.json()``
    of requests read it as U+FFFD, so the contact was launched with a value its system never held. An
    object naming a key twice is a `NamedTwice` (`objects_or_errors` makes a record holding one its error
    record). Raises ValueError (not JSON) and RecursionError as `json.loads`."""
    return JSON_DECODER.decode(content.decode(json.detect_encoding(content), UNDECODABLE))


def unambiguous(body: Any, records: list[Any], where: str) -> list[Any]:
    """``records``, the list of contacts found in the answer ``body``; `SourceError` naming the key if an
    object outside them names a key twice (a next cursor or link, the list's place): which value counts,
    and so which page comes next, is ambiguous. Records naming one are their own errors
    (`objects_or_errors`)."""
    if (twice := named_twice(body, skip=records)) is not None:
        raise SourceError(
            f"{where}: the answer names {twice!r} twice outside its records, so which of the values counts "
            "is ambiguous"
        )
    return records


def value_at(body: Any, path: str | None) -> Any:
    """The value at a dotted path (``data.items``) in a JSON body; ``None`` if absent; the body if no path."""
    for part in path.split(".") if path else ():
        if not isinstance(body, dict):
            return None
        body = body.get(part)
    return body


def fingerprint(value: Any) -> bytes:
    """A digest of JSON data, to recognise a request or a page seen before."""
    return hashlib.sha256(json.dumps(value, default=repr).encode("utf-8", "surrogatepass")).digest()


class PageLog:
    """The pages of one listing so far: a page repeating an earlier one means the API loops (it ignores its
    page, offset or cursor parameter), and reading on would never end."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self._first: dict[bytes, int] = {}

    def add(self, records: list[Any]) -> None:
        """Note the next page; `SourceError` if it is not empty and repeats an earlier one."""
        self.count += 1
        if records and (first := self._first.setdefault(fingerprint(records), self.count)) != self.count:
            raise self.repeats(first)

    def repeats(self, first: int) -> SourceError:
        """The error of the last page repeating page ``first``."""
        return SourceError(
            f"{self.what}: page {self.count} repeats page {first}: the API ignores its paging parameter "
            "or loops"
        )


def naive_zone(timezone: str | None) -> tuple[str, bool]:
    """A source's ``timezone`` argument as (the zone of its naive times, whether it took UTC for none)."""
    return check_timezone("UTC" if timezone is None else timezone), timezone is None


def check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    return batch_size


def check_partition(partition: Partition) -> Partition:
    index, count = partition
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"partition must be (index, count) with 0 <= index < count, got {partition!r}")
    return partition


def partition_window(window: Window | None, partition: Partition | None) -> Window | None:
    """The window a partition reads: the time sub-window, or the whole window without partitioning."""
    if partition is None:
        return window
    if window is None:
        raise ValueError("partitioning splits the window in time: it needs a window")
    return window.part(*partition)


PROBE_TIMEOUT = 30.0
"""Seconds a watcher trigger's probe query may run before the database cancels it
(`altcraft.engines.time_limited`). A probe is one aggregate meant to answer in milliseconds, and the next
one starts a poll interval after it ended (probes never overlap, whatever the interval), so this bounds
only a probe that hangs (a lock held on the table): it fails naming the timeout, its connection is freed,
and the next poll tries again. Below the trigger's ``SLOW_PROBE_AFTER`` (60 s): such a probe fails before
it is reported as unanswered."""


def probe_window(since: datetime) -> Window:
    """What a watcher trigger's `Source.probe` counts: ``[since, now)``, what an event run started now reads
    from watermark ``since``. Not past now: a row created ahead of now (a clock ahead, a mistyped year) is
    past every watermark a run commits, and counting it fired an event after every run until its time."""
    return Window(since, max(since, datetime.now(UTC)))


def not_an_object(key_column: str, location: str, item: Any, expected: str = "a JSON object") -> Record:
    """The error record of an item at ``location`` that is not ``expected`` (a mapping): its kind, never
    its content."""
    kind = "null" if item is None else type(item).__name__
    return error_record(key_column, location, f"not {expected} but {kind}")


def objects_or_errors(
    items: Iterable[Any], key_column: str, place: str = "", expected: str = "a JSON object"
) -> Iterator[Any]:
    """Each item that is a mapping, and for each that is not, or names a key twice (`named_twice`: which
    value counts is ambiguous), its error record (keyed ``<place> item <n>``, n from 1): the mapper rejects
    it and the other items are delivered."""
    prefix = f"{place} " if place else ""
    for number, item in enumerate(items, start=1):
        if not isinstance(item, Mapping):
            yield not_an_object(key_column, f"{prefix}item {number}", item, expected)
        elif (twice := named_twice(item)) is not None:
            yield error_record(key_column, f"{prefix}item {number}", f"an object names {twice!r} twice")
        else:
            yield item


def rechunk(records: Iterable[Mapping[str, Any]], batch_size: int) -> Iterator[list[Record]]:
    """Group records into lists of at most ``batch_size``, each a dict copy of its record but an `ErrorRecord`
    (its type is what makes it one); every record must be a mapping."""
    check_batch_size(batch_size)
    iterator = iter(records)
    while batch := list(islice(iterator, batch_size)):
        for record in batch:
            if not isinstance(record, Mapping):
                raise TypeError(f"a record must be a mapping of column to value, got {type(record).__name__}")
        yield [record if isinstance(record, ErrorRecord) else dict(record) for record in batch]
