"""`make demo` end to end, as a newcomer uses it: twice on one state, the second time kept running.

The first demo exits after its summary. The second, started with ``make demo`` on the same state and a
DAG folder that also holds a broken spec, keeps running while the newcomer's steps are checked against it
through its REST API and the Airflow CLI of ``make demo-shell``: the broken spec's import error stays
listed (watched for 60 s), runs triggered the Airflow 3 way (no logical date) work or fail at once
saying why, the connection test works, the scenario link opens a page. Then SIGTERM stops it cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from demo.airflow_api import FINISHED, AirflowApi, wait_for
from demo.airflow_env import ADMIN_USER, REPO, free_port, port_in_use

from altcraft.pipelines.factory import CHECKER_FILE
from altcraft.pipelines.window import Schedule

COUNTS = r"\s+(\d+)" * 6  # found, launched, skipped, rejected, failed, uncertain
ROW = re.compile(r"^(\d{4}-\d\d-\d\d) \.\. (\d{4}-\d\d-\d\d)\s+(\w+)" + COUNTS + "$")
TOTAL = re.compile(r"^total" + COUNTS + "$")
RECORDED = re.compile(r"The emulator recorded (\d+) launches into scenario 12")
KEEPS_RUNNING = re.compile(r"Everything keeps running; press Ctrl-C \(or kill (\d+)\) to stop\.")
DAG_ID = "demo_sqlite_welcome"
BROKEN_SPEC = REPO / "tests" / "pipelines" / "broken_specs" / "unknown_field.yaml"
WATCH_SECONDS, WATCH_EVERY = 60, 2
#: How long the manual runs may take: a task killed by the Airflow API server's SQLite lock-up (docs/demo.md)
#: is retried after the spec's default retry_delay of 5 minutes. The tests that set `manual_runs` up allow
#: that and more (pytest's default of 300 s, counting the set-up, failed them while the retry waited).
MANUAL_RUNS_WAIT = 900
MANUAL_RUNS_TIMEOUT = MANUAL_RUNS_WAIT + 300


def demo_env(home: Path, dags: Path, api_port: int, emulator_port: int, keep_running: bool) -> dict[str, str]:
    return {
        **os.environ,
        "DEMO_HOME": str(home),
        "DEMO_DAGS_FOLDER": str(dags),
        "DEMO_KEEP_RUNNING": "1" if keep_running else "0",
        "DEMO_API_PORT": str(api_port),
        "DEMO_EMULATOR_PORT": str(emulator_port),
    }


def run_demo(
    home: Path, api_port: int, emulator_port: int, dags: Path | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """``python -m demo.run`` (what ``make demo`` runs after installing), exiting after the summary."""
    env = demo_env(home, dags or REPO / "dags", api_port, emulator_port, keep_running=False)
    return subprocess.run(
        [sys.executable, "-m", "demo.run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def report(stdout: str) -> tuple[list[tuple[str, ...]], list[int], int]:
    """The per-run rows, the total counts and the emulator's launch count the demo printed."""
    lines = stdout.splitlines()
    rows = [match.groups() for line in lines if (match := ROW.match(line))]
    [total] = [[int(n) for n in match.groups()] for line in lines if (match := TOTAL.match(line))]
    [recorded] = [int(match.group(1)) for line in lines if (match := RECORDED.search(line))]
    return rows, total, recorded


