"""What every benchmark shares: the bench table in PostgreSQL, connections, jobs in fresh subprocesses.

A benchmark *job* runs in its own ``python -m bench.<module>`` process so its CPU time and peak RSS are
its own; it prints one JSON line (the last line of its stdout) that the orchestrator reads.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PG_CONN_ID = "bench_pg"
ALTCRAFT_CONN_ID = "bench_altcraft"
HTTP_CONN_ID = "bench_http"
PG_DSN = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
TABLE = "contacts"
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
"""Row ``i`` of the bench table was created at ``EPOCH + i ms``."""
DB_ID = 1  # the emulator's demo database (fields CRM_ID string, LOYALTY int)

MAPPING: dict[str, Any] = {
    "matching": "email",
    "key": {"email": "email"},
    "fields": {
        "_fname": "first_name",
        "CRM_ID": {"source": "id", "type": "string"},
        "LOYALTY": {"source": "loyalty", "type": "int"},
        "phones": {"source": "phone", "type": "phone"},
    },
}
"""The pipeline mapping of every throughput run (and of tests/operators): email key, text, int and a phone."""


def window(n: int) -> tuple[datetime, datetime]:
    """The data interval holding exactly rows ``1..n`` of the bench table."""
    return EPOCH, EPOCH + timedelta(milliseconds=n + 1)


def select_sql(schema: str) -> str:
    """The window query the source runs, written out by hand for the baselines (psycopg placeholders)."""
    return f"SELECT * FROM {schema}.{TABLE} WHERE created_at >= %s AND created_at < %s ORDER BY id"


# ------------------------------------------------------------------------------------------ database


@contextmanager
def bench_schema(rows: int) -> Generator[str]:
    """A private schema in database ``test`` holding ``rows`` generated contacts; dropped afterwards."""
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        try:
            conn.execute(
                f"""
                CREATE TABLE {schema}.{TABLE} (
                    id bigint PRIMARY KEY, email text NOT NULL, first_name text, phone text,
                    loyalty int, created_at timestamptz NOT NULL)
                """
            )
            conn.execute(
                f"""
                INSERT INTO {schema}.{TABLE}
                SELECT i, 'user' || i || '@example.org', 'User' || i, '+7900' || lpad(i::text, 7, '0'),
                       i %% 5, %s::timestamptz + i * interval '1 millisecond'
                FROM generate_series(1, %s) AS i
                """,
                (EPOCH, rows),
            )
            conn.execute(f"ANALYZE {schema}.{TABLE}")
            yield schema
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def reset_ledger(schema: str) -> None:
    """Empty the ledger tables of ``schema`` (if created), so every job starts from the same state."""
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        present = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
        tables = [f"{schema}.{name}" for (name,) in present if name in _RESET_TABLES]
        if tables:
            conn.execute(f"TRUNCATE {', '.join(tables)}")


#: The ledger tables a job starts without rows in (the per-day counts go with the outcomes they count).
_RESET_TABLES = ("altcraft_contacts", "altcraft_outcomes", "altcraft_outcome_days")


def server_version() -> str:
    import psycopg

    with psycopg.connect(PG_DSN) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return row[0] if row else "?"


# ---------------------------------------------------------------------------------------- connections


def connection_env(schema: str, emulator_url: str, token: str) -> dict[str, str]:
    """Airflow connections (``AIRFLOW_CONN_*``) of a job: the bench database and the emulator."""
    pg = {
        "conn_type": "postgres",
        "host": "127.0.0.1",
        "port": 5432,
        "login": "postgres",
        "schema": "test",
        # the ledger creates its tables unqualified: keep them in the private schema
        "extra": {"sqlalchemy_query": {"options": f"-csearch_path={schema}"}},
    }
    altcraft = {"conn_type": "altcraft", "host": emulator_url, "password": token, "extra": {"timeout": 60}}
    http = {"conn_type": "http", "host": emulator_url}
    return {
        f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value)
        for conn_id, value in ((PG_CONN_ID, pg), (ALTCRAFT_CONN_ID, altcraft), (HTTP_CONN_ID, http))
    }


def python_env() -> dict[str, str]:
    """The environment of every bench subprocess: bytecode cached, Airflow home isolated.

    A deployed Airflow imports from ``.pyc`` files; where ``PYTHONDONTWRITEBYTECODE`` is set (as on the
    shared machine) imports would compile every module each time. The cache goes to a private
    ``PYTHONPYCACHEPREFIX`` so neither the repository nor the virtualenv is written to.
    """
    tmp = Path(tempfile.gettempdir())
    home = tmp / "altcraft-bench-airflow"
    (home / "dags").mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "",
        "PYTHONPYCACHEPREFIX": str(tmp / "altcraft-bench-pycache"),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }


# ------------------------------------------------------------------------------------------- jobs


def run_job(
    module: str, args: list[str], env: dict[str, str] | None = None, *, prefix: list[str] | None = None
) -> dict[str, Any]:
    """Run ``python -m bench.<module> *args`` in a fresh process (under ``prefix``, e.g. a profiler) and
    return its JSON result line."""
    done = subprocess.run(
        [*(prefix or []), sys.executable, "-m", f"bench.{module}", *args],
        cwd=REPO,
        env={**python_env(), **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"bench job {module} {args} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1])


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


class ServerCpu:
    """CPU seconds the PostgreSQL server's processes spend while it runs (a context manager).

    Every process named ``postgres*`` (backends, WAL writer, checkpointer...) is read every ``interval``
    seconds in a thread, keeping each one's last reading: a backend that exits with its client (the job's
    connections do) keeps what it had at the last reading, so at most ``interval`` of its work is missed.
    """

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="bench-server-cpu", daemon=True)

    def __enter__(self) -> ServerCpu:
        self.first = _postgres_cpu()
        self.last = dict(self.first)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.last.update(_postgres_cpu())

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.last.update(_postgres_cpu())

    @property
    def seconds(self) -> float:
        """CPU seconds used since entering, by every server process seen."""
        return used_cpu_s(self.first, self.last)


def used_cpu_s(first: dict[int, float], last: dict[int, float]) -> float:
    """CPU seconds used between two readings (pid: user + system seconds); a new pid counts from zero."""
    return sum(seconds - first.get(pid, 0.0) for pid, seconds in last.items())


def _postgres_cpu() -> dict[int, float]:
    import psutil

    readings = {}
    for process in psutil.process_iter(["name"]):
        if (process.info["name"] or "").startswith("postgres"):
            try:
                readings[process.pid] = process_cpu_s(process.pid)
            except psutil.Error:  # exited, or not ours to read
                continue
    return readings


def emulator_pid(url: str) -> int:
    """The process of the emulator serving ``url`` (started by `altcraft.testing.emulator_process`)."""
    import psutil

    port = url.rsplit(":", 1)[1].strip("/")
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "altcraft.emulator" in command and port in command:
            return process.pid
    raise RuntimeError(f"no emulator process serves {url}")


def emit(result: dict[str, Any]) -> None:
    """A job's result: one JSON line on stdout."""
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def rss_kib() -> int:
    """Current resident set size of this process, KiB."""
    return _status_kib("VmRSS")


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far, KiB (``VmHWM``; ``ru_maxrss`` lags behind it)."""
    return _status_kib("VmHWM")


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return int(line.split()[1])


@dataclass
class Meter:
    """Wall and CPU time (user + system of this process only) of a block, RSS around it, and each thread's
    CPU time in it (`ThreadCpu`)."""

    wall: float = 0.0
    cpu: float = 0.0
    rss_before_kib: int = 0
    threads: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def measure(self) -> Generator[Meter]:
        self.rss_before_kib = rss_kib()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            with ThreadCpu() as threads:
                yield self
        finally:
            self.wall = time.perf_counter() - wall
            self.cpu = time.process_time() - cpu
            self.threads = threads.seconds

    def result(self, n: int, **extra: Any) -> dict[str, Any]:
        return {
            "n": n,
            "wall_s": self.wall,
            "cpu_s": self.cpu,
            "rate": n / self.wall if self.wall else 0.0,
            "cpu_us_per_contact": self.cpu / n * 1e6 if n else 0.0,
            "thread_cpu_us_per_contact": {name: s / n * 1e6 for name, s in self.threads.items()} if n else {},
            "rss_before_mib": self.rss_before_kib / 1024,
            "peak_rss_mib": peak_rss_kib() / 1024,
            **extra,
        }


class ThreadCpu:
    """CPU seconds each thread of this process spent within the block, added up by thread name without its
    number (a pool's ``altcraft-claim_0`` counts as ``altcraft-claim``, ``Thread-7`` as ``Thread``).

    Each thread's own CPU clock (``pthread_getcpuclockid``) is read at the start and at the end; a thread
    that ends within the block reads its clock as it ends (``Thread._bootstrap_inner`` is wrapped meanwhile).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start: dict[threading.Thread, float] = {}
        self._ended: dict[threading.Thread, float] = {}
        self._bootstrap: Any = None

    def __enter__(self) -> ThreadCpu:
        self._start = _thread_clocks()
        self._bootstrap = bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]
        ended = self._ended

        def counted(thread: threading.Thread) -> None:
            try:
                bootstrap(thread)
            finally:
                ended[thread] = time.thread_time()

        threading.Thread._bootstrap_inner = counted  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        threading.Thread._bootstrap_inner = self._bootstrap  # type: ignore[attr-defined]
        # a thread that ended after its clock was read counts as it ended
        clocks = _thread_clocks() | self._ended
        totals: dict[str, float] = {}
        for thread, cpu in clocks.items():
            name = re.sub(r"[-_]\d+$", "", thread.name)
            totals[name] = totals.get(name, 0.0) + cpu - self._start.get(thread, 0.0)
        self.seconds = dict(sorted(totals.items(), key=lambda item: -item[1]))


def _thread_clocks() -> dict[threading.Thread, float]:
    """CPU seconds so far of every running thread of this process."""
    clocks = {}
    for thread in threading.enumerate():
        try:
            clocks[thread] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))  # type: ignore[arg-type]
        except (OSError, TypeError):  # ended meanwhile, or not started
            continue
    return clocks
