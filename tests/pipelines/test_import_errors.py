"""Broken specs in a real Airflow: one import error, of the checker DAG file, naming each broken spec.

Covers every place Airflow 3.3 parses the DAG folder: a DagBag (CLI, tests), the DAG processor's parse
step, what the manager then stores in the metadata database and what its bundle re-listing keeps (the
orphan clean-up that used to delete errors filed under YAML paths), the task runner's re-parse on a
worker, and the ``airflow dags list-import-errors`` command. tests/e2e/test_newcomer.py watches the error
through the REST API of a running Airflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import structlog
from airflow.dag_processing.dagbag import BundleDagBag, DagBag
from airflow.sdk.definitions.mappedoperator import MappedOperator

from altcraft.pipelines import BrokenPipelineSpecs, check_pipelines, load_pipelines
from tests.pipelines.conftest import BROKEN, CHECKER, DAGS, EXAMPLES, LOADER, make_bundle
from tests.pipelines.test_spec import BROKEN_EXPECTED

GOOD_IDS = {path.stem for path in EXAMPLES}


def assert_names_every_broken_spec(message: str) -> None:
    assert f"{len(BROKEN_EXPECTED)} pipeline specs are broken" in message, message
    for name, (line, field, words) in BROKEN_EXPECTED.items():
        section = message.split(f"Pipeline spec {name} is invalid:\n", 1)[1].split("\n\n")[0]
        assert f"line {line}, " in section and f"{field}: " in section and words in section, section


def test_the_shipped_dag_folder_loads_every_example_without_import_errors():
    bag = DagBag(dag_folder=DAGS)

    assert set(bag.dags) >= GOOD_IDS
    assert [key for key in bag.import_errors if "pipelines" in key] == []


def test_check_pipelines_raises_naming_every_broken_spec_and_is_silent_when_none_is(bundle: Path):
    with pytest.raises(BrokenPipelineSpecs) as raised:
        check_pipelines(bundle / "pipelines")
    assert_names_every_broken_spec(str(raised.value))
    assert [error.path.name for error in raised.value.errors] == sorted(BROKEN_EXPECTED)

    check_pipelines(DAGS / "pipelines")  # the shipped examples: nothing to say


def test_the_loader_logs_each_broken_spec_and_registers_only_the_good_ones(bundle: Path, caplog):
    namespace: dict[str, object] = {}
    with caplog.at_level("WARNING", logger="altcraft.pipelines.factory"):
        load_pipelines(bundle / "pipelines").register(namespace)

    assert set(namespace) == GOOD_IDS
    assert len(caplog.records) == len(BROKEN_EXPECTED)
    assert all(CHECKER.name in record.getMessage() for record in caplog.records)


def test_dagbag_keeps_the_good_pipelines_and_lists_the_broken_specs_under_the_checker(bundle: Path):
    bag = DagBag(dag_folder=bundle)

    assert set(bag.dags) == GOOD_IDS
    assert list(bag.import_errors) == [str(bundle / CHECKER.name)]
    assert_names_every_broken_spec(bag.import_errors[str(bundle / CHECKER.name)])


def test_the_checker_holds_no_dag_when_every_spec_is_good(tmp_path: Path):
    root = make_bundle(tmp_path / "bundle", EXAMPLES)
    bag = DagBag(dag_folder=root)

    assert bag.import_errors == {}
    assert {Path(dag.fileloc).name for dag in bag.dags.values()} == {LOADER.name}


def _parse_and_store(root: Path, bundle_name: str, files: list[str]):
    """What DAG processor children do with ``files``, then what the manager stores from their results."""
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.dag_processing.processor import DagFileParseRequest, _parse_file
    from airflow.utils.session import create_session

    results = {
        name: _parse_file(
            DagFileParseRequest(file=str(root / name), bundle_path=root, bundle_name=bundle_name),
            structlog.get_logger(),
        )
        for name in files
    }
    with create_session() as session:
        for name, result in results.items():
            update_dag_parsing_results_in_db(
                bundle_name,
                None,
                result.serialized_dags,
                {(bundle_name, path): text for path, text in result.import_errors.items()},
                None,
                set(),
                session,
                files_parsed={(bundle_name, name)},
            )
    return results


def _stored_errors(bundle_name: str) -> dict[str, str]:
    from airflow.models.errors import ParseImportError
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(ParseImportError).where(ParseImportError.bundle_name == bundle_name)
        return {error.filename: error.stacktrace for error in session.scalars(query)}


def test_dag_processor_stores_the_error_and_the_bundle_relisting_keeps_it(tmp_path, airflow_db):
    from airflow.dag_processing.manager import DagFileProcessorManager
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.utils.file import list_py_file_paths
    from airflow.utils.session import create_session
    from sqlalchemy import select

    good_id = f"pipelines_test_{uuid.uuid4().hex[:8]}"
    good = tmp_path / "good.yaml"
    good.write_text(EXAMPLES[0].read_text().replace(f"id: {EXAMPLES[0].stem}", f"id: {good_id}"))
    root = make_bundle(tmp_path / "bundle", [good, *BROKEN.glob("*.yaml")])
    bundle_name = f"pipelines-test-{uuid.uuid4().hex[:8]}"
    with create_session() as session:
        session.merge(DagBundleModel(name=bundle_name))

    results = _parse_and_store(root, bundle_name, [LOADER.name, CHECKER.name])
    # The manager re-lists the bundle (every refresh_interval) and deletes the import errors of files it
    # did not list: the checker is a listed .py file, so its error stays.
    listed = {os.path.relpath(path, root) for path in list_py_file_paths(root)}
    DagFileProcessorManager.clear_orphaned_import_errors(
        SimpleNamespace(log=structlog.get_logger()), bundle_name=bundle_name, observed_filelocs=listed
    )

    assert listed == {LOADER.name, CHECKER.name}
    assert [dag.dag_id for dag in results[LOADER.name].serialized_dags] == [good_id]
    assert results[CHECKER.name].serialized_dags == []
    stored = _stored_errors(bundle_name)
    assert list(stored) == [CHECKER.name]
    assert_names_every_broken_spec(stored[CHECKER.name])
    with create_session() as session:
        model = session.scalar(select(DagModel).where(DagModel.dag_id == good_id))
        assert (model.relative_fileloc, model.is_stale, model.has_import_errors) == (
            LOADER.name,
            False,
            False,
        )


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
    assert bag.import_errors == {}


def test_airflow_cli_lists_the_broken_specs_as_an_import_error(bundle: Path, airflow_db: Path):
    airflow_home = airflow_db  # the CLI needs a migrated metadata database, even with --local
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(bundle)}

    done = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "list-import-errors", "--local", "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )

    listed = next((line for line in done.stdout.splitlines() if line.startswith("[")), None)
    assert listed is not None, f"no JSON list in the CLI's output:\n{done.stdout}\n{done.stderr[-3000:]}"
    errors = {item["filepath"]: item["error"] for item in json.loads(listed)}
    assert list(errors) == [str(bundle / CHECKER.name)]
    assert_names_every_broken_spec(errors[str(bundle / CHECKER.name)])
