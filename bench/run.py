"""``make bench``: every benchmark, each figure beside a baseline measured in the same run.

Environment: ``BENCH_N`` (contacts per throughput run, default 100,000), ``BENCH_NAIVE_N`` (naive sample,
default 2,000), ``BENCH_MILLION=1`` (also the memory run at 1,000,000 contacts), ``BENCH_REPEAT`` (runs of
each throughput job, the fastest kept; default 1), ``BENCH_PROFILE=<dir>`` (also profile one ``ours`` and
one ``floor`` run with pyinstrument into that folder), ``BENCH_OUTPUT`` (default docs/benchmarks.md),
``BENCH_LATENCY=0`` (skip the latency benchmark of event-driven pipelines; its own variables are in
bench/latency.py).
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

from bench import latency, parsing
from bench.common import REPO, bench_schema, connection_env, reset_ledger, run_job, server_version
from bench.report import render

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

    def _run(
        self,
        client: str,
        n: int,
        latency_ms: float,
        faults: tuple[dict[str, Any], ...],
        profile: Path | None,
    ) -> dict[str, Any]:
        """One run in a fresh process: emulator reset (new scenario), empty ledger, then the client."""
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
        result = run_job("throughput", args + (["--profile", str(profile)] if profile else []), self.env)
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
    """Section 1: naive, floor and ours, on loopback and with latency."""
    return {
        f"latency_{latency}": {
            client: stage.job(client, naive_n if client == "naive" else n, latency_ms=latency)
            for client in ("naive", "floor", "ours")
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
    output = Path(os.environ.get("BENCH_OUTPUT", REPO / "docs" / "benchmarks.md"))
    command = " ".join(
        [
            f"BENCH_N={n}",
            f"BENCH_NAIVE_N={naive_n}",
            f"BENCH_MILLION={int(million)}",
            f"BENCH_REPEAT={repeat}",
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
    }
    log(f"{command} on {results['machine']['cores']} cores")
    rows = max(n, MEMORY_BASE_N, MILLION if million else 0)
    with emulator_process() as emulator, bench_schema(rows) as schema:
        stage = Stage(emulator, schema, repeat)
        results["throughput"] = throughput(stage, n, naive_n)
        results["rate_limited"] = rate_limited(stage, n)
        results["memory"] = memory(stage, million, results["rate_limited"]["clean"])
        if profile_dir:
            results["profiles"] = profiles(stage, n, Path(profile_dir))
    if os.environ.get("BENCH_LATENCY", "1") != "0":
        log("latency of event-driven pipelines (a real Airflow)")
        results["latency"] = latency.run()
    results["parse"] = parse_times()
    results["imports"] = import_times()
    results["load_after"] = os.getloadavg()
    results["total_s"] = time.perf_counter() - started
    output.write_text(render(results), encoding="utf-8")
    log(f"wrote {output} in {results['total_s']:.0f} s")


if __name__ == "__main__":
    main()
