"""The ledger on a SQL database: each operation one transaction that reads rows, applies the rules of
:mod:`altcraft.ledger.rules` and writes what they decide.

A claim marks rows ``sending`` and commits *before* anything is sent (write-ahead), so a crash can never
lose a launch: the row stays ``sending`` and later becomes ``uncertain``, which is never resent silently.
Works with SQLAlchemy Core 2.x on PostgreSQL, MySQL/MariaDB and SQLite. Concurrent claims of the same
contact are serialised by row locks (``SELECT ... FOR UPDATE``; SQLite: ``BEGIN IMMEDIATE``) and the
primary key; conflicting transactions are retried a bounded number of times. No Airflow import.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Generator, Iterable, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from functools import lru_cache
from itertools import repeat
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from altcraft.engines import ledger_engine, protected
from altcraft.ledger import rules
from altcraft.ledger.model import (
    SETTLED,
    Claim,
    ContactHistory,
    ContactStatus,
    IdentityChanged,
    Outcome,
    PositionLocked,
    Resolution,
    RunRef,
    Scope,
    SentTask,
    Settlement,
    UncertainContact,
    utc,
)
from altcraft.ledger.schema import (
    CANONICAL_KEYS,
    NOT_LAUNCHED,
    activity_table,
    aliases_table,
    check_encoding,
    contacts_table,
    create_days,
    create_schema,
    identities_table,
    keys_canonical,
    meta_table,
    metadata,
    outcomes_table,
    tasks_table,
)
from altcraft.ledger.session import LedgerSession
from altcraft.ledger.statements import (
    Entry,
    apply_changes,
    begin_tally,
    change_values,
    contact_outcome_rows,
    contact_states,
    database_now,
    drop_tally,
    insert_outcome_rows,
    insert_outcomes,
    insert_rows,
    is_transient,
    matching,
    open_contacts,
    open_in,
    recount_days,
    set_values,
    tally,
    update_contacts,
)
from altcraft.modes import DeliveryMode
from altcraft.relaunch import RelaunchPolicy

log = logging.getLogger("altcraft.ledger")

T = TypeVar("T")

#: Attempts of one transaction that hit a lock conflict, deadlock or concurrent insert.
_MAX_ATTEMPTS = 8
#: Seconds `Ledger.position_lock` waits for another run of the pipeline to finish committing its position.
POSITION_LOCK_WAIT = 60.0
_C = contacts_table.c
_O = outcomes_table.c
_A = aliases_table.c
_T = tasks_table.c


class Ledger:
    """The sync ledger on one SQLAlchemy engine. Thread-safe; every public method is one transaction."""

    def __init__(self, engine: Engine, *, stale_after: timedelta = rules.STALE_AFTER):
        self.engine = protected(engine)  # also one made by hand: no contact data in its errors
        self.stale_after = stale_after
        self._schema_ready = False
        #: whether rows may be keyed in a form an earlier version wrote (`_former_rows`); read by
        #: `ensure_schema`
        self._former_forms = True

    @property
    def former_forms(self) -> bool:
        """Whether a row may be keyed in a form an earlier version wrote its key in (`rules.former_keys`):
        False once `ensure_schema` found the `schema.CANONICAL_KEYS` mark or `mark_keys_canonical` made it;
        True until then."""
        return self._former_forms

    @classmethod
    def from_conn_id(cls, conn_id: str | None, *, stale_after: timedelta = rules.STALE_AFTER) -> Ledger:
        """Ledger on an Airflow connection's database, or on ``$AIRFLOW_HOME/altcraft_ledger.db`` if None."""
        return cls(ledger_engine(conn_id), stale_after=stale_after)

    def close(self) -> None:
        """Close the pooled connections (a task try's ledger, at its end: a long-lived process such as
        `dag.test()` or a worker running tasks in-process would otherwise keep them open). The ledger stays
        usable: a later call connects again."""
        self.engine.dispose()

    def session(self, scope: Scope, run: RunRef, *, dry_run: bool = False) -> LedgerSession:
        """The ledger as one task try sees it: every call bound to ``scope`` and ``run``; a ``dry_run``
        session predicts claims and writes nothing."""
        return LedgerSession(self, scope, run, dry_run=dry_run)

    # --- schema and transactions -------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the tables and indexes if missing. Idempotent; a concurrent creator is tolerated.

        A ledger of an earlier version gets ``altcraft_outcome_days`` filled from its outcome rows once. Reads
        whether every custom key of the ledger is in its one form (`schema.CANONICAL_KEYS`); if not, a key
        of a number is looked for under its former forms too (`_former_rows`).
        """
        check_encoding(self.engine, metadata.sorted_tables)
        if create_schema(self.engine):
            self._recount_days(create=True)
        with self.engine.connect() as conn:
            self._former_forms = not keys_canonical(conn)
        self._schema_ready = True

    def exists(self) -> bool:
        """Whether the database holds a ledger (its contacts table); creates nothing, unlike every other
        method (`ensure_schema`)."""
        return sa.inspect(self.engine).has_table(contacts_table.name)

    def mark_keys_canonical(self) -> int:
        """Mark a ledger an earlier version created as `ensure_schema` marks a new one
        (`schema.CANONICAL_KEYS`) when none of its rows is keyed in a form an earlier version wrote a custom
        key's number in (`rules.of_former_key`: ``custom:1.0``): its claims then look up no key under those
        forms. Returns how many rows are so keyed: 0 once marked. Run it when no earlier version writes the
        ledger."""
        self._ready()
        former = _C.contact_key.like("%.%0") | _C.contact_key.like("%e%")  # of_former_key's shapes, and more
        query = sa.select(_C.contact_key).where(_C.contact_key.like("custom%"), former)
        name, value = CANONICAL_KEYS

        def work(conn: Connection) -> int:
            rows = conn.execute(query.execution_options(yield_per=10_000)).scalars()
            found = sum(rules.of_former_key(key) != key for key in rows)
            if not found and not keys_canonical(conn):
                conn.execute(sa.insert(meta_table).values(name=name, value=value))
            return found

        found = self._attempts(work)
        self._former_forms = bool(found)
        return found

    def recount_days(self) -> int:
        """Recount ``altcraft_outcome_days`` from the outcome rows, exact while writes wait: a one-off
        after versions that did not keep it wrote outcomes (``ensure_schema`` does it when it creates the
        table). Returns its rows."""
        self._ready()
        return self._recount_days(create=False)

    def _recount_days(self, *, create: bool) -> int:
        def work(conn: Connection) -> int:
            if create:  # in the same transaction: a fill that fails leaves no table (PostgreSQL, SQLite)
                create_days(conn)
            return recount_days(conn)

        rows = self._attempts(work, mysql_isolation="REPEATABLE READ")  # gap locks: see recount_days
        log.info("Ledger: counted the outcome rows per day into %s (%d rows)", activity_table.name, rows)
        return rows

    def _ready(self) -> None:
        if not self._schema_ready:
            self.ensure_schema()

    @contextmanager
    def _transaction(self, mysql_isolation: str = "READ COMMITTED") -> Generator[Connection]:
        """A write transaction that takes its locks up front on SQLite and reads committed data elsewhere
        (MySQL/MariaDB: at ``mysql_isolation``). The per-day counts of the outcome rows it writes are
        added to ``altcraft_outcome_days`` just before it commits."""
        with self.engine.connect() as conn:
            dialect = self.engine.dialect.name
            days = begin_tally(conn)
            try:
                if dialect == "sqlite":
                    # pysqlite would defer BEGIN; take the write lock first so concurrent claims serialise.
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    try:
                        yield conn
                        days.apply(conn)
                        conn.exec_driver_sql("COMMIT")
                    except BaseException:
                        # unless SQLite rolled it back itself (a full disk, an I/O error): its error goes on
                        if conn.connection.dbapi_connection.in_transaction:
                            conn.exec_driver_sql("ROLLBACK")
                        raise
                    return
                if dialect == "mysql":  # InnoDB's REPEATABLE READ adds gap locks and deadlocks on new keys
                    conn.execution_options(isolation_level=mysql_isolation)
                with conn.begin():
                    yield conn
                    days.apply(conn)
            finally:
                drop_tally(conn)

    def _write(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one transaction; on a conflict, roll back and rerun it (bounded attempts)."""
        self._ready()
        return self._attempts(work)

    def _attempts(self, work: Callable[[Connection], T], mysql_isolation: str = "READ COMMITTED") -> T:
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                with self._transaction(mysql_isolation) as conn:
                    return work(conn)
            except sa.exc.DBAPIError as exc:
                if attempt == _MAX_ATTEMPTS or not is_transient(exc):
                    raise
                log.info(
                    "Ledger transaction conflict (%s), attempt %d; retrying", type(exc.orig).__name__, attempt
                )
                time.sleep(random.uniform(0.005, 0.02) * 2**attempt)
        raise AssertionError("unreachable")

    def _read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on a connection that only reads."""
        self._ready()
        with self.engine.connect() as conn:
            return work(conn)

    def now(self) -> datetime:
        """The ledger database's time now (aware UTC): the one clock of every time the ledger writes and of
        every comparison with them (reconciliation's grace, stale claims), whichever worker's clock is off."""
        return self._read(database_now)

    def _at(self, now: datetime | None) -> datetime:
        """The time of a write: ``now`` if given (aware), else the database's (:meth:`now`)."""
        return self.now() if now is None else utc(now)

    @staticmethod
    def _at_on(conn: Connection, now: datetime | None) -> datetime:
        """`_at` read on the connection of the write's own transaction: without a connection of its own
        (checked out, a transaction begun and rolled back) a read of the clock costs 35 us of CPU, not 113."""
        return database_now(conn) if now is None else utc(now)

    # --- stored positions -----------------------------------------------------------------------------

    @contextmanager
    def position_lock(self, name: str, *, wait: float | None = None) -> Generator[None]:
        """Hold the lock of the stored position ``name`` (a state asset's name) while its commit reads,
        compares and sets it: every run of a pipeline shares its ledger, and Airflow's asset state store has
        no compare-and-set, so two commits interleaved (both read the stored value, the higher one sets,
        then the lower one) would move the position back.

        A row of ``altcraft_ledger_meta`` named for the position, locked by ``SELECT ... FOR UPDATE`` in a
        transaction open for the duration (PostgreSQL, MySQL/MariaDB: other positions do not wait); on
        SQLite, which locks whole databases, the transaction's ``BEGIN IMMEDIATE`` is the lock, so every
        other write to the ledger waits for the commit too. The database drops the lock with the
        connection: a process that dies holding it keeps no one waiting. Waits at most ``wait`` seconds
        (default `POSITION_LOCK_WAIT`; MySQL/MariaDB: whole seconds, rounded up), then raises
        `PositionLocked`; an error in the body releases the lock and goes on. Not reentrant: a second lock
        of ``name`` in the body waits for the first, which it holds."""
        wait = POSITION_LOCK_WAIT if wait is None else wait
        self._ready()
        dialect = self.engine.dialect.name
        if dialect == "sqlite":  # no row to lock: the write lock is the database's
            with self.engine.connect() as conn:
                yield from _sqlite_lock(conn, name, wait)
            return
        row = "position_lock:" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:50]
        locked = sa.select(meta_table.c.value).where(meta_table.c.name == row)
        if self._read(lambda conn: conn.execute(locked).first()) is None:
            self._attempts(lambda conn: _lock_row_made(conn, row, name))
        with self.engine.connect() as conn:
            seconds = max(0, math.ceil(wait))
            if dialect == "mysql":
                conn.execution_options(isolation_level="READ COMMITTED")
                before = conn.exec_driver_sql("SELECT @@SESSION.innodb_lock_wait_timeout").scalar_one()
                conn.exec_driver_sql(f"SET SESSION innodb_lock_wait_timeout = {seconds}")
                conn.commit()  # the transaction begun by those statements: the lock's begins next
            try:
                with conn.begin():
                    if dialect == "postgresql":
                        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {max(1, round(wait * 1000))}")
                    try:
                        conn.execute(locked.with_for_update()).one()
                    except sa.exc.DBAPIError as exc:
                        if not is_transient(exc):
                            raise
                        raise PositionLocked(name, wait) from exc
                    yield
            finally:
                if dialect == "mysql":
                    conn.exec_driver_sql(f"SET SESSION innodb_lock_wait_timeout = {int(before)}")
                    conn.commit()

    # --- the exactly-once protocol -------------------------------------------------------------------

    def identify(self, scope: Scope, run: RunRef, identity: str, *, dry_run: bool = False) -> None:
        """Check that ``run`` keys its contacts as its pipeline (`RunRef.pipeline`) keyed the scope's
        contacts before (``identity``, see ``altcraft.mapping.identity_of``), else raise `IdentityChanged`;
        the pipeline's first task into the scope records it (a dry run only reads). Other pipelines of the
        scope may key them otherwise. Once per try, before its first claim.
        """
        table, pipeline = identities_table, run.pipeline
        key = scope.identity_hash(pipeline)

        def work(conn: Connection) -> None:
            row = conn.execute(sa.select(table).where(table.c.pipeline_hash == key)).first()
            if row is not None and row.identity != identity:
                raise IdentityChanged(scope, pipeline, row.identity, identity, row.run_key)
            if row is None and not dry_run:  # a concurrent first insert: a duplicate key, read again
                values = {"platform": scope.platform, "scenario_id": scope.scenario_id, "pipeline": pipeline}
                row_values = {
                    **values,
                    "identity": identity,
                    "run_key": run.run_key,
                    "created_at": database_now(conn),
                }
                conn.execute(sa.insert(table).values(pipeline_hash=key, **row_values))
                log.info(
                    "Ledger: pipeline %s keys the contacts of scenario %s by %r",
                    pipeline,
                    scope.scenario_id,
                    identity,
                )

        if dry_run:
            self._read(work)
        else:
            self._write(work)

    def recover(self, scope: Scope, run: RunRef, *, now: datetime | None = None) -> list[str]:
        """Mark ``uncertain`` the rows an earlier try of this run left ``sending`` (it died mid-batch).

        Records an ``uncertain`` outcome for each, as an outcome of the try that sent it (that try
        never settled it); returns their ledger keys, sorted.
        """
        at = self._at(now)

        def work(conn: Connection) -> list[str]:
            query = (
                sa.select(contacts_table)
                .where(
                    _C.status == ContactStatus.SENDING.value,
                    NOT_LAUNCHED,
                    _C.scenario_id == scope.scenario_id,
                    _C.platform == scope.platform,
                    _C.claim_run_key == run.run_key,
                    _C.claim_try_number != run.try_number,
                )
                .order_by(_C.contact_hash)
                .with_for_update()
            )
            rows: list[RowMapping] = []
            changes: dict[str, rules.Change] = {}
            for row in conn.execute(query).mappings():  # the query narrows, the rule decides
                change = rules.recovery(rules.ContactState.of(row), run)
                if change is not None:
                    rows.append(row)
                    changes[row["contact_hash"]] = change
            apply_changes(conn, changes, at)
            by_try: dict[int, list[Entry]] = {}
            for row in rows:  # recorded as outcomes of the try that sent them
                note = changes[row["contact_hash"]].error_text
                found, origin = row["contact_hash"], row["created_at"]
                entry = (row["contact_key"], found, row["source_key"], None, note, None, origin)
                by_try.setdefault(row["claim_try_number"], []).append(entry)
            for try_number, entries in sorted(by_try.items()):
                insert_outcomes(
                    conn, scope, replace(run, try_number=try_number), Outcome.UNCERTAIN, at, entries
                )
            return sorted(row["contact_key"] for row in rows)

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
        delivery_mode: DeliveryMode | str | None = None,
        aliases: Mapping[str, Sequence[str]] | None = None,
        grace: timedelta = rules.DEFAULT_GRACE,
        hold: Collection[str] = frozenset(),
        now: datetime | None = None,
        dry_run: bool = False,
    ) -> Claim:
        """Decide which of ``items`` (ledger key, source key) to send and commit them as ``sending``.

        Skipped contacts get a ``skipped`` outcome, contacts not sent because they are uncertain an
        ``uncertain`` one, in the same transaction. Two concurrent claims never both receive the same
        key. ``marker`` (``FIELD=value``) is the launch marker the request will carry and ``delivery_mode``
        how it is sent (a :class:`~altcraft.modes.DeliveryMode`), both kept for reconciliation; None for
        the mode records it unknown, which reconciliation reads as possibly an Altcraft task still queued.
        ``aliases`` (key -> component keys, for combined matching modes): a key whose component was
        claimed before is the same contact as that earlier one. ``grace``: ``resend_uncertain`` resends only
        contacts uncertain for longer (:func:`~altcraft.ledger.rules.grace_left`), and none whose row's hash
        is in ``hold`` (not reconciled yet). ``dry_run``: the same decisions, read without locks, and nothing
        written (batch id ``preview``).
        """
        resend = grace if resend_uncertain else None
        work = self._claimer(
            scope, run, items, policy, relaunch, resend, marker, delivery_mode, aliases, now, dry_run, hold
        )
        claim = self._read(work) if dry_run else self._write(work)
        _log_claim(claim, run, dry_run=dry_run)
        return claim

    def open_claim(
        self,
        scope: Scope,
        run: RunRef,
        items: Sequence[tuple[str, str]],
        policy: RelaunchPolicy,
        *,
        relaunch: bool = False,
        resend_uncertain: bool = False,
        marker: str | None = None,
        delivery_mode: DeliveryMode | str | None = None,
        grace: timedelta = rules.DEFAULT_GRACE,
        now: datetime | None = None,
    ) -> OpenClaim:
        """:meth:`claim`'s statements in a transaction left open: nothing is claimed until
        :meth:`OpenClaim.commit`, and a rollback, a lost connection or a crash forgets it.

        Its row locks are held until then: a concurrent claim of the same contacts waits. One attempt: a
        conflict raises (the caller claims again with :meth:`claim`). Not for combined matching.
        """
        resend = grace if resend_uncertain else None
        work = self._claimer(scope, run, items, policy, relaunch, resend, marker, delivery_mode, None, now)
        self._ready()
        with ExitStack() as stack:
            claim = work(stack.enter_context(self._transaction()))
            return OpenClaim(claim, run, stack.pop_all())

    def _claimer(
        self,
        scope: Scope,
        run: RunRef,
        items: Sequence[tuple[str, str]],
        policy: RelaunchPolicy,
        relaunch: bool,
        resend: timedelta | None,
        marker: str | None,
        delivery_mode: DeliveryMode | str | None,
        aliases: Mapping[str, Sequence[str]] | None,
        now: datetime | None,
        dry_run: bool = False,
        hold: Collection[str] = frozenset(),
    ) -> Callable[[Connection], Claim]:
        """The transaction's work of a claim (see :meth:`claim`); ``resend``: the grace after which
        ``resend_uncertain`` resends (None: it was not asked), but not the rows of ``hold``; ``now``: the
        claim's time (None: the database's, read in the transaction)."""
        batch_id = "preview" if dry_run else uuid.uuid4().hex
        mode = None if delivery_mode is None else DeliveryMode(delivery_mode).value  # an unknown one raises
        first, duplicates = rules.split_duplicates(items)

        def work(conn: Connection) -> Claim:
            at = self._at_on(conn, now)
            ids = self._identities(conn, scope, first, duplicates, aliases, at, write=not dry_run)
            # every first key its own row (no aliases, no former rows): the hashes as they are
            candidates = (
                {k: ids.hashes[k] for k in ids.first if k not in ids.ambiguous} if ids.rekeyed else ids.hashes
            )
            states = self._select_contacts(conn, list(candidates.values()), lock=not dry_run)
            earlier = self._earlier_launches(conn, run, states, policy, relaunch=relaunch)
            claim = Claim(
                batch_id,
                [],
                {},
                duplicates=len(ids.duplicates),
                hashes=ids.hashes,
            )
            dead: dict[str, rules.Change] = {}
            if not states:  # no contact has a row yet (new contacts): each is sent (rules.NEVER_CLAIMED)
                claim.to_send = list(candidates)
                claim.source_keys = {key: ids.first[key] for key in candidates}
                claim.origins = dict.fromkeys(candidates, at)
            for key, contact_hash in candidates.items() if states else ():
                state = states.get(contact_hash)
                # most contacts of a chunk have no row yet: their verdict without a call per contact
                verdict = (
                    rules.NEVER_CLAIMED
                    if state is None
                    else rules.decide(
                        state,
                        earlier.get(contact_hash),
                        run,
                        policy,
                        relaunch=relaunch,
                        resend_uncertain=resend is not None,
                        held=contact_hash in hold,
                        now=at,
                        stale_after=self.stale_after,
                        grace=rules.DEFAULT_GRACE if resend is None else resend,
                    )
                )
                if verdict.send:
                    claim.to_send.append(key)
                    claim.source_keys[key] = ids.first[key]
                    claim.origins[key] = at if state is None else state.created_at
                    continue
                (claim.uncertain if verdict.uncertain else claim.skipped)[key] = verdict.reason
                if verdict.uncertain_note:  # a dead claim, not sent: the row becomes uncertain
                    dead[contact_hash] = rules.Change(
                        ContactStatus.UNCERTAIN, error_text=verdict.uncertain_note
                    )
            claim.skipped.update(ids.ambiguous)
            if not dry_run:
                self._write_claim(conn, scope, run, claim, ids, states, marker, mode, at, rekey=ids.rekeyed)
                apply_changes(conn, dead, at)
            return claim

        return work

    def claim_of(self, scope: Scope, batch_id: str) -> Claim:
        """The still unsettled (``sending``) part of an earlier claim, keys in sorted order.

        Used to settle an asynchronous Altcraft task after a restart: a chunk is always sent in sorted
        key order, so the task's per-profile results line up with these keys.
        """
        query = sa.select(
            _C.contact_key, _C.contact_hash, _C.source_key, _C.claim_try_number, _C.created_at
        ).where(
            _C.batch_id == batch_id,
            _C.status == ContactStatus.SENDING.value,
            NOT_LAUNCHED,
            _C.platform == scope.platform,
            _C.scenario_id == scope.scenario_id,
        )
        found = self._read(lambda conn: conn.execute(query).all())
        rows = {row.contact_key: row for row in found}
        keys = sorted(rows)
        try_number = found[0].claim_try_number if found else None
        return Claim(
            batch_id,
            keys,
            {},
            {key: rows[key].source_key for key in keys},
            try_number=try_number,
            # the rows' own: one claimed under another key than its first has not that key's hash
            hashes={key: rows[key].contact_hash for key in keys},
            origins={key: rows[key].created_at for key in keys},
        )

    def record_task(
        self, scope: Scope, batch_id: str, task_id: str, keys: Sequence[str], *, now: datetime | None = None
    ) -> None:
        """Record the Altcraft task that claim ``batch_id``'s request created, sent ``keys`` in this order."""
        row = {
            "batch_id": batch_id,
            "platform": scope.platform,
            "scenario_id": scope.scenario_id,
            "task_id": task_id,
            "contact_keys": json.dumps(list(keys), ensure_ascii=False),
            "created_at": self._at(now),
        }
        self._write(lambda conn: conn.execute(sa.insert(tasks_table), [row]))

    def sent_tasks(self, scope: Scope, batch_ids: Iterable[str]) -> dict[str, SentTask]:
        """The recorded Altcraft task of each claim of ``batch_ids`` that has one (:meth:`record_task`),
        ``shared`` when its id was recorded for another claim on the platform too."""

        def work(conn: Connection) -> dict[str, SentTask]:
            found: dict[str, tuple[str, str]] = {}
            for _, condition in matching(conn, _T.batch_id, set(batch_ids)):
                query = sa.select(_T.batch_id, _T.task_id, _T.contact_keys).where(
                    condition, _T.platform == scope.platform, _T.scenario_id == scope.scenario_id
                )
                found.update((batch_id, (task_id, keys)) for batch_id, task_id, keys in conn.execute(query))
            shared = _shared_tasks(conn, scope, {task_id for task_id, _ in found.values()})
            return {
                batch_id: SentTask(task_id, tuple(json.loads(keys)), task_id in shared)
                for batch_id, (task_id, keys) in found.items()
            }

        return self._read(work)

    def contact_states(self, scope: Scope) -> dict[str, str]:
        """Every contact of a scope with its status (``launched``, ``failed``, ``uncertain``, ``sending``)."""
        query = sa.select(_C.contact_key, _C.status).where(
            _C.platform == scope.platform, _C.scenario_id == scope.scenario_id
        )
        return self._read(lambda conn: dict(conn.execute(query).all()))

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
        final = rules.final_settlements(claim, settlements)
        by_outcome: dict[Outcome, list[str]] = {}
        for key, settlement in final.items():
            by_outcome.setdefault(settlement.outcome, []).append(key)

        # each outcome's rows column by column, in claim order (one list per column, not a tuple per row)
        groups: list[tuple[Outcome, list[str], dict[str, Sequence[object]]]] = []
        hash_of, source_keys, origin_of = claim.hashes.get, claim.source_keys, claim.origins.get
        for outcome in SETTLED:
            keys = by_outcome.get(outcome)
            if not keys:
                continue
            hashes = [hash_of(key) or scope.contact_hash(key) for key in keys]
            answers = [final[key] for key in keys]
            rows = {
                "contact_key": keys,
                "contact_hash": hashes,
                "source_key": [source_keys[key] for key in keys],
                "code": [s.code for s in answers],
                "reason": [s.text for s in answers],
                "profile_id": [s.profile_id for s in answers],
                "contact_created_at": list(map(origin_of, keys)),
            }
            groups.append((outcome, hashes, rows))

        def work(conn: Connection) -> int:
            at = self._at_on(conn, now)

            @lru_cache(maxsize=256)  # one Change per distinct answer (a batch's launches all share one)
            def change(outcome: Outcome, code: int | None, text: str | None) -> rules.Change:
                return rules.settled(Settlement(outcome, code, text), run, at)

            matched = 0
            for outcome, hashes, rows in groups:
                made = map(change, repeat(outcome), rows["code"], rows["reason"])
                changes = dict(zip(hashes, made, strict=True))
                matched += apply_changes(conn, changes, at, batch_id=claim.batch_id)
                insert_outcome_rows(conn, scope, run, outcome, at, rows)
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
        at = self._at(now)
        entries: list[Entry] = [
            (key, None if key is None else scope.contact_hash(key), source_key, code, reason, None, None)
            for key, source_key, code, reason in rows
        ]
        self._write(lambda conn: insert_outcomes(conn, scope, run, outcome, at, entries))

    # --- reconciliation -------------------------------------------------------------------------------

    def uncertain_contacts(
        self,
        scope: Scope,
        keys: Iterable[str] | None = None,
        *,
        limit: int | None = None,
        aliases: Mapping[str, Sequence[str]] | None = None,
    ) -> list[UncertainContact]:
        """The scope's ``uncertain`` contacts (only among ``keys`` if given), the longest waiting first
        (`UncertainContact.turn`: one a reconciliation checked and left undecided goes behind the others, so
        bounded runs go round the whole backlog; the SQL `_TURN`, sorting only these). ``aliases`` (key
        -> component keys, combined matching modes, as :meth:`claim` takes them): a key also stands for the
        earlier contact a component of it was claimed for, whose row is under another key."""
        if keys is not None:
            rows = self._read(lambda conn: self._contacts_of(conn, scope, keys, aliases, _UNCERTAIN))
            return _uncertain(rows)
        query = (
            sa.select(*_UNCERTAIN_COLUMNS)
            .where(_C.status == ContactStatus.UNCERTAIN.value, *_open_in(scope))
            .order_by(_TURN, _C.contact_hash)
        )
        rows = self._read(lambda conn: conn.execute(query if limit is None else query.limit(limit)).all())
        return [UncertainContact(*row) for row in rows]

    def to_reconcile(
        self,
        scope: Scope,
        run: RunRef,
        keys: Iterable[str] | None = None,
        *,
        aliases: Mapping[str, Sequence[str]] | None = None,
        now: datetime | None = None,
        limit: int | None = None,
    ) -> list[UncertainContact]:
        """The contacts among ``keys`` (and ``aliases``, as :meth:`uncertain_contacts` takes them) that
        ``run`` reconciles before it claims them: the ``uncertain`` ones, and those whose claim is dead
        (:func:`~altcraft.ledger.rules.expiry`: an earlier try of this run, or stale), which become
        ``uncertain`` now, as the claim would make them. So the first run to meet a dead claim reads its
        evidence (the Altcraft task it recorded, its launch marker) before deciding, not a run after it.
        ``keys`` None: the whole scenario, the longest waiting first, its dead claims too, which no claim may
        ever meet (a try killed mid-send whose retries were used up, a window never read again); ``limit``:
        only that many of them, the first (a bounded reconciliation).

        One read when no contact is ``sending``; a claim in flight elsewhere is left as it is.
        """
        if keys is None:
            self._expire_dead(scope, run, self._at(now))
            return self.uncertain_contacts(scope, limit=limit)
        keys = list(keys)
        statuses = (ContactStatus.UNCERTAIN.value, ContactStatus.SENDING.value)
        rows = self._read(lambda conn: self._contacts_of(conn, scope, keys, aliases, statuses))
        sending = [row.contact_hash for row in rows if row.status == ContactStatus.SENDING.value]
        if sending and self._expire(scope, run, sending, self._at(now)):
            rows = self._read(lambda conn: self._contacts_of(conn, scope, keys, aliases, _UNCERTAIN))
        return _uncertain(rows)

    def _expire_dead(self, scope: Scope, run: RunRef, at: datetime) -> None:
        """`_expire` the scope's ``sending`` rows whose claim may be dead at ``at``: stale, or made by this
        run (the rule decides on the rows locked)."""
        cutoff = rules.stale_before(at, self.stale_after)
        query = sa.select(_C.contact_hash).where(
            _C.status == ContactStatus.SENDING.value,
            sa.or_(_C.claimed_at <= cutoff, _C.claim_run_key == run.run_key),
            *_open_in(scope),
        )
        sending = self._read(lambda conn: conn.execute(query).scalars().all())
        if sending:
            self._expire(scope, run, sending, at)

    def _expire(self, scope: Scope, run: RunRef, hashes: Sequence[str], at: datetime) -> int:
        """Make ``uncertain`` those of the ``sending`` rows ``hashes`` whose claim is dead at ``at``
        (:func:`~altcraft.ledger.rules.expiry`), decided on the rows locked; returns how many."""

        def work(conn: Connection) -> int:
            states = self._select_contacts(conn, hashes, lock=True)
            changes = {
                found: change
                for found, state in states.items()
                if (change := rules.expiry(state, run, at, self.stale_after)) is not None
            }
            return apply_changes(conn, changes, at)

        expired = self._write(work)
        if expired:
            log.warning(
                "%d contact(s) of scenario %s met by %s were left 'sending' by a claim that was never "
                "settled; now uncertain, they are reconciled (before any claim of them decides)",
                expired,
                scope.scenario_id,
                run.run_key,
            )
        return expired

    def resolve(
        self,
        scope: Scope,
        contacts: Sequence[UncertainContact],
        resolutions: Mapping[str, Resolution],
        *,
        now: datetime | None = None,
    ) -> dict[Outcome, int]:
        """Apply reconciliation verdicts (by contact key) to still-uncertain contacts of the same claim.

        What a verdict does to the row is :func:`altcraft.ledger.rules.resolved`, for the window of the try
        that sent it; that try's uncertain outcome becomes the verdict (``launched`` or ``failed``), or the
        verdict is recorded as its outcome if it left none; the row's ``checked_at`` becomes now, which sends
        a contact left uncertain behind the others waiting (`uncertain_contacts`). A row that changed
        meanwhile is left alone. Returns the counts applied.
        """
        at = self._at(now)
        by_key = {c.contact_key: c for c in contacts}

        def work(conn: Connection) -> dict[Outcome, int]:
            applied: Counter[Outcome] = Counter()
            for key, resolution in sorted(resolutions.items(), key=lambda kv: by_key[kv[0]].contact_hash):
                contact = by_key[key]  # in hash order, the order claims lock rows in
                settled = resolution.outcome is not Outcome.UNCERTAIN
                sender, outcome_row = _sender(conn, contact) if settled else (None, None)
                change = rules.resolved(contact, resolution, sender.window_key if sender else None)
                values = {**change_values(change, at), "checked_at": at}
                statement = sa.update(contacts_table).where(*_unchanged(contact)).values(set_values(values))
                if not conn.execute(statement).rowcount:
                    continue
                applied[resolution.outcome] += 1
                if outcome_row is not None:
                    _rewrite_outcome(conn, scope, outcome_row, resolution)
                elif sender is not None:
                    _record_verdict(conn, scope, sender, contact, resolution, at)
            return dict(applied)

        return self._write(work)

    def mark_checked(self, contacts: Sequence[UncertainContact], *, now: datetime | None = None) -> int:
        """Stamp ``checked_at`` on those of ``contacts`` still uncertain from the same claim: a reconciliation
        took them in turn and left them as they were, with no verdict to record. They go behind the others
        waiting, as a verdict sends them (:meth:`resolve`). Returns how many."""
        at = self._at(now)

        def work(conn: Connection) -> int:
            stamped = 0
            for contact in sorted(contacts, key=lambda c: c.contact_hash):  # the order claims lock rows in
                statement = sa.update(contacts_table).where(*_unchanged(contact)).values(checked_at=at)
                stamped += conn.execute(statement).rowcount
            return stamped

        return self._write(work) if contacts else 0

    def standing(self, scope: Scope, *, now: datetime | None = None) -> dict[str, int]:
        """How many contacts of the scope are, right now (all runs): ``uncertain``, ``failed``, and
        ``stale_sending``: left ``sending`` by a claim at least ``stale_after`` old (`rules.stale_before`),
        which its run never settled, so they may or may not have been launched, as uncertain ones.
        One query over ``ix_altcraft_contacts_open``, at the ledger's time unless ``now`` is given."""

        def work(conn: Connection) -> list[sa.Row[Any]]:
            cutoff = rules.stale_before(database_now(conn) if now is None else utc(now), self.stale_after)
            settled = _C.status.in_([ContactStatus.UNCERTAIN.value, ContactStatus.FAILED.value])
            stale = sa.and_(_C.status == ContactStatus.SENDING.value, _C.claimed_at <= cutoff)
            query = (
                sa.select(_C.status, sa.func.count())
                .where(sa.or_(settled, stale), *_open_in(scope))
                .group_by(_C.status)
            )
            return conn.execute(query).all()

        counts = dict(self._read(work))
        return {name: counts.get(status, 0) for name, status in STANDING.items()}

    # --- reading -----------------------------------------------------------------------------------

    def counts(self, scope: Scope, run: RunRef) -> dict[Outcome, int]:
        """Outcome counts of this try (every outcome present, zero if none)."""
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
        for outcome, count in self._read(lambda conn: conn.execute(query).all()):
            counts[Outcome(outcome)] = count
        return counts

    def contact_rows(
        self, scope: Scope, keys: Iterable[str], *, aliases: Mapping[str, Sequence[str]] | None = None
    ) -> dict[str, str]:
        """The contact row (its hash) a claim of ``keys`` takes each key for, read as the claim reads it
        (`rules.identities`): its own, or the earlier contact a component of it (``aliases``, as :meth:`claim`
        takes them) was claimed for, or a custom key's row under a former form. Nothing is written."""
        first = {key: key for key in keys}
        return self._read(
            lambda conn: self._identities(conn, scope, first, [], aliases, None, write=False).hashes
        )

    def history(self, contact_key: str, scope: Scope) -> ContactHistory:
        """The contact's ledger row and all its outcomes in this scope, for support and debugging (a custom
        key's row under a form an earlier version wrote it in, when it has none of its own)."""

        def work(conn: Connection) -> ContactHistory:
            former = self._former_rows(conn, scope, [contact_key])
            contact_hash = former.get(contact_key) or scope.contact_hash(contact_key)
            row = (
                conn.execute(sa.select(contacts_table).where(_C.contact_hash == contact_hash))
                .mappings()
                .first()
            )
            origins = {contact_hash: None if row is None else row["created_at"]}
            outcomes = contact_outcome_rows(conn, origins, sa.select(outcomes_table))
            return ContactHistory(None if row is None else dict(row), [dict(o._mapping) for o in outcomes])

        return self._read(work)

    # --- claim internals -----------------------------------------------------------------------------

    @staticmethod
    def _select_contacts(
        conn: Connection, hashes: Sequence[str], *, lock: bool
    ) -> dict[str, rules.ContactState]:
        """Contact rows by hash, locked in key order (a stable order avoids deadlocks)."""
        return {
            found: rules.ContactState(*state) for found, *state in contact_states(conn, hashes, lock=lock)
        }

    @staticmethod
    def _earlier_launches(
        conn: Connection,
        run: RunRef,
        states: Mapping[str, rules.ContactState],
        policy: RelaunchPolicy,
        *,
        relaunch: bool,
    ) -> dict[str, rules.EarlierLaunch]:
        """Launches of already-launched contacts by this run or for this window (or one of the task's
        windows over the same time: `rules.same_window`), per :func:`~altcraft.ledger.rules.launch_lookup`.

        Read from the outcomes table, so a rerun of an old window is recognised even after later
        windows launched the contact again.
        """
        lookup = rules.launch_lookup(policy, relaunch=relaunch)
        if lookup is None:
            return {}
        if lookup == "run":
            same = (_O.dag_id == run.dag_id, _O.task_id == run.task_id, _O.run_id == run.run_id)
        else:
            same = (_O.window_key.startswith(rules.window_owner(run.window_key), autoescape=True),)
        launched = {h: state.created_at for h, state in states.items() if state.last_launched_at is not None}
        query = sa.select(_O.id, _O.contact_hash, _O.run_id, _O.recorded_at, _O.window_key).where(
            _O.outcome == Outcome.LAUNCHED.value, *same
        )
        found = contact_outcome_rows(conn, launched, query)  # the latest launch of each contact last
        return {
            row.contact_hash: (row.run_id, row.recorded_at)
            for row in found
            if lookup == "run" or rules.same_window(run.window_key, row.window_key)
        }

    def _identities(
        self,
        conn: Connection,
        scope: Scope,
        first: dict[str, str],
        duplicates: list[tuple[str, str]],
        aliases: Mapping[str, Sequence[str]] | None,
        at: datetime | None,
        *,
        write: bool,
    ) -> rules.Identities:
        """:func:`~altcraft.ledger.rules.identities` on the recorded components; with ``write``, new
        components are recorded at ``at`` (locked like contact rows, so two concurrent claims agree on one
        identity)."""
        known: dict[str, str] = {}
        if aliases:
            wanted = {scope.alias_hash(alias) for key in first for alias in aliases.get(key, ())}
            for _, condition in matching(conn, _A.alias_hash, wanted):
                query = sa.select(_A.alias_hash, _A.contact_hash).where(condition).order_by(_A.alias_hash)
                if write:
                    query = query.with_for_update()
                known.update(conn.execute(query).all())
        former = self._former_rows(conn, scope, first)
        ids = rules.identities(scope, first, duplicates, aliases, known, former)
        if write and ids.new_aliases:
            ordered = sorted(ids.new_aliases.items())
            shared = {"platform": scope.platform, "scenario_id": scope.scenario_id, "created_at": at}
            new = {
                "alias_hash": [h for h, _ in ordered],
                "contact_hash": [c for _, (c, _) in ordered],
                "alias_key": [a for _, (_, a) in ordered],
            }
            insert_rows(conn, aliases_table, shared, new)
        return ids

    @staticmethod
    def _write_claim(
        conn: Connection,
        scope: Scope,
        run: RunRef,
        claim: Claim,
        ids: rules.Identities,
        states: Mapping[str, rules.ContactState],
        marker: str | None,
        mode: str | None,
        at: datetime,
        *,
        rekey: bool,
    ) -> None:
        """Insert new contacts and move existing ones to ``sending``; record the skipped and uncertain
        ones' outcomes (one ``skipped`` per duplicate item too)."""
        claim_values = {
            "launch_marker": marker,
            "delivery_mode": mode,
            "status": ContactStatus.SENDING.value,
            "claim_run_key": run.run_key,
            "claim_try_number": run.try_number,
            "batch_id": claim.batch_id,
            "claimed_at": at,
            "updated_at": at,
        }
        hashes, sources = ids.hashes, ids.first
        # new rows in hash order: the keys sorted by their hash (sorting (hash, key, source) tuples cost 0.41
        # us a contact, this 0.16)
        new = [key for key in claim.to_send if hashes[key] not in states]
        new.sort(key=hashes.__getitem__)
        if new:
            shared = {
                **claim_values,
                "platform": scope.platform,
                "scenario_id": scope.scenario_id,
                "launch_count": 0,
                "created_at": at,
            }
            rows = {
                "contact_hash": [hashes[key] for key in new],
                "contact_key": new,
                "source_key": [sources[key] for key in new],
            }
            insert_rows(conn, contacts_table, shared, rows)
        known = [key for key in claim.to_send if hashes[key] in states]
        common = {**claim_values, "error_code": None, "error_text": None}
        per_row: dict[str, Mapping[str, object]] = {"source_key": {hashes[k]: sources[k] for k in known}}
        if rekey:  # a combined-mode contact keeps the key it was last claimed under (see claim_of)
            per_row["contact_key"] = {hashes[key]: key for key in known}
        update_contacts(conn, common, per_row, [hashes[key] for key in known])
        created = set(map(hashes.__getitem__, new))

        def origin(contact_hash: str) -> datetime | None:
            """The ``created_at`` of the contact's row (None without one, e.g. a combined-mode key that
            matched two contacts)."""
            state = states.get(contact_hash)
            return state.created_at if state is not None else at if contact_hash in created else None

        entries: list[Entry] = [
            (key, hashes[key], ids.first[key], None, reason, None, origin(hashes[key]))
            for key, reason in claim.skipped.items()
        ]
        entries += [
            (key, hashes[key], source, None, "duplicate in this run", None, origin(hashes[key]))
            for key, source in ids.duplicates
        ]
        insert_outcomes(conn, scope, run, Outcome.SKIPPED, at, entries)
        entries = [
            (key, hashes[key], ids.first[key], None, reason, None, origin(hashes[key]))
            for key, reason in claim.uncertain.items()
        ]
        insert_outcomes(conn, scope, run, Outcome.UNCERTAIN, at, entries)

    def _former_rows(self, conn: Connection, scope: Scope, keys: Iterable[str]) -> dict[str, str]:
        """The row each of ``keys`` without a row of its own has under a form an earlier version wrote it in
        (`rules.former_keys`: ``custom:1.00`` of ``custom:1``): key -> that row's hash. None looked up where
        the ledger bears `schema.CANONICAL_KEYS`: no row of it is keyed so."""
        if not self._former_forms:
            return {}
        forms = {
            key: [scope.contact_hash(form) for form in (key, *former)]
            for key in keys
            if (former := rules.former_keys(key))
        }
        if not forms:
            return {}
        recorded: set[str] = set()
        for _, condition in matching(conn, _C.contact_hash, {h for hashes in forms.values() for h in hashes}):
            recorded.update(conn.execute(sa.select(_C.contact_hash).where(condition)).scalars())
        found = {
            key: next((h for h in older if h in recorded), None)
            for key, (own, *older) in forms.items()
            if own not in recorded
        }
        return {key: row for key, row in found.items() if row is not None}

    def _contacts_of(
        self,
        conn: Connection,
        scope: Scope,
        keys: Iterable[str],
        aliases: Mapping[str, Sequence[str]] | None,
        statuses: Sequence[str],
    ) -> list[sa.Row[Any]]:
        """The rows of the contacts of ``keys`` (and of the earlier contacts their ``aliases`` were claimed
        for, and a custom key's row under a form an earlier version wrote it in: `_former_rows`) in
        ``statuses``: the `UncertainContact` columns, then ``status``."""
        keys = list(keys)
        hashes = {scope.contact_hash(key) for key in keys}
        hashes |= set(self._former_rows(conn, scope, keys).values())
        # without aliases not a step per key (0.07-0.12 us a contact)
        wanted = {scope.alias_hash(a) for key in keys for a in aliases.get(key, ())} if aliases else set()
        for _, condition in matching(conn, _A.alias_hash, wanted):
            hashes.update(conn.execute(sa.select(_A.contact_hash).where(condition)).scalars())
        return open_contacts(conn, scope, hashes, (*_UNCERTAIN_COLUMNS, _C.status), tuple(statuses))


