"""The two DAG files that put YAML pipelines into an Airflow DAG folder, and the commands using them.

``python -m altcraft.pipelines init <dags_folder>`` writes them and creates ``<dags_folder>/pipelines/``
for the specs; ``python -m altcraft.pipelines check <dags_folder>`` lists what the checker DAG file would
(broken specs, ids another DAG takes). The repository's ``dags/`` holds the same files (a test keeps them
identical).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from altcraft.command_line import path_argument
from altcraft.pipelines.factory import CHECKER_FILE, LOADER_FILE, BrokenPipelineSpecs, load_pipelines

SPECS_FOLDER = "pipelines"

DAG_FILES: dict[str, str] = {
    LOADER_FILE: '''\
"""Airflow DAG-folder entry point of the Altcraft templated pipelines: one DAG per YAML spec in ./pipelines.

Drop a spec into pipelines/ (see docs/pipelines.md); no Python is needed. A broken spec is skipped here
and listed as the import error of altcraft_pipelines_check.py; every other pipeline keeps loading.
"""

from pathlib import Path

from altcraft.pipelines import load_pipelines

load_pipelines(Path(__file__).with_name("pipelines")).register(globals())
''',
    CHECKER_FILE: '''\
"""Lists every broken Altcraft pipeline spec in ./pipelines as this file's Airflow import error (no DAG here).

The DAGs themselves come from altcraft_pipelines.py. Airflow keeps an import error of a DAG file for as
long as the file fails, so the error names each broken spec until it is fixed (see docs/pipelines.md).
"""

from pathlib import Path

from altcraft.pipelines import check_pipelines

check_pipelines(Path(__file__).with_name("pipelines"))
''',
}


def init(dags_folder: Path) -> list[Path]:
    """Write the DAG files into ``dags_folder`` and create its ``pipelines/``; the files written.

    A file that exists with other content is left alone (ValueError names it), so nothing of the
    user's is overwritten.
    """
    (dags_folder / SPECS_FOLDER).mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in DAG_FILES.items():
        path = dags_folder / name
        if path.exists():
            if path.read_text(encoding="utf-8") != text:
                raise ValueError(f"{path} exists and differs from this version's; remove it and run again")
            continue
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def check(dags_folder: Path) -> int:
    """Print what the checker DAG file of ``dags_folder`` would raise (`BrokenPipelineSpecs`: broken specs,
    ids another DAG file takes) to stderr and return 1, or say how many pipelines load and return 0."""
    specs = dags_folder / SPECS_FOLDER
    if not specs.is_dir():
        print(
            f"no pipelines folder in {dags_folder}: run `init` first, or name the DAG folder", file=sys.stderr
        )
        return 1
    pipelines = load_pipelines(specs)
    if pipelines.errors:
        print(BrokenPipelineSpecs(pipelines.errors), file=sys.stderr)
        return 1
    count = len(pipelines.dags)
    print(f"{count} pipeline{' loads' if count == 1 else 's load'}; no spec is broken")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m altcraft.pipelines", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("init", help="write the pipeline DAG files into an Airflow DAG folder")
    command.add_argument("dags_folder", type=path_argument, help="Airflow's [core] dags_folder")
    command = commands.add_parser(
        "check", help="list the broken specs of a DAG folder's pipelines and the ids other DAGs take"
    )
    command.add_argument("dags_folder", type=path_argument, help="the DAG folder holding pipelines/")
    args = parser.parse_args(argv)
    if args.command == "check":
        return check(args.dags_folder)
    try:
        written = init(args.dags_folder)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    except OSError as error:  # a file in a folder's place, no permission: the path is the user's to fix
        print(
            f"cannot write the DAG files into {args.dags_folder}: {error.strerror or error}", file=sys.stderr
        )
        return 1
    for path in written:
        print(f"wrote {path}")
    print(f"Put pipeline specs (*.yaml) into {args.dags_folder / SPECS_FOLDER}/")
    return 0
