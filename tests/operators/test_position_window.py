"""Runs of a source that ignores the window (a watermark) are told apart in the ledger by the stored position
they start from, not by their data interval; and a commit never moves a watermark back.

The operator runs outside ``dag.test()`` here, with the context Airflow gives a task (its task instance, the
asset state store), so that two runs can overlap: the first reads and launches, and its commit waits until
the second has read from the same watermark and committed. The source is PostgreSQL, the ledger PostgreSQL,
Altcraft the emulator.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowException, TaskDeferred

from altcraft.hooks.altcraft import AltcraftHook
from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator
from altcraft.pipelines.events import WATERMARK_KEY
from altcraft.pipelines.factory import SpecSource
from altcraft.sources.base import MemoryStateStore
from altcraft.sources.spec import SqlTableSpec
from altcraft.sources.sql import SqlTableSource, decode_watermark

from .conftest import PG_URL, launch_counts

STATE = Asset(name="position_runs_source", uri="altcraft-pipeline://position_runs/source")
EMAIL = {"matching": "email", "key": {"email": "email"}}
DAY = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def ledger_conn(monkeypatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_LEDGER_PG", PG_URL.replace("postgresql+psycopg2", "postgresql"))
    return "ledger_pg"


@pytest.fixture
def table(ledger_conn) -> Any:
    """A PostgreSQL table ``(id, email, seen)``; yields a function inserting or updating its rows."""
    name = f"position_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, email TEXT, seen TIMESTAMPTZ)")

    def write(rows: dict[int, datetime]) -> None:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"INSERT INTO {name} VALUES (:id, :email, :seen) "
                    "ON CONFLICT (id) DO UPDATE SET seen = excluded.seen"
                ),
                [{"id": i, "email": f"pos{i}@example.org", "seen": seen} for i, seen in rows.items()],
            )

    write.name = name  # type: ignore[attr-defined]
    yield write
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {name}")
    engine.dispose()


#: Airflow connection URIs of the ledgers a test of commits' order runs on; SQLite is a file of its own
LEDGER_URIS = {
    "postgresql": "postgresql://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql://root@127.0.0.1:3306/test",
}


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def any_ledger(request, monkeypatch, tmp_path, ledger_conn) -> str:
    """The id of a connection to a ledger on PostgreSQL, MariaDB or SQLite (the source stays on
    PostgreSQL, ``ledger_pg``)."""
    uri = LEDGER_URIS.get(request.param, f"sqlite:///{tmp_path / 'ledger.db'}")
    monkeypatch.setenv("AIRFLOW_CONN_POSITION_LEDGER", uri)
    return "position_ledger"


class HeldSet:
    """A run's view of the shared asset state store whose first write of ``key`` waits until ``released``:
    by then the run's commit has read the stored value it compares against (the point where a second
    run's commit can come between). A stand-in at Airflow's state store boundary, so that the test picks
    the moment; the store behind it is the `MemoryStateStore` both runs share."""

    def __init__(self, store: MemoryStateStore, key: str) -> None:
        self.store = store
        self.key = key
        self.setting = threading.Event()
        self.released = threading.Event()

    def get(self, key: str, default: Any = None) -> Any:
        return self.store.get(key, default)

    def set(self, key: str, value: Any) -> None:
        if key == self.key and not self.setting.is_set():
            self.setting.set()
            assert self.released.wait(120), "never released"
        self.store.set(key, value)


class HeldCommit:
    """A run's view of the shared asset state store whose commit waits until ``released``: the run's first
    look at the store after the one its read starts from, and its writes, come after another run's
    commit."""

    def __init__(self, store: MemoryStateStore) -> None:
        self.store = store
        self.looks = 0
        self.committing = threading.Event()
        self.released = threading.Event()

    def get(self, key: str, default: Any = None) -> Any:
        self.looks += 1
        if self.looks > 1:
            self._hold()
        return self.store.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self._hold()
        self.store.set(key, value)

    def _hold(self) -> None:
        self.committing.set()
        assert self.released.wait(120), "never released"


def task(
    scenario_id: int,
    ledger_conn: str,
    table: str,
    column: str,
    day: int,
    store: Any,
    *,
    triggered: bool = False,
    **options: Any,
) -> tuple[ImportAndLaunchScenarioOperator, dict[str, Any]]:
    """One scheduled run's ``import_and_launch`` of a daily pipeline over ``table`` by ``column``'s
    watermark, its data interval the ``day``-th day, under relaunch policy every_run; with its context.
    ``triggered``: the source a triggered pipeline's factory gives (`SpecSource`), which commits the window
    watermark after the source's."""
    source: Any = SqlTableSource("ledger_pg", table, key_column="id", watermark_column=column, lookback=None)
    if triggered:
        spec = {"type": "sql_table", "conn_id": "ledger_pg", "table": table, "key_column": "id"}
        spec["watermark_column"] = column
        source = SpecSource(SqlTableSpec.model_validate(spec), track_windows=True)
    operator = ImportAndLaunchScenarioOperator(
        task_id="import_and_launch",
        scenario_id=scenario_id,
        mapping=EMAIL,
        source=source,
        relaunch_policy="every_run",
        ledger_conn_id=ledger_conn,
        reconcile=False,
        window_start=DAY + timedelta(days=day),
        window_end=DAY + timedelta(days=day + 1),
        state_asset=STATE,
        outlets=[STATE],
        **options,
    )
    ti = SimpleNamespace(
        dag_id=f"position_runs_{table}",
        task_id="import_and_launch",
        run_id=f"scheduled__day{day}",
        try_number=1,
        map_index=-1,
        xcom_push=lambda key, value: None,
    )
    return operator, {"ti": ti, "asset_state_store": {STATE: store}, "task_state_store": MemoryStateStore()}


