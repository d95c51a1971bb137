"""docs/benchmarks.md from the results of one ``make bench`` run: targets first, then every section."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import latency as latency_bench
from bench.profile import OTHER, OTHER_THREADS, step_cpu

MB = 1_000_000
MIB = 2**20
US = "\u00b5s"  # micro sign
X = "\u00d7"  # multiplication sign


@dataclass(frozen=True)
class Target:
    """A goal: ``value(results)`` (None when not measured) compared with ``limit``."""

    name: str
    goal: str
    value: Callable[[dict[str, Any]], float | None]
    limit: float | None
    at_least: bool
    unit: str

    def row(self, results: dict[str, Any]) -> str:
        name = self.name.format(rows=f"{results.get('ledger_rows', 0):,}")
        value = self.value(results)
        if value is None:
            return f"| {name} | {self.goal} | not measured | - |"
        if self.limit is None:
            return f"| {name} | {self.goal} | {value:,.2f}{self.unit} | stated |"
        met = value >= self.limit if self.at_least else value <= self.limit
        return f"| {name} | {self.goal} | {value:,.2f}{self.unit} | {'met' if met else '**missed**'} |"


def _runs(results: dict[str, Any], latency: int) -> dict[str, Any]:
    return results["throughput"][f"latency_{latency}"]


def _cpu_ratio(results: dict[str, Any], client: str, floor: str) -> float | None:
    runs = _runs(results, 0)
    if client not in runs or floor not in runs:
        return None
    return runs[client]["cpu_us_per_contact"] / runs[floor]["cpu_us_per_contact"]


def _ledger_ratio(results: dict[str, Any], backend: str, phase: str = "new") -> float | None:
    growth = results.get("ledger_growth", {}).get(backend, {})
    return growth.get("ratio") if phase == "new" else growth.get(phase, {}).get("ratio")


def _memory_ratio(results: dict[str, Any]) -> float | None:
    memory = results["memory"]
    if "1000000" not in memory:
        return None
    return memory["1000000"]["peak_rss_mib"] / memory["100000"]["peak_rss_mib"]


def _memory_million_mb(results: dict[str, Any]) -> float | None:
    run = results["memory"].get("1000000")
    return None if run is None else run["peak_rss_mib"] * MIB / MB


def _rate_limited_share(results: dict[str, Any]) -> float:
    runs = results["rate_limited"]
    return runs["limited"]["rate"] / runs["clean"]["rate"]


def _rate_limit_bound(results: dict[str, Any]) -> float:
    """The share of its clean throughput a client keeps if the `Retry-After` waits it was asked for are
    all it adds: the most any client that honours them can keep (a faster clean run keeps less)."""
    runs, rule = results["rate_limited"], results["rate_limit_rule"]
    waits = runs["limited"]["fault_hits"] * rule["retry_after"]
    return runs["clean"]["wall_s"] / (runs["clean"]["wall_s"] + waits)


TARGETS = (
    Target(
        "contacts/s per process, loopback (ours, PostgreSQL ledger)",
        "≥ 15,000",
        lambda r: _runs(r, 0)["ours"]["rate"],
        15_000,
        True,
        "",
    ),
    Target(
        "client CPU per contact vs floor, cached validation",
        f"≤ 1.25{X}",
        lambda r: _cpu_ratio(r, "ours", "floor_cached"),
        1.25,
        False,
        X,
    ),
    Target(
        "client CPU per contact vs floor, plain email-validator + phonenumbers",
        f"≤ 1.25{X}",
        lambda r: _cpu_ratio(r, "ours", "floor"),
        1.25,
        False,
        X,
    ),
    Target(
        "floor CPU per contact, cached vs plain validation (same verdicts)",
        f"< 1{X}",
        lambda r: _cpu_ratio(r, "floor_cached", "floor"),
        1,
        False,
        X,
    ),
    Target(
        "ledger claim + settle per contact, {rows} contacts in it vs empty (PostgreSQL)",
        f"≤ 1.2{X}",
        lambda r: _ledger_ratio(r, "postgresql"),
        1.2,
        False,
        X,
    ),
    Target(
        "the same for contacts already in it (returning, launched again), PostgreSQL",
        f"≤ 1.2{X}",
        lambda r: _ledger_ratio(r, "postgresql", "returning"),
        1.2,
        False,
        X,
    ),
    Target(
        "the same, PostgreSQL with shared_buffers at 25% of RAM (a private cluster)",
        f"≤ 1.2{X}",
        lambda r: _ledger_ratio(r, "postgresql_sized"),
        1.2,
        False,
        X,
    ),
    Target(
        "the same on SQLite",
        "stated",
        lambda r: _ledger_ratio(r, "sqlite"),
        None,
        False,
        X,
    ),
    Target(
        "the same on MariaDB",
        "stated",
        lambda r: _ledger_ratio(r, "mariadb"),
        None,
        False,
        X,
    ),
    Target("peak RSS at 1M vs at 100k", f"≤ 1.25{X}", _memory_ratio, 1.25, False, X),
    Target("peak RSS at 1M", "≤ 300 MB", _memory_million_mb, 300, False, " MB"),
    Target(
        "throughput with 10% 429s vs clean", "≥ 80%", lambda r: 100 * _rate_limited_share(r), 80, True, "%"
    ),
    Target(
        "the same, most a client honouring `Retry-After` could keep",
        "stated",
        lambda r: 100 * _rate_limit_bound(r),
        None,
        True,
        "%",
    ),
    Target(
        "parse 100 specs (DAG processor)",
        "≤ 0.5 s",
        lambda r: r["parse"]["specs_100"]["wall_s"],
        0.5,
        False,
        " s",
    ),
    Target(
        "provider import on top of airflow.sdk",
        "≤ 150 ms",
        lambda r: 1000 * r["imports"]["median_s"]["provider_over_sdk"],
        150,
        False,
        " ms",
    ),
    Target(
        "DAG loader import on top of airflow.sdk",
        "≤ 150 ms",
        lambda r: 1000 * r["imports"]["median_s"]["loader_over_sdk"],
        150,
        False,
        " ms",
    ),
)
LEDGER_SECTION = "## 6. Ledger growth"


def render(results: dict[str, Any]) -> str:
    sections = [
        _head(results),
        _targets(results),
        _throughput(results),
        _memory(results),
        _rate_limited(results),
        _parse(results),
        *([_ledger_growth(results)] if "ledger_growth" in results else []),
        *([latency_bench.render(results["latency"])] if "latency" in results else []),
        _method(results),
        _raw(results),
    ]
    return "\n\n".join(sections) + "\n"


def _head(results: dict[str, Any]) -> str:
    machine = results["machine"]
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    load = " / ".join(", ".join(f"{x:.2f}" for x in results[key]) for key in ("load_before", "load_after"))
    commit = machine["commit"] + (" with uncommitted changes" if machine["dirty"] else "")
    return "\n".join(
        [
            "# Benchmarks",
            "",
            "Written by `make bench` (bench/run.py); do not edit by hand. The machine is shared and noisy:",
            "absolute numbers move from run to run, so every figure stands beside a baseline measured in",
            "the same run, and only ratios and same-run comparisons are meant to be read.",
            "",
            f"* Command: `{results['command']}`",
            f"* Date: {results['date']} (took {results['total_s'] / 60:.1f} min), commit {commit}",
            f"* Machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB RAM, "
            f"Linux {machine['kernel']}, Python {machine['python']}, PostgreSQL {machine['postgresql']}",
            f"* Load average (1, 5, 15 min) before / after: {load}",
            f"* Packages: {packages}",
        ]
    )


def _targets(results: dict[str, Any]) -> str:
    rows = [target.row(results) for target in TARGETS]
    table = ["## Targets", "", "| target | goal | measured | |", "|---|---|---|---|", *rows]
    return "\n".join(table + _ceilings(results))


def _ceilings(results: dict[str, Any]) -> list[str]:
    """What bounds the first two targets on this machine, from this run's own figures."""
    runs = _runs(results, 0)
    if "ours" not in runs or "floor_cached" not in runs:
        return []
    ours, floor = runs["ours"], runs["floor_cached"]
    emulator = statistics.median(run["emulator_cpu_us_per_contact"] for run in (ours, floor))
    lines = [
        "",
        f"* Rate: the client, the emulator and PostgreSQL share {results['machine']['cores']} cores. The "
        f"emulator alone spends {emulator:.1f} {US} of CPU per contact (median of the two runs), so with a "
        f"core to itself it could take at most {1e6 / emulator:,.0f} contacts/s; ours spends "
        f"{ours['cpu_us_per_contact']:.1f} {US} ({1e6 / ours['cpu_us_per_contact']:,.0f}/s on a core of its "
        f"own, were no step waiting for another). The floor with cached validation, which has no ledger, "
        f"reached {floor['rate']:,.0f}/s in the same run.",
    ]
    if "postgres_cpu_us_per_contact" in ours:
        server = ours["postgres_cpu_us_per_contact"]
        total = ours["cpu_us_per_contact"] + ours["emulator_cpu_us_per_contact"] + server
        cores = results["machine"]["cores"]
        lines[-1] += (
            f" PostgreSQL's processes spent {server:.1f} {US} per contact of ours: with the client's and the "
            f"emulator's, {total:.1f} {US} of CPU per contact, so {cores} cores could take at most "
            f"{cores * 1e6 / total:,.0f} contacts/s even if no step ever waited for another."
        )
    empty = results.get("ledger_growth", {}).get("postgresql", {}).get("empty")
    if empty:
        ledger = empty["cpu_us_per_contact"]
        lines.append(
            f"* CPU: the ledger's claim + settle alone cost the client {ledger:.1f} {US} per contact "
            f"(section 6, empty PostgreSQL ledger), {ledger / floor['cpu_us_per_contact']:.2f}{X} the "
            f"whole CPU of the floor with cached validation, whose goal leaves ours "
            f"{0.25 * floor['cpu_us_per_contact']:.1f} {US} for everything the floor does not do."
        )
    return lines


