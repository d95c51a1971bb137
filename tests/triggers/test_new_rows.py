"""NewRowsTrigger without a triggerer: real tables and the webhook store, state in a store like Airflow's.

The triggerer injects ``asset_state_store`` (async accessors over the metadata database); the test gives
an in-memory one with the same JSON-only contract, and runs the trigger's own ``run()`` generator.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from altcraft.pipelines.events import SEEN_KEY, WATERMARK_KEY, advanced_watermark
from altcraft.sources.base import MemoryStateStore
from altcraft.sources.webhook import POSITIONS_KEY, WebhookSource
from altcraft.sources.webhook import STATE_KEY as WEBHOOK_KEY
from altcraft.triggers.new_rows import REFIRE_AFTER, NewRowsTrigger
from altcraft.webhooks.store import WebhookStore

DATABASES = {
    "sqlite": None,
    "postgresql": (
        "postgresql://postgres@127.0.0.1:5432/test",
        "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
    ),
    "mysql": ("mysql://root@127.0.0.1:3306/test", "mysql+mysqldb://root@127.0.0.1:3306/test"),
}


class AsyncStore(MemoryStateStore):
    """`MemoryStateStore` with the triggerer's async accessors."""

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.set(key, value)


@pytest.fixture(params=list(DATABASES))
def crm(request, tmp_path, monkeypatch):
    """A contacts table on each database, known to Airflow as connection ``trigger_crm``."""
    if request.param == "sqlite":
        uri = sa_uri = f"sqlite:///{tmp_path / 'crm.db'}"
    else:
        uri, sa_uri = DATABASES[request.param]
    monkeypatch.setenv("AIRFLOW_CONN_TRIGGER_CRM", uri)
    engine = sa.create_engine(sa_uri)
    table = f"trig_{hashlib.sha1(request.node.name.encode()).hexdigest()[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, email VARCHAR(100), created_at TIMESTAMP)"
        )
    yield engine, table
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    engine.dispose()


def insert(engine: sa.Engine, table: str, first: int, count: int, at: datetime) -> None:
    rows = [
        {"id": i, "email": f"c{i}@example.com", "created_at": at.replace(tzinfo=None)}
        for i in range(first, first + count)
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO {table} (id, email, created_at) VALUES (:id, :email, :created_at)"), rows
        )


def table_trigger(table: str) -> NewRowsTrigger:
    source = {
        "type": "sql_table",
        "conn_id": "trigger_crm",
        "table": table,
        "key_column": "id",
        "created_at_column": "created_at",
    }
    return NewRowsTrigger(pipeline="p", source=source, poll_interval=0.01)


async def events_of(trigger: NewRowsTrigger, store: AsyncStore, polls: int) -> list[dict[str, Any]]:
    """Run the trigger's ``run()`` until it probed ``polls`` times; what it fired meanwhile."""
    trigger.asset_state_store = store
    fired: list[dict[str, Any]] = []
    probes = events = 0
    poll_once = trigger.poll_once

    async def counted(*args: Any) -> Any:  # observes the trigger's own probe, whatever it returns or raises
        nonlocal probes, events
        try:
            event = await poll_once(*args)
            events += event is not None
            return event
        finally:
            probes += 1

    trigger.poll_once = counted  # type: ignore[method-assign]

    async def consume() -> None:
        async for event in trigger.run():
            fired.append(event.payload)

    task = asyncio.create_task(consume())
    deadline = asyncio.get_running_loop().time() + 60
    # until the probes ran and each event they returned was fired (run() yields it a few steps later)
    while (probes < polls or len(fired) < events) and not task.done():
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert probes >= polls, f"only {probes} probes in 60 s"
    return fired


