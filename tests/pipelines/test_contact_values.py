"""Contact values as they reach Altcraft, end to end: a PostgreSQL table or a CSV file → `dag.test()` → the
emulator. Floats in text fields, naive and aware times in date-time and date fields, CSV NULL cells."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pendulum
import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from altcraft.pipelines.spec import PipelineSpec
from tests.airflow_helpers import run_dag, task_states, xcom_values

from .test_pipeline_runs import PG, load_dags

START = pendulum.datetime(2026, 3, 1, tz="UTC")
RUN_DATE = START + timedelta(days=1)  # the daily run reading March 1 (UTC)


@pytest.fixture
def crm_table(monkeypatch):
    """Two contacts created on March 1: a double precision column, a naive and an aware time."""
    table = f"valfix_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("AIRFLOW_CONN_CRM_PG", PG)
    engine = sa.create_engine(PG.replace("postgresql", "postgresql+psycopg2"))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {table} (id int primary key, email text, created_at timestamp, "
                "share double precision, big double precision, visit timestamp, paid timestamptz)"
            )
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {table} VALUES (1, 'ann@example.org', '2026-03-01 12:00', 1e-05, 1e16, "
                "'2026-03-01 10:00', '2026-03-01 22:30+00')"
            )
        )
    yield table
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {table}"))
    engine.dispose()


def table_source(table: str, **extra: str) -> dict:
    """The PostgreSQL table read by the run's window on its naive ``created_at``."""
    return {
        "type": "sql_table",
        "conn_id": "crm_pg",
        "table": table,
        "key_column": "id",
        "created_at_column": "created_at",
        **extra,
    }


def pipeline(dag_id: str, source: dict, mapping: dict, scenario_id: int) -> dict:
    return {
        "id": dag_id,
        "schedule": "1d",
        "timezone": "UTC",
        "start_date": "2026-03-01",
        "source": source,
        "mapping": {"matching": "email", "key": {"email": "email"}, **mapping},
        "scenario": {"id": scenario_id, "db_id": 1},
        "retries": 0,
    }


def fields_of(emulator, email: str) -> dict:
    (found,) = [p["fields"] for p in emulator.profiles(db_id=1) if p["fields"].get("email") == email]
    return found


def run_once(dag) -> dict:
    run = run_dag(dag, RUN_DATE)
    assert task_states(run) == {"plan": "success", "import_and_launch": "success"}
    return xcom_values(dag.dag_id, run.run_id)["import_and_launch", 0]


def test_floats_and_times_of_a_postgresql_row_reach_altcraft_as_the_database_means_them(
    airflow_db, emulator, crm_table, scenario_id
):
    """The source's timezone says its naive columns are Moscow time: the window read them so, and so does a
    mapping naming no zone of its own (it sent 10:00 as UTC). Floats go to text fields positionally (they
    went as 1e-05 and 1e+16)."""
    source = table_source(crm_table, timezone="Europe/Moscow")
    fields = {
        "CRM_ID": {"source": "big", "type": "string"},
        "_regcity": {"template": "share {share}"},
        "_regdate": {"source": "visit", "type": "datetime"},
    }
    dag = load_dags([pipeline("valfix_pg_values", source, {"fields": fields}, scenario_id)])[
        "valfix_pg_values"
    ]
    assert run_once(dag)["launched"] == 1
    sent = fields_of(emulator, "ann@example.org")
    assert {name: sent[name] for name in fields} == {
        "CRM_ID": "10000000000000000.0",
        "_regcity": "share 0.00001",
        "_regdate": "2026-03-01T10:00:00+03:00",
    }


def test_a_timestamptz_in_a_date_field_is_on_its_date_in_the_mappings_time_zone(
    airflow_db, emulator, crm_table, scenario_id
):
    """22:30 UTC on March 1 is 01:30 on March 2 in Moscow: the date field took the date of the source's
    session zone (UTC), not the mapping's."""
    source = table_source(crm_table, timezone="UTC")
    mapping = {"timezone": "Europe/Moscow", "fields": {"_bdate": {"source": "paid", "type": "date"}}}
    dag = load_dags([pipeline("valfix_pg_date", source, mapping, scenario_id)])["valfix_pg_date"]
    assert run_once(dag)["launched"] == 1
    assert fields_of(emulator, "ann@example.org")["_bdate"] == "2026-03-02"


