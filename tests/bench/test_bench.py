"""Every benchmark at a tiny size, so `make bench` cannot rot: the clients, the parse job, the report."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
from bench.common import bench_schema, connection_env
from bench.parsing import (
    heaviest,
    module_cumulative_us,
    parse,
    parse_importtime,
    plain_bundle,
    spec_bundle,
    spec_variant,
)
from bench.report import render
from bench.throughput import CLIENTS, ours

N = 300
NAIVE_N = 20
_ids = itertools.count(91_000)


@pytest.fixture(scope="module")
def schema():
    with bench_schema(N) as name:
        yield name


@pytest.fixture
def scenario(altcraft_emulator, schema, monkeypatch) -> int:
    """A fresh active scenario, and the bench connections pointing at the test emulator."""
    for name, value in connection_env(schema, altcraft_emulator.url, altcraft_emulator.token).items():
        monkeypatch.setenv(name, value)
    scenario_id = next(_ids)
    altcraft_emulator.seed(
        scenarios=[{"id": scenario_id, "name": "Bench", "db_id": 1, "is_active": True, "mode": "restart"}]
    )
    return scenario_id


@pytest.mark.parametrize(
    ("client", "n", "requests"), [("ours", N, 3), ("floor", N, 3), ("naive", NAIVE_N, 20)]
)
def test_each_client_launches_every_contact_of_its_window(
    altcraft_emulator, schema, scenario, client, n, requests
):
    result = CLIENTS[client](schema, n, scenario, 100, None)

    assert (result["found"], result["launched"], result["requests"]) == (n, n, requests)
    assert altcraft_emulator.state()["launches"] == n
    assert result["rate"] > 0 and result["cpu_us_per_contact"] > 0
    assert result["peak_rss_mib"] >= result["rss_before_mib"] > 0


def test_ours_waits_out_429_answers_and_still_launches_everyone(altcraft_emulator, schema, scenario):
    altcraft_emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start_batch",
            "kind": "status",
            "status": 429,
            "retry_after": 0,
            "every": 2,
        }
    )

    result = ours(schema, N, scenario, 100, None)

    assert result["launched"] == N and result["requests"] > 3
    assert altcraft_emulator.state()["launches"] == N


def test_generated_specs_and_plain_dags_parse_without_import_errors(tmp_path: Path):
    specs = spec_bundle(tmp_path / "specs", 3)
    plain = plain_bundle(tmp_path / "plain", 3)

    for file in (specs, plain):
        result = parse(file, file.parent)
        assert (result["dags"], result["import_errors"]) == (3, [])


def test_spec_variants_fail_loudly_when_the_demo_spec_changes():
    with pytest.raises(ValueError, match="matched 0 times"):
        spec_variant("id: something_else\n", 1)


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 | encodings
import time:       200 |        700 | airflow
import time:       300 |        300 |   airflow.sdk.api
import time:       400 |        500 | airflow.sdk
import time:        50 |         50 |   yaml
"""


def test_importtime_rows_give_a_module_with_its_parents_and_the_new_heaviest():
    rows = parse_importtime(IMPORTTIME)

    assert rows[2] == ("  airflow.sdk.api", 300, 300)
    assert module_cumulative_us(rows, "airflow.sdk") == 1200
    assert heaviest(rows, rows[:2], count=2) == [("airflow.sdk", 400), ("airflow.sdk.api", 300)]


def _run(n: int, rate: float, cpu: float, peak: float = 150.0) -> dict:
    return {
        "n": n,
        "wall_s": n / rate,
        "cpu_s": cpu * n / 1e6,
        "rate": rate,
        "cpu_us_per_contact": cpu,
        "rss_before_mib": 140.0,
        "peak_rss_mib": peak,
        "requests": n // 1000 or n,
        "launched": n,
        "found": n,
        "fault_hits": 0,
        "walls_s": [n / rate],
    }


