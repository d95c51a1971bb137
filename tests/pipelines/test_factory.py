"""The DAG factory: structure of the example DAGs, the plan step, notifications, serialization, parse time."""

from __future__ import annotations

import copy
import itertools
import json
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk import CronDataIntervalTimetable
from airflow.sdk.definitions.mappedoperator import MappedOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow.serialization.serialized_objects import DagSerialization

from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator
from altcraft.pipelines import (
    FailureNotification,
    PipelineSpec,
    PlanWindowsOperator,
    build_dag,
    factory,
    load_pipelines,
    plan_windows,
    read_spec,
)
from altcraft.pipelines.factory import LAUNCH_TASK_ID, PLAN_TASK_ID
from altcraft.pipelines.window import Schedule
from altcraft.sources import MemoryStateStore
from altcraft.ui.marker import PREFIX
from tests.pipelines import notify
from tests.pipelines.conftest import DAGS, EXAMPLES
from tests.pipelines.test_spec import MINIMAL

START = datetime(2025, 3, 1, tzinfo=UTC)
END = datetime(2025, 3, 2, tzinfo=UTC)
UTC_ZONE = "UTC"
_lazy_modules = itertools.count()


@pytest.fixture(scope="module")
def examples() -> dict[str, tuple[PipelineSpec, object]]:
    loaded = load_pipelines(DAGS / "pipelines")
    assert loaded.errors == []
    return {path.stem: (read_spec(path), loaded.dags[path.stem]) for path in EXAMPLES}


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES])
def test_each_example_is_plan_then_mapped_import_and_launch(name, examples):
    spec, dag = examples[name]

    assert set(dag.task_dict) == {PLAN_TASK_ID, LAUNCH_TASK_ID}
    plan, launch = dag.task_dict[PLAN_TASK_ID], dag.task_dict[LAUNCH_TASK_ID]
    assert isinstance(plan, PlanWindowsOperator)
    assert isinstance(launch, MappedOperator) and launch.operator_class is ImportAndLaunchScenarioOperator
    assert launch.upstream_task_ids == {PLAN_TASK_ID} and not plan.upstream_task_ids
    assert plan.partitions == spec.partitions and plan.lookback == spec.lookback
    kwargs = launch.partial_kwargs
    assert kwargs["scenario_id"] == 12 and kwargs["db_id"] == 1
    assert kwargs["source"].spec == spec.source and kwargs["mapping"] == spec.mapping
    assert kwargs["delivery"] == spec.delivery.mode and kwargs["batch_size"] == spec.delivery.batch_size
    assert launch.pool == spec.pool and launch.pool_slots == spec.pool_slots
    assert (launch.retries, launch.retry_delay, launch.owner) == (spec.retries, spec.retry_delay, spec.owner)
    # a triggered pipeline keeps its state in its event asset (an inlet), not in a source asset
    state = [f"altcraft-pipeline://{name}/source"] if spec.source.keeps_state and not spec.trigger else []
    assert [outlet.uri for outlet in launch.outlets] == ["altcraft://altcraft_default/scenarios/12", *state]
    assert (kwargs.get("state_asset") is not None) == bool(state or spec.trigger)


@pytest.mark.parametrize(
    ("field", "given", "attribute", "expected"),
    [
        ("reconcile_grace_seconds", None, "reconcile_grace", None),  # None: the delivery's DEFAULT_GRACE
        ("reconcile_grace_seconds", 0, "reconcile_grace", timedelta(0)),
        ("reconcile_grace_seconds", 90, "reconcile_grace", timedelta(seconds=90)),
        ("reconcile_max_lookups", None, "reconcile_max_lookups", None),  # None: DEFAULT_MAX_LOOKUPS
        ("reconcile_max_lookups", 3, "reconcile_max_lookups", 3),
    ],
)
def test_the_specs_reconciliation_settings_reach_the_operator(field, given, attribute, expected):
    data = read_spec(EXAMPLES[0]).model_dump(by_alias=True, exclude_none=True)
    if given is not None:
        data["scenario"][field] = given
    launch = build_dag(PipelineSpec.model_validate(data)).task_dict[LAUNCH_TASK_ID]
    operator = ImportAndLaunchScenarioOperator(task_id="t", **launch.partial_kwargs)
    assert getattr(operator, attribute) == expected


