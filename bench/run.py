"""``make bench``: every benchmark, each figure beside a baseline measured in the same run.

Environment: ``BENCH_N`` (contacts per throughput run, default 100,000), ``BENCH_NAIVE_N`` (naive sample,
default 2,000), ``BENCH_MILLION=1`` (also the memory run at 1,000,000 contacts), ``BENCH_REPEAT`` (runs of
each throughput job, the fastest kept; default 1), ``BENCH_LEDGER_ROWS`` (contacts already in the ledger
of the growth benchmark, default 1,000,000; the full figure is 10,000,000), ``BENCH_LEDGER_BACKENDS``
(default ``postgresql,sqlite,mariadb``; PostgreSQL also on a private cluster with ``shared_buffers`` at
25% of RAM), ``BENCH_PROFILE_SUMMARY=0`` (skip the py-spy runs behind "where
the CPU goes"), ``BENCH_PROFILE=<dir>`` (also profile one ``ours`` and one ``floor`` run with pyinstrument
into that folder), ``BENCH_OUTPUT`` (default docs/benchmarks.md), ``BENCH_LATENCY=0`` (skip the latency
benchmark of event-driven pipelines, keeping its last section; its own variables are in bench/latency.py).
"""

from __future__ import annotations

import itertools
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench import celery, latency, parsing
from bench import profile as cpu_profile
from bench.common import (
    REPO,
    ServerCpu,
    bench_schema,
    connection_env,
    emulator_pid,
    process_cpu_s,
    reset_ledger,
    run_job,
    server_version,
)
from bench.report import LEDGER_SECTION, embedded_results, render

LATENCY_MS = 20
RATE_LIMIT_RULE = {
    "endpoint": "workflows/import_and_start_batch",
    "kind": "status",
    "status": 429,
    "retry_after": 1,
    "probability": 0.1,
}
FAULT_SEED = 20250101
MILLION = 1_000_000
MEMORY_BASE_N = 100_000
LEDGER_CONTACTS = 20_000
"""New contacts claimed and settled per phase of the ledger growth benchmark (20 chunks of 1,000)."""
CLIENTS = ("naive", "floor", "floor_cached", "ours")
PACKAGES = (
    "apache-airflow",
    "apache-airflow-task-sdk",
    "airflow-provider-altcraft",
    "apache-airflow-providers-http",
    "apache-airflow-providers-postgres",
    "sqlalchemy",
    "psycopg",
    "requests",
    "pydantic",
    "email-validator",
    "phonenumbers",
    "fastapi",
    "uvicorn",
)
PARSE_RUNS = 3
IMPORT_RUNS = 5
AIRFLOW_SDK = "from airflow.sdk import DAG, BaseOperator"
PROVIDER = "import altcraft.operators.import_and_launch"
LOADER = "import altcraft.pipelines"


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


class Stage:
    """Runs throughput jobs against one emulator and one bench schema, each from a clean state."""

    def __init__(self, emulator: Any, schema: str, repeat: int = 1) -> None:
        self.emulator = emulator
        self.schema = schema
        self.repeat = repeat
        self.env = connection_env(schema, emulator.url, emulator.token)
        self._ids = itertools.count(9000)
        self._emulator_pid = emulator_pid(emulator.url)

    def job(
        self,
        client: str,
        n: int,
        *,
        latency_ms: float = 0,
        faults: tuple[dict[str, Any], ...] = (),
        profile: Path | None = None,
    ) -> dict[str, Any]:
        """The fastest of ``repeat`` runs of a job (all walls kept in ``walls_s``)."""
        runs = [self._run(client, n, latency_ms, faults, profile) for _ in range(self.repeat)]
        return {**min(runs, key=lambda run: run["wall_s"]), "walls_s": [run["wall_s"] for run in runs]}

    def sampled(self, client: str, n: int, raw: Path) -> dict[str, Any]:
        """One run under py-spy: the job's result plus where its CPU went (`bench.profile.shares`)."""
        result = self._run(client, n, 0, (), None, prefix=cpu_profile.command(raw))
        return {**result, **cpu_profile.shares(raw.read_text(encoding="utf-8"), client)}

    def _run(
        self,
        client: str,
        n: int,
        latency_ms: float,
        faults: tuple[dict[str, Any], ...],
        profile: Path | None,
        *,
        prefix: list[str] | None = None,
    ) -> dict[str, Any]:
        """One run in a fresh process: emulator reset (new scenario), empty ledger, then the client.

        Also the emulator's and the PostgreSQL server's CPU per contact over the job (they share the
        machine's cores with the client).
        """
        self.emulator.reset()
        reset_ledger(self.schema)
        scenario_id = next(self._ids)
        self.emulator.seed(
            scenarios=[{"id": scenario_id, "name": "Bench", "db_id": 1, "is_active": True, "mode": "restart"}]
        )
        if latency_ms:
            self.emulator.config(latency_ms=latency_ms)
        if faults:
            self.emulator.add_faults(*faults, random_seed=FAULT_SEED)
        args = [client, "--schema", self.schema, "--n", str(n), "--scenario", str(scenario_id)]
        emulator_cpu = process_cpu_s(self._emulator_pid)
        with ServerCpu() as server:
            result = run_job(
                "throughput", args + (["--profile", str(profile)] if profile else []), self.env, prefix=prefix
            )
        result["emulator_cpu_us_per_contact"] = (process_cpu_s(self._emulator_pid) - emulator_cpu) / n * 1e6
        result["postgres_cpu_us_per_contact"] = server.seconds / n * 1e6
        state = self.emulator.state()
        if result["launched"] != n or state["launches"] != n:
            raise RuntimeError(f"{client} launched {result['launched']} of {n} contacts: {result}")
        result["fault_hits"] = sum(rule["hits"] for rule in state["faults"])
        log(
            f"{client:5} n={n:>9,} latency={latency_ms:>2} ms faults={len(faults)}: "
            f"{result['rate']:>7,.0f}/s  cpu {result['cpu_us_per_contact']:6.1f} us/contact  "
            f"peak {result['peak_rss_mib']:.0f} MiB  requests {result['requests']}"
        )
        return result