#: per dialect: the Airflow URI, the table's columns, its row (created on March 1 in the source's zone), the
#: source's zone and the mapping's. ``stamped`` and ``wall`` are naive as read (MySQL's TIMESTAMP in the
#: session's zone), both 22:30 UTC on March 1. MariaDB's zone tables are not loaded here: its source is UTC.
NAIVE_SOURCES = {
    "mysql": (
        "mysql://root@127.0.0.1:3306/test",
        "id int primary key, email varchar(64), created_at datetime, stamped timestamp null, wall datetime",
        "1, 'ann@example.org', '2026-03-01 12:00', '2026-03-01 22:30', '2026-03-01 22:30'",
        "UTC",
        "Europe/Moscow",
    ),
    "postgresql": (
        PG,
        "id int primary key, email text, created_at timestamp, stamped timestamp, wall timestamp",
        "1, 'ann@example.org', '2026-03-01 12:00', '2026-03-02 01:30', '2026-03-02 01:30'",
        "Europe/Moscow",
        "UTC",
    ),
    "sqlite": (
        "sqlite:///{folder}/crm.db",
        "id integer primary key, email text, created_at text, stamped text, wall text",
        "1, 'ann@example.org', '2026-03-01 12:00:00', '2026-03-02T01:30:00', '2026-03-02 01:30:00'",
        "Europe/Moscow",
        "UTC",
    ),
}


@pytest.mark.parametrize("dialect", list(NAIVE_SOURCES))
def test_a_sources_naive_times_are_in_its_zone_under_a_mapping_naming_another(
    airflow_db, emulator, scenario_id, monkeypatch, tmp_path: Path, dialect
):
    """A naive time from a source is wall-clock time in the zone it was produced in, the source's (MySQL's
    TIMESTAMP comes back in the session's, its DATETIME, PostgreSQL's timestamp and SQLite's text are read
    so by the window); the mapping's zone is the one times are written in and instants' dates taken in.
    Main read them in the mapping's zone: 22:30 UTC went out as 22:30 Moscow time (or 01:30 UTC), on the
    wrong date."""
    uri, columns, values, source_zone, mapping_zone = NAIVE_SOURCES[dialect]
    uri = uri.format(folder=tmp_path)
    table = f"valfix_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("AIRFLOW_CONN_CRM_NAIVE", uri)
    engine = sa.create_engine(uri.replace("postgresql:", "postgresql+psycopg2:"))
    try:
        with engine.begin() as conn:
            if dialect == "mysql":
                conn.exec_driver_sql("SET time_zone = '+00:00'")
            conn.exec_driver_sql(f"CREATE TABLE {table} ({columns})")
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES ({values})")
        source = {**table_source(table, timezone=source_zone), "conn_id": "crm_naive"}
        fields = {
            "_regdate": {"source": "stamped", "type": "datetime"},
            "_bdate": {"source": "wall", "type": "date"},
        }
        mapping = {"timezone": mapping_zone, "fields": fields}
        dag_id = f"valfix_naive_{dialect}"
        dag = load_dags([pipeline(dag_id, source, mapping, scenario_id)])[dag_id]
        assert run_once(dag)["launched"] == 1
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()
    sent = fields_of(emulator, "ann@example.org")
    at = "2026-03-02T01:30:00+03:00" if mapping_zone == "Europe/Moscow" else "2026-03-01T22:30:00+00:00"
    assert {name: sent[name] for name in fields} == {"_regdate": at, "_bdate": at[:10]}


def test_csv_null_cells_are_empty_values_when_the_source_names_them(
    airflow_db, emulator, scenario_id, tmp_path: Path
):
    """A database export writes NULL as ``NULL`` or ``\\N``: with ``null_values`` such a cell is no value (it
    was sent as that text); a row whose key is NULL is rejected naming it, the others are delivered."""
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "export.csv").write_text(
        "id,email,first_name,city,created_at\n"
        "1,ann@example.org,NULL,\\N,2026-03-01T12:00:00Z\n"
        "2,NULL,Bob,Oslo,2026-03-01T12:00:00Z\n"
        '3,cid@example.org,"NULL",NULLS,2026-03-01T12:00:00Z\n'
    )
    source = {
        "type": "file",
        "path": str(folder),
        "key_column": "id",
        "timestamp_column": "created_at",
        "null_values": ["NULL", "\\N"],
    }
    mapping = {"fields": {"_fname": "first_name", "_regcity": "city"}}
    spec = {**pipeline("valfix_csv_nulls", source, mapping, scenario_id), "max_rejected_ratio": 0.5}
    dag = load_dags([spec])["valfix_csv_nulls"]
    summary = run_once(dag)
    assert (summary["found"], summary["launched"], summary["rejected"]) == (3, 2, 1)
    ann = fields_of(emulator, "ann@example.org")
    assert "_fname" not in ann and "_regcity" not in ann
    cid = fields_of(emulator, "cid@example.org")
    assert "_fname" not in cid and cid["_regcity"] == "NULLS"