def run(
    scenario_id: int, ledger_conn: str, table: str, column: str, day: int, store: Any, **options: Any
) -> dict:
    """`task` run; its summary."""
    operator, context = task(scenario_id, ledger_conn, table, column, day, store, **options)
    return operator.execute(context)  # type: ignore[arg-type]


def test_overlapping_runs_from_one_watermark_launch_each_contact_once_and_the_watermark_never_moves_back(
    emulator, scenario_id, ledger_conn, table
):
    """Run 1 (day 1) reads rows 1-5 from no watermark and launches them; before it commits, run 2 (day 2)
    reads from the same (no) watermark rows 1-8 and commits 8; then run 1 commits 5. Main named each run's
    ledger window by its data interval, so under every_run run 2 launched rows 1-5 a second time; and run
    1's blind commit moved the watermark back to 5, so run 3 read rows 6-8 again and launched them a second
    time. Both runs now name their window by the position they start from, and a commit keeps the later
    watermark. (Run 1 is held within its commit, which now holds the position's lock: run 2's commit waits
    for it, and is let through once run 2 has waited 3 s.)"""
    table({i: DAY for i in range(1, 6)})
    shared = MemoryStateStore()
    held = HeldCommit(shared)
    first: dict = {}
    second: dict = {}
    thread = threading.Thread(
        target=lambda: first.update(run(scenario_id, ledger_conn, table.name, "id", 1, held))
    )
    other = threading.Thread(
        target=lambda: second.update(run(scenario_id, ledger_conn, table.name, "id", 2, shared))
    )
    thread.start()
    try:
        assert held.committing.wait(120), "run 1 never committed"
        table({i: DAY for i in range(6, 9)})
        other.start()
        other.join(3)  # main: run 2 committed meanwhile; now its commit waits for run 1's
    finally:
        held.released.set()
        thread.join(120)
        if other.ident is not None:
            other.join(120)
    assert (first["launched"], second["found"], second["launched"]) == (5, 8, 3)
    key = f"sql_table:.{table.name}.id:watermark"
    assert decode_watermark(shared.get(key), "UTC") == 8
    third = run(scenario_id, ledger_conn, table.name, "id", 3, shared)
    assert (third["found"], third["launched"]) == (0, 0)
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 8


def test_serial_runs_launch_again_a_row_whose_watermark_moved_up_under_every_run(
    emulator, scenario_id, ledger_conn, table
):
    """A watermark on a time column the rows update: each run starts from a new position, so a row read
    again because its time moved past the watermark is launched again under every_run, as before."""
    table({1: DAY, 2: DAY + timedelta(hours=1)})
    store = MemoryStateStore()
    assert run(scenario_id, ledger_conn, table.name, "seen", 1, store)["launched"] == 2
    table({1: DAY + timedelta(hours=2)})  # row 1 updated
    again = run(scenario_id, ledger_conn, table.name, "seen", 2, store)
    assert (again["found"], again["launched"]) == (1, 1)
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1, 2]


def test_a_deferred_runs_launches_count_for_the_position_it_started_from(
    emulator, scenario_id, ledger_conn, table
):
    """An async run moves the watermark, defers, and settles its Altcraft task on resuming: by then the
    stored position has moved, and its launches must still count for the window named by the position it
    started from. A run of another day from that position launches none of them again."""
    table({i: DAY for i in range(1, 4)})
    store = MemoryStateStore()
    operator, context = task(scenario_id, ledger_conn, table.name, "id", 1, store, delivery="async")
    with pytest.raises(TaskDeferred):
        operator.execute(context)  # type: ignore[arg-type]
    hook = AltcraftHook()
    hook.get_conn()
    for task_id in context["task_state_store"].get("altcraft_tasks").values():  # as the trigger waits
        assert hook.wait_for_task(task_id, timeout=30, poll_interval=0.05).state.is_terminal
    resumed, _ = task(scenario_id, ledger_conn, table.name, "id", 1, store, delivery="async")
    assert resumed.execute_complete(context, {"status": "done"})["launched"] == 3  # type: ignore[arg-type]
    again = run(scenario_id, ledger_conn, table.name, "id", 2, MemoryStateStore())  # from no watermark too
    assert (again["found"], again["launched"]) == (3, 0)
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 3


