"""`make demo` end to end, twice on one state (the second reuses it); a clear message for a busy port."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from demo.airflow_env import REPO, free_port

COUNTS = r"\s+(\d+)" * 6  # found, launched, skipped, rejected, failed, uncertain
ROW = re.compile(r"^(\d{4}-\d\d-\d\d) \.\. (\d{4}-\d\d-\d\d)\s+(\w+)" + COUNTS + "$")
TOTAL = re.compile(r"^total" + COUNTS + "$")
RECORDED = re.compile(r"The emulator recorded (\d+) launches into scenario 12")


def run_demo(
    home: Path, api_port: int, emulator_port: int, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m demo.run`` (what ``make demo`` runs after installing), exiting after the summary."""
    env = {
        **os.environ,
        "DEMO_HOME": str(home),
        "DEMO_KEEP_RUNNING": "0",
        "DEMO_API_PORT": str(api_port),
        "DEMO_EMULATOR_PORT": str(emulator_port),
    }
    return subprocess.run(
        [sys.executable, "-m", "demo.run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def report(result: subprocess.CompletedProcess[str]) -> tuple[list[tuple[str, ...]], list[int], int]:
    """The per-run rows, the total counts and the emulator's launch count the demo printed."""
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    lines = result.stdout.splitlines()
    rows = [match.groups() for line in lines if (match := ROW.match(line))]
    [total] = [[int(n) for n in match.groups()] for line in lines if (match := TOTAL.match(line))]
    [recorded] = [int(match.group(1)) for line in lines if (match := RECORDED.search(line))]
    return rows, total, recorded


@pytest.fixture(scope="module")
def two_demos(tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    home = tmp_path_factory.mktemp("demo") / ".airflow"
    ports = free_port(), free_port()
    return run_demo(home, *ports), run_demo(home, *ports)


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_the_demo_backfills_seven_days_and_the_emulator_agrees(two_demos):
    first, _ = two_demos
    rows, (found, launched, skipped, rejected, failed, uncertain), recorded = report(first)
    assert len(rows) == 7
    assert {row[2] for row in rows} == {"success"}
    assert found == 7 * 250
    assert launched == recorded > 0.9 * found
    assert rejected > 0 and skipped > 0  # the sample CRM's broken rows and returning customers
    assert failed == uncertain == 0
    assert "email: matching key is missing" in first.stdout  # rejection reasons from the ledger
    assert re.search(r"Airflow UI: http://127\.0\.0\.1:\d+  \(user admin, password \S+\)", first.stdout)


@pytest.mark.e2e
def test_a_second_demo_reuses_the_state_and_launches_nobody_again(two_demos):
    first, second = two_demos
    assert "Reusing the demo CRM" in second.stdout
    rows, total, recorded = report(second)
    assert (rows, total) == report(first)[:2]
    assert recorded == 0


def test_make_demo_runs_the_demo_module():
    result = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=True)
    assert ".venv/bin/python -m demo.run" in result.stdout.splitlines()


def test_a_busy_port_is_reported_clearly(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_demo(tmp_path / ".airflow", port, free_port(), timeout=60)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "DEMO_API_PORT=<port> make demo" in result.stderr
    assert not (tmp_path / ".airflow").exists()  # nothing was started or written