def test_a_mapping_naming_no_zone_takes_its_sources_in_a_hand_written_dag_too():
    """The operator applies the rule (`in_source_zone`), so a DAG built in Python follows it as a spec does;
    a mapping's own zone wins, and a source without one leaves the mapping's default."""
    from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator
    from altcraft.sources.python import PythonSource
    from altcraft.sources.sql import SqlTableSource

    mapping = {"matching": "email", "key": {"email": "email"}}
    moscow = SqlTableSource(
        "crm_pg", "contacts", key_column="id", created_at_column="created_at", timezone="Europe/Moscow"
    )
    python = PythonSource("tests.pipelines.test_contact_values:pipeline", key_column="id")
    zones = [
        ImportAndLaunchScenarioOperator(
            task_id="t", scenario_id=1, source=source, mapping=given
        ).mapping.timezone
        for source, given in (
            (moscow, mapping),
            (moscow, {**mapping, "timezone": "Asia/Tokyo"}),
            (moscow, {**mapping, "timezone": "UTC"}),
            (python, mapping),
        )
    ]
    assert zones == ["Europe/Moscow", "Asia/Tokyo", "UTC", "UTC"]


def test_null_values_are_csv_cells_and_by_default_no_cell_is_null(tmp_path: Path):
    """Without ``null_values`` a cell is its text, as before; the option is refused where it means nothing
    (JSON Lines has null) or would be read letter by letter (one text instead of a list)."""
    import pydantic

    from altcraft.sources import FileSource
    from altcraft.sources.spec import FileSpec

    (tmp_path / "a.csv").write_text("id,city\n1,NULL\n")
    (batch,) = FileSource(str(tmp_path), key_column="id", window_by="mtime").batches(None, 10)
    assert batch == [{"id": "1", "city": "NULL"}]
    with pytest.raises(ValueError, match="null_values: for CSV only"):
        FileSource(str(tmp_path), key_column="id", window_by="mtime", format="jsonl", null_values=["NULL"])
    with pytest.raises(ValueError, match="null_values: expected a list of cell texts"):
        FileSource(str(tmp_path), key_column="id", window_by="mtime", null_values="NULL")
    spec = {"type": "file", "path": "/x", "key_column": "id", "window_by": "mtime", "format": "jsonl"}
    with pytest.raises(pydantic.ValidationError, match="null_values: for CSV only"):
        FileSpec.model_validate({**spec, "null_values": ["NULL"]})


@pytest.mark.parametrize("source_zone", [None, "UTC", "Europe/Moscow"])
def test_a_mapping_zone_over_a_source_naming_none_is_refused_where_it_reads_times(source_zone):
    """A spec whose mapping names a zone and whose source names none read the source's naive times in the
    mapping's zone until they became the source's (UTC when not set): it would send other times without
    saying so, so it is refused naming source.timezone, where the mapping reads a date or date-time from
    the source. A source naming its zone, a mapping of no such field or a constant one are not refused."""
    extra = {} if source_zone is None else {"timezone": source_zone}
    dated = {"timezone": "Europe/Moscow", "fields": {"_bdate": {"source": "paid", "type": "date"}}}
    spec = pipeline("zones", table_source("crm", **extra), dated, 1)
    if source_zone is None:
        with pytest.raises(ValidationError, match=r"source\.timezone is not set while mapping\.timezone is "):
            PipelineSpec.model_validate(spec)
    else:
        assert PipelineSpec.model_validate(spec).mapping.timezone == "Europe/Moscow"
    for fields in ({"city": {"source": "city"}}, {"_bdate": {"const": "2026-03-01", "type": "date"}}):
        undated = {"timezone": "Europe/Moscow", "fields": fields}
        PipelineSpec.model_validate(pipeline("zones", table_source("crm", **extra), undated, 1))