@dataclass
class RunningDemo:
    """``make demo`` kept running: its process, output so far, REST API and state directory."""

    make: subprocess.Popen[bytes]
    output_path: Path
    home: Path
    api: AirflowApi
    api_port: int
    emulator_url: str
    pid: int = 0
    watch: list[tuple[bool, bool]] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.output_path.read_text(encoding="utf-8", errors="replace")

    def shell(self, commands: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``make demo-shell`` reading ``commands`` from its input, as a user types them.

        Run again (up to 3 times) when the SQLite metadata database was locked by a component.
        """
        env = {**os.environ, "DEMO_HOME": str(self.home), "SHELL": "/bin/bash"}
        for _ in range(3):
            done = subprocess.run(
                ["make", "-s", "--no-print-directory", "demo-shell"],
                cwd=REPO,
                env=env,
                input=commands,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if "database is locked" not in done.stdout + done.stderr:
                break
            time.sleep(3)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        return done


@pytest.fixture(scope="module")
def demo_state(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("demo")
    dags = root / "dags"
    shutil.copytree(REPO / "dags", dags)
    return {"home": root / ".airflow", "dags": dags, "ports": (free_port(), free_port())}


@pytest.fixture(scope="module")
def first_demo(demo_state) -> subprocess.CompletedProcess[str]:
    return run_demo(demo_state["home"], *demo_state["ports"], dags=demo_state["dags"])


@pytest.fixture(scope="module")
def running_demo(first_demo, demo_state):
    """``make demo`` again on the first one's state, with a broken spec added, kept running."""
    home, dags, (api_port, emulator_port) = demo_state["home"], demo_state["dags"], demo_state["ports"]
    shutil.copy(BROKEN_SPEC, dags / "pipelines" / BROKEN_SPEC.name)
    output_path = home.parent / "running-demo.log"
    with output_path.open("wb") as output:
        make = subprocess.Popen(
            ["make", "--no-print-directory", "demo"],  # also when run by `make test-e2e` (a sub-make)
            cwd=REPO,
            env=demo_env(home, dags, api_port, emulator_port, keep_running=True),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    password = json.loads((home / "passwords.json").read_text())[ADMIN_USER]
    demo = RunningDemo(
        make, output_path, home, AirflowApi(f"http://127.0.0.1:{api_port}", ADMIN_USER, password),
        api_port, f"http://127.0.0.1:{emulator_port}",
    )  # fmt: skip
    try:

        def started() -> int | None:
            assert make.poll() is None, f"make demo exited ({make.returncode}):\n{demo.output}"
            match = KEEPS_RUNNING.search(demo.output)
            return int(match.group(1)) if match else None

        demo.pid = wait_for("the demo to keep running", started, timeout=900)
        yield demo
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGTERM)
            try:
                make.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
        kill_processes_of(home)


def test_a_failed_demos_leftover_processes_are_killed(tmp_path):
    home, other = tmp_path / ".airflow", tmp_path / "other"
    home.mkdir()
    with (home / "api-server.log").open("wb") as log:
        started = [
            subprocess.Popen(["sleep", "60"], env={**os.environ, "AIRFLOW_HOME": str(home)}),
            subprocess.Popen(["sleep", "60"], stdout=log),  # its environment says nothing; its open file does
            subprocess.Popen(["sleep", "60"], env={**os.environ, "AIRFLOW_HOME": str(other)}),
        ]
    kill_processes_of(home)
    assert [p.wait(timeout=10) for p in started[:2]] == [-signal.SIGKILL] * 2
    assert started[2].poll() is None, "only the demo's own"
    started[2].kill()
    started[2].wait()


def kill_processes_of(home: Path) -> None:
    """SIGKILL every process of `processes_of(home)`: a demo that failed in a test must not leave its Airflow
    components (each in a session of its own) running into the next tests and jobs."""
    for pid in processes_of(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def processes_of(home: Path) -> list[int]:
    """Processes running with ``AIRFLOW_HOME=home`` or a file under ``home`` open (the open files catch the
    API server, whose process title rewrote its environment)."""
    marker, prefix = f"AIRFLOW_HOME={home}".encode(), f"{home}/"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            opened = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:  # gone, or not ours to read
            continue
        if marker in environ or any(path.startswith(prefix) for path in opened):
            found.append(int(proc.name))
    return found


@pytest.fixture(scope="module")
def import_error_watch(running_demo) -> threading.Thread:
    """Polls the REST API for 60 s in the background: is the broken spec listed, is the demo DAG fine?"""

    api = AirflowApi(running_demo.api.url, *running_demo.api.credentials)  # a session of its own

    def watch() -> None:
        deadline = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < deadline:
            errors = api.import_errors()
            listed = any(BROKEN_SPEC.name in text for text in errors.values())
            dag = api.dag(DAG_ID) or {}
            running_demo.watch.append((listed, dag.get("is_stale") is False and not dag["has_import_errors"]))
            time.sleep(WATCH_EVERY)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def manual_runs(running_demo, import_error_watch) -> dict[str, dict[str, Any]]:
    """Runs triggered without a logical date: by the CLI, by the REST API, and one with half a window."""
    shell = running_demo.shell(f"airflow dags trigger {DAG_ID} --output json\n")
    cli_run = json.loads(next(line for line in shell.stdout.splitlines() if line.startswith("[")))[0]
    api = running_demo.api
    rest_run = trigger(api, DAG_ID)
    half_run = trigger(api, DAG_ID, conf={"window_start": "2026-01-01T00:00:00+00:00"})
    ids = {"cli": cli_run["dag_run_id"], "rest": rest_run["dag_run_id"], "half": half_run["dag_run_id"]}

    def finished() -> dict[str, dict[str, Any]] | None:
        runs = {run["dag_run_id"]: run for run in api.runs(DAG_ID)}
        done = all(runs.get(run_id, {}).get("state") in FINISHED for run_id in ids.values())
        return {name: runs[run_id] for name, run_id in ids.items()} if done else None

    return wait_for("the manual runs to finish", finished, timeout=MANUAL_RUNS_WAIT, interval=2)


def trigger(api: AirflowApi, dag_id: str, **body: Any) -> dict[str, Any]:
    """``api.trigger``, tried once more after the Airflow API server's SQLite lock-up (docs/demo.md: a
    trigger arriving while a task starts fails after 60 s with 500 "Database error"). That error comes from
    the audit-log dependency, which runs before the run is created, so no run is made twice."""
    try:
        return api.trigger(dag_id, **body)
    except requests.HTTPError as error:
        answer = error.response
        if answer is None or answer.status_code != 500 or "Database error" not in answer.text:
            raise
        return api.trigger(dag_id, **body)


# ------------------------------------------------------------------------------------------- tests


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_the_demo_backfills_seven_days_and_the_emulator_agrees(first_demo, demo_state):
    home = demo_state["home"].resolve()
    assert first_demo.returncode == 0, f"{first_demo.stdout}\n{first_demo.stderr}"
    rows, (found, launched, skipped, rejected, failed, uncertain), recorded = report(first_demo.stdout)
    assert len(rows) == 7
    assert {row[2] for row in rows} == {"success"}
    assert found == 7 * 250
    assert launched == recorded > 0.9 * found
    assert rejected > 0 and skipped > 0  # the sample CRM's broken rows and returning customers
    assert failed == uncertain == 0
    assert "email: matching key is missing" in first_demo.stdout  # rejection reasons from the ledger
    assert re.search(r"Airflow UI: http://127\.0\.0\.1:\d+  \(user admin, password \S+\)", first_demo.stdout)
    # the command that opens this demo's state: its DEMO_HOME is not the repository's .airflow/
    assert f"Airflow CLI: DEMO_HOME={shlex.quote(str(home))} make demo-shell" in first_demo.stdout
    assert "Everything has stopped (DEMO_KEEP_RUNNING=0)" in first_demo.stdout  # it ran with 0


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_a_second_demo_reuses_the_state_and_launches_nobody_again(running_demo, first_demo):
    output = running_demo.output
    assert "Reusing the demo CRM" in output
    rows, total, recorded = report(output)
    assert (rows, total) == report(first_demo.stdout)[:2]
    assert recorded == 0


@pytest.mark.e2e
def test_a_broken_spec_stays_listed_as_an_import_error_and_the_cli_lists_it(running_demo, import_error_watch):
    # The CLI of `make demo-shell`, without --local: what the metadata database holds.
    # the CLI exits 1 while import errors exist: that is its answer, not the shell's failure
    shell = running_demo.shell("airflow dags list-import-errors --output json || true\n")
    listed = json.loads(next(line for line in shell.stdout.splitlines() if line.startswith("[")))
    import_error_watch.join(timeout=WATCH_SECONDS + 60)

    polls = running_demo.watch
    print(f"\nimport error listed in {sum(p[0] for p in polls)}/{len(polls)} polls over {WATCH_SECONDS} s")
    assert len(polls) >= WATCH_SECONDS // WATCH_EVERY // 2
    assert all(listed_then for listed_then, _ in polls), polls
    assert all(dag_fine for _, dag_fine in polls), "the demo pipeline stays active, without import errors"
    [error] = [item for item in listed if item["filepath"] == CHECKER_FILE]
    assert "Pipeline spec unknown_field.yaml is invalid" in error["error"]
    assert "retry: unknown field (did you mean 'retries'?)" in error["error"]


@pytest.mark.e2e
@pytest.mark.timeout(MANUAL_RUNS_TIMEOUT)
def test_runs_triggered_without_a_logical_date_read_the_last_complete_day(running_demo, manual_runs):
    for name in ("cli", "rest"):
        run = manual_runs[name]
        assert run["state"] == "success", (name, run)
        assert run["logical_date"] is None
        [window] = running_demo.api.xcom(DAG_ID, run["dag_run_id"], "plan")
        run_after = datetime.fromisoformat(run["run_after"].replace("Z", "+00:00"))
        start, end = Schedule("UTC", cron="0 0 * * *").last_complete(run_after)
        assert window == {"window_start": start.isoformat(), "window_end": end.isoformat()}, name


@pytest.mark.e2e
@pytest.mark.timeout(MANUAL_RUNS_TIMEOUT)
def test_a_run_with_half_a_window_fails_at_once_saying_how_to_trigger_it(running_demo, manual_runs):
    run = manual_runs["half"]
    assert run["state"] == "failed"
    [plan] = running_demo.api.task_instances(DAG_ID, run["dag_run_id"], "plan")
    assert (plan["state"], plan["try_number"]) == ("failed", 1)  # no retries
    log = running_demo.api.task_log(DAG_ID, run["dag_run_id"], "plan", 1)
    assert "window_end is missing" in log
    assert "Trigger the pipeline without window parameters" in log


@pytest.mark.e2e
def test_the_connection_test_is_enabled(running_demo):
    body = {
        "connection_id": "altcraft_default",
        "conn_type": "altcraft",
        "host": running_demo.emulator_url,
        "password": "emulator-token",
    }
    answer = running_demo.api.request("POST", "connections/test", json=body)
    assert answer["status"] is True, answer
    assert "1 database(s) visible" in answer["message"]


@pytest.mark.e2e
@pytest.mark.timeout(MANUAL_RUNS_TIMEOUT)
def test_the_scenario_link_opens_the_emulators_scenario_page(running_demo, manual_runs):
    run_id = manual_runs["rest"]["dag_run_id"]
    path = f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/import_and_launch/links"
    url = running_demo.api.get(path, map_index=0)["extra_links"]["Altcraft scenario"]
    page = requests.get(url, timeout=10)
    assert url == f"{running_demo.emulator_url}/workflows/12"
    assert page.status_code == 200 and "Welcome chain" in page.text


@pytest.mark.e2e
@pytest.mark.timeout(MANUAL_RUNS_TIMEOUT)
def test_sigterm_stops_the_demo_cleanly(running_demo, manual_runs, import_error_watch):
    os.kill(running_demo.pid, signal.SIGTERM)  # the pid the demo prints: "kill <pid>"
    code = running_demo.make.wait(timeout=120)
    output = running_demo.output
    assert code == 0, output[-3000:]
    assert output.rstrip().endswith("Stopped.")
    assert "Error" not in output.split("Everything keeps running")[1]
    assert not port_in_use(running_demo.api_port)


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_a_hangup_stops_the_demo_cleanly(tmp_path):
    """A closed terminal (SIGHUP) stops the demo as Ctrl-C does: its Airflow components, each in a session
    of its own, would otherwise keep running and holding the ports."""
    home, api_port, emulator_port = tmp_path / ".airflow", free_port(), free_port()
    env = demo_env(home, REPO / "dags", api_port, emulator_port, keep_running=True)
    output_path = tmp_path / "demo.log"
    with output_path.open("wb") as output:
        demo = subprocess.Popen(
            [sys.executable, "-m", "demo.run"], cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:

        def started() -> bool:
            text = output_path.read_text(encoding="utf-8", errors="replace")
            assert demo.poll() is None, f"the demo exited ({demo.returncode}):\n{text}"
            return KEEPS_RUNNING.search(text) is not None

        wait_for("the demo to keep running", started, timeout=900)
        demo.send_signal(signal.SIGHUP)
        code = demo.wait(timeout=120)
        text = output_path.read_text(encoding="utf-8", errors="replace")
        assert code == 0, text[-3000:]
        assert text.rstrip().endswith("Stopped.")
        assert not port_in_use(api_port) and not port_in_use(emulator_port)
        assert not processes_of(home), "a component outlived the demo"
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        kill_processes_of(home)


def test_make_demo_runs_the_demo_module():
    result = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=True)
    assert ".venv/bin/python -m demo.run" in result.stdout.splitlines()


def test_demo_shell_without_a_demo_says_to_start_one(tmp_path):
    env = {**os.environ, "DEMO_HOME": str(tmp_path / "none")}
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "demo-shell"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "start the demo first (make demo)" in result.stdout


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
