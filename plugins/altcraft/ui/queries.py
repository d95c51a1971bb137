"""Read-only SQL over the sync ledger for the Altcraft UI pages (no Airflow import).

Every function takes an open SQLAlchemy ``Connection`` and only reads. Outcomes are grouped by their
``outcome`` text, not by a fixed list, so a new outcome or counter (e.g. contacts settled on behalf of
an earlier try) shows up as its own column without changing these queries. The indexes they rely on
are declared with the tables in :mod:`altcraft.ledger` (see ``docs/ui.md``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from altcraft.ledger import Scope, activity_table, contacts_table, outcomes_table
from altcraft.ledger.rules import STALE_AFTER, stale_before
from altcraft.ledger.schema import NOT_LAUNCHED
from altcraft.ledger.statements import as_date, contact_outcome_rows, database_now

_C = contacts_table.c
_O = outcomes_table.c
_D = activity_table.c
#: Recording order, written as an expression: ``ORDER BY id LIMIT n`` would tempt the planner to walk the
#: primary key through the whole table looking for one run's rows (appended last, they are found last);
#: ``id + 0`` makes it fetch the run's rows through ``ix_altcraft_outcomes_run`` and sort those.
_RECORDED_ORDER = _O.id + 0
#: Contact states a person should look at: not (yet) launched and not resent automatically.
OPEN_STATUSES = ("uncertain", "failed", "sending")
#: How `open_contacts` and `sending_in_run` count ``sending`` contacts whose claim is stale (`stale_count`).
STALE_SENDING = "stale_sending"
#: The order of the well-known outcomes in tables and charts; others follow alphabetically.
OUTCOME_ORDER = ("launched", "skipped", "rejected", "failed", "uncertain")


def ordered_outcomes(names: Collection[str]) -> list[str]:
    known = [name for name in OUTCOME_ORDER if name in names]
    return known + sorted(set(names) - set(OUTCOME_ORDER))


@dataclass
class ScopeActivity:
    """One scope (platform + scenario) with the pipelines (DAGs) that fed it."""

    platform: str
    scenario_id: int
    dag_ids: set[str] = field(default_factory=set)
    last_24h: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_30d: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: day → outcome → count, for the trend chart (days without outcomes are absent)
    per_day: dict[date, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    #: status → count; ``sending`` only those of a claim in flight, `STALE_SENDING` those of a stale one
    open_contacts: dict[str, int] = field(default_factory=dict)
    last_recorded_at: datetime | None = None

    @property
    def key(self) -> tuple[str, int]:
        return self.platform, self.scenario_id

    def trend(self, days: int, today: date) -> list[tuple[date, dict[str, int]]]:
        """``days`` consecutive days ending ``today``, each with its outcome counts (zeros filled in)."""
        start = today - timedelta(days=days - 1)
        return [(day, dict(self.per_day.get(day, {}))) for day in (start + timedelta(n) for n in range(days))]


def _as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def claim_dag(claim_run_key: str) -> str:
    """The DAG of a contact's latest claim (its ``claim_run_key`` is ``dag_id/task_id/run_id``)."""
    return claim_run_key.partition("/")[0]


def _dag_filter(dag_ids: Collection[str] | None) -> Any:
    """``dag_id IN (…)`` for a user who may read only some DAGs; no condition when ``None`` (all)."""
    return sa.true() if dag_ids is None else _O.dag_id.in_(sorted(dag_ids))


#: (platform, scenario_id, dag_id, UTC day, outcome, count, latest recorded_at)
DayRow = tuple[str, int, str, date, str, int, datetime | None]
#: (platform, scenario_id, dag_id, outcome, count)
RecentRow = tuple[str, int, str, str, int]


def days(conn: Connection, first: date) -> list[DayRow]:
    """Outcome counts per scope, pipeline, UTC day and outcome from day ``first`` on.

    Read from ``altcraft_outcome_days``, which the ledger keeps equal to counting the outcome rows
    (reconciliation's rewrites of earlier days included): a few rows per pipeline, partition and day,
    which callers add up (a key may come in several rows).
    """
    query = sa.select(
        _D.platform, _D.scenario_id, _D.dag_id, _D.day, _D.outcome, _D.outcome_count, _D.last_recorded_at
    ).where(_D.day >= first, _D.outcome_count != 0)
    return [
        (platform, int(scenario_id), dag_id, as_date(on), outcome, int(count), _as_utc(last))
        for platform, scenario_id, dag_id, on, outcome, count, last in conn.execute(query)
    ]


