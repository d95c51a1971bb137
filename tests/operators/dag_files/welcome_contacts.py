"""A one-task DAG around ImportAndLaunchScenarioOperator; its settings come from the JSON beside it.

``sql_source`` (``{"conn_id": ..., "sql": ...}``) reads the contacts with a `SqlQuerySource`, and
``file_source`` (`FileSource`'s arguments) with a `FileSource`, instead of ``contacts``. With
``contacts_from_task`` the ``contacts`` are an upstream task's output (an XComArg).
``execution_timeout_seconds`` is the task's ``execution_timeout``. With ``expand`` (argument -> list of
values) the task is mapped: ``.partial()`` of the other arguments, ``.expand(**expand)``.
"""

import json
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, DeltaDataIntervalTimetable, task

from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator
from altcraft.sources.files import FileSource
from altcraft.sources.sql import SqlQuerySource

config = json.loads(Path(__file__).with_suffix(".json").read_text())
timeout = config.get("execution_timeout_seconds")

with DAG(
    dag_id=config["dag_id"],
    schedule=DeltaDataIntervalTimetable(timedelta(days=1)),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
) as dag:

    @task
    def read_contacts() -> list[dict]:
        return config["contacts"]

    arguments = dict(
        task_id="import_and_launch",
        **(
            {"source": SqlQuerySource(key_column="id", **config["sql_source"])}
            if config.get("sql_source")
            else {"source": FileSource(key_column="id", **config["file_source"])}
            if config.get("file_source")
            else {
                "contacts": read_contacts() if config.get("contacts_from_task") else config["contacts"],
                "key_column": config.get("key_column", "id"),
            }
        ),
        **config["operator"],
        **({"execution_timeout": timedelta(seconds=timeout)} if timeout else {}),
    )
    if config.get("expand"):
        ImportAndLaunchScenarioOperator.partial(**arguments).expand(**config["expand"])
    else:
        ImportAndLaunchScenarioOperator(**arguments)