SQL_KEY = "sql_table:.{}.id:watermark"  # the source's watermark in the state store, by table


@pytest.mark.parametrize("triggered", [False, True], ids=["source", "window_watermark"])
def test_a_commit_coming_between_another_runs_read_and_set_waits_so_the_position_ends_at_the_higher(
    emulator, scenario_id, any_ledger, table, triggered
):
    """Run 1 (day 1) reads rows 1-5 and commits: it reads the stored position and, before it sets its own,
    run 2 (day 2) reads rows 1-8 and commits. Airflow's state store has no compare-and-set, so main let run
    2 set 8 between run 1's read and set, and run 1 then set 5 over it: the position moved back and the
    next run read rows 6-8 again. ``window_watermark``: a triggered pipeline's source (`SpecSource`), run 1
    held after reading the window watermark (its source's watermark set already): its window watermark
    went back from day 3 to day 2 alike. Run 1 is held after its read
    (before its set of the source's watermark, or of the window watermark) while run 2 runs; each commit
    now holds the ledger's lock of the state asset, so run 2's commit waits for run 1's and compares
    against it: the position ends at the higher. On PostgreSQL, MariaDB and SQLite ledgers."""
    table({i: DAY for i in range(1, 6)})
    shared = MemoryStateStore()
    key = SQL_KEY.format(table.name)
    held = HeldSet(shared, WATERMARK_KEY if triggered else key)
    results: dict[str, dict] = {}

    def run_into(name: str, day: int, store: Any) -> None:
        try:
            results[name] = run(scenario_id, any_ledger, table.name, "id", day, store, triggered=triggered)
        except BaseException as exc:  # shown by the assertion below
            results[name] = {"error": repr(exc)}

    first = threading.Thread(target=run_into, args=("first", 1, held))
    second = threading.Thread(target=run_into, args=("second", 2, shared))
    first.start()
    try:
        assert held.setting.wait(120), "run 1 never committed"
        table({i: DAY for i in range(6, 9)})
        second.start()
        second.join(3)  # main: run 2 read, launched and committed meanwhile; now its commit waits for run 1's
    finally:
        held.released.set()
        first.join(120)
        if second.ident is not None:
            second.join(120)
    found = 3 if triggered else 8  # a triggered run 1 set the source's watermark (5) before it was held
    assert (results["first"].get("launched"), results["second"].get("found")) == (5, found), results
    assert results["second"]["launched"] == 3
    assert decode_watermark(shared.get(key), "UTC") == 8
    if triggered:
        assert shared.get(WATERMARK_KEY) == (DAY + timedelta(days=3)).isoformat()
    third = run(scenario_id, any_ledger, table.name, "id", 3, shared, triggered=triggered)
    assert (third["found"], third["launched"]) == (0, 0)
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 8


@pytest.mark.parametrize("any_ledger", ["postgresql", "mariadb"], indirect=True)
def test_a_commit_that_cannot_take_the_lock_fails_naming_the_pipeline_and_moves_nothing(
    emulator, scenario_id, any_ledger, table, monkeypatch
):
    """Another run of the pipeline holds the position's lock (stuck in its commit) for the whole wait: the
    run fails naming its pipeline, the position does not move, and its retry, once the lock is free,
    reads the same rows and launches none again. (On SQLite the lock is the ledger's write lock, which
    the run's own claims would wait for first.)"""
    from altcraft.engines import ledger_engine
    from altcraft.ledger import Ledger
    from altcraft.ledger import store as ledger_store

    monkeypatch.setattr(ledger_store, "POSITION_LOCK_WAIT", 1.0)
    table({i: DAY for i in range(1, 6)})
    store = MemoryStateStore()
    other = Ledger(ledger_engine(any_ledger))
    try:
        with other.position_lock(STATE.name), pytest.raises(AirflowException) as caught:
            run(scenario_id, any_ledger, table.name, "id", 1, store)
        assert str(caught.value).startswith(
            f"Pipeline position_runs_{table.name}: could not take the lock of the stored position of "
            f"{STATE.name} within 1s: another run of the pipeline was committing its position"
        )
        assert store.get(SQL_KEY.format(table.name)) is None
        operator, context = task(scenario_id, any_ledger, table.name, "id", 1, store)
        context["ti"].try_number = 2
        retry = operator.execute(context)  # type: ignore[arg-type]
    finally:
        other.close()
    assert (retry["found"], retry["launched"], retry["skipped"]) == (5, 0, 5)
    assert decode_watermark(store.get(SQL_KEY.format(table.name)), "UTC") == 5
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1] * 5