def recent(conn: Connection, since: datetime) -> list[RecentRow]:
    """Outcome counts per scope, pipeline and outcome recorded since ``since`` (the last 24 hours).

    Reads only columns of ``ix_altcraft_outcomes_activity`` (recorded_at first): an index-only range scan
    where the database can do one (PostgreSQL on vacuumed pages, InnoDB), no table rows.
    """
    keys = (_O.platform, _O.scenario_id, _O.dag_id, _O.outcome)
    query = sa.select(*keys, sa.func.count()).where(_O.recorded_at >= since).group_by(*keys)
    return [
        (platform, int(scenario_id), dag_id, outcome, int(count))
        for platform, scenario_id, dag_id, outcome, count in conn.execute(query)
    ]


def pipelines(
    conn: Connection, now: datetime, dag_ids: Collection[str] | None = None, trend_days: int = 30
) -> list[ScopeActivity]:
    """Every scope with outcomes in the last ``trend_days`` UTC days (today included) or with contacts
    still open, however old (``sending`` ones of a stale claim, by the ledger's clock, as `STALE_SENDING`).
    ``dag_ids``: only outcomes of these DAGs (those the user may read), and only open contacts that one of
    them claimed last; ``None``: all."""
    if dag_ids is not None and not dag_ids:
        return []
    scopes: dict[tuple[str, int], ScopeActivity] = {}

    def fed(platform: str, scenario_id: int, dag_id: str) -> ScopeActivity | None:
        """The scope fed by this DAG (created on first sight), or None if the user may not read it."""
        if dag_ids is not None and dag_id not in dag_ids:
            return None
        activity = scopes.setdefault((platform, scenario_id), ScopeActivity(platform, scenario_id))
        activity.dag_ids.add(dag_id)
        return activity

    first = now.date() - timedelta(days=trend_days - 1)
    for platform, scenario_id, dag_id, day, outcome, count, last in days(conn, first):
        if (activity := fed(platform, scenario_id, dag_id)) is None:
            continue
        activity.last_30d[outcome] += count
        activity.per_day[day][outcome] += count
        if last is not None and (activity.last_recorded_at is None or last > activity.last_recorded_at):
            activity.last_recorded_at = last
    for platform, scenario_id, dag_id, outcome, count in recent(conn, now - timedelta(hours=24)):
        if (activity := fed(platform, scenario_id, dag_id)) is not None:
            activity.last_24h[outcome] += count
    group = (_C.platform, _C.scenario_id, _C.claim_run_key, _C.status)
    open_rows = (
        sa.select(*group, sa.func.count(), stale_count(conn))
        .where(_C.status.in_(OPEN_STATUSES), NOT_LAUNCHED)
        .group_by(*group)
    )
    for platform, scenario_id, claim_run_key, status, count, stale in conn.execute(open_rows):
        if (activity := fed(platform, int(scenario_id), claim_dag(claim_run_key))) is not None:
            for name, n in ((status, count - int(stale)), (STALE_SENDING, int(stale))):
                if n:
                    activity.open_contacts[name] = activity.open_contacts.get(name, 0) + n
    return sorted(scopes.values(), key=lambda s: (s.platform, s.scenario_id))


def stale_count(conn: Connection) -> sa.ColumnElement[int]:
    """How many of the rows counted are ``sending`` by a stale claim: one the ledger's ``stale_after`` old
    by its clock (`stale_before`), which its try never settled (it died), as the scenario's standing counts
    them (``stale_sending``); a reconciling run settles them."""
    cutoff = stale_before(database_now(conn), STALE_AFTER)
    stale = sa.and_(_C.status == "sending", _C.claimed_at <= cutoff)
    return sa.func.coalesce(sa.func.sum(sa.case((stale, 1), else_=0)), 0)