def throughput(stage: Stage, n: int, naive_n: int) -> dict[str, Any]:
    """Section 1: naive, the floor with and without cached validation, and ours; loopback and latency."""
    return {
        f"latency_{latency}": {
            client: stage.job(client, naive_n if client == "naive" else n, latency_ms=latency)
            for client in CLIENTS
        }
        for latency in (0, LATENCY_MS)
    }


def rate_limited(stage: Stage, n: int) -> dict[str, Any]:
    """Section 3: ours under 429s, right after a clean run of its own (same load on the machine)."""
    return {"clean": stage.job("ours", n), "limited": stage.job("ours", n, faults=(RATE_LIMIT_RULE,))}


def memory(stage: Stage, million: bool, clean: dict[str, Any]) -> dict[str, Any]:
    """Section 2: peak RSS of ours at 100k and (optionally) 1M contacts, each in a fresh process.

    ``clean`` (section 3's clean run, a fresh process too) stands for 100k when it has that size.
    """
    sizes = (MEMORY_BASE_N, MILLION) if million else (MEMORY_BASE_N,)
    return {str(size): clean if clean["n"] == size else stage.job("ours", size) for size in sizes}


def cpu_shares(stage: Stage, n: int) -> dict[str, Any]:
    """Where the CPU goes: one py-spy run each of ours and the two floors on loopback (not timed figures)."""
    folder = Path(tempfile.mkdtemp(prefix="altcraft-bench-spy-"))
    return {
        client: stage.sampled(client, n, folder / f"{client}.raw")
        for client in ("ours", "floor", "floor_cached")
    }


def ledger_growth(rows: int, backends: list[str]) -> dict[str, Any]:
    """Section 6: claim + settle per contact on an empty ledger and with ``rows`` contacts in it.

    PostgreSQL also as ``postgresql_sized``: on a private cluster with ``shared_buffers`` at 25% of RAM.
    """
    jobs = {backend: [backend] for backend in backends}
    if "postgresql" in backends:
        quarter = psutil.virtual_memory().total // 4 // 2**20
        jobs["postgresql_sized"] = ["postgresql", "--shared-buffers", f"{quarter}MB"]
    results: dict[str, Any] = {}
    for key, job in jobs.items():
        args = [*job, "--rows", str(rows), "--contacts", str(LEDGER_CONTACTS)]
        try:
            results[key] = run_job("ledger_growth", args)
        except RuntimeError as error:  # e.g. no MariaDB here: say so in the report, keep the rest
            results[key] = {"backend": job[0], "error": str(error).splitlines()[0]}
            log(f"ledger growth on {key} failed: {error}")
            continue
        result = results[key]
        empty, full = result["empty"]["wall_us_per_contact"], result["full"]["wall_us_per_contact"]
        log(f"ledger {key}: {empty:.0f} -> {full:.0f} us/contact with {rows:,} rows ({result['ratio']:.2f}x)")
    return results