LABELS = {
    "naive": "naive: `HttpHook.run` per contact (sample)",
    "floor": "floor: psycopg + email-validator/phonenumbers + `requests.Session`",
    "floor_cached": "floor, cached validation (`altcraft.validation`)",
    "ours": "ours: `SqlTableSource` → `Delivery` (ledger, batch)",
}


def _client_rows(runs: dict[str, Any]) -> list[str]:
    return [
        f"| {LABELS[name]} | {run['n']:,} | {run['wall_s']:.2f} | {run['rate']:,.0f} | "
        f"{run['cpu_us_per_contact']:.1f} | {_emulator_cpu(run)} | {run['wall_s'] - run['cpu_s']:.2f} | "
        f"{run['requests']:,} | {run['peak_rss_mib']:.0f} |"
        for name, run in runs.items()
    ]


def _emulator_cpu(run: dict[str, Any]) -> str:
    value = run.get("emulator_cpu_us_per_contact")
    return "-" if value is None else f"{value:.1f}"


def _throughput(results: dict[str, Any]) -> str:
    lines = [
        f"## 1. Throughput ({results['n']:,} contacts, batches of 1,000)",
        "",
        "PostgreSQL table → client → emulator in its own process. CPU is user + system time of the",
        "client process only (not PostgreSQL, not the emulator; the emulator's own CPU per contact is",
        "beside it: all share the machine's cores); *waiting* is wall minus the client's CPU: the client",
        "waiting for PostgreSQL, the emulator or a core of the shared machine.",
    ]
    for latency in (0, results["latency_ms"]):
        runs = _runs(results, latency)
        ours, naive = runs["ours"], runs["naive"]
        title = "Loopback" if not latency else f"{latency} ms latency per API request"
        lines += [
            "",
            f"### {title}",
            "",
            f"| client | contacts | wall s | contacts/s | client CPU {US}/contact "
            f"| emulator CPU {US}/contact | waiting s | API requests | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
            *_client_rows(runs),
            "",
            *[
                f"* ours vs {_short(floor)}: "
                f"**{ours['cpu_us_per_contact'] / runs[floor]['cpu_us_per_contact']:.2f}{X}** the CPU per "
                f"contact, **{ours['wall_s'] / runs[floor]['wall_s']:.2f}{X}** the wall time"
                for floor in ("floor_cached", "floor")
                if floor in runs
            ],
            f"* ours vs naive: {ours['rate'] / naive['rate']:,.0f}{X} the contacts/s; naive: "
            f"{1000 / naive['rate']:.1f} ms per contact",
        ]
        if not latency and "cpu_shares" in results:
            lines += ["", *_cpu_shares(results["cpu_shares"])]
    return "\n".join(lines)


