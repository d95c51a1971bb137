"""Lists every broken Altcraft pipeline spec in ./pipelines as this file's Airflow import error (no DAG here).

The DAGs themselves come from altcraft_pipelines.py. Airflow keeps an import error of a DAG file for as
long as the file fails, so the error names each broken spec until it is fixed (see docs/pipelines.md).
"""

from pathlib import Path

from altcraft.pipelines import check_pipelines

check_pipelines(Path(__file__).with_name("pipelines"))