RESULTS = {
    "command": "make bench",
    "date": "2025-01-01T00:00:00+00:00",
    "total_s": 60.0,
    "machine": {
        "cores": 2,
        "cpu": "cpu",
        "memory_gib": 1.0,
        "python": "3.11",
        "kernel": "6",
        "postgresql": "15",
        "packages": {"apache-airflow": "3.3.2"},
        "commit": "abc",
        "dirty": False,
    },
    "load_before": [1.0, 1.0, 1.0],
    "load_after": [1.0, 1.0, 1.0],
    "n": 100_000,
    "naive_n": 2000,
    "repeat": 1,
    "latency_ms": 20,
    "rate_limit_rule": {"kind": "status", "retry_after": 1},
    "parse_runs": 3,
    "import_runs": 5,
    "throughput": {
        "latency_0": {
            "naive": _run(2000, 500, 1000),
            "floor": _run(100_000, 10_000, 50),
            "ours": _run(100_000, 60_000, 60),
        },
        "latency_20": {
            "naive": _run(2000, 40, 1000),
            "floor": _run(100_000, 9000, 50),
            "ours": _run(100_000, 8000, 60),
        },
    },
    "rate_limited": {
        "clean": _run(100_000, 60_000, 60),
        "limited": {**_run(100_000, 30_000, 60), "fault_hits": 11},
    },
    "memory": {"100000": _run(100_000, 60_000, 60, 150), "1000000": _run(1_000_000, 60_000, 60, 160)},
    "parse": {
        name: {"dags": dags, "wall_s": wall, "cpu_s": wall, "subprocess_s": 4.0, "import_errors": []}
        for name, dags, wall in (("specs_100", 100, 0.8), ("specs_1", 1, 0.2), ("plain_100", 100, 0.2))
    },
    "imports": {
        "median_s": {
            "airflow_sdk": 1.0,
            "airflow_sdk_dag": 1.0,
            "provider": 1.0,
            "loader": 1.1,
            "provider_over_sdk": 0.004,
            "loader_over_sdk": 0.2,
        },
        "importtime": {
            "airflow_sdk_us": 1,
            "provider_us": 1,
            "loader_us": 1,
            "loader_heaviest": [("yaml", 5000)],
        },
    },
}


def target_rows(markdown: str) -> dict[str, str]:
    section = markdown.split("## Targets")[1].split("\n## ")[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {row[0].removeprefix("| "): row[-1].removesuffix(" |") for row in rows[1:]}


def test_the_report_judges_each_target_from_same_run_ratios():
    verdicts = target_rows(render(RESULTS))

    assert verdicts["throughput vs naive, loopback"] == "met"  # 60,000 / 500 = 120x
    assert verdicts["throughput vs naive, 20 ms latency"] == "**missed**"  # 200x
    assert verdicts["client CPU per contact vs floor"] == "met"  # 1.2x
    assert verdicts["throughput with 10% 429s vs clean"] == "**missed**"  # 50%
    assert verdicts["DAG loader import on top of airflow.sdk"] == "**missed**"  # 200 ms


def test_the_report_says_when_the_million_run_was_skipped():
    results = copy.deepcopy(RESULTS)
    del results["memory"]["1000000"]

    markdown = render(results)

    assert target_rows(markdown)["peak RSS at 1M"] == "-"
    assert "set `BENCH_MILLION=1`" in markdown


def test_latency_percentiles_and_its_section_of_the_report(tmp_path: Path):
    from bench.latency import BEGIN, END, HOOK, POLL, SCHED, percentiles, render, write_section

    assert percentiles([]) == {"n": 0}
    found = percentiles([float(i) for i in range(1, 101)])
    assert (found["n"], found["p50"], found["p95"], found["max"]) == (100, 50.5, 95.0, 100.0)
    assert percentiles([3.0])["p95"] == 3.0
    pipeline = {"sent": 2, "launched": 2, "launched_twice": 0, "runs": 1}
    pipeline |= {"steady": percentiles([1.0, 2.0]), "burst": {"n": 0}}
    latency = {
        "seconds": 60,
        "every": 2,
        "burst": 200,
        "pipelines": dict.fromkeys((POLL, HOOK, SCHED), pipeline),
    }
    section = render(latency)
    assert (
        section.startswith(BEGIN)
        and section.endswith(END)
        and "| poll (1 s) | steady | 2 | 1.5 | 2.0 | 2.0 |" in section
    )
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nbefore\n")
    write_section(doc, section)
    write_section(doc, section.replace("1.5", "9.9"))
    text = doc.read_text()
    assert text.count(BEGIN) == 1 and "9.9" in text and text.startswith("# Benchmarks\n\nbefore\n")
