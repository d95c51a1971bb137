"""Does the ledger slow down as it grows? Claim + settle of new contacts, empty ledger vs a full one.

One job per backend (PostgreSQL, SQLite, MariaDB), each on a private database or schema dropped at the
end: the same ``Ledger`` calls the delivery makes per chunk (``claim`` then ``settle``, 1,000 new contacts
each, all launched) are timed first on an empty ledger, then after ``--rows`` launched contacts of the
same scenario (and one outcome row each) were added in SQL (``generate_series`` / ``seq_1_to_N`` /
a recursive CTE; then vacuumed and analysed, as a ledger that grew over months would be). Reported per
phase: the median chunk's wall time per contact (what the database costs, not only this process) and
the client CPU. Then the same for returning contacts (`returning`): contacts already launched, claimed for a
window none of them was launched for under ``every_run``, so each is found, its launches for the window
looked up in the outcomes, and launched again; on the empty ledger those of its first phase, on the full
one as many filled contacts picked at random (the fill hashes their keys as `Scope.contact_hash` does).

The fill comes in hash order, i.e. random key order, as contacts arrive in a real ledger, so its
B-trees look grown rather than bulk-loaded (PostgreSQL, ``pgstatindex`` at 10,000,000 rows: 69.5% leaf
density for the outcomes' contact B-tree, filled in that order). A fill in key order was
misleading both ways: into an empty table it packs the primary key's leaves to 90.4% (922 MB), while
after the empty phase's 21,000 contacts every insert lands between two of them and splits pages in the
middle, leaving them half empty (1,744 MB): more pages for the same rows than any grown ledger has.
MariaDB (InnoDB, clustered on the key) is still filled in key order; a random fill was not measured.

``--shared-buffers 6GB`` runs the PostgreSQL job on a private cluster (``initdb`` and ``pg_ctl`` of the
machine's binaries, ``BENCH_PG_BIN``, in a temporary folder, on a free port) with that
``shared_buffers`` and every other setting at its default: the machine's server keeps PostgreSQL's
default 128 MB, far less than the random pages a ledger of millions of contacts writes.

``python -m bench.ledger_growth BACKEND --rows N --contacts M`` prints the job's result as one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.common import emit

CHUNK = 1000
PLATFORM = "http://bench.ledger"
SCENARIO_ID = 77
MARIADB_URL = "mysql+mysqldb://root@127.0.0.1:3306"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ("postgresql", "sqlite", "mariadb")
#: The machine's PostgreSQL programs (Debian's layout), for the private cluster of ``--shared-buffers``.
PG_BIN = Path(os.environ.get("BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))

_CONTACT_COLUMNS = (
    "contact_hash, platform, scenario_id, contact_key, status, source_key, launch_count, first_launched_at, "
    "last_launched_at, last_run_key, last_window_key, claim_run_key, claim_try_number, batch_id, claimed_at, "
    "updated_at, created_at"
)
_OUTCOME_COLUMNS = (
    "platform, scenario_id, dag_id, task_id, run_id, window_key, try_number, contact_key, contact_hash, "
    "source_key, outcome, profile_id, recorded_at, contact_created_at"
)
# per backend: a row source of ``i`` (1..:n) and the SQL of a text's sha256 in hex (on SQLite a function of
# this module's, `_sha256`): a contact's hash as `Scope.contact_hash` makes it, so `measure` finds it again
_SERIES = {
    "postgresql": ("generate_series(1, :n) AS s(i)", "encode(sha256(convert_to({}, 'UTF8')), 'hex')"),
    "mariadb": ("(SELECT seq AS i FROM seq_1_to_{n}) AS s", "SHA2({}, 256)"),
    "sqlite": ("s", "bench_sha256({})"),
}


@contextmanager
def private_postgres(shared_buffers: str) -> Generator[str]:
    """A PostgreSQL cluster of this job's own (``initdb`` in a temporary folder, a free port), with
    ``shared_buffers`` and every other setting at its default; yields its URL, then stops and deletes it.

    Run as the ``postgres`` user when this process is root (``initdb`` refuses root).
    """
    user = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="altcraft-bench-pg-"))
    data = folder / "data"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    options = (
        f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder} "
        f"-c shared_buffers={shared_buffers}"
    )

    def pg(*args: str) -> None:
        subprocess.run(list(args), check=True, capture_output=True, user=user)

    try:
        if user:
            shutil.chown(folder, user)
        pg(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start")
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            pg(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def engine_for(backend: str, postgres_url: str = POSTGRES_URL) -> Generator[sa.Engine]:
    """An engine on a new, empty database (PostgreSQL: schema, on ``postgres_url``) of ``backend``;
    dropped afterwards."""
    name = f"bench_ledger_{uuid.uuid4().hex[:10]}"
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="altcraft-bench-ledger-") as folder:
            engine = sa.create_engine(f"sqlite:///{Path(folder) / 'ledger.db'}")
            try:
                yield engine
            finally:
                engine.dispose()
        return
    admin_url = postgres_url if backend == "postgresql" else MARIADB_URL
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    create, drop = (
        (f"CREATE SCHEMA {name}", f"DROP SCHEMA {name} CASCADE")
        if backend == "postgresql"
        else (f"CREATE DATABASE {name}", f"DROP DATABASE {name}")
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(create)
    engine = (
        sa.create_engine(postgres_url, connect_args={"options": f"-csearch_path={name}"})
        if backend == "postgresql"
        else sa.create_engine(f"{MARIADB_URL}/{name}")
    )
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(drop)
        admin.dispose()


def fill(engine: sa.Engine, backend: str, rows: int) -> float:
    """Add ``rows`` launched contacts of the bench scenario, one outcome each; returns the seconds taken."""
    series, sha256 = _SERIES[backend]
    series = series.format(n=rows)
    text = "CHAR" if backend == "mariadb" else "TEXT"

    def cat(*parts: str) -> str:
        return f"CONCAT({', '.join(parts)})" if backend == "mariadb" else f"({' || '.join(parts)})"

    key, source = cat("'email:fill'", f"CAST(i AS {text})", "'@example.org'"), f"CAST(i AS {text})"
    digest = sha256.format(cat(":hashed", key))  # `key(f"fill{i}")`'s hash
    run_id = cat("'fill_'", f"CAST(i / 1000 AS {text})")
    prefix = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n) " * (
        backend == "sqlite"
    )
    # hash order (random), as a ledger grows (see the module docstring); InnoDB, clustered on the key, in key
    # order
    order = " ORDER BY 1" if backend == "mariadb" else ""
    contacts = (
        f"INSERT INTO altcraft_contacts ({_CONTACT_COLUMNS}) {prefix}"
        f"SELECT {digest}, :platform, :scenario, {key}, 'launched', {source}, 1, :at, :at, 'fill', 'fill', "
        f"'fill', 1, 'fill', :at, :at, :at FROM {series}{order}"
    )
    outcomes = (
        f"INSERT INTO altcraft_outcomes ({_OUTCOME_COLUMNS}) {prefix}"
        f"SELECT :platform, :scenario, 'fill', 'import_and_launch', {run_id}, "
        f"'fill', 1, {key}, {digest}, {source}, 'launched', {source}, :at, :at FROM {series}"
    )
    hashed = f"{PLATFORM}\n{SCENARIO_ID}\n"  # what `Scope.contact_hash` puts before the key
    params = {
        "n": rows,
        "platform": PLATFORM,
        "scenario": SCENARIO_ID,
        "at": datetime(2025, 1, 1),
        "hashed": hashed,
    }
    started = time.perf_counter()
    with engine.begin() as conn:
        if backend == "sqlite":
            conn.connection.dbapi_connection.create_function("bench_sha256", 1, _sha256, deterministic=True)
        conn.execute(sa.text(contacts), params)
        conn.execute(sa.text(outcomes), params)
    # a ledger that grew over months has been vacuumed on the way; without this, PostgreSQL's autovacuum
    # of the freshly filled tables would run during the measurement
    analyze = {
        "mariadb": "ANALYZE TABLE altcraft_contacts, altcraft_outcomes",
        "postgresql": "VACUUM ANALYZE altcraft_contacts, altcraft_outcomes",
    }.get(backend, "ANALYZE")
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(analyze)
    return time.perf_counter() - started


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def key(name: str) -> str:
    """The contact key of a bench contact (``fill123``, ``empty5``), as the fill and `measure` write it."""
    return f"email:{name}@example.org"


def wal_position(engine: sa.Engine) -> int | None:
    """PostgreSQL: the server's WAL insert position in bytes (exact at once, unlike ``pg_stat_wal``,
    which other sessions report up to seconds late); None elsewhere."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        query = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')"
        return int(conn.exec_driver_sql(query).scalar_one())


