"""YAML pipelines run for real: PostgreSQL source → dag.test() over consecutive intervals → emulator."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pendulum
import pytest
import sqlalchemy as sa
import yaml

from tests.airflow_helpers import run_dag, task_states, xcom_values

from .conftest import LOADER

PG = "postgresql://postgres@127.0.0.1:5432/test"
START = pendulum.datetime(2026, 3, 1, tz="UTC")
DAYS = 3
PER_DAY = 24  # one contact an hour
BROKEN_PER_DAY = 2


@pytest.fixture
def crm_table(monkeypatch):
    """A CRM table with contacts over three days, a row exactly at each midnight, and broken rows."""
    table = f"crm_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("AIRFLOW_CONN_CRM_PG", PG)
    engine = sa.create_engine(PG.replace("postgresql", "postgresql+psycopg2"))
    rows = []
    for day in range(DAYS):
        for hour in range(PER_DAY):
            n = day * 100 + hour
            created = START + timedelta(days=day, hours=hour)
            rows.append({"id": n, "email": f"p{n}@example.org", "first_name": f"P{n}", "created_at": created})
        for b in range(BROKEN_PER_DAY):
            created = START + timedelta(days=day, hours=12, minutes=b + 1)
            rows.append(
                {
                    "id": day * 100 + 50 + b,
                    "email": f"broken-{day}-{b}",
                    "first_name": "X",
                    "created_at": created,
                }
            )
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE TABLE {table} (id int primary key, email text, first_name text, "
                "created_at timestamptz)"
            )
        )
        conn.execute(sa.text(f"INSERT INTO {table} VALUES (:id, :email, :first_name, :created_at)"), rows)
    yield table
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {table}"))


def spec(dag_id: str, table: str, scenario_id: int, **extra) -> dict:
    return {
        "id": dag_id,
        "schedule": "1d",
        "timezone": "UTC",
        "start_date": "2026-03-01",
        "source": {
            "type": "sql_table",
            "conn_id": "crm_pg",
            "table": table,
            "key_column": "id",
            "created_at_column": "created_at",
        },
        "mapping": {"matching": "email", "key": {"email": "email"}, "fields": {"_fname": "first_name"}},
        "scenario": {"id": scenario_id, "db_id": 1},
        "delivery": {"mode": "batch", "batch_size": 10},
        "max_rejected_ratio": 0.2,
        "retries": 0,
        **extra,
    }


def watermark(pipeline: dict) -> dict:
    """The pipeline reading its table by an id watermark instead of the run's window."""
    table = pipeline["source"]["table"]
    source = {
        "type": "sql_table",
        "conn_id": "crm_pg",
        "table": table,
        "key_column": "id",
        "watermark_column": "id",
    }
    return {**pipeline, "source": source}


def add_new_contacts(table: str, count: int = 5) -> None:
    """``count`` new contacts (new0@example.org, ...) with ids past every other (from 1000), created now."""
    engine = sa.create_engine(PG.replace("postgresql", "postgresql+psycopg2"))
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO {table} VALUES (:id, :email, 'New', now())"),
            [{"id": 1000 + i, "email": f"new{i}@example.org"} for i in range(count)],
        )
    engine.dispose()


def write_dag_folder(specs: list[dict]) -> Path:
    """The DAG folder emptied, holding the loader and these specs (``pipelines/<id>.yaml``)."""
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    shutil.rmtree(folder)
    (folder / "pipelines").mkdir(parents=True)
    shutil.copy(LOADER, folder / LOADER.name)
    for item in specs:
        (folder / "pipelines" / f"{item['id']}.yaml").write_text(yaml.safe_dump(item))
    return folder


def load_dags(specs: list[dict]) -> dict:
    """Put the loader and these specs in the DAG folder, import the loader, return its DAGs by id."""
    folder = write_dag_folder(specs)
    name = f"altcraft_pipelines_{uuid.uuid4().hex[:8]}"
    module_spec = importlib.util.spec_from_file_location(name, folder / LOADER.name)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return {item["id"]: getattr(module, item["id"]) for item in specs}


def launched_emails(emulator, scenario_id: int) -> list[str]:
    profiles = {p["id"]: p["fields"].get("email") for p in emulator.profiles(db_id=1)}
    return [profiles[entry["profile_id"]] for entry in emulator.journal(scenario_id=scenario_id)]


