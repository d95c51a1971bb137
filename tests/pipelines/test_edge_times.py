"""Times near year 1 and 9999 in a watermark column and in a mapped date-time field, end to end: a PostgreSQL
or SQLite table → `dag.test()` → the emulator, under a source zone east of UTC and one west of it."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.airflow_helpers import run_dag, task_states, xcom_values

from .test_pipeline_runs import PG, START, launched_emails, load_dags, spec

#: id -> (seen: the watermark column, paid: a mapped date-time), the rows of the first run
ROWS = {
    1: ("2024-03-01 10:00:00", "0001-01-01 00:00:00"),
    2: ("9999-12-31 23:59:00", "2024-03-01 10:00:00"),
    3: ("2024-03-01 11:00:00", "9999-12-31 23:59:00"),
    4: ("2024-03-01 12:00:00", "2024-03-01 10:00:00"),
}
#: zone -> (the ids the first run launches, the reasons it rejects the others for): 0001-01-01 00:00 in
#: Moscow and 9999-12-31 23:59 in New York are no date-time UTC holds, the mapping refuses them naming the
#: field; 9999-12-31 never becomes the watermark
EXPECTED = {
    "Europe/Moscow": ([3, 4], {"_regdate: is out of range": 1}),
    "America/New_York": ([1, 4], {"_regdate: is out of range": 1}),
}
NO_WATERMARK = (
    "__error__: seen: not a value a watermark can move to (a number but NaN or infinity, a date or time "
    "before year 9999, or text that is ISO 8601 or epoch seconds of one)"
)


@pytest.fixture(params=["postgresql", "sqlite"])
def edge_table(request, monkeypatch, tmp_path):
    """``(conn_id, engine)`` of a table ``contacts (id, email, seen, paid)`` with naive times."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'crm.db'}"
        monkeypatch.setenv("AIRFLOW_CONN_CRM_SQLITE", url)
        conn_id, engine, kind, table = "crm_sqlite", sa.create_engine(url), "text", "contacts"
    else:
        monkeypatch.setenv("AIRFLOW_CONN_CRM_PG", PG)
        conn_id, kind, table = "crm_pg", "timestamp", f"edge_{uuid.uuid4().hex[:10]}"
        engine = sa.create_engine(PG.replace("postgresql", "postgresql+psycopg2"))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (id integer primary key, email text, seen {kind}, paid {kind})"
        )
    yield conn_id, engine, table
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE {table}")
    engine.dispose()


def insert(engine: sa.Engine, table: str, rows: dict[int, tuple[str, str]]) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO {table} VALUES (:id, :email, :seen, :paid)"),
            [{"id": k, "email": f"edge{k}@example.org", "seen": s, "paid": p} for k, (s, p) in rows.items()],
        )


@pytest.mark.parametrize("zone", list(EXPECTED))
def test_times_near_year_1_and_9999_are_compared_or_rejected_and_every_later_row_is_launched(
    airflow_db, emulator, scenario_id, edge_table, zone
):
    """A run launches the rows it can, rejects naming the field a date-time no UTC offset can write, and
    rejects naming the column a row whose watermark is in year 9999; the next run launches the row added
    since. Main moved the watermark to 9999-12-31 on PostgreSQL (and SQLite in Moscow): the next run read
    nothing, and edge5 was never launched."""
    conn_id, engine, table = edge_table
    source = {"type": "sql_table", "conn_id": conn_id, "table": table, "key_column": "id"}
    source |= {"watermark_column": "seen", "timezone": zone}
    dag_id = f"edge_times_{uuid.uuid4().hex[:8]}"  # its own watermark in the asset state store
    pipeline = spec(dag_id, table, scenario_id, source=source, max_rejected_ratio=0.6)
    pipeline["mapping"] = {
        **pipeline["mapping"],
        "fields": {"_regdate": {"source": "paid", "type": "datetime"}},
    }
    dag = load_dags([pipeline])[dag_id]
    launched, reasons = EXPECTED[zone]
    summaries = []
    for day, rows in enumerate([ROWS, {5: ("2024-03-02 10:00:00", "2024-03-02 10:00:00")}], start=1):
        insert(engine, table, rows)
        run = run_dag(dag, START + timedelta(days=day))
        assert task_states(run) == {"plan": "success", "import_and_launch": "success"}
        summaries.append(xcom_values(dag.dag_id, run.run_id)["import_and_launch", 0])

    assert [(s["found"], s["launched"], s["rejected"]) for s in summaries] == [(4, 2, 2), (2, 1, 1)]
    assert summaries[0]["reasons"] == {**reasons, NO_WATERMARK: 1}
    assert sorted(launched_emails(emulator, scenario_id)) == [f"edge{k}@example.org" for k in [*launched, 5]]