def _short(client: str) -> str:
    """A client's name in running text: ``floor, cached validation``."""
    return LABELS[client].split(":")[0].split(" (")[0]


#: What each thread of ours does, in the order the CPU table lists them (bench.common.ThreadCpu names).
THREADS = {
    "altcraft-prefetch": "mapping worker: reads and maps the next source batches",
    "MainThread": "delivery thread: chunks, sends, parses answers",
    "altcraft-settle": "settle worker: settles the chunk just answered",
    "altcraft-claim": "claim worker: claims the next chunk while one is sent",
}


def _cpu_shares(shares: dict[str, Any]) -> list[str]:
    """Where the CPU goes: ours by thread, then each client by step (`bench.profile.step_cpu`)."""
    clients = [client for client in ("ours", "floor_cached", "floor") if client in shares]
    cpu = {client: step_cpu(shares[client]) for client in clients}
    steps = list(dict.fromkeys(step for client in clients for step in cpu[client]))
    steps.sort(key=lambda step: (step == OTHER_THREADS, step == OTHER))

    def cell(client: str, step: str) -> str:
        value = cpu[client].get(step)
        total = shares[client]["cpu_us_per_contact"]
        return "" if value is None else f"{value:.1f} ({100 * value / total:.0f}%)"

    header = " | ".join(f"{_short(c)} {US}/contact" for c in clients)
    lines = [
        "### Where the CPU goes (loopback)",
        "",
        "One more run of each client, each thread's CPU clock read (bench.common.ThreadCpu) and the job",
        "sampled with `py-spy record --nonblocking --gil` (bench/profile.py): each sample is charged to its",
        "thread and to the deepest frame naming a step of the data path; a step's share of its thread's",
        f"samples {X} that thread's CPU per contact gives {US}/contact. Only samples holding the GIL count,",
        "so a thread ready to run but waiting for a core or the GIL adds nothing (without `--gil`, steps",
        "that wake on every database or HTTP answer looked up to three times their CPU); the CPU a thread",
        "spends in system calls without the GIL is shared over its steps.",
    ]
    ours = shares.get("ours")
    if ours is not None:
        threads = ours["thread_cpu_us_per_contact"]
        lines += [
            "",
            f"| thread of ours | CPU {US}/contact | share |",
            "|---|---:|---:|",
            *[
                f"| {THREADS[name]} | {threads.get(name, 0.0):.1f} | "
                f"{100 * threads.get(name, 0.0) / ours['cpu_us_per_contact']:.0f}% |"
                for name in THREADS
            ],
            f"| the rest (the deadline thread; the process beyond its threads) | "
            f"{cpu['ours'][OTHER_THREADS]:.1f} | "
            f"{100 * cpu['ours'][OTHER_THREADS] / ours['cpu_us_per_contact']:.0f}% |",
            f"| **the client process** | {ours['cpu_us_per_contact']:.1f} | 100% |",
        ]
    return [
        *lines,
        "",
        f"| step | {header} |",
        "|---|" + "---:|" * len(clients),
        *[f"| {step} | " + " | ".join(cell(c, step) for c in clients) + " |" for step in steps],
    ]