def test_consecutive_intervals_and_a_backfill_deliver_each_contact_once(
    airflow_db, emulator, crm_table, scenario_id
):
    backfill_scenario = scenario_id + 1
    emulator.seed(
        scenarios=[{"id": backfill_scenario, "name": "B", "db_id": 1, "is_active": True, "mode": "restart"}]
    )
    dags = load_dags(
        [
            spec("live_welcome", crm_table, scenario_id),
            spec("backfill_welcome", crm_table, backfill_scenario, partitions=3),
        ]
    )
    live = dags["live_welcome"]
    summaries = []
    for day in range(1, DAYS + 1):  # a daily run at the end of each day covers that day
        run = run_dag(live, START + timedelta(days=day))
        assert task_states(run) == {"plan": "success", "import_and_launch": "success"}
        assert run.data_interval_end - run.data_interval_start == timedelta(days=1)
        summaries.append(xcom_values(live.dag_id, run.run_id)["import_and_launch", 0])
    assert [s["found"] for s in summaries] == [PER_DAY + BROKEN_PER_DAY] * DAYS
    assert [s["launched"] for s in summaries] == [PER_DAY] * DAYS
    assert [s["rejected"] for s in summaries] == [BROKEN_PER_DAY] * DAYS
    live_set = launched_emails(emulator, scenario_id)
    assert len(live_set) == len(set(live_set)) == DAYS * PER_DAY

    backfill = dags["backfill_welcome"]
    for day in reversed(range(1, DAYS + 1)):  # a backfill of the same period, in any order, in 3 partitions
        run = run_dag(backfill, START + timedelta(days=day))
        assert set(task_states(run).values()) == {"success"}
    backfill_set = launched_emails(emulator, backfill_scenario)
    assert sorted(backfill_set) == sorted(live_set)

    rerun = run_dag(live, START + timedelta(days=2))  # the same window again: nobody twice
    again = xcom_values(live.dag_id, rerun.run_id)["import_and_launch", 0]
    assert (again["launched"], again["skipped"]) == (0, PER_DAY)
    assert len(launched_emails(emulator, scenario_id)) == DAYS * PER_DAY


def test_watermark_pipeline_reads_only_new_rows_across_runs(airflow_db, emulator, crm_table, scenario_id):
    """The source's watermark lives in Airflow's asset_state_store and survives between runs."""
    watermark_spec = watermark(spec("watermark_welcome", crm_table, scenario_id))
    dag = load_dags([watermark_spec])["watermark_welcome"]
    first = run_dag(dag, START + timedelta(days=1))
    assert xcom_values(dag.dag_id, first.run_id)["import_and_launch", 0]["found"] == DAYS * (
        PER_DAY + BROKEN_PER_DAY
    )

    add_new_contacts(crm_table)
    second = run_dag(dag, START + timedelta(days=2))
    summary = xcom_values(dag.dag_id, second.run_id)["import_and_launch", 0]
    assert (summary["found"], summary["launched"], summary["skipped"]) == (5, 5, 0)


#: databases whose writers take an id or a time on insert: (Airflow URI, SQLAlchemy URI, table columns)
TAKING_WRITERS = {
    "postgresql": (
        PG,
        PG.replace("postgresql", "postgresql+psycopg2"),
        "id bigserial primary key, email text, first_name text, taken timestamptz default clock_timestamp()",
    ),
    "mariadb": (
        "mysql://root@127.0.0.1:3306/test",
        "mysql+mysqldb://root@127.0.0.1:3306/test",
        "id bigint auto_increment primary key, email varchar(64), first_name varchar(64), "
        "taken datetime(6) default current_timestamp(6)",
    ),
}


