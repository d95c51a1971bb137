"""Contacts a CRM pushed to the pipeline's webhook endpoint (`altcraft.webhooks`), read from the store.

The endpoint commits each accepted delivery to ``altcraft_webhook_deliveries`` in the ledger's database.
This source reads the deliveries past the last id it committed (kept in the state store, like a
watermark, per ledger database: ids count in one table), in id order; the window is ignored. `commit`
moves the position on only after every record was handled, so a failed run reads the same deliveries
again and the ledger launches nobody twice.

A stored record that is not an object (or not what the reader's ``check`` expects), or a delivery whose
stored text cannot be parsed (cut short by an older, narrower column), is an error record
(``delivery <id> item <n>``, ``delivery <id>``): the mapper rejects it, the other records are delivered
and the position moves past it, instead of every run failing. So is a record the endpoint stored as its
rejection (`altcraft.webhooks.kinds.rejected`: it named a key twice, say), which the store reads back as
one; a sender's ``"__error__"`` key is data (`altcraft.webhooks.store`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from altcraft.sources.base import (
    ERROR_FIELD,
    ErrorRecord,
    Partition,
    Record,
    SourceError,
    Stateful,
    StateStore,
    Window,
    error_record,
    objects_or_errors,
    rechunk,
)

if TYPE_CHECKING:
    from altcraft.webhooks.store import WebhookStore

STATE_KEY = "webhook:last_id"
#: The last delivery id handled per ledger database (`position_key`: where it is, not which connection id
#: names it): ids count in one database's table, so a position taken in one means nothing in another (the
#: first ids of a new one lie below it).
POSITIONS_KEY = "webhook:positions"
#: Where the pipeline's watcher checks for deliveries (`placement`), recorded by the trigger when it starts:
#: it and the API server follow the DAG as the DAG processor parsed it, while a worker parses the spec again
#: with its own ``[altcraft] ledger_conn_id``, and each component reads its own definition of a connection.
#: (A text: an earlier version's, the connection id alone.)
WATCHED_KEY = "webhook:watched"
#: Where the API server stores the pipeline's deliveries (`placement`), recorded by it before it stores one.
STORED_KEY = "webhook:stored"
#: What a component whose ledger database is not the one recorded is told to do.
ALIGN = (
    "Define the ledger connection alike (one host, port and database, or SQLite file) and set the same "
    "[altcraft] ledger_conn_id on every Airflow component, or give the pipeline a ledger_conn_id"
)


def database_name(conn_id: str | None) -> str:
    """The ledger database a position counts in: its connection id, "" for the default SQLite file."""
    from altcraft.engines import ledger_conn_id

    return ledger_conn_id(conn_id) or ""


def _named(database: str) -> str:
    """A ledger database (`database_name`) as messages name it."""
    return f"connection {database!r}" if database else "the default ledger database (the SQLite file)"


def placement(conn_id: str | None, store: WebhookStore) -> dict[str, str]:
    """Where deliveries go, as components record and compare it: the ledger connection (`database_name`)
    and the database it points to here (`WebhookStore.location`), never a password."""
    return {"connection": database_name(conn_id), **store.location}


def misplaced(mine: Mapping[str, str], theirs: Any, role: str) -> str | None:
    """Why the deliveries ``role`` ("stored", "watched") in ``theirs`` (a `placement` another component
    recorded, None: none yet) are not in the database of ``mine``, or None: both connections and the parts
    that differ. A text is an earlier version's record, a connection id alone, compared as such."""
    if theirs is None:
        return None
    if isinstance(theirs, str):
        theirs = {"connection": theirs}
        differ = [] if theirs["connection"] == mine["connection"] else ["connection"]
    else:
        differ = sorted(k for k in {*mine, *theirs} - {"connection"} if mine.get(k) != theirs.get(k))
    if not differ:
        return None
    parts = ", ".join(f"{k} {theirs.get(k)!r} there, {mine.get(k)!r} here" for k in differ)
    return (
        f"the deliveries are {role} in the database of {_named(theirs.get('connection', ''))} and this "
        f"component's {_named(mine['connection'])} is another ({parts})"
    )


def position_key(where: Mapping[str, str]) -> str:
    """The key of a ledger database's entry of `POSITIONS_KEY`: where it is (a `placement`), as a URL
    without user or password (an earlier version's keys, connection ids, have no ``://``)."""
    if where["dialect"] == "sqlite":
        return f"sqlite:///{where['path']}"
    return f"{where['dialect']}://{where['host']}:{where['port']}/{where['database']}"