def test_stateful_sources_get_the_store_through_the_spec_source(examples):
    files, rest = (
        examples[name][1].task_dict[LAUNCH_TASK_ID] for name in ("welcome_csv_drop", "welcome_rest_crm")
    )
    source, store = files.partial_kwargs["source"], MemoryStateStore()

    assert source.state is None and getattr(rest.partial_kwargs["source"], "state", False) is False
    source.state = store
    assert source.source.state is store
    assert files.partial_kwargs["state_asset"] in files.outlets


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES])
def test_each_example_has_an_interval_timetable_in_its_timezone(name, examples):
    spec, dag = examples[name]

    # intervals that a cron expression can say (every example's) are cron: manual runs stay aligned;
    # a triggered example keeps its schedule beside its event asset
    timetable = dag.timetable.timetable if spec.trigger else dag.timetable
    assert isinstance(timetable, CronDataIntervalTimetable)
    assert str(timetable.timezone) == spec.timezone
    if spec.schedule_interval is None:
        assert timetable.expression in (spec.schedule, "0 * * * *", "0 0 * * *")  # presets are resolved
    assert dag.timezone.name == spec.timezone
    assert dag.start_date == datetime.combine(spec.start_date.date(), spec.start_date.time(), dag.timezone)
    assert dag.catchup == spec.catchup and dag.max_active_runs == spec.max_active_runs


@pytest.mark.parametrize("name", [p.stem for p in EXAMPLES])
def test_each_example_is_tagged_and_documented_from_its_spec(name, examples):
    spec, dag = examples[name]

    marker = {tag for tag in dag.tags if tag.startswith(PREFIX)}  # what the Altcraft page reads
    assert dag.tags == {"altcraft", *spec.tags, *marker} and len(marker) <= 1
    assert bool(marker) == spec.source.build().tracks_progress, "none of the examples sets a grace"
    assert dag.description == spec.description
    assert dag.doc_md.startswith(f"# {spec.id}\n")
    assert f"`{name}.yaml`" in dag.doc_md
    assert f"| Source | {spec.source.build().describe()} |" in dag.doc_md.replace("\\|", "|")
    assert f"| Scenario | 12 on database 1 (connection `{spec.altcraft_conn_id}`) |" in dag.doc_md
    assert f"`{spec.schedule}` in {spec.timezone}" in dag.doc_md
    for target in spec.mapping.fields:
        assert re.search(rf"^\| {re.escape(target)} \| ", dag.doc_md, re.M), target


def test_doc_md_keeps_spec_text_inert(tmp_path):
    spec = read_spec(EXAMPLES[0]).model_copy(update={"description": "a | b <img src=x onerror=alert(1)> `x`"})

    doc = build_dag(spec).doc_md

    assert "a \\| b &lt;img src=x onerror=alert(1)&gt; 'x'" in doc
    assert "<img" not in doc


def test_each_example_serializes_the_same_way_every_parse():
    first, second = load_pipelines(DAGS / "pipelines"), load_pipelines(DAGS / "pipelines")

    for dag_id, dag in first.dags.items():
        data = DagSerialization.to_dict(dag)
        assert json.dumps(data, sort_keys=True) == json.dumps(
            DagSerialization.to_dict(second.dags[dag_id]), sort_keys=True
        ), f"{dag_id}: the serialized DAG changes between parses (a new DAG version every parse)"
        restored = DagSerialization.from_dict(data)
        assert restored.task_dict[LAUNCH_TASK_ID].is_mapped
        assert DagSerialization.serialize_dag(dag)["dag_id"] == dag_id


RUN_TIME_MODULES = (
    "altcraft.ledger",
    "altcraft.api.models",
    "altcraft.api.protocol",
    "altcraft.hooks",
    "phonenumbers",
    "requests",
    "urllib3",
)