def _lock_row_made(conn: Connection, row: str, name: str) -> None:
    """Make the row `Ledger.position_lock` locks for the position ``name``, unless another run just did
    (its insert: a duplicate key, and the attempt again finds the row)."""
    if conn.execute(sa.select(meta_table.c.name).where(meta_table.c.name == row)).first() is None:
        conn.execute(sa.insert(meta_table).values(name=row, value=name))


def _sqlite_lock(conn: Connection, name: str, wait: float) -> Generator[None]:
    """`Ledger.position_lock` on SQLite: the database's write lock (``BEGIN IMMEDIATE``), taken within
    ``wait`` seconds (the connection's busy timeout meanwhile), held until the body ends."""
    conn.execution_options(isolation_level="AUTOCOMMIT")
    before = conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
    conn.exec_driver_sql(f"PRAGMA busy_timeout = {max(0, round(wait * 1000))}")
    try:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    except sa.exc.DBAPIError as exc:
        if not is_transient(exc):
            raise
        raise PositionLocked(name, wait) from exc
    finally:
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(before)}")
    try:
        yield
        conn.exec_driver_sql("COMMIT")
    except BaseException:
        if conn.connection.dbapi_connection.in_transaction:
            conn.exec_driver_sql("ROLLBACK")
        raise


class _Abandoned(Exception):
    """Thrown into an open claim's transaction to roll it back."""


