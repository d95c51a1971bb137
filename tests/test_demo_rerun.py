"""`make demo` run again after the manual trigger docs/demo.md shows: Airflow 3 gives that run no logical
date, and the second demo read every run's logical date to find the days left to backfill (it stopped
with ``AttributeError: 'NoneType' object has no attribute 'replace'``)."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

from demo.airflow_env import REPO, runs_at
from demo.run import days_with_a_run, demo_shell, logical_dates

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


def test_the_demo_shell_the_demo_prints_opens_its_state(tmp_path: Path):
    """With DEMO_HOME elsewhere the demo still printed `make demo-shell`, which looked in .airflow/ and
    answered "No .airflow/env.sh: start the demo first (make demo)" while that demo was running."""
    home = tmp_path / "my demo"
    home.mkdir()
    (home / "env.sh").write_text(f"export AIRFLOW_HOME='{home}'\n", encoding="utf-8")
    shell = tmp_path / "shell"
    shell.write_text('#!/bin/sh\necho "home: $AIRFLOW_HOME"\n', encoding="utf-8")
    shell.chmod(0o755)
    environment = {k: v for k, v in os.environ.items() if k not in ("DEMO_HOME", "MAKEFLAGS", "MAKELEVEL")}

    done = subprocess.run(
        ["bash", "-c", demo_shell(home)],
        cwd=REPO,
        env={**environment, "SHELL": str(shell)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.stdout.splitlines()[-1:] == [f"home: {home}"], done.stderr
    assert demo_shell((REPO / ".airflow").resolve()) == "make demo-shell"
