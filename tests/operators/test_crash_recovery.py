"""A worker SIGKILLed between sending a batch and recording it, then retried."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from altcraft.ledger import Ledger, Scope

from .conftest import PG_URL, launch_counts

WORKER = Path(__file__).with_name("crash_worker.py")


def _wait_for(predicate, timeout=180.0):
    """Wait generously: a worker process importing Airflow can take a minute on a loaded machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _worker(scenario_id: int, try_number: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), PG_URL, str(scenario_id), str(try_number), "100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
        text=True,
    )


def test_sigkill_mid_run_then_retry(emulator, scenario_id):
    # The third request is held for 2 s by the emulator, which processes it even though its client dies.
    emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start_batch",
            "kind": "latency",
            "latency_ms": 2000,
            "every": 3,
            "count": 1,
        }
    )
    worker = _worker(scenario_id, try_number=1)
    _wait_for(lambda: emulator.state()["faults"][0]["hits"] == 1)
    time.sleep(0.3)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL
    _wait_for(lambda: len(emulator.journal(scenario_id=scenario_id)) == 30)  # the held batch was processed

    retry = _worker(scenario_id, try_number=2)
    out, err = retry.communicate(timeout=240)
    assert retry.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["recovered"] == 10, "the one in-flight batch is reported uncertain"
    assert summary["earlier_tries"]["uncertain"] == 10, "recorded for try 1, counted apart"
    assert (summary["found"], summary["launched"], summary["skipped"], summary["uncertain"]) == (
        100,
        70,
        20,
        10,
    )

    counts = launch_counts(emulator, scenario_id)
    assert len(counts) == 100 and set(counts.values()) == {1}, "nobody launched twice, nobody dropped"
    states = Ledger(sa.create_engine(PG_URL)).contact_states(
        Scope(platform=emulator.url, scenario_id=scenario_id)
    )
    assert sorted(states.values()).count("launched") == 90
    assert sorted(states.values()).count("uncertain") == 10
