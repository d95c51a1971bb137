"""The durable store of accepted webhook deliveries: one table in the ledger's database.

A delivery is committed *before* the endpoint answers 2xx, so an acknowledged contact is never lost.
``(pipeline, delivery_key)`` is unique: a replayed delivery is recognised and stored once (its rejections
compared without their reasons, which another version may word otherwise), and a delivery whose key was
stored with other records is a `KeyConflict` (never silently taken for a replay). So is
``(pipeline, proof)``: a signed request's signature (its digest), so that the very request captured and
replayed under another, unsigned ``Idempotency-Key`` is a replay too, not a new delivery. Rows are read
in ``id`` order after the last id a run committed (the pipeline's webhook source keeps it), so the
deliveries of a pipeline are committed one at a time, holding its row of ``altcraft_webhook_heads``: ids
become visible in order, and no delivery commits later below an id a run already read past.

A delivery's records are stored as a JSON list: each object as its sender sent it, and each rejection of
the endpoint (`altcraft.webhooks.kinds.rejected`) as the array ``["__error__", reason]``, which no sender's
record is stored as (the endpoint stores objects only): a sender's ``"__error__"`` key is data, never read
as the endpoint's reason. An earlier version stored its rejections as the object ``{"__error__": reason}``:
an object holding that key alone is read as a rejection, its text not repeated (`LEGACY_REASON`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine

from altcraft.engines import database_location, ledger_conn_id, ledger_engine, protected, time_limited
from altcraft.ledger.schema import check_encoding, schema_error
from altcraft.records import ERROR_FIELD, ErrorRecord
from altcraft.sources.base import PROBE_TIMEOUT
from altcraft.storable import storable_json
from altcraft.webhooks.kinds import rejected

metadata = sa.MetaData()
_TABLES = "The webhook store's tables (altcraft_webhook_deliveries, altcraft_webhook_heads)"
_PROOF_KEY = "uq_altcraft_webhook_proof"

deliveries_table = sa.Table(
    "altcraft_webhook_deliveries",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(100), nullable=False),
    sa.Column("delivery_key", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Column("record_count", sa.Integer, nullable=False),
    # MySQL/MariaDB's TEXT holds 64 KiB; a body may have up to 10 MiB (max_bytes)
    sa.Column("records", sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"), nullable=False),
    # SHA-256 of a signed request's signature; NULL for kinds that sign nothing (and rows of older versions)
    sa.Column("proof", sa.String(64)),
    sa.UniqueConstraint("pipeline", "delivery_key", name="uq_altcraft_webhook_delivery"),
    sa.UniqueConstraint("pipeline", "proof", name=_PROOF_KEY),
    sa.Index("ix_altcraft_webhook_pipeline_id", "pipeline", "id"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)
_D = deliveries_table.c

#: One row per pipeline, locked by each storing transaction until it commits.
heads_table = sa.Table(
    "altcraft_webhook_heads",
    metadata,
    sa.Column("pipeline", sa.String(100), primary_key=True),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)
_H = heads_table.c


class StoreMismatch(LookupError):
    """The store a pipeline names is not provably the one each component uses (see `from_conn_id`, and
    `altcraft.webhooks.app.record_placement`)."""


class KeyConflict(Exception):
    """The delivery's key is stored with other records: not a replay of that delivery, and not stored."""


@dataclass(frozen=True)
class Probe:
    """What lies past a position: how many deliveries and records, and the newest id (None: nothing)."""

    deliveries: int
    records: int
    newest: int | None


