"""docs/benchmarks.md from the results of one ``make bench`` run: targets first, then every section."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import latency as latency_bench

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
    limit: float
    at_least: bool
    unit: str

    def row(self, results: dict[str, Any]) -> str:
        value = self.value(results)
        if value is None:
            return f"| {self.name} | {self.goal} | not measured | - |"
        met = value >= self.limit if self.at_least else value <= self.limit
        return f"| {self.name} | {self.goal} | {value:,.2f}{self.unit} | {'met' if met else '**missed**'} |"


def _runs(results: dict[str, Any], latency: int) -> dict[str, Any]:
    return results["throughput"][f"latency_{latency}"]


def _speedup(results: dict[str, Any], latency: int) -> float:
    runs = _runs(results, latency)
    return runs["ours"]["rate"] / runs["naive"]["rate"]


def _cpu_ratio(results: dict[str, Any]) -> float:
    runs = _runs(results, 0)
    return runs["ours"]["cpu_us_per_contact"] / runs["floor"]["cpu_us_per_contact"]


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


TARGETS = (
    Target("throughput vs naive, loopback", f"≥ 100{X}", lambda r: _speedup(r, 0), 100, True, X),
    Target("throughput vs naive, 20 ms latency", f"≥ 1000{X}", lambda r: _speedup(r, 20), 1000, True, X),
    Target("client CPU per contact vs floor", f"≤ 1.5{X}", _cpu_ratio, 1.5, False, X),
    Target("peak RSS at 1M vs at 100k", f"≤ 1.25{X}", _memory_ratio, 1.25, False, X),
    Target("peak RSS at 1M", "≤ 300 MB", _memory_million_mb, 300, False, " MB"),
    Target(
        "throughput with 10% 429s vs clean", "≥ 70%", lambda r: 100 * _rate_limited_share(r), 70, True, "%"
    ),
    Target(
        "parse 100 specs (DAG processor)",
        "≤ 1 s",
        lambda r: r["parse"]["specs_100"]["wall_s"],
        1,
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


def render(results: dict[str, Any]) -> str:
    sections = [
        _head(results),
        _targets(results),
        _throughput(results),
        _memory(results),
        _rate_limited(results),
        _parse(results),
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
    return "\n".join(["## Targets", "", "| target | goal | measured | |", "|---|---|---|---|", *rows])


def _client_rows(runs: dict[str, Any]) -> list[str]:
    labels = {
        "naive": "naive: `HttpHook.run` per contact (sample)",
        "floor": "floor: psycopg + validation + `requests.Session`",
        "ours": "ours: `SqlTableSource` → `Delivery` (ledger, batch)",
    }
    return [
        f"| {labels[name]} | {run['n']:,} | {run['wall_s']:.2f} | {run['rate']:,.0f} | "
        f"{run['cpu_us_per_contact']:.1f} | {run['wall_s'] - run['cpu_s']:.2f} | {run['requests']:,} | "
        f"{run['peak_rss_mib']:.0f} |"
        for name, run in runs.items()
    ]


def _throughput(results: dict[str, Any]) -> str:
    lines = [
        f"## 1. Throughput ({results['n']:,} contacts, batches of 1,000)",
        "",
        "PostgreSQL table → client → emulator in its own process. CPU is user + system time of the",
        "client process only (not PostgreSQL, not the emulator); *waiting* is wall minus that CPU: the",
        "client waiting for PostgreSQL, the emulator or a core of the shared machine.",
    ]
    for latency in (0, results["latency_ms"]):
        runs = _runs(results, latency)
        ours, floor, naive = runs["ours"], runs["floor"], runs["naive"]
        title = "Loopback" if not latency else f"{latency} ms latency per API request"
        lines += [
            "",
            f"### {title}",
            "",
            f"| client | contacts | wall s | contacts/s | client CPU {US}/contact | waiting s | API requests "
            "| peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            *_client_rows(runs),
            "",
            f"* ours vs naive: **{ours['rate'] / naive['rate']:,.0f}{X}** the contacts/s "
            f"(the floor reaches {floor['rate'] / naive['rate']:,.0f}{X})",
            f"* ours vs floor: **{ours['cpu_us_per_contact'] / floor['cpu_us_per_contact']:.2f}{X}** the CPU "
            f"per contact, **{ours['wall_s'] / floor['wall_s']:.2f}{X}** the wall time",
            f"* naive: {1000 / naive['rate']:.1f} ms per contact",
        ]
    return "\n".join(lines)


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
            f"waits it was asked for add up to {waits:g} s.",
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
            "same batch requests on a bare `requests.Session`.",
            "* The emulator (`altcraft.testing.emulator_process`) runs in its own process on 127.0.0.1; "
            f"the latency runs set its `latency_ms={results['latency_ms']}`.",
            f"* Each throughput job ran {results['repeat']} time(s) (`BENCH_REPEAT`); the fastest is shown, "
            "every wall time is in the raw results.",
            "* Every subprocess imports from a bytecode cache (a private `PYTHONPYCACHEPREFIX`, filled by "
            "an untimed first import), as a deployed Airflow does; the shared machine sets "
            "`PYTHONDONTWRITEBYTECODE=1`, without which every import would compile its modules again.",
        ]
    )


def _raw(results: dict[str, Any]) -> str:
    return "\n".join(
        [
            "<details><summary>Raw results (JSON)</summary>",
            "",
            "```json",
            json.dumps(results, indent=1, default=str),
            "```",
            "",
            "</details>",
        ]
    )