def measure(ledger: Any, tag: str, contacts: int, returning: Sequence[str] = ()) -> dict[str, Any]:
    """Claim and settle ``contacts`` new contacts in chunks of `CHUNK`; median chunk per contact.

    With ``returning`` (names of contacts already launched, as `key` makes them), those contacts instead,
    claimed for a window none of them was launched for under ``every_run``: each is looked up, its earlier
    launches for the window are read from the outcomes (none), and it is launched again.

    PostgreSQL: also the WAL written per contact (the whole server's, which runs nothing else meanwhile in
    the bench): a claim + settle's own records, plus a whole page for each page first changed since the
    last checkpoint.
    """
    before = wal_position(ledger.engine)
    from altcraft.ledger import Outcome, RelaunchPolicy, RunRef, Scope, Settlement

    scope = Scope(platform=PLATFORM, scenario_id=SCENARIO_ID)
    day = datetime(2025, 3, 1, tzinfo=UTC) if returning else datetime(2025, 2, 1, tzinfo=UTC)
    run = RunRef.create("bench_ledger", "import_and_launch", f"run_{tag}", 1, (day, day + timedelta(days=1)))
    policy = RelaunchPolicy("every_run" if returning else "once")
    names = list(returning) or [f"{tag}{i}" for i in range(contacts)]
    walls, cpus = [], []
    for start in range(0, contacts, CHUNK):
        items = [(key(name), name) for name in names[start : start + CHUNK]]
        wall, cpu = time.perf_counter(), time.process_time()
        claim = ledger.claim(scope, run, items, policy)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        # the answer's settlements are the delivery's work, not the ledger's: made outside the timing
        launched = {key: Settlement(Outcome.LAUNCHED, profile_id=key[-20:]) for key in claim.to_send}
        settle_wall, settle_cpu = time.perf_counter(), time.process_time()
        ledger.settle(scope, run, claim, launched)
        walls.append((wall + time.perf_counter() - settle_wall) / CHUNK * 1e6)
        cpus.append((cpu + time.process_time() - settle_cpu) / CHUNK * 1e6)
        if len(claim.to_send) != len(items):
            raise RuntimeError(f"claim sent {len(claim.to_send)} of {len(items)} contacts")
    after = wal_position(ledger.engine)
    wal = {} if before is None or after is None else {"wal_bytes_per_contact": (after - before) / contacts}
    return {
        "contacts": contacts,
        "wall_us_per_contact": statistics.median(walls),
        "cpu_us_per_contact": statistics.median(cpus),
        "chunk_walls_us": [round(w, 1) for w in walls],
        **wal,
    }