class WebhookStore:
    """Accepted deliveries on one SQLAlchemy engine (PostgreSQL, MySQL/MariaDB, SQLite)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = protected(engine)  # also one made by hand: no contact data in its errors
        self._ready = False

    @classmethod
    def from_conn_id(cls, conn_id: str | None) -> WebhookStore:
        """The store in the ledger's database a pipeline's DAG names: an Airflow connection, or (None) the
        default SQLite ledger file. None where this component's ``[altcraft] ledger_conn_id`` names a
        connection is `StoreMismatch`: the DAG was parsed without one, so another component may read (or
        write) the file while this one used the connection, and acknowledged deliveries would be lost."""
        configured = ledger_conn_id(None)
        if conn_id is None and configured is not None:
            raise StoreMismatch(
                f"the pipeline's DAG was parsed with no ledger connection (the SQLite ledger file), but "
                f"[altcraft] ledger_conn_id here is {configured!r}: deliveries stored by one and read by the "
                "other would never be launched. Set the same [altcraft] ledger_conn_id where the DAG "
                "processor runs (then reparse), or give the pipeline a ledger_conn_id"
            )
        return cls(ledger_engine(conn_id))

    @property
    def location(self) -> dict[str, str]:
        """Where the store's database is (`database_location`): compared where deliveries are stored, watched
        and read (`altcraft.sources.webhook.misplaced`)."""
        return database_location(self.engine)

    def ensure_schema(self) -> None:
        """Create the tables, or bring those of an older version up to date (`LedgerSchemaError` where the
        database user may not: docs/ledger.md, "Upgrading an existing ledger")."""
        if not self._ready:
            check_encoding(self.engine, metadata.sorted_tables, _TABLES)
            try:
                metadata.create_all(self.engine, checkfirst=True)
            except sa.exc.DBAPIError:  # created concurrently by another process: check once more
                try:
                    metadata.create_all(self.engine, checkfirst=True)
                except sa.exc.DBAPIError as exc:
                    raise schema_error(exc, _TABLES) from exc
            self._upgrade()
            self._ready = True

    def _upgrade(self) -> None:
        """Bring a table an older version made up to date: a ``proof`` column, its unique key and, on
        MySQL/MariaDB, a LONGTEXT ``records`` (it was TEXT). One statement each, so that a key not made
        after its column (MySQL commits each statement; a process ended between them) is made next time."""
        table = deliveries_table.name
        if self.engine.dialect.name in ("mysql", "mariadb") and not self._longtext():
            self._alter(f"ALTER TABLE {table} MODIFY records LONGTEXT NOT NULL", self._longtext)
        if not self._has_proof():
            self._alter(f"ALTER TABLE {table} ADD COLUMN proof VARCHAR(64)", self._has_proof)
        if not self._has_proof_key():
            self._alter(f"CREATE UNIQUE INDEX {_PROOF_KEY} ON {table} (pipeline, proof)", self._has_proof_key)

    def _alter(self, statement: str, done: Callable[[], bool]) -> None:
        """Run one upgrade ``statement``; its failure is fine if ``done()`` (made concurrently by another
        process), else a `LedgerSchemaError` saying what to do."""
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(statement)
        except sa.exc.DBAPIError as exc:
            if not done():
                raise schema_error(exc, _TABLES) from exc

    def _columns(self) -> dict[str, Any]:
        return {c["name"]: c["type"] for c in sa.inspect(self.engine).get_columns(deliveries_table.name)}

    def _longtext(self) -> bool:
        return isinstance(self._columns()["records"], mysql.LONGTEXT)

    def _has_proof(self) -> bool:
        return "proof" in self._columns()

    def _has_proof_key(self) -> bool:
        inspector = sa.inspect(self.engine)
        names = [i["name"] for i in inspector.get_indexes(deliveries_table.name)]
        names += [u["name"] for u in inspector.get_unique_constraints(deliveries_table.name)]
        return _PROOF_KEY in names

    def _add_head(self, pipeline: str) -> None:
        """Add the pipeline's row to ``altcraft_webhook_heads`` (another process adding it too is fine)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(heads_table.insert().values(pipeline=pipeline))
        except sa.exc.IntegrityError:
            pass

    def put(
        self,
        pipeline: str,
        delivery_key: str,
        kind: str,
        records: list[dict[str, Any]],
        proof: str | None = None,
    ) -> bool:
        """Commit one delivery; False when it is a replay: ``proof`` (a signed request's, see
        `WebhookKind.proof`) was stored for the pipeline, or ``delivery_key`` was with the same records, in
        any order; `KeyConflict` when that key was stored with other records.

        A lone surrogate (JSON ``"\\ud800"``), which no database encoding takes, is stored as its JSON escape
        (`storable_json`) and read back as it came: the mapper then rejects that contact naming its field,
        where U+FFFD in its place would have launched it with a value its sender never sent.
        """
        self.ensure_schema()
        stored = [[ERROR_FIELD, r[ERROR_FIELD]] if isinstance(r, ErrorRecord) else r for r in records]
        text = json.dumps(stored, ensure_ascii=False, separators=(",", ":"), default=str)
        row = {
            "pipeline": pipeline,
            "delivery_key": delivery_key,
            "kind": kind,
            "received_at": datetime.now(UTC).replace(tzinfo=None),
            "record_count": len(records),
            "records": storable_json(text),
            "proof": proof,
        }
        try:
            for attempt in (1, 2):
                with self.engine.begin() as conn:
                    # held until the commit: the pipeline's deliveries get their ids and commit one at a time
                    head = sa.select(_H.pipeline).where(_H.pipeline == pipeline).with_for_update()
                    locked = conn.execute(head).first() is not None or attempt == 2
                    if locked:
                        if _proven_before(conn, pipeline, proof) or _replayed(
                            conn.scalar(_stored(pipeline, delivery_key)), row["records"]
                        ):
                            return False
                        conn.execute(deliveries_table.insert().values(**row))
                if locked:
                    break
                self._add_head(pipeline)  # its first delivery, or its row was deleted: add it, then lock it
        except sa.exc.IntegrityError:
            with self.engine.connect() as conn:
                if not _proven_before(conn, pipeline, proof) and not _replayed(
                    conn.scalar(_stored(pipeline, delivery_key)), row["records"]
                ):
                    raise
            return False
        return True

    def probe(self, pipeline: str, after: int | None, timeout: float = PROBE_TIMEOUT) -> Probe:
        """Counts past ``after`` (an id), from the index alone: never the stored records. The database
        cancels the query after ``timeout`` seconds (`time_limited`: `TimeoutError`)."""
        self.ensure_schema()
        query = sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(_D.record_count), 0), sa.func.max(_D.id)
        )
        query = query.where(_D.pipeline == pipeline, _D.id > (after or 0))
        with self.engine.connect() as conn, time_limited(conn, timeout):
            deliveries, records, newest = conn.execute(query).one()
        return Probe(int(deliveries), int(records), None if newest is None else int(newest))

    def read(
        self, pipeline: str, after: int | None, batch: int = 500
    ) -> Iterator[tuple[int, list[Any] | None]]:
        """``(id, records)`` of every delivery past ``after``, in id order, ``batch`` rows per query, the
        endpoint's rejections as `rejected` records (`_readable`); records None where the stored text is not
        a JSON list (cut short by an older, narrower column)."""
        self.ensure_schema()
        last = after or 0
        while True:
            query = (
                sa.select(_D.id, _D.records)
                .where(_D.pipeline == pipeline, _D.id > last)
                .order_by(_D.id)
                .limit(batch)
            )
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            for row_id, text in rows:
                records = _stored_records(text)
                yield row_id, None if records is None else [_readable(item) for item in records]
                last = row_id
            if len(rows) < batch:
                return

    def count(self, pipeline: str) -> int:
        """Deliveries stored for the pipeline (for tests and the benchmark)."""
        self.ensure_schema()
        with self.engine.connect() as conn:
            return int(conn.scalar(sa.select(sa.func.count()).where(_D.pipeline == pipeline)) or 0)


