"""A source given to a mapped task in a hand-written DAG serializes the same way at every parse."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from airflow.sdk import DAG
from airflow.serialization.serialized_objects import DagSerialization

from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator
from altcraft.sources import FileSource, PythonSource, RestSource, SqlQuerySource, SqlTableSource
from altcraft.sources.python import IterableSource

SOURCES = {
    "rest": lambda: RestSource("crm", "v1/contacts", key_column="id", record_path="items"),
    "sql table": lambda: SqlTableSource("crm", "contacts", key_column="id", created_at_column="created_at"),
    "sql query": lambda: SqlQuerySource("crm", "SELECT id, email FROM contacts", key_column="id"),
    "file": lambda: FileSource("/data/contacts.csv", key_column="id", timestamp_column="created_at"),
    "python": lambda: PythonSource("json:loads", key_column="id"),
    "records in code": lambda: IterableSource([{"id": 1, "email": "anna@example.org"}], key_column="id"),
}


def _serialized(source) -> str:
    with DAG("hand_written", start_date=datetime(2025, 1, 1, tzinfo=UTC), schedule=None) as dag:
        ImportAndLaunchScenarioOperator.partial(
            task_id="welcome",
            scenario_id=12,
            mapping={"matching": "email", "key": {"email": "email"}},
            source=source,
        ).expand(window_start=["2025-03-01T00:00:00+00:00", "2025-03-02T00:00:00+00:00"])
    return json.dumps(DagSerialization.to_dict(dag), sort_keys=True, default=str)


@pytest.mark.parametrize("kind", SOURCES)
def test_a_mapped_tasks_source_serializes_the_same_at_every_parse(kind):
    first, second = _serialized(SOURCES[kind]()), _serialized(SOURCES[kind]())

    assert first == second, "a new DAG version at every parse"
    assert " object at 0x" not in first
    assert "anna@example.org" not in first  # records given in code are counted, never shown
