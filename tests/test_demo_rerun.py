"""`make demo` run again after the manual trigger docs/demo.md shows: Airflow 3 gives that run no logical
date, and the second demo read every run's logical date to find the days left to backfill (it stopped
with ``AttributeError: 'NoneType' object has no attribute 'replace'``)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from demo.airflow_env import runs_at
from demo.run import days_with_a_run, logical_dates

# The fields the demo reads, as GET /api/v2/dags/<id>/dagRuns answered in a demo (2026-12-06).
BACKFILLED = {
    "dag_run_id": "backfill__2026-12-05T00:00:00+00:00",
    "logical_date": "2026-12-05T00:00:00Z",
    "data_interval_start": "2026-12-05T00:00:00Z",
    "data_interval_end": "2026-12-06T00:00:00Z",
    "run_type": "backfill",
    "state": "success",
}
TRIGGERED = {
    "dag_run_id": "manual__2026-12-06T19:15:04.686954+00:00",
    "logical_date": None,
    "data_interval_start": None,
    "data_interval_end": None,
    "run_type": "manual",
    "state": "success",
}


def test_a_run_without_a_logical_date_covers_no_day_of_the_backfill():
    assert days_with_a_run([TRIGGERED, BACKFILLED]) == {date(2026, 12, 5)}
    assert days_with_a_run([TRIGGERED]) == set()


def test_the_demo_waits_for_the_backfilled_runs_only():
    dates = logical_dates(datetime(2026, 12, 6, 19, 15, tzinfo=UTC))
    wanted = {day.isoformat() for day in dates}
    assert runs_at([TRIGGERED, BACKFILLED], wanted) == [BACKFILLED]
