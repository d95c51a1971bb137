"""Templated pipelines: a YAML spec per pipeline becomes a scheduled, backfillable Airflow DAG.

See docs/pipelines.md for the spec reference and dags/altcraft_pipelines.py for the DAG-folder loader.
"""

from altcraft.pipelines.factory import (
    FailureNotification,
    Pipelines,
    PlanWindowsOperator,
    build_dag,
    load_pipelines,
    plan_windows,
    report_import_errors,
    timetable,
)
from altcraft.pipelines.spec import PipelineSpec, SpecError, read_spec

__all__ = [
    "FailureNotification",
    "PipelineSpec",
    "Pipelines",
    "PlanWindowsOperator",
    "SpecError",
    "build_dag",
    "load_pipelines",
    "plan_windows",
    "read_spec",
    "report_import_errors",
    "timetable",
]