@pytest.mark.parametrize(
    ("database", "column", "lookback"), [("postgresql", "id", 1000), ("mariadb", "taken", "1h")]
)
def test_a_contact_committed_after_a_higher_one_was_read_is_launched_by_the_next_run_within_lookback(
    airflow_db, emulator, scenario_id, monkeypatch, database, column, lookback
):
    """Two writers on a real database: A takes the lower id (or time), B the higher one and commits first,
    a run launches B and moves the watermark past A's value, then A commits. Main launched A by no run, and
    said nothing (its spec refused a lookback in watermark mode). The source's lookback re-reads that margin
    below the watermark: the next run launches A, and the ledger skips the contacts re-read."""
    airflow_uri, sqlalchemy_uri, columns = TAKING_WRITERS[database]
    monkeypatch.setenv("AIRFLOW_CONN_CRM_TAKEN", airflow_uri)
    engine, table = sa.create_engine(sqlalchemy_uri), f"taken_{uuid.uuid4().hex[:10]}"
    insert = f"INSERT INTO {table} (email, first_name) VALUES (:email, 'X')"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} ({columns})")
        conn.execute(sa.text(insert), {"email": "first@example.org"})
    source = {"type": "sql_table", "conn_id": "crm_taken", "table": table, "key_column": "id"}
    source |= {"watermark_column": column, "lookback": lookback}
    dag_id = f"late_commits_{uuid.uuid4().hex[:8]}"
    dag = load_dags([spec(dag_id, table, scenario_id, source=source)])[dag_id]
    summaries = []

    def run(day: int) -> None:
        done = run_dag(dag, START + timedelta(days=day))
        assert task_states(done) == {"plan": "success", "import_and_launch": "success"}
        summary = xcom_values(dag.dag_id, done.run_id)["import_and_launch", 0]
        summaries.append((summary["found"], summary["launched"], summary["skipped"]))

    try:
        run(1)
        with engine.connect() as slow, engine.connect() as fast:
            slow.execute(sa.text(insert), {"email": "slow@example.org"})  # not committed yet
            fast.execute(sa.text(insert), {"email": "fast@example.org"})
            fast.commit()
            run(2)
            slow.commit()
        run(3)
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE {table}")
        engine.dispose()

    assert summaries == [(1, 1, 0), (2, 1, 1), (3, 1, 2)]
    assert sorted(launched_emails(emulator, scenario_id)) == [
        "fast@example.org",
        "first@example.org",
        "slow@example.org",
    ]


def test_a_sqlite_watermark_of_text_times_in_mixed_forms_launches_each_later_contact(
    airflow_db, emulator, scenario_id, monkeypatch, tmp_path
):
    """A SQLite text column of times written in mixed forms, kept as the watermark between runs in the asset
    state store: each run launches the contacts past the latest instant read before. Main compared the
    text: the watermark stuck at the 'T' form (09:00) and the later contacts written with a space (11:00,
    11:30) were never launched."""
    database = tmp_path / "crm.db"
    monkeypatch.setenv("AIRFLOW_CONN_CRM_SQLITE", f"sqlite:///{database}")
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE contacts (id integer primary key, email text, seen text)")
    source = {"type": "sql_table", "conn_id": "crm_sqlite", "table": "contacts", "key_column": "id"}
    pipeline = spec("text_watermark", "contacts", scenario_id, source={**source, "watermark_column": "seen"})
    pipeline["mapping"] = {**pipeline["mapping"], "fields": {}}  # the table has no first_name
    dag = load_dags([pipeline])["text_watermark"]
    runs = [
        {1: "2024-03-01 10:00:00", 2: "2024-03-01T09:00:00", 3: "2024-03-01 12:00:00+03:00"},
        {4: "2024-03-01 11:00:00", 5: "2024-03-01T10:30:00Z"},
        {6: "2024-03-01 11:30:00"},
    ]
    for day, rows in enumerate(runs, start=1):
        _insert_seen(engine, "t", rows)
        run = run_dag(dag, START + timedelta(days=day))
        assert task_states(run) == {"plan": "success", "import_and_launch": "success"}
    engine.dispose()

    assert sorted(launched_emails(emulator, scenario_id)) == [f"t{k}@example.org" for k in range(1, 7)]


def _insert_seen(engine: sa.Engine, prefix: str, rows: dict[int, str]) -> None:
    """Rows of the ``contacts (id, email, seen)`` table: id -> seen, emails ``<prefix><id>@example.org``."""
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO contacts VALUES (:id, :email, :seen)"),
            [{"id": k, "email": f"{prefix}{k}@example.org", "seen": seen} for k, seen in rows.items()],
        )