@dataclass(frozen=True)
class TryCounts:
    """Outcome counts of one task try (one partition = one map index)."""

    task_id: str
    try_number: int
    platform: str
    scenario_id: int
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def run_counts(conn: Connection, dag_id: str, run_id: str) -> list[TryCounts]:
    """Outcome counts of a DAG run per task (partition) and try, in task then try order."""
    query = (
        sa.select(_O.task_id, _O.try_number, _O.platform, _O.scenario_id, _O.outcome, sa.func.count())
        .where(_O.dag_id == dag_id, _O.run_id == run_id)
        .group_by(_O.task_id, _O.try_number, _O.platform, _O.scenario_id, _O.outcome)
    )
    grouped: dict[tuple[str, int, str, int], dict[str, int]] = defaultdict(dict)
    for task_id, try_number, platform, scenario_id, outcome, count in conn.execute(query):
        grouped[task_id, try_number, platform, int(scenario_id)][outcome] = count
    return [
        TryCounts(task_id, try_number, platform, scenario_id, counts)
        for (task_id, try_number, platform, scenario_id), counts in sorted(grouped.items(), key=_try_order)
    ]


def _try_order(item: tuple[tuple[str, int, str, int], Any]) -> tuple[Any, ...]:
    """Partitions in map-index order (``task[2]`` before ``task[10]``), then tries, then scopes."""
    task_id, try_number, platform, scenario_id = item[0]
    name, _, index = task_id.partition("[")
    number = index.rstrip("]")
    return name, int(number) if number.isdigit() else -1, try_number, platform, scenario_id


def latest_counts(tries: Sequence[TryCounts]) -> dict[str, int]:
    """A run's counts: each partition's latest try, added up (earlier tries were retried over)."""
    latest: dict[str, TryCounts] = {}
    for entry in tries:
        if entry.task_id not in latest or entry.try_number > latest[entry.task_id].try_number:
            latest[entry.task_id] = entry
    total: dict[str, int] = defaultdict(int)
    for entry in latest.values():
        for outcome, count in entry.counts.items():
            total[outcome] += count
    return dict(total)


def run_totals(conn: Connection, runs: Collection[tuple[str, str]]) -> dict[tuple[str, str], dict[str, int]]:
    """`latest_counts` of several (dag_id, run_id) at once (the last run of each pipeline)."""
    return {(dag_id, run_id): latest_counts(run_counts(conn, dag_id, run_id)) for dag_id, run_id in runs}


def _run_rows(
    dag_id: str, run_id: str, outcome: str | None, task_id: str | None, try_number: int | None
) -> Any:
    conditions = [_O.dag_id == dag_id, _O.run_id == run_id]
    if outcome:
        conditions.append(_O.outcome == outcome)
    if task_id:
        conditions.append(_O.task_id == task_id)
    if try_number is not None:
        conditions.append(_O.try_number == try_number)
    return sa.and_(*conditions)


#: What the contact page shows of a contact's row (and finds its outcomes and its DAG by): named, not the
#: whole table, so a page still reads a ledger no task of this version has upgraded yet (a column added since,
#: such as ``checked_at``, is not there until one does).
CONTACT_COLUMNS = (
    _C.contact_hash, _C.platform, _C.scenario_id, _C.contact_key, _C.status, _C.source_key, _C.launch_count,
    _C.first_launched_at, _C.last_launched_at, _C.claim_run_key, _C.claim_try_number, _C.claimed_at,
    _C.error_code, _C.error_text, _C.updated_at, _C.created_at,
)  # fmt: skip
OUTCOME_COLUMNS = (
    _O.id, _O.task_id, _O.try_number, _O.outcome, _O.code, _O.reason, _O.source_key,
    _O.contact_key, _O.contact_hash, _O.profile_id, _O.recorded_at, _O.platform, _O.scenario_id,
)  # fmt: skip


