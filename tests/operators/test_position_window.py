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
from airflow.sdk.exceptions import TaskDeferred

from altcraft.hooks.altcraft import AltcraftHook
from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator
from altcraft.sources.base import MemoryStateStore
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
    scenario_id: int, ledger_conn: str, table: str, column: str, day: int, store: Any, **options: Any
) -> tuple[ImportAndLaunchScenarioOperator, dict[str, Any]]:
    """One scheduled run's ``import_and_launch`` of a daily pipeline over ``table`` by ``column``'s
    watermark, its data interval the ``day``-th day, under relaunch policy every_run; with its context."""
    source = SqlTableSource("ledger_pg", table, key_column="id", watermark_column=column, lookback=None)
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


def run(scenario_id: int, ledger_conn: str, table: str, column: str, day: int, store: Any) -> dict:
    """`task` run; its summary."""
    operator, context = task(scenario_id, ledger_conn, table, column, day, store)
    return operator.execute(context)  # type: ignore[arg-type]


def test_overlapping_runs_from_one_watermark_launch_each_contact_once_and_the_watermark_never_moves_back(
    emulator, scenario_id, ledger_conn, table
):
    """Run 1 (day 1) reads rows 1-5 from no watermark and launches them; before it commits, run 2 (day 2)
    reads from the same (no) watermark rows 1-8 and commits 8; then run 1 commits 5. Main named each run's
    ledger window by its data interval, so under every_run run 2 launched rows 1-5 a second time; and run
    1's blind commit moved the watermark back to 5, so run 3 read rows 6-8 again and launched them a second
    time. Both runs now name their window by the position they start from, and a commit keeps the later
    watermark."""
    table({i: DAY for i in range(1, 6)})
    shared = MemoryStateStore()
    held = HeldCommit(shared)
    first: dict = {}
    thread = threading.Thread(
        target=lambda: first.update(run(scenario_id, ledger_conn, table.name, "id", 1, held))
    )
    thread.start()
    try:
        assert held.committing.wait(120), "run 1 never committed"
        table({i: DAY for i in range(6, 9)})
        second = run(scenario_id, ledger_conn, table.name, "id", 2, shared)
    finally:
        held.released.set()
        thread.join(120)
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