def _runs_in_zones(
    scenario_id: int, monkeypatch, tmp_path: Path, prefix: str, runs: list[tuple[str, dict[int, str]]]
) -> list[tuple[int, int, int]]:
    """Daily runs of a pipeline reading a SQLite table ``contacts`` by its ``seen`` text watermark, each run
    under its own source ``timezone`` after inserting its rows (`_insert_seen`); (found, launched, skipped)
    of each. The pipeline's id is new, so its watermark is its own."""
    database = tmp_path / "crm.db"
    monkeypatch.setenv("AIRFLOW_CONN_CRM_SQLITE", f"sqlite:///{database}")
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE contacts (id integer primary key, email text, seen text)")
    found, dag_id = [], f"zone_watermark_{uuid.uuid4().hex[:8]}"
    for day, (zone, rows) in enumerate(runs, start=1):
        source = {"type": "sql_table", "conn_id": "crm_sqlite", "table": "contacts", "key_column": "id"}
        source |= {"watermark_column": "seen", "timezone": zone}
        pipeline = spec(dag_id, "contacts", scenario_id, source=source)
        pipeline["mapping"] = {**pipeline["mapping"], "fields": {}}  # the table has no first_name
        dag = load_dags([pipeline])[dag_id]
        _insert_seen(engine, prefix, rows)
        run = run_dag(dag, START + timedelta(days=day))
        assert task_states(run) == {"plan": "success", "import_and_launch": "success"}
        summary = xcom_values(dag.dag_id, run.run_id)["import_and_launch", 0]
        found.append((summary["found"], summary["launched"], summary["skipped"]))
    engine.dispose()
    return found


def test_a_source_timezone_changed_between_runs_keeps_the_watermarks_instant(
    airflow_db, emulator, scenario_id, monkeypatch, tmp_path
):
    """The stored watermark was naive text, ``2024-03-01 10:00:00``, read in UTC by the first run; with the
    spec's ``source.timezone`` changed to Europe/Moscow the next run read it as 07:00 UTC and read again the
    contact of 09:00 UTC (a later one written with an offset), which the first run had handled."""
    runs = [
        ("UTC", {1: "2024-03-01 10:00:00", 2: "2024-03-01T09:00:00+00:00"}),
        ("Europe/Moscow", {3: "2024-03-01T10:30:00+00:00"}),
    ]
    found = _runs_in_zones(scenario_id, monkeypatch, tmp_path, "z", runs)

    assert found == [(2, 2, 0), (1, 1, 0)]  # each contact read once
    assert sorted(launched_emails(emulator, scenario_id)) == [f"z{k}@example.org" for k in (1, 2, 3)]


@pytest.mark.parametrize(
    ("first", "later"),
    [
        # autumn: 02:10 and 02:40 happen twice in Berlin, the watermark 02:40 is read as 00:40 UTC (its
        # first occurrence), not 01:40: the first run's rows, now UTC wall times, are read again
        ({1: "2026-10-25 02:10:00", 2: "2026-10-25 02:40:00"}, {3: "2026-10-25 03:00:00"}),
        # spring: 02:30 never happens in Berlin, the watermark 02:30 is read as 00:30 UTC (by the offset
        # after the change), not 01:30, which skipped row 3 of 01:00 UTC (03:00 in Berlin, after 02:30)
        ({1: "2026-03-29 01:50:00", 2: "2026-03-29 02:30:00"}, {3: "2026-03-29 01:00:00"}),
    ],
)
def test_a_watermark_in_an_hour_of_a_clock_change_carried_to_another_zone_reads_again_and_skips_nothing(
    airflow_db, emulator, scenario_id, monkeypatch, tmp_path, first, later
):
    """A naive watermark kept in Europe/Berlin and read after the source's zone became UTC: a wall-clock
    time a clock change repeats or skips names two instants, and the earlier one is taken, so rows between
    them are read again, never skipped. Reading them again launches nobody twice: the ledger skips them."""
    found = _runs_in_zones(
        scenario_id, monkeypatch, tmp_path, "f", [("Europe/Berlin", first), ("UTC", later)]
    )

    assert found == [(2, 2, 0), (3, 1, 2)]  # read again, and skipped by the ledger
    assert sorted(launched_emails(emulator, scenario_id)) == [f"f{k}@example.org" for k in (1, 2, 3)]


