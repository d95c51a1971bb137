"""Templated pipelines: a YAML spec per pipeline becomes a scheduled, backfillable Airflow DAG.

See docs/pipelines.md for the spec reference and dags/altcraft_pipelines.py for the DAG-folder loader and
dags/altcraft_pipelines_check.py for the broken-spec checker.
"""

from altcraft.pipelines.factory import (
    BrokenPipelineSpecs,
    FailureNotification,
    Pipelines,
    PlanWindowsOperator,
    build_dag,
    check_pipelines,
    load_pipelines,
    plan_windows,
    timetable,
)
from altcraft.pipelines.spec import PipelineSpec, SpecError, read_spec

__all__ = [
    "BrokenPipelineSpecs",
    "FailureNotification",
    "PipelineSpec",
    "Pipelines",
    "PlanWindowsOperator",
    "SpecError",
    "build_dag",
    "check_pipelines",
    "load_pipelines",
    "plan_windows",
    "read_spec",
    "timetable",
]
