"""SQL sync ledger: exactly-once scenario launches and an outcome for every contact.

Two tables (created on first use, see ``docs/ledger.md``):

* ``altcraft_contacts``: one row per contact per scope (platform + scenario), its launch state. A claim
  marks rows ``sending`` and commits *before* anything is sent (write-ahead), so a crash can never lose
  a launch: the row stays ``sending`` and later becomes ``uncertain``, which is never resent silently.
* ``altcraft_outcomes``: one row per contact per task try (launched, skipped, rejected, failed,
  uncertain), the audit trail and the source of ``counts()``.

Works with SQLAlchemy Core 2.x on PostgreSQL, MySQL/MariaDB and SQLite. Concurrent claims of the same
contact are serialised by row locks (``SELECT ... FOR UPDATE``; SQLite: ``BEGIN IMMEDIATE``) and the
primary key; conflicting transactions are retried a bounded number of times. No Airflow import except
in :meth:`Ledger.from_conn_id`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine, RowMapping

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Bind parameters per statement; far below every backend's limit (SQLite's historical 999 included).
_PARAMS_PER_STATEMENT = 900
#: Attempts of one transaction that hit a lock conflict, deadlock or concurrent insert.
_MAX_ATTEMPTS = 8
_ID_LEN = 250  # Airflow's length of dag_id, task_id and run_id
_KEY_LEN = 800  # run keys and window keys: three ids, or two ids and two timestamps
_PLATFORM_LEN = 255
_MARKER_LEN = 300  # "FIELD=value" of the launch marker


class Outcome(StrEnum):
    """What happened to one contact in one task try."""

    LAUNCHED = "launched"
    SKIPPED = "skipped"
    REJECTED = "rejected"
    FAILED = "failed"
    UNCERTAIN = "uncertain"


class ContactStatus(StrEnum):
    """State of a contact in ``altcraft_contacts``."""

    LAUNCHED = "launched"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    SENDING = "sending"


_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
_POLICY_HELP = "relaunch policy must be 'once', 'every_run' or 'cooldown:<N>d|h|m'"


@dataclass(frozen=True)
class RelaunchPolicy:
    """When a contact already launched into the scenario may be launched again.

    ``once``: never. ``cooldown``: when its last launch is older than ``cooldown`` and it was not launched
    for the same window. ``every_run``: by every run, except a rerun of a window it was launched for.
    """

    kind: Literal["once", "cooldown", "every_run"]
    cooldown: timedelta | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("once", "cooldown", "every_run"):
            raise ValueError(f"{_POLICY_HELP}, got kind {self.kind!r}")
        if (self.kind == "cooldown") != (self.cooldown is not None):
            raise ValueError("a cooldown duration is required for kind 'cooldown' and only for it")
        if self.cooldown is not None and (self.cooldown <= timedelta(0) or self.cooldown % _UNITS["m"]):
            raise ValueError("cooldown must be a positive whole number of minutes")

    @classmethod
    def parse(cls, text: str) -> RelaunchPolicy:
        """Parse ``once``, ``every_run`` or ``cooldown:<N><d|h|m>`` (e.g. ``cooldown:30d``)."""
        spec = text.strip().lower()
        if spec in ("once", "every_run"):
            return cls(spec)  # type: ignore[arg-type]
        kind, _, amount = spec.partition(":")
        match = re.fullmatch(r"(\d+)([dhm])", amount)
        if kind != "cooldown" or match is None:
            raise ValueError(f"{_POLICY_HELP}, got {text!r}")
        return cls("cooldown", int(match[1]) * _UNITS[match[2]])

    def __str__(self) -> str:
        if self.cooldown is None:
            return self.kind
        unit = next(name for name, size in _UNITS.items() if not self.cooldown % size)
        return f"cooldown:{self.cooldown // _UNITS[unit]}{unit}"


def normalise_platform(url: str) -> str:
    """Canonical form of an Altcraft base URL: lower-case scheme and host, no trailing slash.

    Credentials, a query or a fragment are refused (they could carry the API token into the ledger).
    The URL itself is never echoed in the error.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("platform must be an http(s) URL with a host")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ValueError("platform URL must not contain credentials, a query or a fragment")
    platform = f"{scheme}://{parts.netloc.lower()}{parts.path.rstrip('/')}"
    if len(platform) > _PLATFORM_LEN:
        raise ValueError(f"platform URL longer than {_PLATFORM_LEN} characters")
    return platform


@dataclass(frozen=True)
class Scope:
    """What exactly-once is about: one scenario on one Altcraft platform. ``platform`` is normalised."""

    platform: str
    scenario_id: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "platform", normalise_platform(self.platform))
        if (
            isinstance(self.scenario_id, bool)
            or not isinstance(self.scenario_id, int)
            or self.scenario_id < 0
        ):
            raise ValueError("scenario_id must be a non-negative integer")

    def contact_hash(self, contact_key: str) -> str:
        """Primary key of a contact row: sha256 hex of ``platform \\n scenario_id \\n contact_key``."""
        return hashlib.sha256(f"{self.platform}\n{self.scenario_id}\n{contact_key}".encode()).hexdigest()


@dataclass(frozen=True)
class RunRef:
    """Who is sending: one try of one task instance, and the data window it processes."""

    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    window_key: str

    def __post_init__(self) -> None:
        if any(not value or len(value) > _ID_LEN for value in (self.dag_id, self.task_id, self.run_id)):
            raise ValueError(f"dag_id, task_id and run_id must be 1..{_ID_LEN} characters")
        if not self.window_key or len(self.window_key) > _KEY_LEN:
            raise ValueError(f"window_key must be 1..{_KEY_LEN} characters")

    @property
    def run_key(self) -> str:
        return f"{self.dag_id}/{self.task_id}/{self.run_id}"

    @classmethod
    def create(
        cls,
        dag_id: str,
        task_id: str,
        run_id: str,
        try_number: int,
        window: tuple[datetime, datetime] | None = None,
        *,
        map_index: int | None = None,
    ) -> RunRef:
        """A run reference whose window key is ``dag/task/<start UTC iso>/<end UTC iso>``, or the run key.

        A mapped task instance (``map_index`` ≥ 0) is told apart as ``task_id[map_index]``.
        """
        if map_index is not None and map_index >= 0:
            task_id = f"{task_id}[{map_index}]"
        if window is None:
            key = f"{dag_id}/{task_id}/{run_id}"
        else:
            start, end = (_utc(moment).isoformat() for moment in window)
            key = f"{dag_id}/{task_id}/{start}/{end}"
        return cls(dag_id, task_id, run_id, try_number, key)


