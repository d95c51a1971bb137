"""Airflow DAG-folder entry point of the Altcraft templated pipelines: one DAG per YAML spec in ./pipelines.

Drop a spec into pipelines/ (see docs/pipelines.md); no Python is needed. A broken spec is skipped here
and listed as the import error of altcraft_pipelines_check.py; every other pipeline keeps loading.
"""

from pathlib import Path

from altcraft.pipelines import load_pipelines

load_pipelines(Path(__file__).with_name("pipelines")).register(globals())
