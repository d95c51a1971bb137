"""A one-task DAG around ImportAndLaunchScenarioOperator for the honest-outcomes tests.

Its settings come from the JSON beside it; ``on_failure`` names a DAG failure callback (``module:function``);
``source`` (``{"callable": "module:function", "kwargs": {...}}``) reads the contacts from a `PythonSource`
instead of ``contacts``.
"""

import importlib
import json
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, DeltaDataIntervalTimetable

from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator
from altcraft.sources.python import PythonSource

config = json.loads(Path(__file__).with_suffix(".json").read_text())


def _callback(path):
    if not path:
        return None
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


with DAG(
    dag_id=config["dag_id"],
    schedule=DeltaDataIntervalTimetable(timedelta(days=1)),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    on_failure_callback=_callback(config.get("on_failure")),
) as dag:
    ImportAndLaunchScenarioOperator(
        task_id="import_and_launch",
        **(
            {"source": PythonSource(key_column="id", **config["source"])}
            if config.get("source")
            else {"contacts": config["contacts"], "key_column": "id"}
        ),
        **config["operator"],
    )