def test_a_parse_imports_no_module_only_the_tasks_use():
    """Every parse of the DAG folder imports what it uses in a fresh process: the ledger (SQL tables and
    stores), the API client (answer models, hooks), the HTTP client (``requests``, 50 ms of every parse) and
    the phone library (a ``default_region`` is checked without it) are the tasks' modules, not a spec's or a
    DAG's."""
    code = (
        "import sys; from altcraft.pipelines import load_pipelines; "
        f"assert not load_pipelines({str(DAGS / 'pipelines')!r}).errors; print(*sorted(sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout

    assert [name for name in loaded.split() if name.startswith(RUN_TIME_MODULES)] == []


RUN_PARAMS = {
    # name: (default, type, values accepted, values refused)
    "dry_run": (False, "boolean", [True], ["true", 1, None]),
    "relaunch": (False, "boolean", [True], ["yes", 0]),
    "resend_uncertain": (False, "boolean", [True], [None]),
    "window_start": (None, ["null", "string"], ["2025-03-01T00:00:00+00:00"], [1, [], True]),
    "window_end": (None, ["null", "string"], ["2025-03-02"], [{}, 2.5]),
    "contact_hashes": ([], "array", [["a" * 64], ["0f" * 32]], [["A" * 64], ["a" * 63], [1], "a"]),
    "reconcile": (False, "boolean", [False], ["false"]),
}


def test_run_params_keep_their_defaults_forms_and_verdicts_under_the_declared_draft(examples):
    """The params' ``$schema`` only makes Airflow's per-parse checks cheaper: every value gets the same
    verdict as under Airflow's default draft (2020-12), and the UI form (type, items) is unchanged."""
    from airflow.sdk.definitions.param import ParamValidationError
    from jsonschema import Draft202012Validator, FormatChecker

    from altcraft.pipelines.factory import PARAM_SCHEMA_DRAFT

    for spec, dag in examples.values():
        assert list(dag.params) == list(RUN_PARAMS)
        for name, (default, kind, good, bad) in RUN_PARAMS.items():
            param = copy.copy(dag.params.get_param(name))  # resolve(value) keeps the value
            assert param.schema["$schema"] == PARAM_SCHEMA_DRAFT
            assert param.schema["type"] == kind and param.description
            assert param.resolve() == (spec.dry_run if name == "dry_run" else default)
            default_draft = Draft202012Validator(
                {k: v for k, v in param.schema.items() if k != "$schema"}, format_checker=FormatChecker()
            )
            for value in good:
                assert param.resolve(value) == value and default_draft.is_valid(value), (name, value)
            for value in bad:
                with pytest.raises(ParamValidationError):
                    param.resolve(value)
                assert not default_draft.is_valid(value), (name, value)


def test_plan_cuts_the_window_minus_lookback_into_contiguous_partitions():
    windows = plan_windows(START, END, partitions=4, lookback=timedelta(hours=2))

    bounds = [tuple(map(datetime.fromisoformat, (w["window_start"], w["window_end"]))) for w in windows]
    assert bounds[0][0] == START - timedelta(hours=2) and bounds[-1][1] == END
    assert all(left[1] == right[0] for left, right in itertools.pairwise(bounds))
    assert all(end - start == timedelta(hours=6, minutes=30) for start, end in bounds)
    assert set(windows[0]) == {"window_start", "window_end"}


def test_a_lookback_reaching_before_year_1_starts_the_window_at_its_first_instant():
    """A window from year 1 (a manual run reading everything) minus a lookback raised OverflowError."""
    start = datetime(1, 1, 1, 1, tzinfo=UTC)
    (window,) = plan_windows(start, END, partitions=1, lookback=timedelta(hours=2))
    assert window["window_start"] == "0001-01-01T00:00:00+00:00"


def test_plan_with_one_partition_is_the_data_interval():
    assert plan_windows(START, END, partitions=1) == [
        {"window_start": "2025-03-01T00:00:00+00:00", "window_end": "2025-03-02T00:00:00+00:00"}
    ]


def test_plan_of_an_empty_interval_has_no_partition():
    assert plan_windows(START, START, partitions=3) == []


def plan_operator(schedule: str = "0 0 * * *") -> PlanWindowsOperator:
    return PlanWindowsOperator(
        task_id="plan",
        schedule=Schedule(UTC_ZONE, cron=schedule),
        partitions=2,
        lookback=timedelta(minutes=30),
    )


def test_plan_task_reads_the_runs_data_interval():
    context = {"data_interval_start": START, "data_interval_end": END, "params": {}, "dag_run": None}
    context["dag_run"] = SimpleNamespace(run_after=END + timedelta(hours=5))

    windows = plan_operator().execute(context)

    assert windows == plan_windows(START, END, partitions=2, lookback=timedelta(minutes=30))


def test_plan_task_of_a_run_without_logical_date_reads_the_last_complete_interval():
    # Airflow 3's `airflow dags trigger` / REST `logical_date: null`: no data_interval_* in the context.
    context = {"params": {}, "dag_run": SimpleNamespace(run_after=END + timedelta(hours=5, minutes=3))}

    windows = plan_operator().execute(context)

    assert windows == plan_windows(START, END, partitions=2, lookback=timedelta(minutes=30))


def test_plan_task_with_half_a_window_fails_at_once_saying_how_to_trigger():
    context = {"params": {"window_start": START.isoformat()}, "dag_run": SimpleNamespace(run_after=END)}

    with pytest.raises(AirflowFailException, match=r"window_end is missing.*Trigger the pipeline without"):
        plan_operator().execute(context)


@pytest.mark.parametrize(
    ("on_failure", "expected"),
    [
        ({"callback": "{module}:record", "kwargs": {"team": "crm"}}, ("callback", {"team": "crm"})),
        (
            {"notifier": "{module}.RecordingNotifier", "kwargs": {"channel": "#alerts"}},
            ("notifier", {"channel": "#alerts"}),
        ),
    ],
)
def test_failure_notification_imports_its_target_only_when_called(
    on_failure, expected, tmp_path, monkeypatch
):
    module = f"lazy_notify_{next(_lazy_modules)}"  # a module nothing has imported yet
    (tmp_path / f"{module}.py").write_text(Path(notify.__file__).read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    target = {k: v.format(module=module) if k != "kwargs" else v for k, v in on_failure.items()}
    data = {**read_spec(EXAMPLES[0]).model_dump(by_alias=True), "on_failure": target}
    callback = build_dag(PipelineSpec.model_validate(data)).on_failure_callback

    assert isinstance(callback, FailureNotification)
    assert module not in sys.modules, "building the DAG imported the notification target"
    callback({"dag_run": "run-1"})

    calls = sys.modules.pop(module).CALLS
    assert calls == [(expected[0], "run-1", expected[1])]


def test_two_specs_with_one_id_are_both_errors_whatever_their_order(tmp_path):
    """The first by name used to load: a copy named ``a_welcome.yaml`` took over a running pipeline."""
    shutil.copy(EXAMPLES[0], tmp_path / "a.yaml")
    shutil.copy(EXAMPLES[0], tmp_path / "b.yaml")

    loaded = load_pipelines(tmp_path)

    line = EXAMPLES[0].read_text().splitlines().index(f"id: {EXAMPLES[0].stem}") + 1
    taken = f"  line {line}, id: '{EXAMPLES[0].stem}' is also the id of"
    rest = "; a DAG id belongs to one spec, so none of them is loaded until the ids differ"
    assert loaded.dags == {}
    assert [(e.path.name, e.message) for e in loaded.errors] == [
        ("a.yaml", f"{taken} b.yaml{rest}"),
        ("b.yaml", f"{taken} a.yaml{rest}"),
    ]


def test_spec_files_are_found_whatever_the_letter_case_of_their_suffix(tmp_path):
    """``Welcome.YAML`` (a file saved on Windows) is a spec like ``welcome.yaml``: skipped, it would be a
    pipeline its author believes is running, with no error to say otherwise."""
    for name, dag_id in (("upper.YAML", "upper"), ("mixed.Yml", "mixed"), ("lower.yml", "lower")):
        (tmp_path / name).write_text(json.dumps({**MINIMAL, "id": dag_id}))  # JSON is YAML
    (tmp_path / ".hidden.yaml").write_text("{")  # an editor's file: not a spec
    (tmp_path / "notes.txt").write_text("{")

    loaded = load_pipelines(tmp_path)

    assert sorted(loaded.dags) == ["lower", "mixed", "upper"] and not loaded.errors


def test_two_specs_matching_one_scenario_on_different_custom_fields_load_the_first_only(tmp_path):
    def custom(dag_id: str, field_name: str, **changes: object) -> str:
        mapping = {"matching": "custom", "field_name": field_name, "key": {"field_value": "id"}}
        return json.dumps({**MINIMAL, "id": dag_id, "mapping": mapping, **changes}, indent=1)  # JSON is YAML

    (tmp_path / "a.yaml").write_text(custom("crm", "CRM_ID"))
    (tmp_path / "b.yaml").write_text(custom("same_field", "CRM_ID"))  # one field: one contact, rightly
    (tmp_path / "c.yaml").write_text(custom("loyalty", "LOYALTY_ID"))
    (tmp_path / "d.yaml").write_text(custom("other_scenario", "LOYALTY_ID", scenario={"id": 13}))
    (tmp_path / "e.yaml").write_text(custom("other_ledger", "LOYALTY_ID", ledger_conn_id="other_db"))

    loaded = load_pipelines(tmp_path)

    assert list(loaded.dags) == ["crm", "same_field", "other_scenario", "other_ledger"]
    [error] = loaded.errors
    line = (tmp_path / "c.yaml").read_text().splitlines().index('  "field_name": "LOYALTY_ID",') + 1
    assert (error.path.name, error.line) == ("c.yaml", line)
    assert error.message.startswith(
        f"  line {line}, mapping.field_name: 'LOYALTY_ID', but a.yaml launches scenario 12 matching custom "
        "on 'CRM_ID'"
    )


def test_a_custom_field_clash_in_a_spec_whose_lines_are_unknown_names_no_line(tmp_path):
    """A .json spec that is no YAML (the escaped emoji ``json.dumps`` writes) has no known lines: the clash
    said "line None, mapping.field_name"."""
    mapping = {"matching": "custom", "field_name": "CRM_ID", "key": {"field_value": "id"}}
    (tmp_path / "a.json").write_text(json.dumps({**MINIMAL, "id": "crm", "mapping": mapping}))
    other = {**MINIMAL, "id": "loyalty", "description": "Hi \N{WAVING HAND SIGN}"}
    (tmp_path / "b.json").write_text(
        json.dumps({**other, "mapping": {**mapping, "field_name": "LOYALTY_ID"}})
    )

    [error] = load_pipelines(tmp_path).errors

    assert error.line is None
    assert error.message.startswith("  mapping.field_name: 'LOYALTY_ID', but a.json launches scenario 12"), (
        error.message
    )


def test_a_spec_that_validates_but_cannot_be_built_is_reported_alone(tmp_path, monkeypatch):
    shutil.copy(EXAMPLES[0], tmp_path / "good.yaml")
    (tmp_path / "late.yaml").write_text(json.dumps({**MINIMAL, "id": "too_late"}))  # JSON is YAML
    build = factory.build_dag

    def build_or_overflow(spec: PipelineSpec, **kwargs: object) -> object:
        if spec.id == "too_late":
            raise OverflowError("date value out of range")
        return build(spec, **kwargs)

    monkeypatch.setattr(factory, "build_dag", build_or_overflow)
    loaded = load_pipelines(tmp_path)

    assert list(loaded.dags) == [EXAMPLES[0].stem]
    assert [(e.path.name, e.message) for e in loaded.errors] == [
        ("late.yaml", "  cannot build the DAG: OverflowError: date value out of range")
    ]


def test_a_missing_folder_loads_nothing(tmp_path):
    loaded = load_pipelines(tmp_path / "absent")

    assert (loaded.dags, loaded.errors) == ({}, [])


def test_parse_time_of_the_examples_and_of_100_specs(tmp_path, capsys):
    """Measured, not asserted: the benchmark issue wants 100 specs in at most 1 s."""
    started = time.perf_counter()
    load_pipelines(DAGS / "pipelines")
    examples_s = time.perf_counter() - started
    for index in range(100):
        text = EXAMPLES[index % len(EXAMPLES)].read_text()
        text = re.sub(r"^id: .*$", f"id: gen_{index:03}", text, flags=re.M)
        (tmp_path / f"gen_{index:03}.yaml").write_text(text)
    started = time.perf_counter()
    loaded = load_pipelines(tmp_path)
    hundred_s = time.perf_counter() - started

    assert len(loaded.dags) == 100 and not loaded.errors
    with capsys.disabled():
        print(f"\n[parse time] {len(EXAMPLES)} examples: {examples_s:.3f} s; 100 specs: {hundred_s:.3f} s")