_SETTLED = (Outcome.LAUNCHED, Outcome.FAILED, Outcome.UNCERTAIN)


@dataclass(frozen=True)
class Settlement:
    """The answer for one contact of a sent batch: launched, failed (certainly not launched) or uncertain."""

    outcome: Outcome
    code: int | None = None
    text: str | None = None
    profile_id: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in _SETTLED:
            raise ValueError("a settlement is launched, failed or uncertain")


_NO_ANSWER = Settlement(Outcome.UNCERTAIN, text="no result was reported for this contact")


@dataclass
class Claim:
    """Result of :meth:`Ledger.claim`.

    ``to_send`` keys are committed as ``sending``: send exactly one profile per key (the first item with
    that key) and pass this object to :meth:`Ledger.settle`. ``skipped`` maps the other keys to the
    reason; their ``skipped`` outcomes (and one per duplicate item) are already recorded.
    """

    batch_id: str
    to_send: list[str]
    skipped: dict[str, str]
    source_keys: dict[str, str] = field(default_factory=dict)  # to_send key -> source key
    settled: bool = False
    #: keys not sent because they are uncertain (not in ``skipped``; recorded as ``uncertain``)
    uncertain: dict[str, str] = field(default_factory=dict)
    #: the task try that made the claim (:meth:`Ledger.claim_of`), when it is not the caller's
    try_number: int | None = None
    #: skipped items beyond the first of each key or identity (duplicates in this claim)
    duplicates: int = 0
    #: contact row of each key, when it is not the key's own hash (combined-mode identity)
    hashes: dict[str, str] = field(default_factory=dict)

    def contact_hash(self, scope: Scope, key: str) -> str:
        return self.hashes.get(key) or scope.contact_hash(key)


@dataclass(frozen=True)
class UncertainContact:
    """An ``uncertain`` contact row, with what reconciliation needs to decide it."""

    contact_key: str
    contact_hash: str
    launch_marker: str | None
    claimed_at: datetime
    claim_run_key: str
    batch_id: str


@dataclass(frozen=True)
class Resolution:
    """A reconciliation verdict for one uncertain contact: launched, failed (not processed) or uncertain."""

    outcome: Outcome
    reason: str
    profile_id: str | None = None

    def __post_init__(self) -> None:
        if self.outcome not in _SETTLED:
            raise ValueError("a resolution is launched, failed or uncertain")


@dataclass(frozen=True)
class ContactHistory:
    """A contact's ledger row (None if never claimed) and its outcomes, oldest first."""

    contact: dict[str, Any] | None
    outcomes: list[dict[str, Any]]


class _UtcDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware datetimes stored as naive UTC (microseconds on every backend)."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "mysql":
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else _utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = sa.MetaData()
_MYSQL_OPTIONS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