def run(backend: str, rows: int, contacts: int, shared_buffers: str | None = None) -> dict[str, Any]:
    """The job: on the machine's server, or with ``shared_buffers`` on a private PostgreSQL cluster."""
    if shared_buffers is None:
        return measure_growth(backend, rows, contacts)
    if backend != "postgresql":
        raise ValueError("--shared-buffers is for PostgreSQL")
    with private_postgres(shared_buffers) as url:
        return {**measure_growth(backend, rows, contacts, url), "private_cluster": True}


def measure_growth(
    backend: str, rows: int, contacts: int, postgres_url: str = POSTGRES_URL
) -> dict[str, Any]:
    from altcraft.ledger import Ledger

    with engine_for(backend, postgres_url) as engine:
        ledger = Ledger(engine)
        ledger.ensure_schema()
        measure(ledger, "warm", CHUNK)  # connections, statement caches
        checkpoint(engine, backend)
        empty = measure(ledger, "empty", contacts)
        checkpoint(engine, backend)
        empty_returning = returning(ledger, "empty_again", [f"empty{i}" for i in range(contacts)])
        fill_s = fill(engine, backend, rows)
        checkpoint(engine, backend)
        full = measure(ledger, "full", contacts)
        checkpoint(engine, backend)
        sample = random.Random(SCENARIO_ID).sample(range(1, rows + 1), min(contacts, rows))
        full_returning = returning(ledger, "full_again", [f"fill{i}" for i in sample])
        count = contact_count(engine)
        version = engine.dialect.server_version_info
        postgres = backend == "postgresql"
        buffers = conn_setting(engine, "shared_buffers") if postgres else None
        sizes = relation_mb(engine) if postgres else None
    return {
        "backend": backend,
        "server": ".".join(map(str, version or ())) or sa.__version__,
        "rows": rows,
        "rows_after": count,
        "fill_s": fill_s,
        "empty": empty,
        "full": full,
        "ratio": full["wall_us_per_contact"] / empty["wall_us_per_contact"],
        "returning": {
            "empty": empty_returning,
            "full": full_returning,
            "ratio": full_returning["wall_us_per_contact"] / empty_returning["wall_us_per_contact"],
        },
        **({"shared_buffers": buffers, "relation_mb": sizes} if postgres else {}),
    }