class OpenClaim:
    """A claim decided in a transaction still open (:meth:`Ledger.open_claim`): ``claim`` says what it
    would send; :meth:`commit` claims it, :meth:`rollback` forgets it. Either, once, from any thread."""

    def __init__(self, claim: Claim, run: RunRef, transaction: ExitStack) -> None:
        self.claim = claim
        self._run = run
        self._transaction = transaction

    def commit(self) -> Claim:
        """Commit the claim (its outcome rows counted per day first, as every ledger write does)."""
        self._transaction.close()
        _log_claim(self.claim, self._run, dry_run=False)
        return self.claim

    def rollback(self) -> None:
        self._transaction.__exit__(_Abandoned, _Abandoned(), None)


def _log_claim(claim: Claim, run: RunRef, *, dry_run: bool) -> None:
    log.info(
        "Ledger %s %s for %s: %d to send, %d skipped, %d uncertain, %d duplicate(s)",
        "preview" if dry_run else "claim",
        claim.batch_id,
        run.run_key,
        len(claim.to_send),
        len(claim.skipped),
        len(claim.uncertain),
        claim.duplicates,
    )


#: The columns of an `UncertainContact`, in its fields' order.
_UNCERTAIN_COLUMNS = (
    _C.contact_key,
    _C.contact_hash,
    _C.launch_marker,
    _C.claimed_at,
    _C.claim_run_key,
    _C.claim_try_number,
    _C.batch_id,
    _C.delivery_mode,
    _C.updated_at,
    _C.created_at,
    _C.checked_at,
)
#: `UncertainContact.turn` in SQL: the later of ``checked_at`` and ``updated_at`` (NULL: never checked).
_TURN = sa.case((_C.checked_at > _C.updated_at, _C.checked_at), else_=_C.updated_at)
_UNCERTAIN = (ContactStatus.UNCERTAIN.value,)
#: The scenario's standing (`Ledger.standing`): each count's name and the status it counts.
STANDING = {
    "uncertain": ContactStatus.UNCERTAIN.value,
    "failed": ContactStatus.FAILED.value,
    "stale_sending": ContactStatus.SENDING.value,
}