def _memory(results: dict[str, Any]) -> str:
    memory = results["memory"]
    floor = _runs(results, 0)["floor"]
    rows = [
        f"| ours | {run['n']:,} | {run['peak_rss_mib']:.0f} | {run['rss_before_mib']:.0f} | "
        f"{run['peak_rss_mib'] - run['rss_before_mib']:.0f} |"
        for run in memory.values()
    ]
    rows.append(
        f"| floor (section 1) | {floor['n']:,} | {floor['peak_rss_mib']:.0f} | "
        f"{floor['rss_before_mib']:.0f} | {floor['peak_rss_mib'] - floor['rss_before_mib']:.0f} |"
    )
    ratio = _memory_ratio(results)
    summary = (
        f"Peak RSS at 1,000,000 is **{ratio:.2f}{X}** the peak at 100,000."
        if ratio is not None
        else "The 1,000,000 run was skipped (set `BENCH_MILLION=1`)."
    )
    return "\n".join(
        [
            "## 2. Memory",
            "",
            "Each run in a fresh process (the 100,000 run is section 3's clean run). *Before* is the RSS",
            "after imports and set-up, when the first row is about to be read.",
            "",
            "| client | contacts | peak RSS MiB | before MiB | growth MiB |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            summary,
        ]
    )


def _rate_limited(results: dict[str, Any]) -> str:
    clean, limited = results["rate_limited"]["clean"], results["rate_limited"]["limited"]
    rule = results["rate_limit_rule"]
    waits = limited["fault_hits"] * rule["retry_after"]
    rows = [
        f"| ours, {name} | {run['rate']:,.0f} | {run['wall_s']:.2f} | {run['requests']} | "
        f"{run['fault_hits']} |"
        for name, run in (("clean", clean), ("10% 429", limited))
    ]
    return "\n".join(
        [
            "## 3. Rate limiting",
            "",
            f"Emulator fault rule: `{json.dumps(rule)}` (seeded, so every run gets the same 429s). The hook",
            "waits `Retry-After` and retries. The clean run is made right before, under the same load.",
            "",
            "| run | contacts/s | wall s | API requests | 429 answers |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            f"Under 10% 429s ours keeps **{100 * _rate_limited_share(results):.0f}%** of its clean "
            f"throughput. The run took {limited['wall_s'] - clean['wall_s']:.1f} s longer; the `Retry-After` "
            f"waits it was asked for add up to {waits:g} s: waiting them and nothing else would keep "
            f"{100 * _rate_limit_bound(results):.0f}%, the most any client that honours them can keep "
            "after this clean run.",
        ]
    )