def _stored(pipeline: str, delivery_key: str) -> sa.Select[tuple[str]]:
    return sa.select(_D.records).where(_D.pipeline == pipeline, _D.delivery_key == delivery_key)


def _proven_before(conn: sa.Connection, pipeline: str, proof: str | None) -> bool:
    """Whether a delivery with this proof was stored: the very same signed request (None: unsigned)."""
    if proof is None:
        return False
    return conn.scalar(sa.select(_D.id).where(_D.pipeline == pipeline, _D.proof == proof)) is not None


def _replayed(stored: str | None, records: str) -> bool:
    """Whether a delivery with ``records`` is a replay of the ``stored`` one (None: nothing stored): the
    same objects and as many rejections, whatever their reasons (a version may word or find a reason
    otherwise than the one that stored it); `KeyConflict` when the stored one has other records, or records
    no longer readable."""
    if stored is None:
        return False
    if _contents(_stored_records(stored)) != _contents(json.loads(records)):
        raise KeyConflict("a delivery with the same key was stored with other records")
    return True


def _contents(records: list[Any] | None) -> list[str] | None:
    """Stored ``records`` in a canonical order and form, each rejection (an earlier version's too) as
    `ERROR_FIELD` alone, its reason left out."""
    if records is None:
        return None
    return sorted(json.dumps(_reasonless(record), sort_keys=True) for record in records)


#: The reason of a stored object holding ``"__error__"`` alone: an earlier version's rejection, whose text a
#: sender could have written as well (it stored senders' objects alike), so it is not repeated.
LEGACY_REASON = (
    "stored holding only '__error__': rejected by an earlier version of the endpoint, or sent so (its text "
    "is not repeated)"
)


def _legacy(item: Any) -> bool:
    """Whether a stored item is an object holding `ERROR_FIELD` alone, an earlier version's rejection."""
    return isinstance(item, dict) and item.keys() == {ERROR_FIELD}


def _reasonless(item: Any) -> Any:
    """A stored item, or `ERROR_FIELD` alone for a rejection, the current form's or an earlier version's."""
    return [ERROR_FIELD] if _legacy(item) or _rejection(item) else item


def _rejection(item: Any) -> bool:
    """Whether a stored item is the endpoint's rejection, ``["__error__", reason]`` (`WebhookStore.put`)."""
    return isinstance(item, list) and len(item) == 2 and item[0] == ERROR_FIELD and isinstance(item[1], str)


def _readable(item: Any) -> Any:
    """A stored item as a run reads it: the endpoint's rejection (``["__error__", reason]``) as `rejected`,
    an earlier version's with `LEGACY_REASON`; any other as stored."""
    if _rejection(item):
        return rejected(item[1])
    return rejected(LEGACY_REASON) if _legacy(item) else item


def _stored_records(text: str) -> list[Any] | None:
    """A delivery's stored records; None if the text is not a JSON list."""
    try:
        records = json.loads(text)
    except ValueError:
        return None
    return records if isinstance(records, list) else None
