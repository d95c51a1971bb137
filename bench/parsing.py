"""DAG-folder parse time and import time.

Parse: a DAG bundle (the shipped loader beside ``pipelines/`` holding generated variants of
``dags/pipelines/demo_sqlite_welcome.yaml``) parsed the way a DAG processor child does it:
``_parse_file(DagFileParseRequest(...))`` (a `BundleDagBag` of the file, then every DAG serialised),
in a fresh process where Airflow's processor modules are already imported and the provider is not, and
frozen out of the garbage collector as in a real child: the DAG processor manager calls ``gc.freeze()``
before forking its children (``DagFileProcessorManager.before_run``). Unfrozen, the first full
collection during the parse scanned every imported Airflow object (~190,000, 120-160 ms).
Baseline: one Python file defining the same number of plain DAGs of two ``EmptyOperator`` tasks.

``python -m bench.parsing --file F --bundle B`` prints the job's result as one JSON line.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import REPO, Meter, emit, python_env

DEMO_SPEC = REPO / "dags" / "pipelines" / "demo_sqlite_welcome.yaml"
LOADER = REPO / "dags" / "altcraft_pipelines.py"
PLAIN_DAG = """
with DAG(
    dag_id="plain_{i:03d}",
    schedule="{schedule}",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["plain"],
    doc_md="A hand-written DAG of two tasks.",
):
    EmptyOperator(task_id="plan") >> EmptyOperator(task_id="import_and_launch")
"""


# -------------------------------------------------------------------------------------- bundles


def spec_variant(template: str, i: int) -> str:
    """Spec ``i``: the demo spec under a new id, with its own table, batch size and schedule."""
    replacements = {
        r"^id: demo_sqlite_welcome$": f"id: bench_pipeline_{i:03d}",
        r"^  table: contacts$": f"  table: contacts_{i:03d}",
        r"batch_size: 100\}": f"batch_size: {100 + i}}}",
        r"^schedule: 1d$": "schedule: 1d" if i % 2 else f'schedule: "{i % 60} * * * *"',
    }
    for pattern, value in replacements.items():
        template, found = re.subn(pattern, value, template, flags=re.MULTILINE)
        if found != 1:
            raise ValueError(f"{DEMO_SPEC.name} changed: {pattern!r} matched {found} times")
    return template


def spec_bundle(root: Path, count: int) -> Path:
    """The shipped loader and ``count`` spec variants; returns the loader file."""
    (root / "pipelines").mkdir(parents=True)
    template = DEMO_SPEC.read_text("utf-8")
    for i in range(count):
        (root / "pipelines" / f"bench_{i:03d}.yaml").write_text(spec_variant(template, i), "utf-8")
    return Path(shutil.copy(LOADER, root / LOADER.name))


def plain_bundle(root: Path, count: int) -> Path:
    """One Python DAG file defining ``count`` plain DAGs of two tasks; returns it."""
    root.mkdir(parents=True)
    head = (
        "from datetime import datetime\n\n"
        "from airflow.providers.standard.operators.empty import EmptyOperator\n"
        "from airflow.sdk import DAG\n"
    )
    dags = [PLAIN_DAG.format(i=i, schedule="@daily" if i % 2 else f"{i % 60} * * * *") for i in range(count)]
    path = root / "plain_dags.py"
    path.write_text(head + "".join(dags), "utf-8")
    return path


# ------------------------------------------------------------------------------------------ parse


def parse(file: Path, bundle: Path) -> dict[str, Any]:
    """Parse ``file`` as a DAG processor child does and time it (this process only)."""
    import gc

    import structlog
    from airflow.dag_processing.processor import DagFileParseRequest, _parse_file

    gc.freeze()  # what the DAG processor manager does before it forks the child that parses a file
    request = DagFileParseRequest(file=str(file), bundle_path=bundle, bundle_name="bench")
    meter = Meter()
    with meter.measure():
        result = _parse_file(request, structlog.get_logger())
    if result is None:
        raise RuntimeError(f"{file} gave no parsing result")
    return {
        "wall_s": meter.wall,
        "cpu_s": meter.cpu,
        "dags": len(result.serialized_dags),
        "import_errors": sorted(result.import_errors),
    }


# ------------------------------------------------------------------------------------ import time


_PRINT_ELAPSED = "print(time.perf_counter() - _t)"


def timed_imports(cases: dict[str, tuple[str, str]], runs: int) -> dict[str, float]:
    """Median seconds of each case's statement in fresh interpreters, after its prelude (not timed).

    ``cases`` maps a name to (prelude, statement). Rounds interleave the cases so that a noisy moment of
    the shared machine hits all of them alike; a first, untimed round fills the bytecode cache.
    """
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(runs + 1):
        for name, (prelude, statement) in cases.items():
            code = f"{prelude}\nimport time\n_t = time.perf_counter()\n{statement}\n{_PRINT_ELAPSED}"
            done = subprocess.run(
                [sys.executable, "-c", code],
                cwd=REPO,
                env=python_env(),
                capture_output=True,
                text=True,
                check=True,
            )
            if round_:
                times[name].append(float(done.stdout.split()[-1]))
    return {name: statistics.median(values) for name, values in times.items()}


def importtime(statement: str) -> list[tuple[str, int, int]]:
    """``python -X importtime -c statement``: (module, self us, cumulative us) in import order."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        cwd=REPO,
        env=python_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_importtime(done.stderr)


def parse_importtime(stderr: str) -> list[tuple[str, int, int]]:
    """The rows of ``-X importtime`` output; nested modules keep their indentation in the name."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|", 2)
        rows.append((name.removeprefix(" ").rstrip(), int(own), int(cumulative)))
    return rows


def module_cumulative_us(rows: list[tuple[str, int, int]], module: str) -> int:
    """Cumulative us of ``module`` and of its not yet imported parent packages (all top level)."""
    parts = module.split(".")
    wanted = {".".join(parts[: i + 1]) for i in range(len(parts))}
    return sum(cumulative for name, _, cumulative in rows if name in wanted)


def heaviest(
    rows: list[tuple[str, int, int]], already: list[tuple[str, int, int]], count: int = 8
) -> list[tuple[str, int]]:
    """The ``count`` modules of ``rows`` not in ``already`` that cost most themselves (self us)."""
    seen = {name.strip() for name, _, _ in already}
    own = [(name.strip(), us) for name, us, _ in rows if name.strip() not in seen]
    return sorted(own, key=lambda item: -item[1])[:count]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.parsing", description=__doc__)
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--bundle", type=Path, required=True)
    args = parser.parse_args(argv)
    emit(parse(args.file, args.bundle))


if __name__ == "__main__":
    main()