def test_a_runs_conf_reaches_the_tasks_which_keep_no_copy_of_the_params(
    airflow_db, emulator, crm_table, scenario_id
):
    """``build_dag`` sets the run params after the tasks (cheaper parses): the tasks hold none, and a run's
    conf still reaches the mapped task's templated arguments through the DAG's params."""
    dag = load_dags([spec("conf_welcome", crm_table, scenario_id)])["conf_welcome"]
    assert list(dag.params) and all(not task.params for task in dag.tasks)
    day_2 = START + timedelta(days=1)
    window = {"window_start": day_2.isoformat(), "window_end": (day_2 + timedelta(days=1)).isoformat()}

    dry = dag.test(logical_date=START + timedelta(days=DAYS), run_conf={**window, "dry_run": True})
    preview = xcom_values(dag.dag_id, dry.run_id)["import_and_launch", 0]
    assert (preview["found"], preview["launched"]) == (PER_DAY + BROKEN_PER_DAY, PER_DAY)  # day 2 only
    assert launched_emails(emulator, scenario_id) == []  # a dry run sends nothing

    # Airflow's Param.resolve keeps a conf value in the Param, so a second dag.test() of the same DAG object
    # would still be dry; a worker parses the DAG file afresh for every task
    dag = load_dags([spec("conf_welcome", crm_table, scenario_id)])["conf_welcome"]
    real = dag.test(logical_date=START + timedelta(days=DAYS + 1), run_conf=window)
    assert xcom_values(dag.dag_id, real.run_id)["import_and_launch", 0]["launched"] == PER_DAY
    day_2_emails = [f"p{100 + hour}@example.org" for hour in range(PER_DAY)]
    assert sorted(launched_emails(emulator, scenario_id)) == sorted(day_2_emails)


def test_a_window_given_as_dates_with_an_offset_reads_from_their_midnights_there(
    airflow_db, emulator, crm_table, scenario_id
):
    """Python 3.11's ``fromisoformat`` read ``2026-03-02+03:00`` as 03:00 in the spec's zone (UTC): the run
    launched the contacts of [03:00, 03:00 the next day) UTC, not those from 21:00 UTC the evening before."""
    dag = load_dags([spec("offset_dates", crm_table, scenario_id)])["offset_dates"]
    window = {"window_start": "2026-03-02+03:00", "window_end": "2026-03-03+03:00"}
    run = dag.test(logical_date=START + timedelta(days=DAYS), run_conf=window)

    assert task_states(run) == {"plan": "success", "import_and_launch": "success"}
    hours = [21, 22, 23, *range(100, 121)]  # 2026-03-01 21:00 to 2026-03-02 20:00 UTC
    assert sorted(launched_emails(emulator, scenario_id)) == sorted(f"p{n}@example.org" for n in hours)


def test_a_pipeline_with_the_largest_pool_slots_is_created_and_runs(
    airflow_db, emulator, crm_table, scenario_id
):
    """pool_slots above it loaded, then every run failed to be created (an INTEGER column overflowed)."""
    from altcraft.spec_checks import MAX_INT32

    dag = load_dags([spec("widest_pool", crm_table, scenario_id, pool_slots=MAX_INT32, dry_run=True)])[
        "widest_pool"
    ]
    run = run_dag(dag, START + timedelta(days=1))

    assert task_states(run) == {"plan": "success", "import_and_launch": "success"}


def test_a_contact_refused_by_altcraft_is_read_again_by_a_watermark_runs_retry(
    airflow_db, emulator, crm_table, scenario_id
):
    """A refused contact fails the try; the try moved the watermark past it, so a retry read nothing and
    turned the run green with the contact never sent again. The watermark now stays: the retry reads the
    contacts again, the ledger skips those launched, and the refused one is sent again."""
    watermark_spec = watermark(spec("refused_welcome", crm_table, scenario_id, retries=1, retry_delay="1s"))
    emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start_batch",
            "kind": "profile_error",
            "every": 7,
            "count": 1,
            "code": 400,
            "text": "bad field",
        }
    )
    dag = load_dags([watermark_spec])["refused_welcome"]

    run = run_dag(dag, START + timedelta(days=1))

    assert task_states(run) == {"plan": "success", "import_and_launch": "success"}
    retry = xcom_values(dag.dag_id, run.run_id, key="altcraft_summary")["import_and_launch", 0]
    assert (retry["found"], retry["launched"], retry["failed"]) == (DAYS * (PER_DAY + BROKEN_PER_DAY), 1, 0)
    launched = launched_emails(emulator, scenario_id)
    assert len(launched) == len(set(launched)) == DAYS * PER_DAY


