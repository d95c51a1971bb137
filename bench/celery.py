"""Benchmark section 5: the `make celery-demo` backfill on CeleryExecutor with 1 worker, then 2, one run.

One deployment (demo/celery_demo.py): fresh PostgreSQL databases, a Redis queue of its own, an emulator.
First one Celery worker backfills a pipeline over the 7 days; then a second worker joins and a second
pipeline (same contacts, another scenario, so nothing is skipped) is backfilled the same way. Each
worker runs one task at a time (``--concurrency 1``), so 1 vs 2 workers is 1 vs 2 partitions at once;
the platform pool (4 slots) does not bind. While each backfill runs, the CPU time of every process on
the machine is sampled and added up by component: where the time of the two cores went.

Writes (or replaces) the "Celery" section of docs/benchmarks.md. Environment: ``BENCH_CELERY_N``
(contacts, default 100,000), ``BENCH_OUTPUT``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.common import REPO

X = "\u00d7"  # multiplication sign
SECTION = "## 5. Scaling out on Celery"
METHOD = "## How it is measured"  # bench/run.py's closing section
SCENARIOS = {1: 61, 2: 62}
SAMPLE_S = 0.5


class CpuMeter:
    """CPU seconds of every process between `start` and `stop`, added up by ``category(process)``.

    Processes are sampled every ``SAMPLE_S``: one that ends between two samples loses at most that
    much of its time. Processes started meanwhile count from zero.
    """

    def __init__(self, category: Callable[[psutil.Process], str]) -> None:
        self.category = category
        self._first: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._machine = psutil.cpu_times()
        self._started = time.time()
        self._sample(first=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self._sample(first=False)
        machine = psutil.cpu_times()
        wall = time.time() - self._started
        total = sum(machine) - sum(self._machine)
        idle = (machine.idle + machine.iowait) - (self._machine.idle + self._machine.iowait)
        by_category: Counter[str] = Counter()
        for key, (category, seconds) in self._last.items():
            by_category[category] += seconds - self._first.get(key, 0.0)
        return {
            "wall_s": wall,
            "cores": psutil.cpu_count(),
            "busy_share": (total - idle) / total if total else 0.0,
            "cpu_s": dict(by_category.most_common()),
        }

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._sample(first=False)

    def _sample(self, *, first: bool) -> None:
        for process in psutil.process_iter(["create_time"]):
            try:
                times = process.cpu_times()
                key = (process.pid, process.info["create_time"])
                seconds = times.user + times.system
                if first:
                    self._first[key] = seconds
                elif key not in self._last and process.info["create_time"] < self._started:
                    self._first.setdefault(key, seconds)
                self._last[key] = (self.category(process), seconds)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue


def categorizer(deployment: Any, databases: dict[str, str], emulator_port: int) -> Callable[..., str]:
    """Which component a process belongs to: workers and their tasks, Airflow, PostgreSQL, emulator..."""
    db_names = {url.rsplit("/", 1)[1] for url in databases.values()}
    stack = deployment.airflow.stack

    def roots() -> dict[int, str]:
        return {p.popen.pid: name for name, p in stack.processes.items()}

    def category(process: psutil.Process) -> str:
        command = " ".join(process.cmdline())
        if process.name() == "redis-server":
            return "Redis (broker)"
        if command.startswith("postgres:"):
            return "PostgreSQL (this run)" if any(name in command for name in db_names) else "other"
        if "altcraft.emulator" in command and f"--port {emulator_port}" in command:
            return "emulator"
        known = roots()
        for ancestor in [process, *process.parents()]:
            name = known.get(ancestor.pid)
            if name is not None:
                return "Celery workers (tasks)" if name.startswith("celery-") else "Airflow: " + name
        if ancestor.pid == os.getpid() or process.pid == os.getpid():
            return "bench (this process)"
        return "other"

    return category


def measure(deployment: Any, dag_id: str, dates: list[datetime], category: Callable[..., str]) -> dict:
    from demo.celery_demo import task_span

    meter = CpuMeter(category)
    meter.start()
    started = time.monotonic()
    deployment.backfill(dag_id, dates)
    runs = deployment.wait(dag_id, dates, timeout=3600)
    wall = time.monotonic() - started
    cpu = meter.stop()
    if {run["state"] for run in runs} != {"success"}:
        raise RuntimeError(f"{dag_id}: not every run succeeded: {[run['state'] for run in runs]}")
    instances = deployment.launch_tasks(dag_id, runs)
    summary = deployment.summary(dag_id, runs)
    span = task_span(instances)
    return {
        "launched": summary["launched"],
        "found": summary["found"],
        "span_s": span,
        "wall_s": wall,
        "rate_span": summary["launched"] / span,
        "rate_wall": summary["launched"] / wall,
        "task_s": sum(ti["duration"] or 0 for ti in instances),
        "per_worker": dict(Counter(ti["hostname"] for ti in instances)),
        "cpu": cpu,
    }


def run(n: int) -> dict[str, Any]:
    from demo.celery_demo import (
        POOL_SLOTS,
        WORKERS,
        CeleryDeployment,
        backfill_dates,
        fresh_databases,
        pipeline_spec,
        seed_contacts,
        valid_emails,
    )

    from altcraft.testing import emulator_process

    dates = backfill_dates()
    specs = {f"bench_celery_{w}": pipeline_spec(f"bench_celery_{w}", SCENARIOS[w]) for w in SCENARIOS}
    results: dict[str, Any] = {"n": n, "pool_slots": POOL_SLOTS, "load_before": os.getloadavg()}
    with (
        tempfile.TemporaryDirectory(prefix="altcraft-bench-celery-") as home,
        fresh_databases("altcraft_bench_celery") as databases,
        emulator_process() as emulator,
    ):
        contacts = seed_contacts(databases["crm"], n)
        emulator.seed(
            scenarios=[
                {"id": s, "name": f"Bench {s}", "db_id": 1, "is_active": True} for s in SCENARIOS.values()
            ]
        )
        with CeleryDeployment(Path(home), databases, emulator, specs) as deployment:
            category = categorizer(deployment, databases, int(emulator.url.rsplit(":", 1)[1]))
            deployment.start(WORKERS[:1], concurrency=1)
            for workers in (1, 2):
                if workers == 2:
                    deployment.airflow.start_celery_worker(WORKERS[1], queue=deployment.queue, concurrency=1)
                dag_id = f"bench_celery_{workers}"
                result = measure(deployment, dag_id, dates, category)
                journal = [entry["key"] for entry in emulator.journal(SCENARIOS[workers])]
                if len(journal) != len(set(journal)) or set(journal) != valid_emails(contacts):
                    raise RuntimeError(f"{dag_id}: not every valid contact was launched exactly once")
                results[str(workers)] = result
                rate, span = result["rate_span"], result["span_s"]
                log(
                    f"{workers} worker(s): {rate:,.0f} contacts/s over {span:.0f} s "
                    f"of tasks ({result['wall_s']:.0f} s backfill), partitions {result['per_worker']}"
                )
    results["load_after"] = os.getloadavg()
    return results


def render(results: dict[str, Any], command: str, date: str, commit: str) -> str:
    one, two = results["1"], results["2"]
    speedup = two["rate_span"] / one["rate_span"]
    lines = [
        SECTION,
        "",
        "`make celery-demo`'s deployment (demo/celery_demo.py): CeleryExecutor, the local Redis as",
        "broker, PostgreSQL for metadata, Celery results, CRM and ledger, the emulator; a 7-day backfill,",
        f"4 partitions a day, of {results['n']:,} contacts. Each worker runs one partition at a time",
        f"(`--concurrency 1`); the platform pool ({results['pool_slots']} slots) does not bind. Same run:",
        "1 worker, then a second pipeline (same contacts, another scenario) with 2 workers.",
        "*Tasks' span*: first partition's start to last one's end; *backfill*: `airflow backfill create`",
        "to the last run finished.",
        "",
        f"* Command: `{command}`",
        f"* Date: {date}, commit {commit}",
        "* Load average before / after: "
        + " / ".join(", ".join(f"{x:.2f}" for x in results[k]) for k in ("load_before", "load_after")),
        "",
        "| workers | launched | tasks' span s | contacts/s (span) | backfill s | contacts/s (backfill) "
        "| partitions per worker |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for workers, run_ in (("1", one), ("2", two)):
        per_worker = ", ".join(f"{host} {count}" for host, count in sorted(run_["per_worker"].items()))
        lines.append(
            f"| {workers} | {run_['launched']:,} | {run_['span_s']:.1f} | {run_['rate_span']:,.0f} "
            f"| {run_['wall_s']:.1f} | {run_['rate_wall']:,.0f} | {per_worker} |"
        )
    lines += [
        "",
        f"2 workers reach **{speedup:.2f}{X}** the throughput of 1: "
        f"parallel efficiency **{speedup / 2:.0%}**. This machine has {one['cpu']['cores']} cores,",
        "shared by both workers' tasks, PostgreSQL, the emulator, the Airflow components and whatever",
        "else runs on it; where their time went:",
        "",
        "| CPU seconds while the backfill ran | 1 worker | 2 workers |",
        "|---|---:|---:|",
    ]
    categories = list(dict.fromkeys([*one["cpu"]["cpu_s"], *two["cpu"]["cpu_s"]]))
    for name in categories:
        lines.append(
            f"| {name} | {one['cpu']['cpu_s'].get(name, 0):.1f} | {two['cpu']['cpu_s'].get(name, 0):.1f} |"
        )
    lines += [
        "| **machine busy** (share of all cores) | "
        f"{one['cpu']['busy_share']:.0%} | {two['cpu']['busy_share']:.0%} |",
        "",
        "*other*: processes not of this run (other sessions on the shared machine, PostgreSQL backends of",
        "other databases). When it is large, a second worker also takes CPU away from them: the efficiency",
        "then shows partitions running in parallel without contending, not the gain on a dedicated machine.",
        "*bench*: this process (sampling every process every 0.5 s) and the `airflow` CLI calls it makes.",
        "Processes are sampled every 0.5 s, so a short-lived one may lose up to that much.",
        "",
    ]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace this section of the file (up to the next ``## `` heading), or add it before `METHOD`."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    if SECTION in text:
        before, rest = text.split(SECTION, 1)
        after = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
        text = before + section + ("\n" + after if after else "")
    elif METHOD in text:
        before, after = text.split(METHOD, 1)
        text = before + section + "\n" + METHOD + after
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def main() -> None:
    import subprocess

    n = int(os.environ.get("BENCH_CELERY_N", "100000"))
    output = Path(os.environ.get("BENCH_OUTPUT", REPO / "docs" / "benchmarks.md"))
    command = f"BENCH_CELERY_N={n} make bench-celery"
    started = time.perf_counter()
    results = run(n)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.strip()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    write_section(
        output, render(results, command, f"{date} (took {time.perf_counter() - started:.0f} s)", commit)
    )
    log(f"wrote the Celery section of {output}")


if __name__ == "__main__":
    main()