def returning(ledger: Any, tag: str, names: Sequence[str]) -> dict[str, Any]:
    """`measure` of these contacts, all already in the ledger: it fails if any was taken for a new one."""
    before = contact_count(ledger.engine)
    result = measure(ledger, tag, len(names), names)
    if contact_count(ledger.engine) != before:
        raise RuntimeError(f"{tag}: contacts meant to be in the ledger were claimed as new ones")
    return result


def contact_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM altcraft_contacts")).scalar_one())


def checkpoint(engine: sa.Engine, backend: str) -> None:
    """PostgreSQL: write every dirty page out now, so that both phases start right after a checkpoint.

    Otherwise the checkpoint the fill's gigabytes of WAL start runs (spread over minutes) during the full
    phase or not, by chance: the same code measured 1.39x and 2.80x at 10,000,000 rows. After a
    checkpoint each page a phase first changes is written whole to the WAL once, as it is in every
    checkpoint cycle of a real server.
    """
    if backend == "postgresql":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("CHECKPOINT")


def relation_mb(engine: sa.Engine) -> dict[str, float]:
    """PostgreSQL: MB on disk of each table and index of the ledger (its schema), largest first."""
    query = (
        "SELECT c.relname, pg_relation_size(c.oid) / 1e6 FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'i') ORDER BY 2 DESC"
    )
    with engine.connect() as conn:
        return {name: round(float(mb), 1) for name, mb in conn.exec_driver_sql(query)}


def conn_setting(engine: sa.Engine, name: str) -> str:
    """A PostgreSQL setting as ``SHOW`` prints it."""
    with engine.connect() as conn:
        return str(conn.exec_driver_sql(f"SHOW {name}").scalar_one())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger_growth", description=__doc__)
    parser.add_argument("backend", choices=BACKENDS)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument(
        "--shared-buffers",
        help="PostgreSQL: on a private cluster started with this shared_buffers (e.g. 6GB)",
    )
    args = parser.parse_args(argv)
    emit(run(args.backend, args.rows, args.contacts, args.shared_buffers))


if __name__ == "__main__":
    main()
