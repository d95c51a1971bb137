"""A pipeline's DAG id taken by a DAG of another file: refused, and named as the checker's import error.

Airflow keeps one DAG per id. Before, a DagBag of the folder reported the second file's DAG as an import
error, while the DAG processor (each file parsed alone) stored whichever file it parsed last, without a
word: the id's DAG flipped between the pipeline and the other DAG with the parse order.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

from altcraft.pipelines import load_pipelines
from altcraft.pipelines.clashes import declared_dag_ids
from altcraft.pipelines.dag_folder import main
from tests.pipelines.conftest import CHECKER, EXAMPLES, LOADER, make_bundle
from tests.pipelines.test_import_errors import _parse_and_store, _stored_errors

HAND_WRITTEN = """\
from airflow.sdk import DAG

with DAG(dag_id="{dag_id}", schedule=None):
    pass
"""


def spec_with_id(folder: Path, dag_id: str, name: str = "welcome.yaml") -> Path:
    """The first example spec under another id, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    example = EXAMPLES[0]
    path = folder / name
    path.write_text(example.read_text().replace(f"id: {example.stem}", f"id: {dag_id}"))
    return path


def test_declared_dag_ids_reads_every_literal_way_of_naming_a_dag():
    source = """
import airflow.sdk
from airflow.sdk import DAG, dag

DAG("positional")
airflow.sdk.DAG(dag_id="keyword", schedule=None)
DAG(dag_id=f"built_{1}")  # built at run time: not seen

@dag
def bare(): ...

@dag()
def called(): ...

@airflow.sdk.dag(dag_id="decorated", schedule=None)
def not_this_name(): ...

@dag("")
def empty_means_the_name(): ...

def undecorated(): ...
"""

    assert declared_dag_ids(source) == {
        "positional",
        "keyword",
        "bare",
        "called",
        "decorated",
        "empty_means_the_name",
    }
    assert declared_dag_ids("def broken(:\n") == set()  # Airflow reports that file's own import error


def test_a_spec_sharing_its_id_with_a_hand_written_dag_is_refused_whatever_the_parse_order(
    tmp_path, airflow_db
):
    from airflow.models.dag import DagModel
    from airflow.models.dagbundle import DagBundleModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag_id = f"clash_{uuid.uuid4().hex[:8]}"
    root = make_bundle(tmp_path / "bundle", [spec_with_id(tmp_path, dag_id)])
    (root / "hand_written.py").write_text(HAND_WRITTEN.format(dag_id=dag_id))
    bundle_name = f"clash-test-{uuid.uuid4().hex[:8]}"
    with create_session() as session:
        session.merge(DagBundleModel(name=bundle_name))

    owners, stored = [], []
    for order in ([LOADER.name, "hand_written.py"], ["hand_written.py", LOADER.name]):
        results = _parse_and_store(root, bundle_name, [*order, CHECKER.name])
        with create_session() as session:
            owners.append(session.scalar(select(DagModel.relative_fileloc).where(DagModel.dag_id == dag_id)))
        stored.append(_stored_errors(bundle_name))

    assert owners == ["hand_written.py", "hand_written.py"]
    assert results[LOADER.name].serialized_dags == []
    assert stored[0] == stored[1]
    stored = stored[1]
    assert list(stored) == [CHECKER.name]
    assert "Pipeline spec welcome.yaml is invalid:" in stored[CHECKER.name]
    assert f"id: '{dag_id}' is also the id of a DAG in hand_written.py" in stored[CHECKER.name]


def test_two_pipelines_folders_of_one_dag_folder_sharing_an_id_load_neither(tmp_path, monkeypatch):
    dag_id = f"clash_{uuid.uuid4().hex[:8]}"
    root = tmp_path / "dags"
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(root))  # the DAG folder (bundle) of both
    for team in ("team_a", "team_b"):
        make_bundle(root / team, [spec_with_id(tmp_path / team, dag_id, f"{team}.yaml")])

    bag = DagBag(dag_folder=root)

    assert dag_id not in bag.dags
    assert sorted(bag.import_errors) == [str(root / team / CHECKER.name) for team in ("team_a", "team_b")]
    for team, other in (("team_a", "team_b"), ("team_b", "team_a")):
        error = bag.import_errors[str(root / team / CHECKER.name)]
        assert f"Pipeline spec {team}.yaml is invalid:" in error
        other_spec = root / other / "pipelines" / f"{other}.yaml"
        assert f"'{dag_id}' is also the id of a DAG in {other_spec}" in error, error


def test_a_spec_sharing_its_id_with_an_airflow_example_dag_is_refused_when_examples_load(
    tmp_path, monkeypatch
):
    folder = make_bundle(tmp_path / "bundle", [spec_with_id(tmp_path, "example_simplest_dag")]) / "pipelines"

    assert load_pipelines(folder).errors == []  # examples off (the tests' setting): nothing to clash with
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "True")
    loaded = load_pipelines(folder)

    assert loaded.dags == {}
    assert "'example_simplest_dag' is also the id of a DAG in " in str(loaded.errors[0])
    assert "/airflow/example_dags/example_simplest_dag.py" in str(loaded.errors[0])


def test_the_check_command_names_the_clash_and_passes_a_folder_without_one(tmp_path, capsys):
    dag_id = f"clash_{uuid.uuid4().hex[:8]}"
    root = make_bundle(tmp_path / "bundle", [spec_with_id(tmp_path, dag_id)])

    assert main(["check", str(root)]) == 0
    assert "1 pipeline loads; no spec is broken" in capsys.readouterr().out

    (root / "hand_written.py").write_text(HAND_WRITTEN.format(dag_id=dag_id))
    assert main(["check", str(root)]) == 1
    err = capsys.readouterr().err
    assert "1 pipeline spec is broken" in err
    assert f"'{dag_id}' is also the id of a DAG in hand_written.py" in err


def test_the_check_command_of_a_folder_without_pipelines_says_so(tmp_path, capsys):
    assert main(["check", str(tmp_path)]) == 1
    assert f"no pipelines folder in {tmp_path}" in capsys.readouterr().err


def test_pipelines_load_when_the_search_for_other_dags_fails(tmp_path, monkeypatch, caplog):
    """The search is a check beside the pipelines: a setting it cannot read costs the check, logged, and
    never the pipelines themselves."""
    folder = make_bundle(tmp_path / "bundle", [spec_with_id(tmp_path, "unclashed")]) / "pipelines"
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", "[not json")

    loaded = load_pipelines(folder)

    assert list(loaded.dags) == ["unclashed"] and loaded.errors == []
    assert "not checked against other DAG files: AirflowConfigException" in caplog.text