def profiles(stage: Stage, n: int, folder: Path) -> dict[str, str]:
    """pyinstrument profiles of one ``ours`` and one ``floor`` run (not used for any figure)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for client in ("ours", "floor"):
        path = folder / f"{client}.txt"
        stage.job(client, n, profile=path)
        written[client] = str(path)
    return written


def parse_times() -> dict[str, Any]:
    """Section 4a: 100 specs vs 1 spec vs 100 plain Python DAGs, median of fresh processes each."""
    root = Path(tempfile.mkdtemp(prefix="altcraft-bench-parse-"))
    cases = {
        "specs_100": parsing.spec_bundle(root / "specs_100", 100),
        "specs_1": parsing.spec_bundle(root / "specs_1", 1),
        "plain_100": parsing.plain_bundle(root / "plain_100", 100),
    }
    results: dict[str, Any] = {}
    for name, file in cases.items():
        runs = []
        for _ in range(PARSE_RUNS):
            started = time.perf_counter()
            result = run_job("parsing", ["--file", str(file), "--bundle", str(file.parent)])
            runs.append({**result, "subprocess_s": time.perf_counter() - started})
        if any(run["import_errors"] for run in runs):
            raise RuntimeError(f"parse {name}: import errors {runs[0]['import_errors']}")
        results[name] = sorted(runs, key=lambda run: run["wall_s"])[len(runs) // 2]
        log(f"parse {name}: {results[name]['wall_s'] * 1000:.0f} ms, {results[name]['dags']} DAGs")
    return results


def import_times() -> dict[str, Any]:
    """Section 4b: cold imports and the provider's cost on top of airflow.sdk; importtime attribution."""
    cases = {
        "airflow_sdk": ("", "import airflow.sdk"),
        "airflow_sdk_dag": ("", AIRFLOW_SDK),
        "provider": ("", PROVIDER),
        "loader": ("", LOADER),
        "provider_over_sdk": (AIRFLOW_SDK, PROVIDER),
        "loader_over_sdk": (AIRFLOW_SDK, LOADER),
    }
    medians = parsing.timed_imports(cases, IMPORT_RUNS)
    sdk_rows = parsing.importtime(AIRFLOW_SDK)
    loader_rows = parsing.importtime(f"{AIRFLOW_SDK}; {LOADER}")
    importtime = {
        "airflow_sdk_us": parsing.module_cumulative_us(
            parsing.importtime("import airflow.sdk"), "airflow.sdk"
        ),
        "provider_us": parsing.module_cumulative_us(
            parsing.importtime(PROVIDER), "altcraft.operators.import_and_launch"
        ),
        "loader_us": parsing.module_cumulative_us(parsing.importtime(LOADER), "altcraft.pipelines"),
        "loader_heaviest": parsing.heaviest(loader_rows, sdk_rows),
    }
    log(
        f"imports (median of {IMPORT_RUNS}): "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in medians.items())
    )
    return {"median_s": medians, "importtime": importtime}


def machine() -> dict[str, Any]:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line
    )
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(memory_kib / 2**20, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "postgresql": server_version(),
        "packages": versions,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain")),
    }


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    return done.stdout.strip()