def _open_in(scope: Scope) -> tuple[sa.ColumnElement[bool], ...]:
    """The scope's contacts not launched (`open_in`)."""
    return open_in(scope.platform, scope.scenario_id)


def _unchanged(contact: UncertainContact) -> tuple[sa.ColumnElement[bool], ...]:
    """The contact's row, while still uncertain from the claim it was read with."""
    return (
        _C.contact_hash == contact.contact_hash,
        _C.status == ContactStatus.UNCERTAIN.value,
        _C.batch_id == contact.batch_id,
    )


def _uncertain(rows: Iterable[sa.Row[Any]]) -> list[UncertainContact]:
    """The ``uncertain`` ones of `_contacts_of`'s rows, the longest waiting first (as `_TURN` sorts)."""
    found = [UncertainContact(*row[:-1]) for row in rows if row.status == ContactStatus.UNCERTAIN.value]
    return sorted(found, key=lambda c: (c.turn, c.contact_hash))


def _shared_tasks(conn: Connection, scope: Scope, task_ids: set[str]) -> set[str]:
    """Which of ``task_ids`` are recorded for more than one claim on the scope's platform (Altcraft answered
    one task id for two requests)."""
    shared: set[str] = set()
    for _, condition in matching(conn, _T.task_id, task_ids):
        query = (
            sa.select(_T.task_id)
            .where(condition, _T.platform == scope.platform)
            .group_by(_T.task_id)
            .having(sa.func.count() > 1)
        )
        shared.update(conn.execute(query).scalars())
    return shared