def test_uncertain_contacts_of_a_watermark_run_are_decided_and_sent_by_the_next_run(
    airflow_db, emulator, crm_table, scenario_id
):
    """A per-profile result with a server error leaves its contact uncertain and the run failed; the run had
    moved the watermark past it, so no later run read it again and reconciliation could not send it once
    Altcraft was found not to have processed it. The watermark now stays until it is decided."""
    watermark_spec = watermark(spec("lost_welcome", crm_table, scenario_id))
    watermark_spec["scenario"] = {**watermark_spec["scenario"], "reconcile_grace_seconds": 0}
    emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start_batch",
            "kind": "profile_error",
            "every": 7,
            "count": 1,
            "code": 500,
            "text": "internal error",
        }
    )
    failed = run_dag(load_dags([watermark_spec])["lost_welcome"], START + timedelta(days=1))
    assert task_states(failed)["import_and_launch"] == "failed"
    summary = xcom_values("lost_welcome", failed.run_id, key="altcraft_summary")["import_and_launch", 0]
    assert summary["uncertain"] == 1

    run = run_dag(load_dags([watermark_spec])["lost_welcome"], START + timedelta(days=2))

    assert task_states(run)["import_and_launch"] == "success"
    launched = launched_emails(emulator, scenario_id)
    assert len(launched) == len(set(launched)) == DAYS * PER_DAY


def test_a_run_limited_to_selected_contacts_leaves_the_others_to_the_next_run(
    airflow_db, emulator, crm_table, scenario_id
):
    """A run given ``contact_hashes`` (the Altcraft page's "relaunch selected") skips every other contact it
    reads; with a watermark it moved past them, and the next run never read the new contacts it skipped."""
    watermark_spec = watermark(spec("selected_welcome", crm_table, scenario_id))
    run_dag(load_dags([watermark_spec])["selected_welcome"], START + timedelta(days=1))
    add_new_contacts(crm_table)

    dag = load_dags([watermark_spec])["selected_welcome"]  # a fresh parse: Param.resolve keeps the conf
    selected = dag.test(logical_date=START + timedelta(days=2), run_conf={"contact_hashes": ["0" * 64]})
    summary = xcom_values(dag.dag_id, selected.run_id)["import_and_launch", 0]
    assert (summary["found"], summary["skipped"], summary["launched"]) == (5, 5, 0)

    dag = load_dags([watermark_spec])["selected_welcome"]
    after = run_dag(dag, START + timedelta(days=3))
    summary = xcom_values(dag.dag_id, after.run_id)["import_and_launch", 0]
    assert (summary["found"], summary["launched"]) == (5, 5), "the next run reads what the selection skipped"
    launched = launched_emails(emulator, scenario_id)
    assert len(launched) == len(set(launched)) and {f"new{i}@example.org" for i in range(5)} <= set(launched)


def test_a_watermark_run_failed_on_rejections_reads_them_again_once_the_mapping_is_fixed(
    airflow_db, emulator, crm_table, scenario_id
):
    """max_rejected_ratio catches a mapping that rejects contacts in bulk; the failed run moved the watermark
    past them, so after the fix the next run read nothing and turned green with no contact ever launched."""
    wrong = watermark(spec("remapped_welcome", crm_table, scenario_id))
    wrong["mapping"] = {**wrong["mapping"], "key": {"email": "first_name"}}  # every email is a name
    failed = run_dag(load_dags([wrong])["remapped_welcome"], START + timedelta(days=1))
    assert task_states(failed)["import_and_launch"] == "failed"
    assert launched_emails(emulator, scenario_id) == []

    fixed = watermark(spec("remapped_welcome", crm_table, scenario_id))
    run = run_dag(load_dags([fixed])["remapped_welcome"], START + timedelta(days=2))

    summary = xcom_values(fixed["id"], run.run_id)["import_and_launch", 0]
    assert (summary["found"], summary["launched"]) == (DAYS * (PER_DAY + BROKEN_PER_DAY), DAYS * PER_DAY)
    assert len(launched_emails(emulator, scenario_id)) == DAYS * PER_DAY


