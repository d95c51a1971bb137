"""How this project runs Airflow: the one table of component commands and settings, and a process runner.

`make demo`, the end-to-end test and docker-compose.yaml all start the same components with the same
commands (``tests/e2e/test_compose.py`` checks the compose file against `COMPONENTS`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess  # ruff: ignore[suspicious-subprocess-import]
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from demo.airflow_api import FINISHED, AirflowApi, wait_for

REPO = Path(__file__).resolve().parent.parent

#: ``airflow <args>`` of each long-running component (the compose services' ``command``).
COMPONENTS: dict[str, tuple[str, ...]] = {
    "scheduler": ("scheduler",),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer",),
    "api-server": ("api-server",),
}
#: ``airflow <args>`` of a Celery worker (the compose ``airflow-worker`` service, profile ``celery``).
CELERY_WORKER: tuple[str, ...] = ("celery", "worker")
#: One-off set-up before the components start (the compose ``airflow-init`` job).
DB_MIGRATE: tuple[str, ...] = ("db", "migrate")
#: The Altcraft API emulator (``python -m altcraft.emulator``); add ``--host``/``--port``.
EMULATOR: tuple[str, ...] = ("-m", "altcraft.emulator")

SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
ADMIN_USER = "admin"

#: Settings of every deployment in this project (docker-compose.yaml repeats them).
COMMON_SETTINGS: dict[str, str] = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    # Airflow 3 disables the connection form's Test button (and POST /connections/test) by default.
    "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
}

#: Short loops for one machine: DAG files are picked up and runs start within seconds, few processes.
LOCAL_SETTINGS: dict[str, str] = {
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
    "AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
    "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "600",
    "AIRFLOW__CORE__PARALLELISM": "4",
    "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "5",
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__API__HOST": "127.0.0.1",
}


#: CeleryExecutor settings of every deployment here (the compose ``celery`` profile repeats them); the
#: broker and result backend URLs are the deployment's own (`celery_settings`).
CELERY_SETTINGS: dict[str, str] = {
    "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
    # Tasks are mostly waiting on the CRM and Altcraft; the platform's pool, not this, bounds the calls.
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
    # A worker that died (SIGKILL, lost host) is noticed after 30 s without a heartbeat instead of 300 s,
    # and its task retried elsewhere; tasks heartbeat every 5 s.
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # A broker restart takes seconds: keep trying to publish a queued task instead of failing it.
    "AIRFLOW__CELERY__TASK_PUBLISH_MAX_RETRIES": "30",
}


def celery_settings(broker_url: str, result_backend: str, queue: str = "default") -> dict[str, str]:
    """`CELERY_SETTINGS` with this deployment's broker, result backend (``db+<SQLAlchemy URL>``) and queue."""
    return {
        **CELERY_SETTINGS,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
    }


def hostname() -> str:
    """``[core] hostname_callable`` of local Celery workers: ``ALTCRAFT_HOSTNAME``, else the FQDN.

    Workers on one machine share its FQDN; each gets its own name so that the task instances it ran
    say which one it was, as on separate hosts.
    """
    return os.environ.get("ALTCRAFT_HOSTNAME") or socket.getfqdn()


def airflow_settings(
    *,
    home: Path,
    sql_alchemy_conn: str,
    dags_folder: Path,
    api_port: int,
    secret: str,
    log_ports: tuple[int, int],
) -> dict[str, str]:
    """Every ``AIRFLOW__*`` variable of a local Airflow: home, metadata database, API address, secrets.

    ``secret`` signs the tokens the scheduler gives tasks and the API server checks, so it must be the
    same in every component; ``log_ports`` are the worker and triggerer log servers (internal).
    """
    api_url = f"http://127.0.0.1:{api_port}"
    return {
        **COMMON_SETTINGS,
        **LOCAL_SETTINGS,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__SECRET_KEY": secret,
        "AIRFLOW__API_AUTH__JWT_SECRET": secret,
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(log_ports[0]),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(log_ports[1]),
    }


def airflow_command(*args: str) -> list[str]:
    """``airflow <args>`` run by this interpreter's Airflow (no PATH lookup, works without activation)."""
    return [sys.executable, "-m", "airflow", *args]


def emulator_command(host: str, port: int) -> list[str]:
    return [sys.executable, *EMULATOR, "--host", host, "--port", str(port)]


