"""The UI benchmark's data and report at a tiny size, so `make bench` cannot rot (no Airflow started here)."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from bench.ui_pages import DAYS, PIPELINES, databases, render, run_id, seed_ledger

from altcraft.ui import queries


def test_the_seeded_ledger_is_what_the_report_says():
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = len(PIPELINES) * DAYS * 10
    with databases() as urls:
        facts = seed_ledger(urls["ledger"], rows, today)
        engine = sa.create_engine(urls["ledger"].replace("postgresql://", "postgresql+psycopg2://"))
        try:
            with engine.connect() as conn:
                scopes = queries.pipelines(conn, today.replace(hour=23))
                tries = queries.run_counts(conn, next(iter(PIPELINES)), run_id(today))
        finally:
            engine.dispose()
    assert facts["outcomes"] == rows and facts["rows_per_run"] == 10
    assert {scope.scenario_id for scope in scopes} == set(PIPELINES.values())
    assert sum(sum(scope.last_30d.values()) for scope in scopes) == rows
    assert {name for scope in scopes for name in scope.last_30d} <= set(queries.OUTCOME_ORDER)
    assert sum(t.total for t in tries) == 10 and {t.task_id for t in tries} == {
        "import_and_launch[0]",
        "import_and_launch[1]",
    }
    row = {"cold_ms": 900.0, "median_ms": 120.0, "p95_ms": 310.0, "max_ms": 400.0, "bytes": 1000}
    facts.update(
        when="now", machine="m", postgres="15", airflow="3.3.2", repeat=3, load="1.0", load_after="2.0"
    )
    report = render(facts, {"Pipelines": row, "Contact search": row})
    assert "| Pipelines | 900.0 | 120.0 | 310.0 | 400.0 | 1,000 B | **missed** |" in report
    assert "| Contact search | 900.0 | 120.0 | 310.0 | 400.0 | 1,000 B | — |" in report
    assert "load average 1.0 before measuring, 2.0 after" in report