def test_a_mapped_column_the_table_does_not_have_rejects_each_row_naming_the_field_and_column(
    airflow_db, emulator, crm_table, scenario_id
):
    """A mapping naming a column the table has not (``FirstName`` for ``first_name``) launched every contact
    without that field, and the run was green. A table's rows hold every column it has, NULL ones too: one a
    row lacks is no column of the source, and each row is rejected naming the field and the column."""
    pipeline = spec("misnamed_welcome", crm_table, scenario_id)
    pipeline["mapping"] = {**pipeline["mapping"], "fields": {"_fname": "FirstName"}}

    run = run_dag(load_dags([pipeline])["misnamed_welcome"], START + timedelta(days=1))

    assert task_states(run)["import_and_launch"] == "failed"
    assert launched_emails(emulator, scenario_id) == []
    summary = xcom_values(pipeline["id"], run.run_id, key="altcraft_summary")["import_and_launch", 0]
    assert summary["rejected"] == summary["found"] == PER_DAY + BROKEN_PER_DAY
    reason = "_fname: no column 'FirstName' in the source's rows (names match exactly, case included)"
    assert summary["reasons"] == {reason: PER_DAY + BROKEN_PER_DAY}


def test_a_month_backfilled_day_by_day_in_a_zone_with_a_clock_change_launches_each_contact_once(
    airflow_db, emulator, scenario_id, tmp_path, monkeypatch
):
    """March 2026 in Berlin (the clock goes forward on the 29th) read by 31 daily runs of a SQLite table
    whose times come in the formats such tables hold, under ``every_run``, so a contact read by two
    windows would be launched twice: each contact of March exactly once, the one at April's first
    midnight not at all (it is the next run's). Main never read the epoch numbers and read a date's
    contacts in the day before's window."""
    berlin = ZoneInfo("Europe/Berlin")
    march = [datetime(2026, 3, 1, tzinfo=berlin) + timedelta(days=d) for d in range(31)]
    held: dict[str, object] = {}
    for midnight in march:
        day = midnight.date().isoformat()
        utc = midnight.astimezone(ZoneInfo("UTC"))
        held |= {
            f"{day}-midnight": midnight.strftime("%Y-%m-%d %H:%M:%S"),  # at the window's start
            f"{day}-last": (midnight + timedelta(hours=23, minutes=59, seconds=59.999999)).isoformat(" "),
            f"{day}-iso": (utc + timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            f"{day}-offset": (midnight + timedelta(hours=6)).isoformat(),
            f"{day}-epoch": int((midnight + timedelta(hours=18)).timestamp()),
            f"{day}-date": f"{day}",
        }
    held |= {"2026-03-29-before-gap": "2026-03-29 01:59:59", "2026-03-29-after-gap": "2026-03-29 03:00:00"}
    held["april"] = "2026-04-01 00:00:00"
    database = tmp_path / "crm.db"
    monkeypatch.setenv("AIRFLOW_CONN_CRM_SQLITE", f"sqlite:///{database}")
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE contacts (id text primary key, email text, created_at)")
        conn.execute(
            sa.text("INSERT INTO contacts VALUES (:id, :email, :at)"),
            [{"id": key, "email": f"{key}@example.org", "at": at} for key, at in held.items()],
        )
    engine.dispose()
    source = {
        "type": "sql_table",
        "conn_id": "crm_sqlite",
        "table": "contacts",
        "key_column": "id",
        "created_at_column": "created_at",
        "timezone": "Europe/Berlin",
    }
    pipeline = spec("march_welcome", "contacts", scenario_id, source=source, timezone="Europe/Berlin")
    pipeline["mapping"] = {**pipeline["mapping"], "fields": {}}  # the table has no first_name
    dag = load_dags([{**pipeline, "relaunch_policy": "every_run", "max_rejected_ratio": 0}])["march_welcome"]

    for midnight in march:
        run = run_dag(dag, pendulum.instance(midnight + timedelta(days=1)))
        assert task_states(run) == {"plan": "success", "import_and_launch": "success"}, midnight

    launched = launched_emails(emulator, scenario_id)
    assert sorted(launched) == sorted(f"{key}@example.org" for key in held if key != "april")