def run_airflow(*args: str, env: Mapping[str, str], timeout: float = 300, attempts: int = 5) -> str:
    """Run an ``airflow`` CLI command to completion; its output, or RuntimeError with the output.

    On a SQLite metadata database a command can meet "database is locked" while the scheduler and the
    DAG processor write; its transaction was rolled back, so it is run again (a few times, bounded).
    """
    for attempt in range(1, attempts + 1):
        result = subprocess.run(  # ruff: ignore[subprocess-without-shell-equals-true]
            airflow_command(*args),
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode == 0:
            return result.stdout
        if "database is locked" not in result.stdout + result.stderr or attempt == attempts:
            break
        time.sleep(2 * attempt)
    raise RuntimeError(
        f"`airflow {' '.join(args)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )


# ----------------------------------------------------------------------------------------- ports


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


# ------------------------------------------------------------------------------------- processes


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]


@dataclass
class Stack:
    """Long-running processes, each in its own process group with its output in ``log_dir/<name>.log``.

    Use as a context manager: on exit every process group is stopped (SIGTERM, then SIGKILL), so no
    task runner or log server a component forked is left behind.
    """

    env: Mapping[str, str]
    log_dir: Path
    processes: dict[str, Process] = field(default_factory=dict)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, name: str, command: Sequence[str], env: Mapping[str, str] | None = None) -> Process:
        """Start ``command`` as ``name``; ``env`` is added to the stack's environment for it alone."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        popen = subprocess.Popen(  # ruff: ignore[subprocess-without-shell-equals-true]
            list(command),
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes[name] = process = Process(name, popen, log_path, log)
        return process

    def start_airflow(self, *names: str) -> None:
        """Start the named `COMPONENTS` (all of them by default)."""
        for name in names or tuple(COMPONENTS):
            self.start(name, airflow_command(*COMPONENTS[name]))

    def kill(self, name: str) -> None:
        """SIGKILL ``name`` and everything it forked, as if its host died, and forget it.

        Its whole tree: Airflow's task supervisor puts each task runner in a process group of its own.
        """
        import psutil

        process = self.processes.pop(name)
        with contextlib.suppress(psutil.NoSuchProcess):
            tree = psutil.Process(process.popen.pid).children(recursive=True)
            _signal_group(process.popen, signal.SIGKILL)
            for child in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        process.popen.wait()
        process.log.close()

    def terminate(self, name: str, timeout: float = 30) -> None:
        """SIGTERM ``name`` and wait for it (then SIGKILL its group) and forget it."""
        process = self.processes.pop(name)
        process.popen.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=timeout)
        _signal_group(process.popen, signal.SIGKILL)
        process.popen.wait()
        process.log.close()

    def check_alive(self) -> None:
        """RuntimeError naming the first process that exited, with the end of its log."""
        for process in self.processes.values():
            code = process.popen.poll()
            if code is not None:
                raise RuntimeError(f"{process.name} exited with status {code}:\n{self.tail(process.name)}")

    def tail(self, name: str, lines: int = 60) -> str:
        path = self.processes[name].log_path
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def logs(self, lines: int = 60) -> str:
        """The end of every process's log, for a failure report."""
        return "\n".join(
            f"===== {name} ({process.log_path}) =====\n{self.tail(name, lines)}"
            for name, process in self.processes.items()
        )

    def stop(self, timeout: float = 5) -> None:
        for process in self.processes.values():
            _signal_group(process.popen, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(process.popen, signal.SIGKILL)  # also whatever the component forked
            process.popen.wait()
            process.log.close()
        self.processes.clear()


def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, sig)


# ------------------------------------------------------------------------------------ local Airflow