def test_fires_once_per_change_and_a_restarted_trigger_does_not_refire(crm):
    engine, table = crm
    store = AsyncStore()
    now = datetime.now(UTC)
    store.set(WATERMARK_KEY, (now - timedelta(minutes=5)).isoformat())
    insert(engine, table, 1, 3, now - timedelta(hours=1))  # before the watermark: not new
    assert asyncio.run(events_of(table_trigger(table), store, polls=3)) == []

    insert(engine, table, 10, 4, now)
    fired = asyncio.run(events_of(table_trigger(table), store, polls=5))
    assert len(fired) == 1, fired
    assert fired[0]["fingerprint"]["count"] == 4 and fired[0]["pipeline"] == "p"
    assert store.get(SEEN_KEY) == {**fired[0]["fingerprint"], "fired_at": fired[0]["detected_at"]}
    # a new trigger instance (a restarted triggerer) reads what was fired from the store
    assert asyncio.run(events_of(table_trigger(table), store, polls=3)) == []
    # the same rows, still not handled long after they were fired for (a lost event, a failed run): again
    store.set(
        SEEN_KEY, {**store.get(SEEN_KEY), "fired_at": (now - timedelta(seconds=REFIRE_AFTER + 1)).isoformat()}
    )
    assert [
        e["fingerprint"]["count"] for e in asyncio.run(events_of(table_trigger(table), store, polls=3))
    ] == [4]

    insert(engine, table, 20, 1, now)  # more rows while the run has not moved the watermark
    assert [
        e["fingerprint"]["count"] for e in asyncio.run(events_of(table_trigger(table), store, polls=3))
    ] == [5]

    # the run handled [watermark, now): the watermark moves past the rows, nothing is new any more
    store.set(
        WATERMARK_KEY,
        advanced_watermark(store.get(WATERMARK_KEY), now - timedelta(minutes=5), now + timedelta(seconds=1)),
    )
    assert asyncio.run(events_of(table_trigger(table), store, polls=3)) == []


def sqlite_crm(tmp_path, monkeypatch) -> sa.Engine:
    """An empty ``contacts`` table in a SQLite file that the connection ``trigger_crm`` names."""
    monkeypatch.setenv("AIRFLOW_CONN_TRIGGER_CRM", f"sqlite:///{tmp_path / 'crm.db'}")
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT, created_at TIMESTAMP)"
        )
    return engine


def test_first_start_sets_the_watermark_and_ignores_older_rows(tmp_path, monkeypatch):
    engine = sqlite_crm(tmp_path, monkeypatch)
    insert(engine, "contacts", 1, 2, datetime.now(UTC) - timedelta(minutes=1))
    store = AsyncStore()
    assert asyncio.run(events_of(table_trigger("contacts"), store, polls=2)) == []
    assert datetime.fromisoformat(store.get(WATERMARK_KEY)) > datetime.now(UTC) - timedelta(minutes=1)


