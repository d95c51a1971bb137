"""Broken specs in a real Airflow: one import error per spec file, naming the field, and the rest loads.

Covers every place Airflow 3.3 parses the DAG folder: a DagBag (CLI, tests), the DAG processor's parse
step and what the manager then stores in the metadata database, the task runner's re-parse on a worker,
and the ``airflow dags list-import-errors`` command.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import structlog
from airflow.dag_processing.dagbag import BundleDagBag, DagBag
from airflow.sdk.definitions.mappedoperator import MappedOperator

from tests.pipelines.conftest import BROKEN, DAGS, EXAMPLES, LOADER, make_bundle
from tests.pipelines.test_spec import BROKEN_EXPECTED

GOOD_IDS = {path.stem for path in EXAMPLES}


def assert_one_error_per_broken_spec(import_errors: dict[str, str], key: Callable[[str], str]) -> None:
    assert sorted(import_errors) == sorted(key(name) for name in BROKEN_EXPECTED)
    for name, (line, field, words) in BROKEN_EXPECTED.items():
        message = import_errors[key(name)]
        assert message.startswith(f"Pipeline spec {name} is invalid:"), message
        assert f"line {line}, " in message and f"{field}: " in message and words in message


def test_the_shipped_dag_folder_loads_every_example_without_import_errors():
    bag = DagBag(dag_folder=DAGS)

    assert set(bag.dags) >= GOOD_IDS
    assert [key for key in bag.import_errors if "pipelines" in key or key.endswith(LOADER.name)] == []


def test_dagbag_keeps_the_good_pipelines_and_reports_each_broken_spec_under_its_file(bundle: Path):
    bag = DagBag(dag_folder=bundle)

    assert set(bag.dags) == GOOD_IDS
    assert_one_error_per_broken_spec(bag.import_errors, lambda name: str(bundle / "pipelines" / name))


def test_a_bundle_names_spec_files_relative_to_its_root(bundle: Path):
    bag = BundleDagBag(dag_folder=bundle, bundle_path=bundle, bundle_name="dags-folder")

    assert set(bag.dags) == GOOD_IDS
    assert_one_error_per_broken_spec(bag.import_errors, lambda name: f"pipelines/{name}")


def test_dag_processor_stores_one_import_error_per_spec_and_keeps_the_good_dags_active(tmp_path, airflow_db):
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.dag_processing.processor import DagFileParseRequest, _parse_file
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.models.errors import ParseImportError
    from airflow.utils.session import create_session
    from sqlalchemy import select

    good_id = f"pipelines_test_{uuid.uuid4().hex[:8]}"
    good = tmp_path / "good.yaml"
    good.write_text(EXAMPLES[0].read_text().replace(f"id: {EXAMPLES[0].stem}", f"id: {good_id}"))
    root = make_bundle(tmp_path / "bundle", [good, *BROKEN.glob("*.yaml")])
    bundle_name = f"pipelines-test-{uuid.uuid4().hex[:8]}"

    # What a DAG processor child does with the file, then what the manager does with its result.
    result = _parse_file(
        DagFileParseRequest(file=str(root / LOADER.name), bundle_path=root, bundle_name=bundle_name),
        structlog.get_logger(),
    )
    errors = {(bundle_name, path): text for path, text in result.import_errors.items()}
    with create_session() as session:
        session.merge(DagBundleModel(name=bundle_name))
        session.flush()
        update_dag_parsing_results_in_db(
            bundle_name,
            None,
            result.serialized_dags,
            errors,
            None,
            set(),
            session,
            files_parsed={(bundle_name, LOADER.name), *errors},
        )

    with create_session() as session:
        stored = {
            e.filename: e.stacktrace
            for e in session.scalars(
                select(ParseImportError).where(ParseImportError.bundle_name == bundle_name)
            )
        }
        model = session.scalar(select(DagModel).where(DagModel.dag_id == good_id))
        assert (model.relative_fileloc, model.is_stale, model.has_import_errors) == (
            LOADER.name,
            False,
            False,
        )
    assert [dag.dag_id for dag in result.serialized_dags] == [good_id]
    assert_one_error_per_broken_spec(stored, lambda name: f"pipelines/{name}")


def test_a_worker_reparse_finds_its_dag_whatever_other_specs_are_broken(bundle: Path):
    # As airflow.sdk.execution_time.task_runner.parse() loads the DAG file of a task instance.
    bag = BundleDagBag(
        dag_folder=os.fspath(bundle / LOADER.name),
        safe_mode=False,
        load_op_links=False,
        bundle_path=bundle,
        bundle_name="dags-folder",
    )

    task = bag.dags["demo_sqlite_welcome"].task_dict["import_and_launch"]
    assert isinstance(task, MappedOperator)
    assert bag.dags["demo_sqlite_welcome"].relative_fileloc == LOADER.name


def test_airflow_cli_lists_each_broken_spec_as_an_import_error(bundle: Path, airflow_home: Path):
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(bundle)}

    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "list-import-errors", "--local", "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )

    listed = next(line for line in done.stdout.splitlines() if line.startswith("["))
    errors = {item["filepath"]: item["error"] for item in json.loads(listed)}
    assert_one_error_per_broken_spec(errors, lambda name: str(bundle / "pipelines" / name))