def _sender(conn: Connection, contact: UncertainContact) -> tuple[RunRef, RowMapping | None]:
    """The try that sent the contact's latest claim, with the window it sent it for, and the ``uncertain``
    outcome that try recorded for it: None when it recorded none (it died and another run's claim found its
    claim stale; that run's own ``uncertain`` outcome, like those of tries that met the contact uncertain
    later, says what that try saw and is not the sender's)."""
    dag_id, task_id, run_id = contact.claim_run_key.split("/", 2)  # ids hold no "/", a run id may
    sent_by = (dag_id, task_id, run_id, contact.claim_try_number)
    query = (
        sa.select(_O.id, _O.window_key, _O.dag_id, _O.task_id, _O.run_id, _O.try_number, _O.recorded_at)
        .where(_O.outcome == Outcome.UNCERTAIN.value, _O.recorded_at >= contact.claimed_at)
        .order_by(_O.id)
    )
    # the contact's few uncertain outcomes since the claim, searched in its index (not in the run's, which
    # holds every outcome of the run), the sender's picked here
    found = contact_outcome_rows(conn, {contact.contact_hash: contact.created_at}, query)
    row = next((o._mapping for o in found if (o.dag_id, o.task_id, o.run_id, o.try_number) == sent_by), None)
    # no outcome of its own: the window of the run's other outcomes, else none (the run key, as RunRef.create)
    same_run = (_O.dag_id == dag_id, _O.run_id == run_id, _O.task_id == task_id)
    window = (
        row.window_key if row else conn.execute(sa.select(_O.window_key).where(*same_run).limit(1)).scalar()
    )
    return RunRef(dag_id, task_id, run_id, contact.claim_try_number, window or contact.claim_run_key), row