def test_a_failing_probe_is_logged_and_polling_goes_on(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("AIRFLOW_CONN_TRIGGER_CRM", f"sqlite:///{tmp_path / 'crm.db'}")  # no such table
    store = AsyncStore()
    store.set(WATERMARK_KEY, datetime.now(UTC).isoformat())
    assert asyncio.run(events_of(table_trigger("missing"), store, polls=3)) == []
    out, err = capfd.readouterr()
    assert (out + err).count("Probe of p failed") >= 2  # logged at every failed poll, and polling went on


def test_a_probe_error_quoting_a_row_is_logged_masked(monkeypatch, capfd):
    """PostgreSQL quotes the value a query could not cast; the trigger's log masks it."""
    uri, sa_uri = DATABASES["postgresql"]
    monkeypatch.setenv("AIRFLOW_CONN_TRIGGER_CRM", uri)
    engine = sa.create_engine(sa_uri)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS trig_cast")
        conn.exec_driver_sql("CREATE TABLE trig_cast (id INTEGER, email TEXT, created_at TIMESTAMPTZ)")
    insert(engine, "trig_cast", 1, 1, datetime.now(UTC))
    sql = (
        "SELECT id, email FROM trig_cast WHERE CAST(email AS integer) > 0 AND "
        "created_at >= CAST(:window_start AS timestamptz) AND created_at < CAST(:window_end AS timestamptz)"
    )
    source = {"type": "sql_query", "conn_id": "trigger_crm", "sql": sql, "key_column": "id"}
    store = AsyncStore()
    store.set(WATERMARK_KEY, (datetime.now(UTC) - timedelta(minutes=1)).isoformat())
    try:
        trigger = NewRowsTrigger(pipeline="p", source=source, poll_interval=0.01)
        assert asyncio.run(events_of(trigger, store, polls=2)) == []
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE trig_cast")
        engine.dispose()
    out, err = capfd.readouterr()
    assert "Probe of p failed" in out + err and "c***@e***.com" in out + err
    assert "c1@example.com" not in out + err


def test_webhook_deliveries_past_the_run_position(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_HOOK_LEDGER", f"sqlite:///{tmp_path / 'ledger.db'}")
    webhooks = WebhookStore.from_conn_id("hook_ledger")
    source = {"type": "webhook", "key_column": "email", "endpoint": "p", "ledger_conn_id": "hook_ledger"}
    trigger = lambda: NewRowsTrigger(pipeline="p", source=source, poll_interval=0.01)  # ruff: ignore[lambda-assignment]
    store = AsyncStore()
    assert asyncio.run(events_of(trigger(), store, polls=2)) == []
    for index in range(3):
        webhooks.put(
            "p", f"k{index}", "hmac", [{"email": f"c{index}@example.com"}, {"email": f"d{index}@example.com"}]
        )
    webhooks.put("other", "k0", "hmac", [{"email": "x@example.com"}])
    fired = asyncio.run(events_of(trigger(), store, polls=3))
    assert [e["fingerprint"]["count"] for e in fired] == [6]
    store.set(WEBHOOK_KEY, int(fired[0]["fingerprint"]["newest"]))  # a run handled them
    assert asyncio.run(events_of(trigger(), store, polls=2)) == []


def run_webhook(state: AsyncStore, conn_id: str) -> list[str]:
    """A run of webhook pipeline ``p``: the emails it read, its position committed."""
    source = WebhookSource("p", key_column="email", ledger_conn_id=conn_id, state=state)
    emails = [record["email"] for batch in source.batches(None, 10) for record in batch]
    source.commit()
    return emails


def webhook_fired(state: AsyncStore, conn_id: str) -> list[dict[str, Any]]:
    """What the watcher of webhook pipeline ``p`` fires in two probes."""
    source = {"type": "webhook", "key_column": "email", "endpoint": "p", "ledger_conn_id": conn_id}
    trigger = NewRowsTrigger(pipeline="p", source=source, poll_interval=0.01)
    return asyncio.run(events_of(trigger, state, polls=2))


def test_a_pipeline_moved_to_another_ledger_database_reads_and_fires_for_its_deliveries_there(
    tmp_path, monkeypatch
):
    """The position (the last delivery id a run handled) counts in one database's table: after
    ``ledger_conn_id`` changed, the new table's first deliveries, ids 1, 2, ..., were below it, so the runs
    and the trigger skipped them: answered 200, never launched. Moving back finds the old position."""
    for name in ("old", "new"):
        monkeypatch.setenv(f"AIRFLOW_CONN_HOOK_{name.upper()}", f"sqlite:///{tmp_path / name}.db")
    old, new = WebhookStore.from_conn_id("hook_old"), WebhookStore.from_conn_id("hook_new")
    for index in range(3):
        old.put("p", f"k{index}", "hmac", [{"email": f"c{index}@example.com"}])
    state = AsyncStore()
    run, fired = functools.partial(run_webhook, state), functools.partial(webhook_fired, state)

    assert run("hook_old") == ["c0@example.com", "c1@example.com", "c2@example.com"]
    new.put("p", "k9", "hmac", [{"email": "moved@example.com"}])
    assert [event["fingerprint"]["count"] for event in fired("hook_new")] == [1]
    assert run("hook_new") == ["moved@example.com"]
    assert fired("hook_new") == [] and run("hook_new") == []
    old.put("p", "k3", "hmac", [{"email": "back@example.com"}])
    assert [event["fingerprint"]["count"] for event in fired("hook_old")] == [1]  # the watcher restarted
    assert run("hook_old") == ["back@example.com"], "the old database's position is kept"


def test_a_connection_defined_anew_on_another_database_reads_and_fires_for_its_deliveries_there(
    tmp_path, monkeypatch
):
    """The same with the connection id kept and defined anew on every component (a ledger moved to another
    server): the positions were kept per connection id, so the new database's first deliveries were below
    the old one's position. A position an earlier version kept per connection id is still read."""

    def defined(name: str) -> WebhookStore:
        monkeypatch.setenv("AIRFLOW_CONN_HOOK_LEDGER", f"sqlite:///{tmp_path / name}.db")
        return WebhookStore.from_conn_id("hook_ledger")

    old = defined("old")
    for index in range(3):
        old.put("p", f"k{index}", "hmac", [{"email": f"c{index}@example.com"}])
    earlier = AsyncStore()  # as an earlier version left it, a run having handled the first two
    earlier.set(WEBHOOK_KEY, 2)
    earlier.set(POSITIONS_KEY, {"hook_ledger": 2})
    assert run_webhook(earlier, "hook_ledger") == ["c2@example.com"]
    state = AsyncStore()
    assert run_webhook(state, "hook_ledger") == ["c0@example.com", "c1@example.com", "c2@example.com"]
    new = defined("new")
    new.put("p", "k9", "hmac", [{"email": "moved@example.com"}])
    assert [event["fingerprint"]["count"] for event in webhook_fired(state, "hook_ledger")] == [1]
    assert run_webhook(state, "hook_ledger") == ["moved@example.com"]
    assert webhook_fired(state, "hook_ledger") == [] and run_webhook(state, "hook_ledger") == []
    for store in (old, new):
        store.engine.dispose()


def test_a_crm_webhook_pipeline_is_probed_over_one_connection(tmp_path, monkeypatch):
    """Each probe of a CRM preset fed by webhook (every 2 s) built a new store: a new engine, a new
    database connection and the table checks, left for the garbage collector to close."""
    monkeypatch.setenv("AIRFLOW_CONN_HOOK_LEDGER", f"sqlite:///{tmp_path / 'ledger.db'}")
    WebhookStore.from_conn_id("hook_ledger").put("p", "k0", "hubspot", [{"id": "7"}])
    source = {
        "type": "hubspot",
        "conn_id": "crm",
        "webhook": {"endpoint": "p", "ledger_conn_id": "hook_ledger"},
    }
    trigger = NewRowsTrigger(pipeline="p", source=source, poll_interval=0.01)
    connected: list[object] = []

    def count(dbapi_connection: object, record: object) -> None:
        connected.append(dbapi_connection)

    sa.event.listen(sa.pool.Pool, "connect", count)
    try:
        fired = asyncio.run(events_of(trigger, AsyncStore(), polls=20))
    finally:
        sa.event.remove(sa.pool.Pool, "connect", count)
    assert [event["fingerprint"]["count"] for event in fired] == [1]
    assert len(connected) == 1


def test_a_row_created_in_the_future_is_not_fired_for_at_every_run(crm):
    """A row whose creation time is ahead of now (a typo'd year, a clock ahead) is past every watermark an
    event run commits, but no run's window ``[watermark, now)`` reads it: the probe counted it, each run
    moved the watermark, the fingerprint changed, and the trigger fired again at every poll, run after
    run, until the row's time came. It counts what a run started now reads: ``[watermark, now)``."""
    engine, table = crm
    store = AsyncStore()
    now = datetime.now(UTC)
    store.set(WATERMARK_KEY, (now - timedelta(minutes=5)).isoformat())
    insert(engine, table, 1, 1, now + timedelta(days=400))
    fired = []
    for _ in range(3):  # a poll, then the event run handling [watermark, now)
        fired += asyncio.run(events_of(table_trigger(table), store, polls=2))
        start = datetime.fromisoformat(store.get(WATERMARK_KEY))
        store.set(WATERMARK_KEY, advanced_watermark(store.get(WATERMARK_KEY), start, datetime.now(UTC)))
    assert fired == []

    store.set(WATERMARK_KEY, (now - timedelta(minutes=5)).isoformat())  # (MySQL keeps whole seconds)
    insert(engine, table, 2, 1, now)  # beside it, a row of now is fired for, once
    assert [e["fingerprint"]["count"] for e in asyncio.run(events_of(table_trigger(table), store, 3))] == [1]


def test_a_query_row_created_in_the_future_is_not_fired_for(tmp_path, monkeypatch):
    """The same for ``sql_query``, whose probe counted the query's rows up to a day ahead of now."""
    engine = sqlite_crm(tmp_path, monkeypatch)
    now = datetime.now(UTC)
    insert(engine, "contacts", 1, 1, now + timedelta(hours=2))
    sql = (
        "SELECT id, email FROM contacts WHERE altcraft_instant(created_at) >= altcraft_instant(:window_start)"
        " AND altcraft_instant(created_at) < altcraft_instant(:window_end)"
    )
    source = {"type": "sql_query", "conn_id": "trigger_crm", "sql": sql, "key_column": "id"}
    store = AsyncStore()
    store.set(WATERMARK_KEY, (now - timedelta(minutes=5)).isoformat())
    trigger = lambda: NewRowsTrigger(pipeline="p", source=source, poll_interval=0.01)  # ruff: ignore[lambda-assignment]
    assert asyncio.run(events_of(trigger(), store, polls=2)) == []
    insert(engine, "contacts", 2, 1, now)
    assert [e["fingerprint"]["count"] for e in asyncio.run(events_of(trigger(), store, polls=2))] == [1]


def test_a_probe_that_does_not_answer_is_logged_until_it_does(monkeypatch, capfd):
    """A probe waiting on a lock (a migration holding the table) or on a dead connection blocked the
    trigger without a word: no event, no error, for as long as it waited. It is logged as an error every
    `SLOW_PROBE_AFTER` seconds it keeps waiting, no second probe is started beside it, and once it answers
    polling goes on and fires."""
    from altcraft.triggers import new_rows

    monkeypatch.setattr(new_rows, "SLOW_PROBE_AFTER", 0.3, raising=False)
    uri, sa_uri = DATABASES["postgresql"]
    monkeypatch.setenv("AIRFLOW_CONN_TRIGGER_CRM", uri)
    engine = sa.create_engine(sa_uri)
    table = f"trig_lock_{hashlib.sha1(str(datetime.now()).encode()).hexdigest()[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id INTEGER, email TEXT, created_at TIMESTAMP)")
    insert(engine, table, 1, 1, datetime.now(UTC))
    store = AsyncStore()
    store.set(WATERMARK_KEY, (datetime.now(UTC) - timedelta(minutes=1)).isoformat())
    trigger = table_trigger(table)
    trigger.asset_state_store = store

    async def watch() -> list[dict[str, Any]]:
        fired: list[dict[str, Any]] = []

        async def consume() -> None:
            async for event in trigger.run():
                fired.append(event.payload)

        locker = engine.connect()
        locker.begin()
        locker.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        task = asyncio.create_task(consume())
        try:
            await asyncio.sleep(1.5)
            assert fired == []
            locker.rollback()
            for _ in range(100):
                if fired:
                    break
                await asyncio.sleep(0.05)
        finally:
            locker.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return fired

    try:
        fired = asyncio.run(watch())
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {table}")
        engine.dispose()
    out, err = capfd.readouterr()
    assert (out + err).count("Probe of p has not answered for") >= 2, out + err
    assert [e["fingerprint"]["count"] for e in fired] == [1]


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_a_probe_past_its_timeout_fails_naming_it_and_polling_goes_on(dialect, monkeypatch, capfd):
    """A probe query that did not answer was waited on forever, holding its connection. The database cancels
    it after the probe's timeout (`PROBE_TIMEOUT`, here 0.5 s): an error naming the source and the timeout,
    and the next poll probes again."""
    from altcraft.sources.sql import SqlQuerySource

    monkeypatch.setattr(SqlQuerySource, "probe_timeout", 0.5)
    monkeypatch.setenv("AIRFLOW_CONN_TRIGGER_CRM", DATABASES[dialect][0])
    sleep = "pg_sleep(10)" if dialect == "postgresql" else "SLEEP(10)"
    sql = f"SELECT 1 AS id FROM (SELECT {sleep} AS slept) AS slow WHERE :window_start < :window_end"
    source = {"type": "sql_query", "conn_id": "trigger_crm", "sql": sql, "key_column": "id"}
    store = AsyncStore()
    store.set(WATERMARK_KEY, datetime.now(UTC).isoformat())

    trigger = NewRowsTrigger(pipeline="p", source=source, poll_interval=0.01)
    assert asyncio.run(events_of(trigger, store, polls=3)) == []  # the third's error may go unlogged

    out, err = capfd.readouterr()
    timed_out = "Probe of p failed, next try in 0.01s: sql_query on connection 'trigger_crm'"
    assert (out + err).count(timed_out) >= 2, out + err
    assert "probe: no answer within 0.5s: the database cancelled the query (statement timeout)" in out + err


def test_rows_fired_for_again_say_why(tmp_path, monkeypatch, capfd):
    """Rows a run did not move past were fired for again every `REFIRE_AFTER` seconds, each time logged as
    plain "New rows": nothing told a reader of the triggerer log that the same rows kept coming back."""
    engine = sqlite_crm(tmp_path, monkeypatch)
    now = datetime.now(UTC)
    insert(engine, "contacts", 1, 2, now - timedelta(minutes=1))
    store = AsyncStore()
    store.set(WATERMARK_KEY, (now - timedelta(minutes=5)).isoformat())
    assert len(asyncio.run(events_of(table_trigger("contacts"), store, polls=2))) == 1
    assert "firing again" not in "".join(capfd.readouterr())
    old = (now - timedelta(seconds=REFIRE_AFTER + 1)).isoformat()
    store.set(SEEN_KEY, {**store.get(SEEN_KEY), "fired_at": old})  # the run failed: the watermark stayed
    assert len(asyncio.run(events_of(table_trigger("contacts"), store, polls=2))) == 1
    out, err = capfd.readouterr()
    assert f"2 row(s) of p still past position {store.get(WATERMARK_KEY)} since the last event" in out + err
    assert f"at {old}" in out + err and "firing again" in out + err
