"""A source or the operator built in Python refuses what a pipeline spec is refused: a header or parameter
named like a credential, a URL with a user name or password. Credentials belong in the Airflow connection
the source names (an ``http`` connection's login, password and extra headers); a DAG file's code is stored
and shown by the UI, and the operator's templated ``content`` is stored with the serialized DAG. The error
names the argument and never shows the value."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator
from altcraft.sources.files import FileSource
from altcraft.sources.python import PythonSource
from altcraft.sources.rest import RestSource

SECRET = "s3cretpass"
MAPPING = {"matching": "email", "key": {"email": "email"}}

REFUSED = {
    "rest header": (
        lambda: RestSource(
            "crm", "v1/contacts", key_column="id", headers={"Authorization": f"Bearer {SECRET}"}
        ),
        "RestSource headers: 'Authorization'",
    ),
    "rest header URL": (
        lambda: RestSource("crm", "v1/c", key_column="id", headers={"X-Origin": f"https://u:{SECRET}@crm"}),
        "RestSource headers: a URL with a user name or password (at X-Origin)",
    ),
    "rest param": (
        lambda: RestSource("crm", "v1/contacts", key_column="id", params={"api_key": SECRET}),
        "RestSource params: 'api_key'",
    ),
    "rest endpoint": (
        lambda: RestSource("crm", f"https://app:{SECRET}@crm.example.org/v1", key_column="id"),
        "RestSource endpoint: a URL with a user name or password",
    ),
    "rest endpoint query": (
        lambda: RestSource("crm", f"v1/contacts?list=vip&apikey={SECRET}", key_column="id"),
        "RestSource endpoint: 'apikey'",
    ),
    "file path": (
        lambda: FileSource(f"s3://AKIA:{SECRET}@bucket/in/", key_column="id", window_by="mtime"),
        "FileSource path: a URL with a user name or password",
    ),
    "python kwargs": (
        lambda: PythonSource("crm.read:contacts", key_column="id", kwargs={"password": SECRET}),
        "PythonSource kwargs: 'password'",
    ),
    "python kwargs nested": (
        lambda: PythonSource("crm.read:contacts", key_column="id", kwargs={"db": {"password": SECRET}}),
        "PythonSource kwargs: 'db.password'",
    ),
    "rest param nested": (
        lambda: RestSource("crm", "v1/contacts", key_column="id", params={"filter": [{"api_key": SECRET}]}),
        "RestSource params: 'filter[0].api_key'",
    ),
    "python kwargs URL": (
        lambda: PythonSource(
            "crm.read:contacts", key_column="id", kwargs={"dsn": f"mysql://a:{SECRET}@db/x"}
        ),
        "PythonSource kwargs: a URL with a user name or password (at dsn)",
    ),
    "operator content": (
        lambda: ImportAndLaunchScenarioOperator(
            task_id="t",
            scenario_id=12,
            mapping=MAPPING,
            contacts=[],
            key_column="id",
            content={"link": f"https://user:{SECRET}@files.example.org/promo"},
        ),
        "ImportAndLaunchScenarioOperator content: a URL with a user name or password (at link)",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_credential_given_in_python_is_refused_naming_the_argument_never_shown(case):
    build, words = REFUSED[case]
    with pytest.raises(ValueError) as refused:
        build()
    assert words in str(refused.value) and "connection" in str(refused.value), str(refused.value)
    assert SECRET not in str(refused.value)


def test_what_carries_no_credential_is_kept():
    rest = RestSource(
        "crm",
        "https://crm.example.org/v1/contacts?owner=sales@example.org",
        key_column="id",
        params={"page_token": "", "email": "a@example.org", "next": "https://x.org/p?a=b@c"},
        headers={"Accept": "application/json", "X-Tenant": "acme"},
    )
    python = PythonSource("crm.read:contacts", key_column="id", kwargs={"crm_conn_id": "crm", "limit": 5})
    operator = ImportAndLaunchScenarioOperator(
        task_id="t",
        scenario_id=12,
        mapping=MAPPING,
        source=rest,
        content={"promo": "https://example.org/p?ref=a@b", "signature": "The team"},
    )
    assert rest.params["page_token"] == "" and python.kwargs["crm_conn_id"] == "crm"
    assert operator.content["signature"] == "The team"


DAG_FILE = """
from datetime import datetime

from airflow.sdk import DAG

from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator
from altcraft.sources.rest import RestSource

with DAG("{dag_id}", schedule=None, start_date=datetime(2026, 1, 1)):
    ImportAndLaunchScenarioOperator(
        task_id="launch",
        scenario_id=12,
        mapping={{"matching": "email", "key": {{"email": "email"}}}},
        source=RestSource("crm", "v1/contacts", key_column="id", headers={headers}),
    )
"""


def test_a_hand_written_dag_with_a_credential_in_its_source_is_an_import_error_of_that_dag_only(
    tmp_path: Path,
):
    (tmp_path / "bad.py").write_text(DAG_FILE.format(dag_id="bad", headers={"X-Api-Key": SECRET}))
    (tmp_path / "good.py").write_text(DAG_FILE.format(dag_id="good", headers={"X-Tenant": "acme"}))

    bag = DagBag(dag_folder=tmp_path)

    assert set(bag.dags) == {"good"}
    message = bag.import_errors[str(tmp_path / "bad.py")]
    error = next(line for line in message.splitlines() if "RestSource headers:" in line)
    assert "'X-Api-Key' would carry a credential" in error and SECRET not in error, message