class LocalAirflow:
    """An Airflow of its own on this machine: its home, metadata database, DAG folder and API port.

    A context manager: every component started through it is stopped on exit. The ``admin`` user's
    password is generated once and kept in ``<home>/passwords.json``.
    """

    def __init__(
        self,
        *,
        home: Path,
        sql_alchemy_conn: str,
        dags_folder: Path,
        api_port: int,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.api_url = f"http://127.0.0.1:{api_port}"
        settings = airflow_settings(
            home=home,
            sql_alchemy_conn=sql_alchemy_conn,
            dags_folder=dags_folder,
            api_port=api_port,
            secret=secrets.token_urlsafe(32),
            log_ports=(free_port(), free_port()),
        )
        self.settings = {**settings, **(extra_env or {})}
        self.env = {**os.environ, **self.settings}
        self.password = _admin_password(Path(settings["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]))
        self.stack = Stack(self.env, home / "component-logs")
        self.api = AirflowApi(self.api_url, ADMIN_USER, self.password)

    def __enter__(self) -> LocalAirflow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.stop()

    def write_env(self, path: Path) -> None:
        """A shell file exporting this Airflow's settings (``. path`` makes the ``airflow`` CLI use it)."""
        lines = [f"export {name}={shlex.quote(value)}" for name, value in sorted(self.settings.items())]
        lines.append(f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"')
        path.write_text("\n".join(["# Generated by the demo: the Airflow CLI's environment.", *lines, ""]))
        path.chmod(0o600)

    def airflow(self, *args: str, timeout: float = 300) -> str:
        return run_airflow(*args, env=self.env, timeout=timeout)

    def migrate(self) -> None:
        self.airflow(*DB_MIGRATE, timeout=600)

    def start(self, *names: str, timeout: float = 300) -> None:
        """Start the named components (default all) and wait until the API server answers."""
        self.stack.start_airflow(*names)
        wait_for("the Airflow API server", self.api.healthy, timeout, check=self.stack.check_alive)

    def start_celery_worker(self, name: str, *, queue: str, concurrency: int | None = None) -> None:
        """A Celery worker ``name``: its task instances' hostname, and node ``name@queue`` in Celery.

        Each worker serves its task logs on a port of its own, as it would on a host of its own; the
        Celery node name includes the queue, so deployments sharing a broker never clash.
        """
        args = [*CELERY_WORKER, "--celery-hostname", f"{name}@{queue}", "--queues", queue]
        args += ["--concurrency", str(concurrency)] if concurrency else []
        env = {
            "ALTCRAFT_HOSTNAME": name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "demo.airflow_env.hostname",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), self.env.get("PYTHONPATH")])),
        }
        self.stack.start(name, airflow_command(*args), env)

    def wait_for_dags(self, *dag_ids: str, timeout: float = 120) -> None:
        """Wait until the DAG processor has parsed and stored each DAG."""
        for dag_id in dag_ids:
            wait_for(
                f"DAG {dag_id} to be parsed",
                lambda d=dag_id: self.api.dag(d),
                timeout,
                check=self.stack.check_alive,
            )

    def backfill(self, dag_id: str, first: datetime, last: datetime, *, reprocess: str | None = None) -> str:
        """``airflow backfill create`` for the runs whose logical dates lie in ``[first, last]``."""
        args = ["backfill", "create", "--dag-id", dag_id]
        args += ["--from-date", first.isoformat(), "--to-date", last.isoformat(), "--max-active-runs", "7"]
        return self.airflow(*args, *(["--reprocess-behavior", reprocess] if reprocess else []))

    def wait_for_runs(
        self, dag_id: str, logical_dates: Sequence[datetime], timeout: float
    ) -> list[dict[str, Any]]:
        """Wait until the DAG has a finished run for each logical date; returns those runs, oldest first."""
        wanted = {date.isoformat() for date in logical_dates}

        def finished() -> list[dict[str, Any]] | None:
            runs = runs_at(self.api.runs(dag_id), wanted)
            done = len(runs) == len(wanted) and all(run["state"] in FINISHED for run in runs)
            return runs if done else None

        return wait_for(
            f"{len(wanted)} runs of {dag_id} to finish", finished, timeout, check=self.stack.check_alive
        )

    def wait_for_backfills(self, dag_id: str, timeout: float = 90) -> None:
        """Wait until the scheduler marked every backfill of the DAG complete (it checks every 30 s)."""
        wait_for(
            f"the backfills of {dag_id} to be marked complete",
            lambda: all(b["completed_at"] for b in self.api.backfills(dag_id)),
            timeout,
            check=self.stack.check_alive,
        )


def runs_at(runs: Sequence[dict[str, Any]], logical_dates: set[str]) -> list[dict[str, Any]]:
    """The runs whose logical date (ISO) is one of these; a run without one (a manual trigger) is none."""
    return [run for run in runs if run["logical_date"] and _iso(run["logical_date"]) in logical_dates]


def _iso(text: str) -> str:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()


def _admin_password(path: Path) -> str:
    """The ``admin`` password in the simple auth manager's passwords file, created if missing."""
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))[ADMIN_USER]
    password = secrets.token_urlsafe(12)
    path.write_text(json.dumps({ADMIN_USER: password}), encoding="utf-8")
    path.chmod(0o600)
    return password
