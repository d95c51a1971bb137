"""A worker SIGKILLed between sending a batch and recording it (while the next chunk is claimed in an open
transaction), then retried; a settle that cannot be written while the next chunk goes out (PostgreSQL
settles one chunk behind)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from altcraft.ledger import Ledger, Scope
from altcraft.ledger.schema import activity_table, contacts_table

from .conftest import PG_URL, launch_counts, open_claims, tagged
from .crash_worker import deliver

WORKER = Path(__file__).with_name("crash_worker.py")


def _wait_for(predicate, timeout=180.0):
    """Wait generously: a worker process importing Airflow can take a minute on a loaded machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _worker(scenario_id: int, try_number: int, ledger_url: str = PG_URL) -> subprocess.Popen:
    """A try in a process of its own, to be killed; a retry runs in this process (`deliver`, the same code):
    another interpreter importing Airflow takes many seconds of a slow machine."""
    return subprocess.Popen(
        [sys.executable, str(WORKER), ledger_url, str(scenario_id), str(try_number), "100"],
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
    url = tagged(PG_URL)
    worker = _worker(scenario_id, try_number=1, ledger_url=url)
    _wait_for(lambda: emulator.state()["faults"][0]["hits"] == 1)
    # meanwhile chunk 4 is claimed in a transaction left open, and none of it is committed
    _wait_for(lambda: open_claims(url) == 1, timeout=1.5)
    assert _committed_contacts(scenario_id) == 30
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL
    _wait_for(lambda: len(emulator.journal(scenario_id=scenario_id)) == 30)  # the held batch was processed

    summary = deliver(PG_URL, scenario_id, try_number=2, count=100)  # the retry: see `_worker`
    assert summary["recovered"] == 10, "the batch in flight is uncertain; the kill rolled chunk 4 back"
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


def _committed_contacts(scenario_id: int) -> int:
    engine = sa.create_engine(PG_URL)
    with engine.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).where(contacts_table.c.scenario_id == scenario_id)
        ).scalar_one()
    engine.dispose()
    return count


@contextmanager
def _settles_held():
    """Hold every settle of the PostgreSQL ledger: its outcome-count upsert waits for this lock (claims of
    new contacts write no outcome)."""
    engine = sa.create_engine(PG_URL)
    Ledger(engine).ensure_schema()
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql(f"LOCK TABLE {activity_table.name} IN EXCLUSIVE MODE")
        yield
    engine.dispose()


def _assert_retry_finds_two_chunks_uncertain(emulator, scenario_id: int) -> None:
    summary = deliver(PG_URL, scenario_id, try_number=2, count=100)  # the retry: see `_worker`
    assert summary["recovered"] == 20, "the chunk being settled and the one sent after it"
    assert (summary["found"], summary["launched"], summary["uncertain"]) == (100, 80, 20)
    counts = launch_counts(emulator, scenario_id)
    assert len(counts) == 100 and set(counts.values()) == {1}, "nobody launched twice, nobody dropped"
    states = Ledger(sa.create_engine(PG_URL)).contact_states(
        Scope(platform=emulator.url, scenario_id=scenario_id)
    )
    assert sorted(states.values()).count("uncertain") == 20


def test_sends_at_most_one_chunk_past_a_settle_still_running_and_a_kill_leaves_both_uncertain(
    emulator, scenario_id
):
    with _settles_held():
        worker = _worker(scenario_id, try_number=1)
        _wait_for(lambda: len(emulator.journal(scenario_id=scenario_id)) >= 20)
        time.sleep(1.0)  # chunk 3 would be out by now if the worker did not wait for chunk 1's settle
        assert len(emulator.journal(scenario_id=scenario_id)) == 20
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    assert worker.returncode == -signal.SIGKILL
    _assert_retry_finds_two_chunks_uncertain(emulator, scenario_id)


def test_a_settle_that_fails_on_the_worker_thread_fails_the_try(emulator, scenario_id):
    """The settle's error reaches the try (here a lock timeout, after the ledger's retries), and the next
    try records the unsettled chunks uncertain."""
    with _settles_held():
        worker = _worker(scenario_id, try_number=1, ledger_url=f"{PG_URL}?options=-c%20lock_timeout%3D300")
        _, err = worker.communicate(timeout=240)
    assert worker.returncode == 1 and "LockNotAvailable" in err, err[-2000:]
    assert len(emulator.journal(scenario_id=scenario_id)) == 20
    _assert_retry_finds_two_chunks_uncertain(emulator, scenario_id)