def _parse(results: dict[str, Any]) -> str:
    parse, imports = results["parse"], results["imports"]
    labels = {
        "specs_100": "100 pipeline specs (loader + YAML)",
        "specs_1": "1 pipeline spec (loader + YAML)",
        "plain_100": "baseline: 100 plain DAGs in one .py (2 EmptyOperator tasks)",
    }
    parse_rows = [
        f"| {labels[name]} | {run['dags']} | {1000 * run['wall_s']:.0f} | {1000 * run['cpu_s']:.0f} | "
        f"{run['subprocess_s']:.1f} |"
        for name, run in parse.items()
    ]
    marginal = (parse["specs_100"]["wall_s"] - parse["specs_1"]["wall_s"]) / 99 * 1000
    plain = parse["plain_100"]["wall_s"] / 100 * 1000
    ms, attribution = imports["median_s"], imports["importtime"]
    heaviest = ", ".join(f"`{name}` {us / 1000:.0f} ms" for name, us in attribution["loader_heaviest"])
    return "\n".join(
        [
            "## 4. Parse and import time",
            "",
            "Parse: the file handed to `_parse_file(DagFileParseRequest(...))`, what a DAG processor child",
            "runs (a `BundleDagBag` of the file, then every DAG serialised), timed in a fresh process where",
            "Airflow's processor modules are imported and the provider is not; median of "
            f"{results['parse_runs']} processes each.",
            "",
            "| DAG file | DAGs | parse ms | parse CPU ms | whole process s |",
            "|---|---:|---:|---:|---:|",
            *parse_rows,
            "",
            f"* one more spec costs **{marginal:.1f} ms**; one more plain DAG {plain:.1f} ms",
            "",
            f"Import: median of {results['import_runs']} fresh interpreters per statement (rounds "
            "interleaved, after an untimed round that fills the bytecode cache), `time.perf_counter` "
            "around the statement:",
            "",
            "| statement | cold ms | on top of `from airflow.sdk import DAG, BaseOperator` ms |",
            "|---|---:|---:|",
            f"| `import airflow.sdk` (baseline) | {1000 * ms['airflow_sdk']:.0f} | - |",
            f"| `from airflow.sdk import DAG, BaseOperator` (baseline) | {1000 * ms['airflow_sdk_dag']:.0f} "
            "| - |",
            f"| `import altcraft.operators.import_and_launch` | {1000 * ms['provider']:.0f} | "
            f"{1000 * ms['provider_over_sdk']:.0f} |",
            f"| `import altcraft.pipelines` (the DAG loader) | {1000 * ms['loader']:.0f} | "
            f"{1000 * ms['loader_over_sdk']:.0f} |",
            "",
            "`python -X importtime`, one cold run each, cumulative: "
            f"`airflow.sdk` {attribution['airflow_sdk_us'] / 1000:.0f} ms, "
            f"`altcraft.operators.import_and_launch` {attribution['provider_us'] / 1000:.0f} ms, "
            f"`altcraft.pipelines` {attribution['loader_us'] / 1000:.0f} ms. Modules the loader adds to "
            f"`from airflow.sdk import DAG, BaseOperator`, heaviest first (self time): {heaviest}.",
        ]
    )