def main() -> None:
    from altcraft.testing import emulator_process

    n = int(os.environ.get("BENCH_N", "100000"))
    naive_n = min(int(os.environ.get("BENCH_NAIVE_N", "2000")), n)
    repeat = int(os.environ.get("BENCH_REPEAT", "1"))
    million = os.environ.get("BENCH_MILLION", "") not in ("", "0")
    profile_dir = os.environ.get("BENCH_PROFILE")
    summary = os.environ.get("BENCH_PROFILE_SUMMARY", "1") != "0"
    ledger_rows = int(os.environ.get("BENCH_LEDGER_ROWS", "1000000"))
    backends = [
        b for b in os.environ.get("BENCH_LEDGER_BACKENDS", "postgresql,sqlite,mariadb").split(",") if b
    ]
    output = Path(os.environ.get("BENCH_OUTPUT", REPO / "docs" / "benchmarks.md"))
    command = " ".join(
        [
            f"BENCH_N={n}",
            f"BENCH_NAIVE_N={naive_n}",
            f"BENCH_MILLION={int(million)}",
            f"BENCH_REPEAT={repeat}",
            f"BENCH_LEDGER_ROWS={ledger_rows}",
            *([f"BENCH_LEDGER_BACKENDS={','.join(backends)}"] * ("BENCH_LEDGER_BACKENDS" in os.environ)),
            *(["BENCH_LATENCY=0"] if os.environ.get("BENCH_LATENCY", "1") == "0" else []),
            "make bench",
        ]
    )
    started = time.perf_counter()
    results: dict[str, Any] = {
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_before": os.getloadavg(),
        "n": n,
        "naive_n": naive_n,
        "repeat": repeat,
        "latency_ms": LATENCY_MS,
        "rate_limit_rule": RATE_LIMIT_RULE,
        "parse_runs": PARSE_RUNS,
        "import_runs": IMPORT_RUNS,
        "ledger_rows": ledger_rows,
        "ledger_contacts": LEDGER_CONTACTS,
    }
    log(f"{command} on {results['machine']['cores']} cores")
    rows = max(n, MEMORY_BASE_N, MILLION if million else 0)
    with emulator_process() as emulator, bench_schema(rows) as schema:
        stage = Stage(emulator, schema, repeat)
        results["throughput"] = throughput(stage, n, naive_n)
        results["rate_limited"] = rate_limited(stage, n)
        results["memory"] = memory(stage, million, results["rate_limited"]["clean"])
        if summary:
            results["cpu_shares"] = cpu_shares(stage, n)
        if profile_dir:
            results["profiles"] = profiles(stage, n, Path(profile_dir))
    if os.environ.get("BENCH_LATENCY", "1") != "0":
        log("latency of event-driven pipelines (a real Airflow)")
        results["latency"] = latency.run()
    growth = results["ledger_growth"] = ledger_growth(ledger_rows, backends)
    growth |= {key: row for key, row in kept_ledger_rows(output, ledger_rows).items() if key not in growth}
    results["parse"] = parse_times()
    results["imports"] = import_times()
    results["load_after"] = os.getloadavg()
    results["total_s"] = time.perf_counter() - started
    write_report(output, render(results))
    log(f"wrote {output} in {results['total_s']:.0f} s")


def kept_ledger_rows(output: Path, rows: int) -> dict[str, Any]:
    """Section 6's rows that `ledger_only` measured into ``output`` with as many contacts: a run that does
    not measure their backend keeps them, each still naming its job, commit and date."""
    try:
        old = embedded_results(output.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if old.get("ledger_rows") != rows:
        return {}
    return {key: result for key, result in old.get("ledger_growth", {}).items() if "separate" in result}


def ledger_only(backend: str) -> None:
    """``make bench-ledger LEDGER_BACKEND=mariadb``: section 6 for one backend alone, with as many contacts
    as the report's other backends, put into the results docs/benchmarks.md holds (the rest stays as
    measured); its row says which job measured it and when.

    For a backend whose 10,000,000-row fill would make `make bench` much longer (MariaDB: InnoDB, one
    clustered B-tree per table).
    """
    output = Path(os.environ.get("BENCH_OUTPUT", REPO / "docs" / "benchmarks.md"))
    results = embedded_results(output.read_text(encoding="utf-8"))
    rows = results["ledger_rows"]
    log(f"ledger growth on {backend} alone, {rows:,} rows, into {output}")
    separate = {
        "command": f"make bench-ledger LEDGER_BACKEND={backend}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "--short", "HEAD"),
    }
    for key, result in ledger_growth(rows, [backend]).items():  # PostgreSQL: also its sized cluster
        results["ledger_growth"][key] = {**result, "separate": separate}
    write_report(output, render(results))


def write_report(output: Path, report: str) -> None:
    """Write ``report``, keeping the sections other commands own from the file it replaces: the Celery
    section (`make bench-celery`) and, when this run skipped it, the latency section."""
    old = output.read_text(encoding="utf-8") if output.exists() else ""
    if celery.SECTION in old and celery.SECTION not in report:
        rest = old.split(celery.SECTION, 1)[1]
        end = min((i for i in (rest.find("\n## "), rest.find(latency.BEGIN)) if i >= 0), default=len(rest))
        anchor = LEDGER_SECTION if LEDGER_SECTION in report else celery.METHOD
        report = report.replace(anchor, celery.SECTION + rest[:end].rstrip("\n") + "\n\n" + anchor, 1)
    output.write_text(report, encoding="utf-8")
    if latency.BEGIN not in report and latency.BEGIN in old and latency.END in old:
        latency.write_section(
            output, old[old.index(latency.BEGIN) : old.index(latency.END) + len(latency.END)]
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--ledger-only":
        ledger_only(sys.argv[2])
    else:
        main()