def _record_verdict(
    conn: Connection,
    scope: Scope,
    sender: RunRef,
    contact: UncertainContact,
    resolution: Resolution,
    at: datetime,
) -> None:
    """Record the verdict as an outcome of the try that sent the contact, which recorded none for it."""
    source_key = conn.execute(
        sa.select(_C.source_key).where(_C.contact_hash == contact.contact_hash)
    ).scalar_one()
    entry = (
        contact.contact_key,
        contact.contact_hash,
        source_key,
        None,
        resolution.reason,
        resolution.profile_id,
        contact.created_at,
    )
    insert_outcomes(conn, scope, sender, resolution.outcome, at, [entry])


def _rewrite_outcome(conn: Connection, scope: Scope, row: RowMapping, resolution: Resolution) -> None:
    """Turn the ``uncertain`` outcome ``row`` into the verdict; its day's counts move with it."""
    statement = (
        sa.update(outcomes_table)
        .where(_O.id == row.id, _O.outcome == Outcome.UNCERTAIN.value)
        .values(outcome=resolution.outcome.value, reason=resolution.reason, profile_id=resolution.profile_id)
    )
    if conn.execute(statement).rowcount:
        days, at = tally(conn), row.recorded_at
        for outcome, n in ((Outcome.UNCERTAIN, -1), (resolution.outcome, 1)):
            days.add(scope.platform, scope.scenario_id, row.dag_id, row.task_id, outcome.value, at, n)