contacts_table = sa.Table(
    "altcraft_contacts",
    metadata,
    sa.Column("contact_hash", sa.String(64), primary_key=True),
    sa.Column("platform", sa.String(_PLATFORM_LEN), nullable=False),
    sa.Column("scenario_id", sa.BigInteger, nullable=False),
    sa.Column("contact_key", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("source_key", sa.Text, nullable=False),
    sa.Column("launch_count", sa.Integer, nullable=False),
    sa.Column("first_launched_at", _UtcDateTime),
    sa.Column("last_launched_at", _UtcDateTime),
    sa.Column("last_run_key", sa.String(_KEY_LEN)),
    sa.Column("last_window_key", sa.String(_KEY_LEN)),
    sa.Column("claim_run_key", sa.String(_KEY_LEN), nullable=False),
    sa.Column("claim_try_number", sa.Integer, nullable=False),
    sa.Column("batch_id", sa.String(32), nullable=False),
    sa.Column("claimed_at", _UtcDateTime, nullable=False),
    sa.Column("error_code", sa.Integer),
    sa.Column("error_text", sa.Text),
    sa.Column("updated_at", _UtcDateTime, nullable=False),
    sa.Column("launch_marker", sa.String(_MARKER_LEN)),
    sa.Index("ix_altcraft_contacts_status", "status", "scenario_id"),
    **_MYSQL_OPTIONS,
)

outcomes_table = sa.Table(
    "altcraft_outcomes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("platform", sa.String(_PLATFORM_LEN), nullable=False),
    sa.Column("scenario_id", sa.BigInteger, nullable=False),
    sa.Column("dag_id", sa.String(_ID_LEN), nullable=False),
    sa.Column("task_id", sa.String(_ID_LEN), nullable=False),
    sa.Column("run_id", sa.String(_ID_LEN), nullable=False),
    sa.Column("window_key", sa.String(_KEY_LEN), nullable=False),
    sa.Column("try_number", sa.Integer, nullable=False),
    sa.Column("contact_key", sa.Text),
    sa.Column("contact_hash", sa.String(64)),
    sa.Column("source_key", sa.Text, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("code", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("profile_id", sa.String(255)),
    sa.Column("recorded_at", _UtcDateTime, nullable=False),
    sa.Index("ix_altcraft_outcomes_run", "dag_id", "run_id", "task_id"),
    sa.Index("ix_altcraft_outcomes_contact", "contact_hash", "outcome"),
    sa.Index("ix_altcraft_outcomes_recorded_at", "recorded_at"),
    **_MYSQL_OPTIONS,
)

aliases_table = sa.Table(
    "altcraft_aliases",
    metadata,
    sa.Column("alias_hash", sa.String(64), primary_key=True),
    sa.Column("contact_hash", sa.String(64), nullable=False),
    sa.Column("platform", sa.String(_PLATFORM_LEN), nullable=False),
    sa.Column("scenario_id", sa.BigInteger, nullable=False),
    sa.Column("alias_key", sa.Text, nullable=False),
    sa.Column("created_at", _UtcDateTime, nullable=False),
    **_MYSQL_OPTIONS,
)

_C = contacts_table.c
_O = outcomes_table.c
_A = aliases_table.c


def _utc(moment: datetime | None) -> datetime:
    """``moment`` (now if None) in UTC; naive datetimes are refused rather than guessed."""
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("datetimes given to the ledger must be timezone-aware")
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _chunks(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _is_transient(exc: sa.exc.DBAPIError) -> bool:
    """A lock conflict, deadlock, busy database or concurrent insert of the same key: retrying helps."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)  # psycopg 3 / psycopg2
    if sqlstate:
        return sqlstate in {"23505", "40001", "40P01", "55P03"}
    sqlite_error = getattr(orig, "sqlite_errorname", None)
    if sqlite_error:
        return sqlite_error.startswith(("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CONSTRAINT_PRIMARYKEY"))
    args = getattr(orig, "args", ())
    return bool(args) and args[0] in {1062, 1205, 1213}  # MySQL: duplicate key, lock timeout, deadlock


def _dead_try_note(try_number: int, claimed_at: datetime) -> str:
    return f"try {try_number} of this run claimed it at {_iso(claimed_at)} and ended without a result"


@dataclass(frozen=True)
class _Verdict:
    send: bool
    reason: str = ""
    uncertain_note: str | None = None  # set when a dead 'sending' claim is now marked uncertain
    uncertain: bool = False  # not sent because it is uncertain


def _decide(
    row: RowMapping | None,
    earlier: tuple[str, datetime] | None,
    run: RunRef,
    policy: RelaunchPolicy,
    *,
    relaunch: bool,
    resend_uncertain: bool,
    now: datetime,
    stale_after: timedelta,
) -> _Verdict:
    """Send or skip one contact, given its row and ``earlier``: its launch by this run (relaunch) or
    for this window (otherwise), as (run_id, time) from the outcomes table."""
    if row is None:
        return _Verdict(True)
    status, by, since = row["status"], row["claim_run_key"], row["updated_at"]
    note = None
    if status == ContactStatus.SENDING:
        claimed = _iso(row["claimed_at"])
        if by == run.run_key and row["claim_try_number"] != run.try_number:
            note = _dead_try_note(row["claim_try_number"], row["claimed_at"])
        elif now - row["claimed_at"] >= stale_after:
            note = f"claim by run {by} at {claimed} was never settled"
        else:
            where = "this run (another batch)" if by == run.run_key else f"run {by}"
            return _Verdict(False, f"in flight in {where} since {claimed}")
        status, since = ContactStatus.UNCERTAIN, now
    if status == ContactStatus.UNCERTAIN and (not resend_uncertain or by == run.run_key):
        hint = "this run never resends its own" if by == run.run_key else "resend with resend_uncertain=True"
        return _Verdict(False, f"uncertain since {_iso(since)} (run {by}); {hint}", note, uncertain=True)
    reason = _policy_reason(row, earlier, policy, relaunch=relaunch, now=now)
    return _Verdict(reason is None, reason or "", note)


def _policy_reason(
    row: RowMapping,
    earlier: tuple[str, datetime] | None,
    policy: RelaunchPolicy,
    *,
    relaunch: bool,
    now: datetime,
) -> str | None:
    """Why a contact that was launched before must not be launched now, or None."""
    launched_at = row["last_launched_at"]
    if launched_at is None and row["status"] == ContactStatus.LAUNCHED:  # set by hand without a time
        launched_at = row["updated_at"]
    if launched_at is None:
        return None
    if relaunch:
        return f"already launched by this run at {_iso(earlier[1])}" if earlier else None
    if policy.kind == "once":
        by = f" by {row['last_run_key']}" if row["last_run_key"] else ""
        return f"already launched at {_iso(launched_at)}{by} (policy once)"
    if earlier:
        return f"already launched for this window at {_iso(earlier[1])} by run {earlier[0]}"
    if policy.cooldown is not None and launched_at > now - policy.cooldown:
        return f"launched at {_iso(launched_at)}, within {policy}"
    return None


def _arrays(conn: Connection) -> bool:
    """Whether statements take whole key lists as one array parameter (PostgreSQL)."""
    return conn.dialect.name == "postgresql"


def _array_literal(values: Iterable[Any]) -> str:
    """PostgreSQL array input text: each element double-quoted with ``\\`` and ``"`` escaped, None as NULL."""
    quoted = (
        "NULL" if value is None else '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        for value in values
    )
    return "{" + ",".join(quoted) + "}"


def _array(column: sa.Column[Any], values: Iterable[Any]) -> sa.ColumnElement[Any]:
    """``values`` as one array parameter for ``column``: ``integer[]``, or ``text[]`` for strings (not
    ``varchar(n)[]``: that cast truncates silently where the column refuses an over-long value).

    Sent as array text of no declared type, so the server reads it once as the array type (a text
    parameter cast per row would be parsed again for every row a filter looks at). A list instead
    would be dumped element by element by psycopg 3, ten times slower, and inlined by psycopg2 as an
    untyped ``ARRAY[...]``.
    """
    array_type = sa.ARRAY(column.type if isinstance(column.type, sa.Integer) else sa.Text())
    return sa.cast(sa.literal(_array_literal(values), sa.types.NullType()), array_type)


def _unnest(table: sa.Table, columns: Mapping[str, Sequence[Any]]) -> sa.TableValuedAlias:
    """``unnest(array, ...) AS anon(name, ...)``: one row per position of the equal-length ``columns``."""
    arrays = [_array(table.c[name], values) for name, values in columns.items()]
    return sa.func.unnest(*arrays).table_valued(*columns).render_derived()


def _matching(
    conn: Connection, column: sa.Column[Any], values: Iterable[str], size: int = _PARAMS_PER_STATEMENT
) -> Iterator[tuple[Sequence[str], sa.ColumnElement[bool]]]:
    """``column`` in ``values`` (sorted) as (values, condition) pairs: one ``= ANY(array)`` on
    PostgreSQL, else ``IN`` lists of at most ``size``; none for no values."""
    ordered = sorted(values)
    if ordered and _arrays(conn):
        yield ordered, column == sa.any_(_array(column, ordered))
        return
    for chunk in _chunks(ordered, size):
        yield chunk, column.in_(chunk)


def _columns(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, tuple[Any, ...]]:
    """Rows of values in ``names`` order, as one sequence per name."""
    return dict(zip(names, zip(*rows, strict=True), strict=True))


def _insert_rows(
    conn: Connection, table: sa.Table, shared: Mapping[str, Any], columns: Mapping[str, Sequence[Any]]
) -> None:
    """INSERT one row per position of the equal-length ``columns``, each with the ``shared`` values.

    PostgreSQL: ``INSERT ... SELECT ... FROM unnest(...)``, one statement with a fixed number of
    parameters. Elsewhere an executemany of plain rows (SQLAlchemy's fastest: no bound values in the
    statement).
    """
    if _arrays(conn):
        values = [sa.literal(value, table.c[name].type) for name, value in shared.items()]
        select = sa.select(*values, *_unnest(table, columns).c)
        conn.execute(sa.insert(table).from_select([*shared, *columns], select))
        return
    names = [*shared, *columns]
    rows = [
        dict(zip(names, (*shared.values(), *row), strict=True)) for row in zip(*columns.values(), strict=True)
    ]
    conn.execute(sa.insert(table), rows)


def _per_row(column: sa.Column[Any], values: Mapping[str, Any]) -> Any:
    """A SET value for ``column``: a constant when all rows agree, else ``CASE contact_hash WHEN ...``."""
    distinct = set(values.values())
    if len(distinct) == 1:
        return sa.literal(distinct.pop(), column.type)
    return sa.cast(sa.case(dict(values), value=_C.contact_hash), column.type)


def _update_contacts(
    conn: Connection,
    common: Mapping[str, Any],
    per_row: Mapping[str, Mapping[str, Any]],
    hashes: Sequence[str],
    *guards: sa.ColumnElement[bool],
) -> int:
    """UPDATE the contact rows ``hashes``; returns the rows matched.

    PostgreSQL: one statement, per-row values joined from ``unnest``. Elsewhere one statement per chunk,
    per-row values as ``CASE``.
    """
    if not hashes:
        return 0
    if per_row and _arrays(conn):
        ordered = sorted(hashes)
        columns = {name: [values[h] for h in ordered] for name, values in per_row.items()}
        new = _unnest(contacts_table, {"contact_hash": ordered, **columns})
        statement = (
            sa.update(contacts_table)
            .where(_C.contact_hash == new.c.contact_hash, *guards)
            .values({**common, **{name: new.c[name] for name in per_row}})
        )
        return conn.execute(statement).rowcount
    matched = 0
    size = _PARAMS_PER_STATEMENT // (1 + 2 * len(per_row))
    for chunk, condition in _matching(conn, _C.contact_hash, hashes, size):
        values = dict(common)
        for name, by_hash in per_row.items():
            values[name] = _per_row(_C[name], {h: by_hash[h] for h in chunk})
        matched += conn.execute(sa.update(contacts_table).where(condition, *guards).values(values)).rowcount
    return matched


#: An outcome row's own values: (contact_key, contact_hash, source_key, code, reason, profile_id).
_Entry = tuple[str | None, str | None, str, int | None, str | None, str | None]
_ENTRY_COLUMNS = ("contact_key", "contact_hash", "source_key", "code", "reason", "profile_id")


def _insert_outcomes(
    conn: Connection, scope: Scope, run: RunRef, outcome: Outcome, at: datetime, entries: Sequence[_Entry]
) -> None:
    """Insert ``outcome`` rows of this try, one per entry."""
    if not entries:
        return
    shared = {
        "platform": scope.platform,
        "scenario_id": scope.scenario_id,
        "dag_id": run.dag_id,
        "task_id": run.task_id,
        "run_id": run.run_id,
        "window_key": run.window_key,
        "try_number": run.try_number,
        "outcome": outcome.value,
        "recorded_at": at,
    }
    _insert_rows(conn, outcomes_table, shared, _columns(_ENTRY_COLUMNS, entries))


def _identities(
    conn: Connection,
    scope: Scope,
    first: dict[str, str],
    duplicates: list[tuple[str, str]],
    aliases: Mapping[str, Sequence[str]] | None,
    at: datetime,
    *,
    write: bool,
) -> tuple[dict[str, str], dict[str, str]]:
    """The contact row of each key (combined modes: found through any component key) and the keys that
    cannot be sent because their components belong to two earlier contacts.

    A key whose identity an earlier key of the same claim already took moves from ``first`` to
    ``duplicates``. With ``write``, new components are recorded (locked like contact rows, so two
    concurrent claims agree on one identity).
    """
    hashes = {key: scope.contact_hash(key) for key in first}
    if not aliases:
        return hashes, {}
    alias_hash = {
        alias: scope.contact_hash(f"alias\n{alias}") for key in first for alias in aliases.get(key, ())
    }
    known: dict[str, str] = {}
    for _, condition in _matching(conn, _A.alias_hash, list(set(alias_hash.values()))):
        query = sa.select(_A.alias_hash, _A.contact_hash).where(condition).order_by(_A.alias_hash)
        if write:
            query = query.with_for_update()
        known.update(conn.execute(query).all())
    ambiguous: dict[str, str] = {}
    taken: dict[str, str] = {}  # contact hash -> first key of this claim with that identity
    new_aliases: dict[str, tuple[str, str]] = {}  # alias hash -> (contact hash, alias key)
    for key in list(first):
        components = aliases.get(key, ())
        found = {known[alias_hash[a]] for a in components if alias_hash[a] in known}
        if len(found) > 1:
            ambiguous[key] = f"its matching keys belong to {len(found)} different earlier contacts; not sent"
            continue
        contact = found.pop() if found else hashes[key]
        hashes[key] = contact
        for alias in components:
            if alias_hash[alias] not in known:
                known[alias_hash[alias]] = contact
                new_aliases[alias_hash[alias]] = (contact, alias)
        if contact in taken:
            duplicates.append((key, first.pop(key)))
            continue
        taken[contact] = key
    if write and new_aliases:
        ordered = sorted(new_aliases.items())
        shared = {"platform": scope.platform, "scenario_id": scope.scenario_id, "created_at": at}
        columns = {
            "alias_hash": [h for h, _ in ordered],
            "contact_hash": [c for _, (c, _) in ordered],
            "alias_key": [a for _, (_, a) in ordered],
        }
        _insert_rows(conn, aliases_table, shared, columns)
    return hashes, ambiguous


def _first_uncertain_outcome(conn: Connection, contact: UncertainContact) -> RowMapping | None:
    """The outcome recorded when the contact's latest claim became uncertain: its first ``uncertain``
    outcome since that claim (later tries that met it uncertain come after)."""
    query = (
        sa.select(_O.id, _O.window_key)
        .where(
            _O.contact_hash == contact.contact_hash,
            _O.outcome == Outcome.UNCERTAIN.value,
            _O.recorded_at >= contact.claimed_at,
        )
        .order_by(_O.id)
        .limit(1)
    )
    return conn.execute(query).mappings().first()


def _split_duplicates(items: Sequence[tuple[str, str]]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """First occurrence of each ledger key (key -> source key, input order) and the later duplicates."""
    first: dict[str, str] = {}
    duplicates: list[tuple[str, str]] = []
    for key, source_key in items:
        if not isinstance(key, str) or not key:
            raise ValueError("ledger keys must be non-empty strings")
        if key in first:
            duplicates.append((key, source_key))
        else:
            first[key] = source_key
    return first, duplicates


def _add_missing_columns(engine: Engine) -> None:
    """Bring a ledger created by an older version up to date: add nullable columns it lacks.

    Only additions, no rewrite of existing rows; a concurrent worker adding the same column is fine.
    """
    present = {column["name"] for column in sa.inspect(engine).get_columns(contacts_table.name)}
    for column in contacts_table.columns:
        if column.name in present:
            continue
        kind = column.type.compile(dialect=engine.dialect)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"ALTER TABLE {contacts_table.name} ADD COLUMN {column.name} {kind}")
            log.info("Ledger: added column %s.%s", contacts_table.name, column.name)
        except sa.exc.DBAPIError:
            fresh = sa.inspect(engine).get_columns(contacts_table.name)
            if column.name not in {c["name"] for c in fresh}:
                raise


def _sqlalchemy_url(uri: str) -> str:
    """Airflow writes PostgreSQL URIs as ``postgres://``; SQLAlchemy only knows ``postgresql://``."""
    return re.sub(r"^postgres(?=://|\+)", "postgresql", uri)


class Ledger:
    """The sync ledger on one SQLAlchemy engine. Thread-safe; every public method is one transaction."""

    def __init__(self, engine: Engine, *, stale_after: timedelta = timedelta(hours=6)):
        self.engine = engine
        self.stale_after = stale_after
        self._schema_ready = False

    @classmethod
    def from_conn_id(cls, conn_id: str | None, *, stale_after: timedelta = timedelta(hours=6)) -> Ledger:
        """Ledger on an Airflow connection's database, or on ``$AIRFLOW_HOME/altcraft_ledger.db`` if None."""
        if conn_id is None:
            home = Path(os.environ.get("AIRFLOW_HOME") or "~/airflow").expanduser()
            home.mkdir(parents=True, exist_ok=True)
            engine = sa.create_engine(
                f"sqlite:///{home / 'altcraft_ledger.db'}", connect_args={"timeout": 60}
            )
            return cls(engine, stale_after=stale_after)
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
        try:
            hook = conn.get_hook()
        except Exception as exc:  # no hook for this connection type: its URI may still work
            log.info("No hook for connection %s (%s); using its URI", conn_id, type(exc).__name__)
            hook = None
        get_engine = getattr(hook, "get_sqlalchemy_engine", None)
        engine = get_engine() if callable(get_engine) else sa.create_engine(_sqlalchemy_url(conn.get_uri()))
        return cls(engine, stale_after=stale_after)

    # --- schema and transactions -------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the tables and indexes if missing. Idempotent; a concurrent creator is tolerated."""
        for attempt in range(1, 4):
            try:
                metadata.create_all(self.engine, checkfirst=True)
                break
            except sa.exc.DBAPIError:
                if attempt == 3:
                    raise
                log.info("Ledger tables were being created concurrently; checking again")
                time.sleep(0.2 * attempt)
        _add_missing_columns(self.engine)
        self._schema_ready = True

    def _ready(self) -> None:
        if not self._schema_ready:
            self.ensure_schema()

    @contextmanager
    def _transaction(self) -> Generator[Connection]:
        """A write transaction that takes its locks up front on SQLite and reads committed data elsewhere."""
        with self.engine.connect() as conn:
            dialect = self.engine.dialect.name
            if dialect == "sqlite":
                # pysqlite would defer BEGIN; take the write lock first so concurrent claims serialise.
                conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.exec_driver_sql("COMMIT")
                except BaseException:
                    conn.exec_driver_sql("ROLLBACK")
                    raise
                return
            if dialect == "mysql":  # InnoDB's REPEATABLE READ adds gap locks and deadlocks on new keys
                conn.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                yield conn

    def _write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction; on a conflict, roll back and rerun it (bounded attempts)."""
        self._ready()
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                with self._transaction() as conn:
                    return work(conn)
            except sa.exc.DBAPIError as exc:
                if attempt == _MAX_ATTEMPTS or not _is_transient(exc):
                    raise
                log.info(
                    "Ledger transaction conflict (%s), attempt %d; retrying", type(exc.orig).__name__, attempt
                )
                time.sleep(random.uniform(0.005, 0.02) * 2**attempt)
        raise AssertionError("unreachable")

    # --- the exactly-once protocol -------------------------------------------------------------------

    def recover(self, scope: Scope, run: RunRef, *, now: datetime | None = None) -> list[str]:
        """Mark ``uncertain`` the rows an earlier try of this run left ``sending`` (it died mid-batch).

        Records an ``uncertain`` outcome for each, as an outcome of the try that sent it (that try
        never settled it); returns their ledger keys, sorted.
        """
        at = _utc(now)

        def work(conn: Connection) -> list[str]:
            query = (
                sa.select(_C.contact_hash, _C.contact_key, _C.source_key, _C.claim_try_number, _C.claimed_at)
                .where(
                    _C.status == ContactStatus.SENDING.value,
                    _C.scenario_id == scope.scenario_id,
                    _C.platform == scope.platform,
                    _C.claim_run_key == run.run_key,
                    _C.claim_try_number != run.try_number,
                )
                .order_by(_C.contact_hash)
                .with_for_update()
            )
            rows = conn.execute(query).all()
            notes = {row.contact_hash: _dead_try_note(row.claim_try_number, row.claimed_at) for row in rows}
            common = {"status": ContactStatus.UNCERTAIN.value, "error_code": None, "updated_at": at}
            _update_contacts(conn, common, {"error_text": notes}, list(notes))
            for try_number in sorted({r.claim_try_number for r in rows}):
                entries = [
                    (r.contact_key, r.contact_hash, r.source_key, None, notes[r.contact_hash], None)
                    for r in rows
                    if r.claim_try_number == try_number
                ]  # recorded as the outcome of the try that sent them
                _insert_outcomes(
                    conn, scope, replace(run, try_number=try_number), Outcome.UNCERTAIN, at, entries
                )
            return sorted(row.contact_key for row in rows)

        keys = self._write(work)
        if keys:
            log.warning(
                "%d contact(s) left 'sending' by an earlier try of %s are now uncertain",
                len(keys),
                run.run_key,
            )
        return keys

    def claim(
        self,
        scope: Scope,
        run: RunRef,
        items: Sequence[tuple[str, str]],
        policy: RelaunchPolicy,
        *,
        relaunch: bool = False,
        resend_uncertain: bool = False,
        marker: str | None = None,
        aliases: Mapping[str, Sequence[str]] | None = None,
        now: datetime | None = None,
    ) -> Claim:
        """Decide which of ``items`` (ledger key, source key) to send and commit them as ``sending``.

        Skipped contacts get a ``skipped`` outcome, contacts not sent because they are uncertain an
        ``uncertain`` one, in the same transaction. Two concurrent claims never both receive the same
        key. ``marker`` (``FIELD=value``) is the launch marker the request will carry, kept for
        reconciliation. ``aliases`` (key -> component keys, for combined matching modes): a key whose
        component was claimed before is the same contact as that earlier one.
        """
        at = _utc(now)
        batch_id = uuid.uuid4().hex

        def work(conn: Connection) -> Claim:
            first, duplicates = _split_duplicates(items)
            hashes, ambiguous = _identities(conn, scope, first, duplicates, aliases, at, write=True)
            rows, to_send, skipped, uncertain, uncertain_notes = self._decide_all(
                conn,
                run,
                {k: hashes[k] for k in first if k not in ambiguous},
                policy,
                relaunch=relaunch,
                resend_uncertain=resend_uncertain,
                at=at,
                lock=True,
            )
            skipped.update(ambiguous)
            claimed = [(key, hashes[key], first[key]) for key in to_send]
            self._write_claim(conn, scope, run, batch_id, at, claimed, rows, marker, rekey=bool(aliases))
            _update_contacts(
                conn,
                {"status": ContactStatus.UNCERTAIN.value, "error_code": None, "updated_at": at},
                {"error_text": uncertain_notes},
                list(uncertain_notes),
            )
            entries: list[_Entry] = [
                (key, hashes[key], first[key], None, reason, None) for key, reason in skipped.items()
            ]
            entries += [
                (key, hashes[key], source, None, "duplicate in this run", None) for key, source in duplicates
            ]
            _insert_outcomes(conn, scope, run, Outcome.SKIPPED, at, entries)
            entries = [
                (key, hashes[key], first[key], None, reason, None) for key, reason in uncertain.items()
            ]
            _insert_outcomes(conn, scope, run, Outcome.UNCERTAIN, at, entries)
            return Claim(
                batch_id,
                to_send,
                skipped,
                {key: first[key] for key in to_send},
                uncertain=uncertain,
                duplicates=len(duplicates),
                hashes={k: h for k, h in hashes.items() if h != scope.contact_hash(k)},
            )

        claim = self._write(work)
        log.info(
            "Ledger claim %s for %s: %d to send, %d skipped, %d uncertain, %d duplicate(s)",
            batch_id,
            run.run_key,
            len(claim.to_send),
            len(claim.skipped),
            len(claim.uncertain),
            claim.duplicates,
        )
        return claim

    def preview(
        self,
        scope: Scope,
        run: RunRef,
        items: Sequence[tuple[str, str]],
        policy: RelaunchPolicy,
        *,
        relaunch: bool = False,
        resend_uncertain: bool = False,
        aliases: Mapping[str, Sequence[str]] | None = None,
        now: datetime | None = None,
    ) -> Claim:
        """What :meth:`claim` would decide, without writing anything (for dry runs)."""
        self._ready()
        first, duplicates = _split_duplicates(items)
        with self.engine.connect() as conn:
            hashes, ambiguous = _identities(conn, scope, first, duplicates, aliases, _utc(now), write=False)
            _, to_send, skipped, uncertain, _ = self._decide_all(
                conn,
                run,
                {k: hashes[k] for k in first if k not in ambiguous},
                policy,
                relaunch=relaunch,
                resend_uncertain=resend_uncertain,
                at=_utc(now),
                lock=False,
            )
        skipped.update(ambiguous)
        return Claim(
            "preview",
            to_send,
            skipped,
            {key: first[key] for key in to_send},
            uncertain=uncertain,
            duplicates=len(duplicates),
            hashes=dict(hashes),
        )

    def claim_of(self, scope: Scope, batch_id: str) -> Claim:
        """The still unsettled (``sending``) part of an earlier claim, keys in sorted order.

        Used to settle an asynchronous Altcraft task after a restart: a chunk is always sent in sorted
        key order, so the task's per-profile results line up with these keys.
        """
        self._ready()
        query = sa.select(_C.contact_key, _C.source_key, _C.claim_try_number).where(
            _C.batch_id == batch_id,
            _C.status == ContactStatus.SENDING.value,
            _C.platform == scope.platform,
            _C.scenario_id == scope.scenario_id,
        )
        with self.engine.connect() as conn:
            found = conn.execute(query).all()
        rows = {key: source for key, source, _ in found}
        keys = sorted(rows)
        try_number = found[0].claim_try_number if found else None
        return Claim(batch_id, keys, {}, {key: rows[key] for key in keys}, try_number=try_number)

    def contact_states(self, scope: Scope) -> dict[str, str]:
        """Every contact of a scope with its status (``launched``, ``failed``, ``uncertain``, ``sending``)."""
        self._ready()
        query = sa.select(_C.contact_key, _C.status).where(
            _C.platform == scope.platform, _C.scenario_id == scope.scenario_id
        )
        with self.engine.connect() as conn:
            return dict(conn.execute(query).all())

    def settle(
        self,
        scope: Scope,
        run: RunRef,
        claim: Claim,
        settlements: Mapping[str, Settlement],
        *,
        now: datetime | None = None,
    ) -> None:
        """Record the result of a sent claim: contact rows and outcomes in one transaction.

        A key of ``claim.to_send`` without a settlement becomes ``uncertain`` (it may have been sent).
        A row that another claim has taken over in the meantime keeps its state; its outcome is still
        recorded.
        """
        if claim.settled:
            raise ValueError(f"claim {claim.batch_id} was already settled")
        unknown = settlements.keys() - set(claim.to_send)
        if unknown:
            raise ValueError(f"{len(unknown)} settlement(s) for keys that are not in claim {claim.batch_id}")
        at = _utc(now)
        final = {key: settlements.get(key, _NO_ANSWER) for key in claim.to_send}
        groups: dict[Outcome, list[tuple[str, str, Settlement]]] = {}
        for key, settlement in final.items():
            groups.setdefault(settlement.outcome, []).append(
                (key, claim.contact_hash(scope, key), settlement)
            )

        def work(conn: Connection) -> int:
            guards = (
                _C.batch_id == claim.batch_id,
                _C.status.in_([ContactStatus.SENDING.value, ContactStatus.UNCERTAIN.value]),
            )
            matched = 0
            for outcome in _SETTLED:
                group = groups.get(outcome)
                if not group:
                    continue
                common: dict[str, Any] = {"status": outcome.value, "updated_at": at}
                per_row: dict[str, dict[str, Any]] = {}
                if outcome == Outcome.LAUNCHED:
                    common |= {
                        "launch_count": _C.launch_count + 1,
                        "first_launched_at": sa.func.coalesce(
                            _C.first_launched_at, sa.literal(at, _UtcDateTime())
                        ),
                        "last_launched_at": at,
                        "last_run_key": run.run_key,
                        "last_window_key": run.window_key,
                        "error_code": None,
                        "error_text": None,
                    }
                else:
                    per_row = {
                        "error_code": {h: s.code for _, h, s in group},
                        "error_text": {h: s.text for _, h, s in group},
                    }
                matched += _update_contacts(conn, common, per_row, [h for _, h, _ in group], *guards)
                entries = [
                    (key, h, claim.source_keys[key], s.code, s.text, s.profile_id) for key, h, s in group
                ]
                _insert_outcomes(conn, scope, run, outcome, at, entries)
            return matched

        matched = self._write(work)
        claim.settled = True
        if matched < len(final):
            log.warning(
                "%d of %d contact(s) of batch %s were taken over by another claim before settlement; "
                "their outcomes are recorded, their ledger rows were left as they were",
                len(final) - matched,
                len(final),
                claim.batch_id,
            )

    def record(
        self,
        scope: Scope,
        run: RunRef,
        outcome: Outcome,
        rows: Sequence[tuple[str | None, str, int | None, str]],
        *,
        now: datetime | None = None,
    ) -> None:
        """Record ``rejected`` or ``skipped`` outcomes decided outside the ledger.

        ``rows`` are (contact_key or None, source_key, code, reason); reasons must not contain contact
        data in clear.
        """
        if outcome not in (Outcome.REJECTED, Outcome.SKIPPED):
            raise ValueError(
                "record() takes rejected or skipped rows; sent contacts are recorded by settle()"
            )
        if not rows:
            return
        at = _utc(now)
        entries = [
            (key, None if key is None else scope.contact_hash(key), source_key, code, reason, None)
            for key, source_key, code, reason in rows
        ]
        self._write(lambda conn: _insert_outcomes(conn, scope, run, outcome, at, entries))

    # --- reconciliation -------------------------------------------------------------------------------

    def uncertain_contacts(
        self, scope: Scope, keys: Iterable[str] | None = None, *, limit: int | None = None
    ) -> list[UncertainContact]:
        """The scope's ``uncertain`` contacts (only among ``keys`` if given), oldest first."""
        self._ready()
        columns = (
            _C.contact_key,
            _C.contact_hash,
            _C.launch_marker,
            _C.claimed_at,
            _C.claim_run_key,
            _C.batch_id,
        )
        where = (
            _C.status == ContactStatus.UNCERTAIN.value,
            _C.scenario_id == scope.scenario_id,
            _C.platform == scope.platform,
        )
        found: list[UncertainContact] = []
        with self.engine.connect() as conn:
            if keys is None:
                query = sa.select(*columns).where(*where).order_by(_C.updated_at, _C.contact_hash)
                rows = conn.execute(query if limit is None else query.limit(limit)).all()
                return [UncertainContact(*row) for row in rows]
            hashes = {scope.contact_hash(key) for key in keys}
            for _, condition in _matching(conn, _C.contact_hash, hashes):
                found += [
                    UncertainContact(*row)
                    for row in conn.execute(sa.select(*columns).where(condition, *where))
                ]
        return sorted(found, key=lambda c: (c.claimed_at, c.contact_hash))

    def resolve(
        self,
        scope: Scope,
        contacts: Sequence[UncertainContact],
        resolutions: Mapping[str, Resolution],
        *,
        now: datetime | None = None,
    ) -> dict[Outcome, int]:
        """Apply reconciliation verdicts (by contact key) to still-uncertain contacts of the same claim.

        ``launched``: the contact row becomes launched (launch time: its claim) and the uncertain
        outcome of the try that sent it becomes ``launched``; ``failed`` (not processed): the row becomes
        failed, so the next claim sends it, and that outcome becomes ``failed``; ``uncertain``: only the
        evidence is noted. A row that changed meanwhile is left alone. Returns the counts applied.
        """
        at = _utc(now)
        by_key = {c.contact_key: c for c in contacts}

        def work(conn: Connection) -> dict[Outcome, int]:
            applied: Counter[Outcome] = Counter()
            for key, resolution in sorted(resolutions.items(), key=lambda kv: by_key[kv[0]].contact_hash):
                contact = by_key[key]  # in hash order, the order claims lock rows in
                settled = resolution.outcome is not Outcome.UNCERTAIN
                outcome_row = _first_uncertain_outcome(conn, contact) if settled else None
                guard = (
                    _C.contact_hash == contact.contact_hash,
                    _C.status == ContactStatus.UNCERTAIN.value,
                    _C.batch_id == contact.batch_id,
                )
                values: dict[str, Any] = {"error_text": resolution.reason}
                if resolution.outcome is Outcome.LAUNCHED:
                    values |= {
                        "status": ContactStatus.LAUNCHED.value,
                        "launch_count": _C.launch_count + 1,
                        "first_launched_at": sa.func.coalesce(
                            _C.first_launched_at, sa.literal(contact.claimed_at, _UtcDateTime())
                        ),
                        "last_launched_at": contact.claimed_at,
                        "last_run_key": contact.claim_run_key,
                        "last_window_key": outcome_row.window_key if outcome_row else None,
                        "error_code": None,
                        "updated_at": at,
                    }
                elif resolution.outcome is Outcome.FAILED:
                    values |= {"status": ContactStatus.FAILED.value, "error_code": None, "updated_at": at}
                changed = conn.execute(sa.update(contacts_table).where(*guard).values(values)).rowcount
                if not changed:
                    continue
                applied[resolution.outcome] += 1
                if outcome_row is not None:
                    conn.execute(
                        sa.update(outcomes_table)
                        .where(_O.id == outcome_row.id)
                        .values(
                            outcome=resolution.outcome.value,
                            reason=resolution.reason,
                            profile_id=resolution.profile_id,
                        )
                    )
            return dict(applied)

        return self._write(work)

    def standing(self, scope: Scope) -> dict[str, int]:
        """How many contacts of the scope are uncertain and failed right now (all runs)."""
        self._ready()
        query = (
            sa.select(_C.status, sa.func.count())
            .where(
                _C.status.in_([ContactStatus.UNCERTAIN.value, ContactStatus.FAILED.value]),
                _C.scenario_id == scope.scenario_id,
                _C.platform == scope.platform,
            )
            .group_by(_C.status)
        )
        standing = {ContactStatus.UNCERTAIN.value: 0, ContactStatus.FAILED.value: 0}
        with self.engine.connect() as conn:
            standing.update(conn.execute(query).all())
        return standing

    # --- reading -----------------------------------------------------------------------------------

    def counts(self, scope: Scope, run: RunRef) -> dict[Outcome, int]:
        """Outcome counts of this try (every outcome present, zero if none)."""
        self._ready()
        query = (
            sa.select(_O.outcome, sa.func.count())
            .where(
                _O.dag_id == run.dag_id,
                _O.run_id == run.run_id,
                _O.task_id == run.task_id,
                _O.try_number == run.try_number,
                _O.platform == scope.platform,
                _O.scenario_id == scope.scenario_id,
            )
            .group_by(_O.outcome)
        )
        counts = dict.fromkeys(Outcome, 0)
        with self.engine.connect() as conn:
            for outcome, count in conn.execute(query):
                counts[Outcome(outcome)] = count
        return counts

    def history(self, contact_key: str, scope: Scope) -> ContactHistory:
        """The contact's ledger row and all its outcomes in this scope, for support and debugging."""
        self._ready()
        contact_hash = scope.contact_hash(contact_key)
        with self.engine.connect() as conn:
            row = (
                conn.execute(sa.select(contacts_table).where(_C.contact_hash == contact_hash))
                .mappings()
                .first()
            )
            outcomes = conn.execute(
                sa.select(outcomes_table).where(_O.contact_hash == contact_hash).order_by(_O.id)
            ).mappings()
            return ContactHistory(None if row is None else dict(row), [dict(r) for r in outcomes])

    # --- claim internals -----------------------------------------------------------------------------

    @staticmethod
    def _select_contacts(conn: Connection, hashes: Sequence[str], *, lock: bool) -> dict[str, RowMapping]:
        """Contact rows by hash, locked in key order (a stable order avoids deadlocks)."""
        found: dict[str, RowMapping] = {}
        for _, condition in _matching(conn, _C.contact_hash, hashes):
            query = sa.select(contacts_table).where(condition).order_by(_C.contact_hash)
            if lock:
                query = query.with_for_update()
            found.update((row["contact_hash"], row) for row in conn.execute(query).mappings())
        return found

    @staticmethod
    def _earlier_launches(
        conn: Connection,
        run: RunRef,
        rows: Mapping[str, RowMapping],
        policy: RelaunchPolicy,
        *,
        relaunch: bool,
    ) -> dict[str, tuple[str, datetime]]:
        """Launches of already-launched contacts by this run (relaunch) or for this window (policy).

        Read from the outcomes table, so a rerun of an old window is recognised even after later
        windows launched the contact again.
        """
        if not relaunch and policy.kind == "once":
            return {}
        if relaunch:
            same = (_O.dag_id == run.dag_id, _O.task_id == run.task_id, _O.run_id == run.run_id)
        else:
            same = (_O.window_key == run.window_key,)
        launched = [h for h, row in rows.items() if row["last_launched_at"] is not None]
        earlier: dict[str, tuple[str, datetime]] = {}
        for _, condition in _matching(conn, _O.contact_hash, launched):
            query = (
                sa.select(_O.contact_hash, _O.run_id, _O.recorded_at)
                .where(condition, _O.outcome == Outcome.LAUNCHED.value, *same)
                .order_by(_O.id)
            )
            earlier.update((h, (run_id, at)) for h, run_id, at in conn.execute(query))
        return earlier

    def _decide_all(
        self,
        conn: Connection,
        run: RunRef,
        hashes: Mapping[str, str],
        policy: RelaunchPolicy,
        *,
        relaunch: bool,
        resend_uncertain: bool,
        at: datetime,
        lock: bool,
    ) -> tuple[dict[str, RowMapping], list[str], dict[str, str], dict[str, str], dict[str, str]]:
        """Apply the claim rules: (rows, keys to send, skipped key -> reason, uncertain key -> reason,
        uncertain notes by hash)."""
        rows = self._select_contacts(conn, list(hashes.values()), lock=lock)
        earlier = self._earlier_launches(conn, run, rows, policy, relaunch=relaunch)
        to_send: list[str] = []
        skipped: dict[str, str] = {}
        uncertain: dict[str, str] = {}
        uncertain_notes: dict[str, str] = {}
        for key, contact_hash in hashes.items():
            verdict = _decide(
                rows.get(contact_hash),
                earlier.get(contact_hash),
                run,
                policy,
                relaunch=relaunch,
                resend_uncertain=resend_uncertain,
                now=at,
                stale_after=self.stale_after,
            )
            if verdict.send:
                to_send.append(key)
            else:
                (uncertain if verdict.uncertain else skipped)[key] = verdict.reason
                if verdict.uncertain_note:
                    uncertain_notes[contact_hash] = verdict.uncertain_note
        return rows, to_send, skipped, uncertain, uncertain_notes

    @staticmethod
    def _write_claim(
        conn: Connection,
        scope: Scope,
        run: RunRef,
        batch_id: str,
        at: datetime,
        to_send: Sequence[tuple[str, str, str]],
        rows: Mapping[str, RowMapping],
        marker: str | None = None,
        *,
        rekey: bool = False,
    ) -> None:
        """Insert new contacts and move existing ones to ``sending``; ``to_send``: (key, hash, source key)."""
        claim_values = {
            "launch_marker": marker,
            "status": ContactStatus.SENDING.value,
            "claim_run_key": run.run_key,
            "claim_try_number": run.try_number,
            "batch_id": batch_id,
            "claimed_at": at,
            "updated_at": at,
        }
        new = sorted((h, key, source) for key, h, source in to_send if h not in rows)
        if new:
            shared = {
                **claim_values,
                "platform": scope.platform,
                "scenario_id": scope.scenario_id,
                "launch_count": 0,
            }
            columns = _columns(("contact_hash", "contact_key", "source_key"), new)
            _insert_rows(conn, contacts_table, shared, columns)
        existing = {h: source for _, h, source in to_send if h in rows}
        common = {**claim_values, "error_code": None, "error_text": None}
        per_row: dict[str, Mapping[str, Any]] = {"source_key": existing}
        if rekey:  # a combined-mode contact keeps the key it was last claimed under (see claim_of)
            per_row["contact_key"] = {h: key for key, h, _ in to_send if h in rows}
        _update_contacts(conn, common, per_row, list(existing))