def run_outcomes(
    conn: Connection,
    dag_id: str,
    run_id: str,
    *,
    outcome: str | None = None,
    task_id: str | None = None,
    try_number: int | None = None,
    offset: int = 0,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """One page of a run's per-contact outcomes, in the order they were recorded."""
    query = (
        sa.select(*OUTCOME_COLUMNS)
        .where(_run_rows(dag_id, run_id, outcome, task_id, try_number))
        .order_by(_RECORDED_ORDER)
        .offset(offset)
        .limit(limit)
    )
    return [dict(row) for row in conn.execute(query).mappings()]


def iter_run_outcomes(
    conn: Connection, dag_id: str, run_id: str, *, outcome: str | None = None, chunk: int = 5000
) -> Iterator[dict[str, Any]]:
    """Every outcome of a run (CSV export), in recording order: one query streamed through a server-side
    cursor, ``chunk`` rows at a time, so memory stays flat and each row is read once (pages of
    ``id > last`` read the rest of the run again for each page: 18 s for a run of 400,000 rows)."""
    query = (
        sa.select(*OUTCOME_COLUMNS)
        .where(_run_rows(dag_id, run_id, outcome, None, None))
        .order_by(_RECORDED_ORDER)
        .execution_options(yield_per=chunk)
    )
    with conn.execute(query) as result:
        for row in result.mappings():
            yield dict(row)


def scopes(conn: Connection) -> list[tuple[str, int]]:
    """Every scope that has outcomes (for a lookup across scenarios).

    Read from ``altcraft_outcome_days``, which counts the outcome rows per scope and day (purged with them):
    a few rows per pipeline and day, where ``DISTINCT`` over the outcomes read the whole table per search.
    """
    query = sa.select(_D.platform, _D.scenario_id).distinct()
    return sorted((platform, int(scenario_id)) for platform, scenario_id in conn.execute(query))


@dataclass
class ContactRecord:
    """A contact in one scope: its ledger row (None if it was never claimed) and its outcomes."""

    platform: str
    scenario_id: int
    contact_key: str
    contact_hash: str
    row: dict[str, Any] | None
    outcomes: list[dict[str, Any]]
    #: the ledger row is left out: its latest claim (state, source key, error) is of a DAG the user cannot see
    row_hidden: bool = False


def contact_history(
    conn: Connection,
    keys: Sequence[str],
    scope_list: Sequence[tuple[str, int]],
    dag_ids: Collection[str] | None,
) -> list[ContactRecord]:
    """Every scope's record of these ledger keys (the candidate normalisations of what was searched)."""
    wanted = {
        Scope(platform, scenario_id).contact_hash(key): (platform, scenario_id, key)
        for platform, scenario_id in scope_list
        for key in keys
    }
    return _histories(conn, wanted, dag_ids)


def _histories(
    conn: Connection, wanted: Mapping[str, tuple[str, int, str]], dag_ids: Collection[str] | None
) -> list[ContactRecord]:
    """`contact_history` of the contact rows ``wanted`` (hash -> platform, scenario, key)."""
    if not wanted:
        return []
    of_contacts = sa.select(*CONTACT_COLUMNS).where(_C.contact_hash.in_(list(wanted)))
    rows = {row["contact_hash"]: dict(row) for row in conn.execute(of_contacts).mappings()}
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    query = sa.select(*OUTCOME_COLUMNS, _O.dag_id, _O.run_id, _O.window_key).where(_dag_filter(dag_ids))
    origins = {found: rows[found]["created_at"] if found in rows else None for found in wanted}
    for row in contact_outcome_rows(conn, origins, query):
        history[row.contact_hash].append(dict(row._mapping))
    visible = {
        found: row
        for found, row in rows.items()
        if dag_ids is None or claim_dag(row["claim_run_key"]) in dag_ids
    }
    return [
        ContactRecord(
            *wanted[found],
            found,
            visible.get(found),
            history.get(found, []),
            found in rows and found not in visible,
        )
        for found in sorted(set(rows) | set(history), key=lambda h: wanted[h])
        if found in history or dag_ids is None
    ]


def contact_by_hash(conn: Connection, found: str, dag_ids: Collection[str] | None) -> list[ContactRecord]:
    """The contact with this ledger hash (a link from a run page), if the user may see one of its runs."""
    row = conn.execute(sa.select(*CONTACT_COLUMNS).where(_C.contact_hash == found)).mappings().first()
    if row is None:
        return []
    # by its hash: a row claimed under another key than its first (a combined-mode contact met by a later
    # key, a custom key found under its former form) has not the hash of the key it carries
    return _histories(conn, {found: (row["platform"], int(row["scenario_id"]), row["contact_key"])}, dag_ids)


#: Statuses of a run's contacts that a later run over its window may send (again): failed ones always,
#: uncertain ones when told to resend them or when reconciliation finds Altcraft never received them.
RESENDABLE = ("failed", "uncertain")


def _in_run(dag_id: str, run_id: str, hashes: Collection[str] | None = None) -> Any:
    """The distinct contact hashes with an outcome in the run (only among ``hashes`` if given)."""
    condition = _O.contact_hash.is_not(None) if hashes is None else _O.contact_hash.in_(sorted(hashes))
    return (
        sa.select(_O.contact_hash)
        .where(_O.dag_id == dag_id, _O.run_id == run_id, condition)
        .distinct()
        .subquery()
    )


def open_in_run(
    conn: Connection, dag_id: str, run_id: str, dag_ids: Collection[str] | None = None
) -> dict[str, int]:
    """Contacts of this run that are ``failed`` or ``uncertain`` now, counted by status. ``dag_ids``: only
    those whose latest claim is of one of these DAGs (those the user may read: another DAG's claim is its
    outcome, as on the Contact page); ``None``: all (who an action may reach)."""
    in_run = _in_run(dag_id, run_id)
    query = (
        sa.select(_C.status, _C.claim_run_key, sa.func.count())
        .select_from(contacts_table.join(in_run, in_run.c.contact_hash == _C.contact_hash))
        .where(_C.status.in_(RESENDABLE))
        .group_by(_C.status, _C.claim_run_key)
    )
    found: dict[str, int] = defaultdict(int)
    for status, claim_run_key, count in conn.execute(query):
        if dag_ids is None or claim_dag(claim_run_key) in dag_ids:
            found[status] += int(count)
    return dict(found)


def sending_in_run(conn: Connection, dag_id: str, run_id: str) -> dict[str, int]:
    """Contacts a try of this run claimed and has recorded no answer for (still ``sending``), as
    ``sending`` (the claim may be in flight: the try is still sending them, or it died) and `STALE_SENDING`
    (the claim is stale, `stale_count`: it died). They have no outcome row in the run until a retry, a later
    claim or, once the claim is stale, a reconciling run recovers them as uncertain. Found by their claim
    (``dag_id/task_id/run_id``) among the open contacts: ``LIKE`` finds the claims, each then compared
    exactly (SQLite's ``LIKE`` ignores case, and Airflow's ids do not: ``Welcome`` is another DAG)."""
    pattern = f"{_like_literal(dag_id)}/%/{_like_literal(run_id)}"
    query = (
        sa.select(_C.claim_run_key, sa.func.count(), stale_count(conn))
        .where(_C.status == "sending", NOT_LAUNCHED, _C.claim_run_key.like(pattern, escape="!"))
        .group_by(_C.claim_run_key)
    )
    found = {"sending": 0, STALE_SENDING: 0}
    for claim_run_key, count, stale in conn.execute(query):
        if _claim_run(claim_run_key) == (dag_id, run_id):
            found["sending"] += int(count) - int(stale)
            found[STALE_SENDING] += int(stale)
    return found


def _claim_run(claim_run_key: str) -> tuple[str, str]:
    """The DAG and run of a claim (``dag_id/task_id/run_id``; neither a DAG nor a task id holds ``/``)."""
    return claim_dag(claim_run_key), claim_run_key.partition("/")[2].partition("/")[2]


def _like_literal(text: str) -> str:
    """``text`` matched literally by ``LIKE … ESCAPE '!'`` (the same on every database, unlike ``\\``)."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def selected_contacts(conn: Connection, dag_id: str, run_id: str, hashes: Collection[str]) -> dict[str, str]:
    """Of these contact hashes, those that have an outcome in the run → their current ledger status."""
    if not hashes:
        return {}
    in_run = _in_run(dag_id, run_id, hashes)
    query = sa.select(_C.contact_hash, _C.status).join(in_run, in_run.c.contact_hash == _C.contact_hash)
    return {found: status for found, status in conn.execute(query)}


def last_uncertain_at(
    conn: Connection, dag_id: str, run_id: str, hashes: Collection[str] | None = None
) -> datetime | None:
    """When the latest of the run's contacts that are ``uncertain`` now (only among ``hashes`` if given)
    became uncertain (its ``updated_at``, what reconciliation's grace counts from); None: none is."""
    in_run = _in_run(dag_id, run_id, hashes)
    query = (
        sa.select(sa.func.max(_C.updated_at))
        .select_from(contacts_table.join(in_run, in_run.c.contact_hash == _C.contact_hash))
        .where(_C.status == "uncertain")
    )
    return _as_utc(conn.execute(query).scalar())