def _ledger_growth(results: dict[str, Any]) -> str:
    growth, rows = results["ledger_growth"], results["ledger_rows"]
    lines = [
        LEDGER_SECTION,
        "",
        f"`claim` then `settle` of {results['ledger_contacts']:,} new contacts in chunks of 1,000 (the "
        "ledger calls a delivery makes per chunk, no HTTP), first on an empty ledger, then after "
        f"{rows:,} launched contacts of the same scenario, one outcome row each, were added in SQL",
        "(bench/ledger_growth.py; each backend on a private database dropped afterwards). Wall time per",
        "contact of the median chunk: the database's work counts, not only this process's CPU. The",
        "settlements `settle` takes are made between the calls, outside the timing (the delivery's work).",
        "The full figure is for 10,000,000 contacts: `BENCH_LEDGER_ROWS=10000000 make bench`.",
        "PostgreSQL runs twice: on the machine's server as it is configured, and on a private cluster",
        "the job starts (`initdb` from the same binaries) with `shared_buffers` at 25% of RAM, the start",
        "PostgreSQL's documentation suggests for a dedicated server, every other setting at its default.",
        "On PostgreSQL each phase starts right after a `CHECKPOINT`, so the first change of each page in it",
        "writes the whole page to the WAL, as in every checkpoint cycle of a real server; the WAL column",
        "gives the KB of WAL written per contact, empty / full.",
        "",
        f"| backend | server | contacts in the ledger | empty {US}/contact | full {US}/contact "
        f"| full vs empty | client CPU {US}/contact empty / full | WAL KB/contact empty / full | fill s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, result in growth.items():
        backend = _growth_label(key, result)
        if "error" in result:
            lines.append(f"| {backend} | not measured: {result['error']} | | | | | | | |")
            continue
        lines.append(
            f"| {backend} | {result['server']} | {result['rows_after']:,} | {_phases(result)} | "
            f"{result['fill_s']:.0f} |"
        )
    lines += [
        "",
        f"Returning contacts: `claim` then `settle` of {results['ledger_contacts']:,} contacts already "
        "launched, for a window none of them was launched for, under `every_run` (each is found, its",
        "launches for the window are looked up in the outcomes, and it is launched again): on the small",
        "ledger those of its new-contacts phase, on the full one as many of the filled contacts picked at",
        "random. Each phase starts right after a `CHECKPOINT` on PostgreSQL, as above.",
        "",
        f"| backend | empty {US}/contact | full {US}/contact | full vs empty "
        f"| client CPU {US}/contact empty / full | WAL KB/contact empty / full |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, result in growth.items():
        again = result.get("returning")
        if again is None:
            lines.append(f"| {_growth_label(key, result)} | not measured | | | | |")
            continue
        lines.append(f"| {_growth_label(key, result)} | {_phases(again)} |")
    for key, result in growth.items():
        if "separate" in result:
            job = result["separate"]
            lines.append(
                f"\n* {_growth_label(key, result)}: measured by a job of its own, `{job['command']}`, "
                f"on {job['commit']} at {job['date']}."
            )
    return "\n".join(lines)


def _phases(growth: dict[str, Any]) -> str:
    """The cells of an empty and a full phase: wall per contact of each, their ratio, client CPU, WAL."""
    empty, full = growth["empty"], growth["full"]
    return (
        f"{empty['wall_us_per_contact']:.1f} | {full['wall_us_per_contact']:.1f} | "
        f"**{growth['ratio']:.2f}{X}** | "
        f"{empty['cpu_us_per_contact']:.1f} / {full['cpu_us_per_contact']:.1f} | {_wal(empty)} / {_wal(full)}"
    )


def _wal(phase: dict[str, Any]) -> str:
    """A phase's KB of WAL per contact; a dash where not measured."""
    return f"{phase['wal_bytes_per_contact'] / 1000:.1f}" if "wal_bytes_per_contact" in phase else "\u2013"


def _growth_label(key: str, result: dict[str, Any]) -> str:
    """The backend column: PostgreSQL's with its ``shared_buffers`` and whose cluster it ran on."""
    backend = result.get("backend", key)
    if "shared_buffers" not in result:
        return backend
    where = "a private cluster" if result.get("private_cluster") else "the machine's server"
    return f"{backend}, shared_buffers {result['shared_buffers']} ({where})"


def _method(results: dict[str, Any]) -> str:
    return "\n".join(
        [
            "## How it is measured",
            "",
            "* The bench table (`id`, `email`, `first_name`, `phone`, `loyalty`, `created_at`) is generated "
            "with `generate_series` in a private schema of database `test`, which also holds the ledger "
            "tables; the schema is dropped at the end. Every job starts with an emptied ledger, a reset "
            "emulator and a fresh scenario, and runs in a fresh `python -m bench.throughput` process.",
            "* Timed: from the first row read to the last contact settled; set-up (connections, ledger "
            "schema, imports) is not. Contacts/s = contacts / wall time; CPU = `time.process_time()` of "
            "the client process; peak RSS = `VmHWM` of that process.",
            "* ours: `SqlTableSource` over the window → `Delivery` in batch mode (mapping with email and "
            "E.164 phone validation, claim in the PostgreSQL ledger, `AltcraftHook`, settle). "
            "naive: `PostgresHook.get_records` then `HttpHook.run` per contact (a new session each call), "
            f"on the first {results['naive_n']:,} contacts. floor: the same query through a psycopg "
            "server-side cursor, email-validator and phonenumbers, one `json.dumps` per request and the "
            "same batch requests on a bare `requests.Session` (`trust_env` off: the environment is not "
            "re-read at each request, as ours does not); both floors run under `altcraft.heap.frozen_heap()` "
            "as ours does, so the garbage collector is set alike. floor, cached validation: the same with "
            "`altcraft.validation`'s `normalize_email` and `normalize_phone` (a known domain and a `+digits` "
            "phone skip re-parsing, a phone's validity is phonenumbers' own test on patterns compiled once "
            "per country code and whether it is possible phonenumbers' answer asked once per country code "
            "and length; tests/test_validation_fast_path.py proves the same verdicts and output as the "
            "plain libraries over ~45,000 values).",
            "* Emulator CPU: user + system time of the emulator process (psutil) over the job, per contact.",
            "* The emulator (`altcraft.testing.emulator_process`) runs in its own process on 127.0.0.1; "
            f"the latency runs set its `latency_ms={results['latency_ms']}`.",
            f"* Each throughput job ran {results['repeat']} time(s) (`BENCH_REPEAT`); the fastest is shown, "
            "every wall time is in the raw results.",
            "* Every subprocess imports from a bytecode cache (a private `PYTHONPYCACHEPREFIX`, filled by "
            "an untimed first import), as a deployed Airflow does; the shared machine sets "
            "`PYTHONDONTWRITEBYTECODE=1`, without which every import would compile its modules again.",
        ]
    )


def embedded_results(report: str) -> dict[str, Any]:
    """The results a report was rendered from (its raw JSON section, `_raw`)."""
    start = report.index(RAW_BEGIN) + len(RAW_BEGIN)
    return json.loads(report[start : report.index("\n```", start)])


RAW_BEGIN = "<details><summary>Raw results (JSON)</summary>\n\n```json\n"


def _raw(results: dict[str, Any]) -> str:
    return "\n".join(
        [
            RAW_BEGIN + json.dumps(results, indent=1, default=str),
            "```",
            "",
            "</details>",
        ]
    )