def position_in(where: Mapping[str, str], last_id: Any, positions: Any) -> int | None:
    """The last delivery id handled in the database ``where`` (a `placement`): its entry of ``positions``
    (`position_key`); where no entry names a database yet, that of its connection id (kept by an earlier
    version, which counted per connection id); ``last_id`` where there are no entries at all (an earlier
    version still, which counted in the one database it knew)."""
    if not isinstance(positions, dict):
        return last_id
    key = position_key(where)
    if key in positions or any("://" in name for name in positions):
        return positions.get(key)
    return positions.get(where["connection"])


def _position(where: Mapping[str, str], state: StateStore) -> int | None:
    """The last delivery id handled in the database ``where`` as ``state`` keeps it (`position_in`)."""
    return position_in(where, state.get(STATE_KEY), state.get(POSITIONS_KEY))


class WebhookSource(Stateful):
    """Records of the stored deliveries of webhook endpoint ``pipeline``; ``check`` says why a stored record
    is not what its reader expects (None: it is), which makes it an error record naming its place."""

    def __init__(
        self,
        pipeline: str,
        *,
        key_column: str,
        ledger_conn_id: str | None = None,
        state: StateStore | None = None,
        check: Callable[[Mapping[str, Any]], str | None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.key_column = key_column
        self.ledger_conn_id = ledger_conn_id
        self.state = state
        self.check = check
        self._store: WebhookStore | None = None
        self._pending: int | None = None

    @property
    def store(self) -> WebhookStore:
        if self._store is None:
            from altcraft.webhooks.store import WebhookStore

            self._store = WebhookStore.from_conn_id(self.ledger_conn_id)
        return self._store

    def describe(self) -> str:
        return f"webhook deliveries of {self.pipeline!r} stored in {_named(self.database)}"

    def _read_batches(
        self, window: Window | None, batch_size: int, partition: Partition | None
    ) -> Iterator[list[Record]]:
        if partition is not None and partition[1] > 1:
            raise ValueError("a webhook source keeps one position: it cannot be partitioned")
        after = self._start_value()
        self._pending = None
        for key, role in ((STORED_KEY, "stored"), (WATCHED_KEY, "watched")):
            if (problem := misplaced(self.placement(), self._position_store().get(key), role)) is not None:
                unread = "it would read none of them (they stay stored)"
                raise SourceError(f"{self.describe()}, but {problem}: {unread}. {ALIGN}")
        try:
            yield from rechunk(self._records(after), batch_size)
        finally:
            self.close_probe()  # the store's connections, not kept open past the read

    def _records(self, after: int | None) -> Iterator[dict[str, Any]]:
        for delivery_id, records in self.store.read(self.pipeline, after):
            where = f"delivery {delivery_id}"
            if records is None:
                yield error_record(
                    self.key_column, where, "its stored records are not a JSON list (cut short?)"
                )
            items = objects_or_errors(records or (), self.key_column, where)
            for number, item in enumerate(items, start=1):
                if isinstance(item, ErrorRecord):  # not an object, or the endpoint's rejection
                    reason = str(item[ERROR_FIELD])
                else:
                    reason = None if self.check is None else self.check(item)
                if reason is None:
                    yield item
                else:
                    yield error_record(self.key_column, f"{where} item {number}", reason)
            self._pending = delivery_id

    @property
    def ignores_window(self) -> bool:
        """The deliveries past the stored position, whatever the window."""
        return True

    def _stored(self) -> int | None:
        return _position(self.placement(), self._position_store())

    @property
    def database(self) -> str:
        return database_name(self.ledger_conn_id)

    def placement(self) -> dict[str, str]:
        """Where this source reads the deliveries (`placement`)."""
        return placement(self.ledger_conn_id, self.store)

    def _save(self, state: StateStore) -> None:
        """The last delivery read, as the position in this database (and, for an earlier version, alone),
        unless another run stored a later one since: a run that read less and commits last must not move
        the position back."""
        if self._pending is None:
            return
        stored = _position(self.placement(), state)
        if stored is None or self._pending > stored:
            positions = state.get(POSITIONS_KEY)
            positions = positions if isinstance(positions, dict) else {}
            state.set(POSITIONS_KEY, {**positions, position_key(self.placement()): self._pending})
            state.set(STATE_KEY, self._pending)

    def probe(self, after: int | None) -> tuple[int, str | None]:
        """Records stored past delivery id ``after`` and the newest id: counts, never the rows."""
        found = self.store.probe(self.pipeline, after)
        return found.records, None if found.newest is None else str(found.newest)

    def close_probe(self) -> None:
        if self._store is not None:
            self._store.engine.dispose()
