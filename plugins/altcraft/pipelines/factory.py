"""YAML pipeline specs → Airflow DAGs: ``plan`` → ``import_and_launch`` mapped over the partitions.

Parsing is cheap and offline: no connection, database or network is touched and nothing from a spec is
imported; sources are read only when the mapped task runs. See docs/pipelines.md.

Broken specs: the loader DAG file registers every good DAG (`Pipelines.register`); the checker DAG file
raises `BrokenPipelineSpecs` naming every broken spec (`check_pipelines`), which Airflow lists as the
checker's import error. One broken spec never hides the others.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Asset, BaseOperator, Param, ParamsDict

from altcraft.pipelines.spec import (
    NotificationSpec,
    PipelineSpec,
    SpecError,
    field_line,
    printable,
    read_spec,
)
from altcraft.pipelines.window import Schedule, WindowError, run_window

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.bases.timetable import BaseTimetable

    from altcraft.sources.base import Partition, Record, Source, StateStore, Window
    from altcraft.sources.spec import SourceSpec

log = logging.getLogger(__name__)

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
#: Airflow's ignore file: not honoured in a pipelines folder, so reported where found (see `find_specs`).
IGNORE_FILE = ".airflowignore"
PLAN_TASK_ID = "plan"
LAUNCH_TASK_ID = "import_and_launch"
ALWAYS_TAG = "altcraft"
#: The DAG files of a pipelines folder (see `altcraft.pipelines.dag_folder`).
LOADER_FILE = "altcraft_pipelines.py"
CHECKER_FILE = "altcraft_pipelines_check.py"


# ------------------------------------------------------------------------------------------- plan


def plan_windows(
    start: datetime, end: datetime, *, partitions: int, lookback: timedelta | None = None
) -> list[dict[str, str]]:
    """The window ``[start - lookback, end)`` cut into ``partitions`` contiguous sub-windows; a lookback
    reaching before year 1 (UTC) starts at its first instant, before which no time is.

    Returns one ``{"window_start", "window_end"}`` (ISO 8601, UTC) per partition: references to data,
    never data. An empty interval gives no partition (the mapped task is then skipped).
    """
    from altcraft.sources.base import Window

    first = datetime.min.replace(tzinfo=UTC)
    window = Window(start - min(lookback, start - first) if lookback else start, end)
    if window.start == window.end:
        return []
    parts = (window.part(index, partitions) for index in range(partitions))
    return [{"window_start": p.start.isoformat(), "window_end": p.end.isoformat()} for p in parts]


def event_window(context: Context, event: Asset) -> tuple[datetime, datetime]:
    """``[watermark, now)`` of a triggered pipeline's run without a data interval (asset-triggered, or
    manual without a window): the watermark from the event asset's state store (see
    `altcraft.pipelines.events`); with no watermark yet, from the DAG's start date.
    """
    from datetime import UTC

    from altcraft.pipelines.events import WATERMARK_KEY, event_window_start

    now = datetime.now(UTC)
    fallback = context["dag"].start_date or now
    return min(event_window_start(context["asset_state_store"][event].get(WATERMARK_KEY), fallback), now), now


def event_window_name(watermark: datetime) -> str:
    """The ledger's name of an event run's window: the watermark it starts from, not its end (``now``).

    Event runs from one watermark (overlapping runs, the run after a failed one) read the same rows up to
    different ends; named alike, they share their launches, so policies ``every_run`` and ``cooldown`` do
    not launch a contact twice for them. Triggered pipelines have one partition, so the name is whole.
    """
    from datetime import UTC

    return f"events/{watermark.astimezone(UTC).isoformat()}"


class PlanWindowsOperator(BaseOperator):
    """Turns the run's window into the partition descriptors ``import_and_launch`` maps over.

    The window is the one given when triggering, else the run's data interval, else for a triggered
    pipeline ``[watermark, now)`` (`event_window`, named in the ledger by `event_window_name`), else (a run
    triggered without a logical date) the last
    complete interval of ``schedule``: see `altcraft.pipelines.window`. A run whose window cannot be known
    fails at once, without retries, saying how to trigger it.
    """

    ui_color = "#e8f0ff"

    def __init__(
        self,
        *,
        schedule: Schedule,
        partitions: int,
        lookback: timedelta | None = None,
        event: Asset | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(inlets=[event] if event else [], **kwargs)
        self.schedule = schedule
        self.partitions = partitions
        self.lookback = lookback
        self.event = event

    def execute(self, context: Context) -> list[dict[str, str]]:
        from airflow.sdk.exceptions import AirflowFailException

        params = dict(context["params"])
        data_interval = (context.get("data_interval_start"), context.get("data_interval_end"))
        given = any(params.get(name) for name in ("window_start", "window_end"))
        name = None
        if self.event is not None and data_interval[0] is None and not given:
            start, end = event_window(context, self.event)
            origin = "a triggered run: from the event watermark to now"
            name = event_window_name(start)
        else:
            try:
                start, end, origin = run_window(
                    params=params,
                    data_interval=data_interval,
                    run_after=context["dag_run"].run_after,
                    schedule=self.schedule,
                )
            except WindowError as error:
                raise AirflowFailException(str(error)) from None
        self.log.info("Window [%s, %s): %s", start.isoformat(), end.isoformat(), origin)
        windows = plan_windows(start, end, partitions=self.partitions, lookback=self.lookback)
        for index, window in enumerate(windows):
            self.log.info("Partition %d: [%s, %s)", index, window["window_start"], window["window_end"])
        if name is not None:
            self.log.info("Ledger window: %s (shared by the event runs starting from this watermark)", name)
        return [{**window, "window_name": name} for window in windows] if name else windows


# --------------------------------------------------------------------------------------- source


class SpecSource:
    """The `Source` a source spec builds, printed as the spec.

    A mapped task's partial arguments are serialized with ``str()``: a plain source object would print
    its memory address, which changes with every parse and would make every parse a new DAG version.
    """

    def __init__(self, spec: SourceSpec, *, track_windows: bool = False) -> None:
        self.spec = spec
        self.source = spec.build()
        self.key_column = self.source.key_column
        self.track_windows = track_windows
        self._store: StateStore | None = None
        self._read: Window | None = None

    def __repr__(self) -> str:
        return repr(self.spec) + (" (tracks windows)" if self.track_windows else "")

    @property
    def state(self) -> StateStore | None:
        """The state store; AttributeError (no such attribute) for a stateless source not tracking windows."""
        return self._store if self.track_windows else self.source.state

    @state.setter
    def state(self, store: StateStore) -> None:
        self._store = store
        if hasattr(self.source, "state"):
            self.source.state = store

    def describe(self) -> str:
        return self.source.describe()

    @property
    def tracks_progress(self) -> bool:
        """The source's own (a window watermark is not: a retry reads its partition's window again)."""
        return self.source.tracks_progress

    @property
    def ignores_window(self) -> bool:
        return self.source.ignores_window

    def start_position(self) -> str:
        return self.source.start_position()

    @property
    def complete_records(self) -> bool:
        return self.source.complete_records

    @property
    def timezone(self) -> str | None:
        return self.source.timezone

    @property
    def timezone_defaulted(self) -> bool:
        return self.source.timezone_defaulted

    def batches(
        self, window: Window | None, batch_size: int, *, partition: Partition | None = None
    ) -> Iterator[list[Record]]:
        from altcraft.sources.base import Window

        # what a read begun now covers: a window ending later holds no row created after now yet
        self._read = window and Window(window.start, max(window.start, min(window.end, datetime.now(UTC))))
        return self.source.batches(window, batch_size, partition=partition)

    def commit(self) -> None:
        """The source's own progress, then (triggered pipelines) the window watermark: to the window's end,
        or to when the read began if that was earlier (a window given ending in the future read only the
        rows there were; past its end, event runs and the trigger would see no row until then).

        Both under the one lock of the state asset the operator holds around this call
        (`ImportAndLaunchScenarioOperator._commit_position`, `Ledger.position_lock`): the window watermark's
        read and set, too, come between no other run's. Not taken again here: it is not reentrant."""
        from altcraft.pipelines.events import WATERMARK_KEY, advanced_watermark

        self.source.commit()
        if self.track_windows and self._store is not None and self._read is not None:
            moved = advanced_watermark(self._store.get(WATERMARK_KEY), self._read.start, self._read.end)
            if moved is not None:
                self._store.set(WATERMARK_KEY, moved)


# ------------------------------------------------------------------------------------ on failure


@dataclass(frozen=True)
class FailureNotification:
    """A DAG failure callback that imports its target only when a run fails."""

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    notifier: bool = False

    @classmethod
    def of(cls, spec: NotificationSpec) -> FailureNotification:
        if spec.notifier is not None:
            return cls(spec.notifier, spec.kwargs, notifier=True)
        return cls(spec.callback or "", spec.kwargs)

    def __call__(self, context: Context) -> None:
        from altcraft.sources.python import import_callable

        target = import_callable(self.target)
        if self.notifier:
            notifier = target(**self.kwargs)
            # the kwargs are spec data, not Jinja: a notifier would render its template fields with the
            # run's context, where `conn` and `var` read any connection's password or variable
            notifier.template_fields = ()
            notifier(context)
        else:
            target(context, **self.kwargs)


# ------------------------------------------------------------------------------------------- DAG


def build_dag(spec: PipelineSpec, *, spec_name: str | None = None) -> DAG:
    """The DAG of one pipeline spec; ``spec_name`` (its path in the pipelines folder) is only named in its
    documentation."""
    import pendulum

    from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator, scenario_asset
    from altcraft.ui.marker import marker_tag

    source = SpecSource(spec.source, track_windows=spec.trigger is not None)
    event = pipeline_event_asset(spec) if spec.trigger else None
    marker = marker_tag(
        keeps_position=source.tracks_progress, grace_seconds=spec.scenario.reconcile_grace_seconds
    )
    dag = DAG(
        dag_id=spec.id,
        description=spec.description or None,
        schedule=schedule(spec),
        start_date=pendulum.instance(spec.start_date, tz=spec.timezone),
        end_date=pendulum.instance(spec.end_date, tz=spec.timezone) if spec.end_date else None,
        catchup=spec.catchup,
        max_active_runs=spec.max_active_runs,
        tags=list(dict.fromkeys([ALWAYS_TAG, *spec.tags, *([marker] if marker else [])])),
        default_args={
            "owner": spec.owner,
            "retries": spec.retries,
            "retry_delay": spec.retry_delay,
            # overlapping event runs: a started run's launch goes before a newer run's plan (older rows first)
            **({"weight_rule": "upstream"} if spec.trigger else {}),
        },
        on_failure_callback=FailureNotification.of(spec.on_failure) if spec.on_failure else None,
        doc_md=doc_md(spec, source, spec_name),
        auto_register=False,  # registered by the loader's globals() only, never by the checker
    )
    # A triggered pipeline keeps all its progress in its event asset's state store, read through an inlet
    # (an outlet would emit events on the asset the DAG is scheduled on: a run would trigger the next).
    state = event or (state_asset(spec.id) if spec.source.keeps_state else None)
    optional = {
        "max_request_bytes": spec.delivery.max_request_bytes,
        "db_id": spec.scenario.db_id,
        "launch_marker_field": spec.scenario.launch_marker_field,
        "reconcile_grace": spec.scenario.reconcile_grace_seconds,
        "reconcile_max_lookups": spec.scenario.reconcile_max_lookups,
        "state_asset": state,
    }
    with dag:
        plan = PlanWindowsOperator(
            task_id=PLAN_TASK_ID,
            schedule=schedule_of(spec),
            partitions=spec.partitions,
            lookback=spec.lookback,
            event=event,
        )
        ImportAndLaunchScenarioOperator.partial(
            task_id=LAUNCH_TASK_ID,
            scenario_id=spec.scenario.id,
            mapping=spec.mapping,
            source=source,
            altcraft_conn_id=spec.altcraft_conn_id,
            delivery=spec.delivery.mode,
            batch_size=spec.delivery.batch_size,
            allow_undocumented_matching=spec.delivery.allow_undocumented_matching,
            relaunch_policy=spec.relaunch_policy,
            relaunch="{{ params.relaunch }}",
            resend_uncertain="{{ params.resend_uncertain }}",
            dry_run="{{ params.dry_run }}",
            only_contacts="{{ params.contact_hashes | tojson }}",
            reconcile="{{ params.reconcile }}",
            max_rejected_ratio=spec.max_rejected_ratio,
            max_failed_ratio=spec.max_failed_ratio,
            max_uncertain_ratio=spec.max_uncertain_ratio,
            ledger_conn_id=spec.ledger_conn_id,
            pool=spec.pool,
            pool_slots=spec.pool_slots,
            inlets=[event] if event else [],
            outlets=[
                scenario_asset(spec.altcraft_conn_id, spec.scenario.id),
                *([state] if state and not event else []),
            ],
            **{name: value for name, value in optional.items() if value is not None},
        ).expand_kwargs(plan.output)
    # Set once the tasks exist (Airflow validates them on assignment, as it does in DAG()). A task made in
    # the DAG keeps its own copy of the DAG's params, and Airflow validates every param of every copy twice
    # while serialising: that was 4 of the 5 validations per param and a third of a spec's parse. A task's
    # run reads the DAG's params (``process_params`` merges the task's own over them).
    dag.params = ParamsDict(run_params(spec))
    return dag


def run_params(spec: PipelineSpec) -> dict[str, Param]:
    """The parameters of a pipeline's runs, in the trigger form: what to send and which window to read."""
    return {
        "dry_run": _param(spec.dry_run, "boolean", "send nothing, write nothing"),
        "relaunch": _param(False, "boolean", "launch contacts the policy would skip"),
        "resend_uncertain": _param(False, "boolean", "send again contacts whose delivery is uncertain"),
        **{
            name: _param(
                None,
                ["null", "string"],
                f"{name} of the window to read (ISO 8601; without an offset in the pipeline's timezone; "
                "give both or neither; default: the data "
                "interval, or the last complete interval for a run without a logical date)",
            )
            for name in ("window_start", "window_end")
        },
        "contact_hashes": _param(
            [],
            "array",
            "only these contacts (ledger hashes; set by the Altcraft page); empty: all",
            items={"type": "string", "pattern": "^[0-9a-f]{64}$"},
        ),
        "reconcile": _param(
            False, "boolean", "check every uncertain contact and dead claim in Altcraft first"
        ),
    }


PARAM_SCHEMA_DRAFT = "http://json-schema.org/draft-03/schema#"
"""The JSON Schema draft the run parameters declare. Their keywords (type, items, pattern) mean the same in
every draft, but Airflow validates a parameter at every parse of a scheduled DAG (and more often where it
runs and is triggered), each time checking the schema against its draft's meta-schema first.
Draft 3's meta-schema is the cheapest to check: no ``$ref`` for ``type`` and no ``anyOf`` for a type list
(draft 4's costs about 1.6x as much, the default 2020-12 about 5x), and parameters were a third of a spec's
parse."""


def _param(default: Any, kind: str | list[str], description: str, **schema: Any) -> Param:
    """A run parameter of a pipeline DAG: its default, JSON type, description and further schema keywords."""
    return Param(default, description=description, **{"$schema": PARAM_SCHEMA_DRAFT, "type": kind, **schema})


def state_asset(dag_id: str) -> Asset:
    """The asset whose state store keeps a pipeline's source progress (watermark, files read)."""
    return Asset(name=f"altcraft_pipeline_{dag_id}_source", uri=f"altcraft-pipeline://{dag_id}/source")


def schedule_of(spec: PipelineSpec) -> Schedule:
    """The spec's interval schedule; a trigger-only pipeline has none, and only its time zone is used
    (for a window given when triggering)."""
    if spec.schedule is None:
        return Schedule(spec.timezone)
    return Schedule.of(spec.schedule, spec.timezone, spec.start_date, spec.schedule_interval)


def pipeline_event_asset(spec: PipelineSpec) -> Asset:
    """A triggered pipeline's event asset with its watcher; a webhook's settings in ``extra``.

    The same asset, watcher included, is the schedule and the tasks' inlet: Airflow keeps one definition
    per asset name and URI, the last one it meets, and registers the watchers of that one only. The API
    server reads ``extra["webhook"]`` (names of connections, never secrets).
    """
    from airflow.sdk import AssetWatcher

    from altcraft.pipelines.events import event_asset
    from altcraft.triggers.new_rows import NewRowsTrigger

    trigger = spec.trigger
    assert trigger is not None
    extra: dict[str, Any] = {}
    if trigger.type == "webhook":
        extra["webhook"] = {
            "auth": trigger.auth,
            "secret_conn_id": trigger.secret_conn_id,
            "ledger_conn_id": spec.ledger_conn_id,
            "max_bytes": trigger.max_bytes,
            "max_records": trigger.max_records,
            "auth_failures_per_minute": trigger.auth_failures_per_minute,
        }
        if trigger.public_url is not None:  # only then: an unpinned pipeline's asset keeps its extra
            extra["webhook"]["public_url"] = trigger.public_url
    watcher = NewRowsTrigger(
        pipeline=spec.id,
        source=spec.source.model_dump(mode="json", by_alias=True),
        poll_interval=trigger.interval.total_seconds(),
    )
    return event_asset(
        spec.id, extra=extra, watchers=[AssetWatcher(name=f"{spec.id}_new_rows", trigger=watcher)]
    )


def schedule(spec: PipelineSpec) -> Any:
    """The timetable, the event asset (``trigger`` only), or either of them (both)."""
    if spec.trigger is None:
        return timetable(spec)
    from airflow.sdk import AssetOrTimeSchedule

    asset = pipeline_event_asset(spec)
    return AssetOrTimeSchedule(timetable=timetable(spec), assets=asset) if spec.schedule else asset


def timetable(spec: PipelineSpec) -> BaseTimetable:
    """Always a data-interval timetable: a run's window is its data interval, never empty."""
    return schedule_of(spec).timetable()


def doc_md(spec: PipelineSpec, source: Source, spec_name: str | None) -> str:
    """The DAG's documentation: source, mapping table, scenario, schedule and window."""
    mapping, notify = spec.mapping, spec.on_failure
    delivery = (
        "single (one request per contact)"
        if spec.delivery.mode == "single"
        else f"{spec.delivery.mode}, up to {spec.delivery.batch_size} contacts per request"
    )
    window = (
        "watermark (the source remembers the highest value read; the data interval is not used)"
        if spec.source.uses_watermark
        else ("[watermark, now) for event runs, else " if spec.trigger else "")
        + "the run's data interval [start, end)"
        + (f", start moved back by {spec.lookback}" if spec.lookback else "")
        + (f", split into {spec.partitions} partitions" if spec.partitions > 1 else "")
    )
    rows = [
        (
            f"{_md(mapping.field_name if name == 'field_value' else name)} (matching key)",
            f"`{_md(column)}`",
            name if name in ("email", "phone") else "key",
            "yes",
        )
        for name, column in mapping.key.items()
    ]
    for target, field_spec in mapping.fields.items():
        origin = (
            f"`{_md(field_spec.source)}`"
            if field_spec.source is not None
            else f"template `{_md(field_spec.template)}`"
            if field_spec.template is not None
            else f"constant {_md(field_spec.const)}"
        )
        rows.append((_md(target), origin, field_spec.type, "yes" if target in mapping.required else ""))
    for index, subscription in enumerate(mapping.subscriptions):
        rows.append(
            (
                f"subscriptions[{index}]",
                f"`{_md(subscription.source)}`",
                f"{subscription.channel} (resource {subscription.resource_id})",
                "",
            )
        )
    lines = [
        f"# {_md(spec.id)}",
        "",
        _md(spec.description) if spec.description else "Altcraft import-and-launch pipeline.",
        "",
        f"*Generated from the pipeline spec `{_md(printable(spec_name))}`: edit the YAML, not this DAG.*"
        if spec_name
        else "*Generated from a pipeline spec.*",
        "",
        "| | |",
        "|---|---|",
        f"| Source | {_md(source.describe())} |",
        f"| Window | {_md(window)} |",
        f"| Schedule | {_when(spec)}" + (", with catchup" if spec.catchup else "") + " |",
        f"| Scenario | {spec.scenario.id}"
        + (f" on database {spec.scenario.db_id}" if spec.scenario.db_id else "")
        + f" (connection `{_md(spec.altcraft_conn_id)}`) |",
        f"| Delivery | {delivery}, relaunch policy `{spec.relaunch_policy}`, "
        f"max rejected {spec.max_rejected_ratio:.0%}" + (", **dry run**" if spec.dry_run else "") + " |",
        f"| Pool | `{_md(spec.pool)}` ({spec.pool_slots} slot{'s' if spec.pool_slots > 1 else ''}) |",
        *([f"| On failure | `{_md(notify.callback or notify.notifier)}` |"] if notify else []),
        "",
        f"## Mapping (matching `{mapping.matching.value}`"
        + (f" on field `{_md(mapping.field_name)}`" if mapping.field_name else "")
        + ")",
        "",
        "| Altcraft field | from | type | required |",
        "|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
    ]
    return "\n".join(lines)


def _when(spec: PipelineSpec) -> str:
    """When runs start, in Markdown: the schedule and/or the trigger."""
    trigger = spec.trigger
    parts = [f"`{_md(spec.schedule)}` in {_md(spec.timezone)}"] if spec.schedule else []
    if trigger is not None and trigger.type == "poll":
        parts.append(f"new rows, checked every {trigger.interval}")
    elif trigger is not None:
        parts.append(
            f"webhook /altcraft-webhooks/{spec.id} ({trigger.auth}), checked every {trigger.interval}"
        )
    return " or ".join(parts)


def _md(value: Any) -> str:
    """Spec text made inert in Markdown table cells (no HTML, no cell breaks, no code-span escapes)."""
    text = " ".join(str(value).split())
    for char, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("`", "'")):
        text = text.replace(char, escaped)
    return text


# ------------------------------------------------------------------------------------- loading


@dataclass
class Pipelines:
    """What a folder of specs gave: one DAG per good spec, one error per broken spec."""

    dags: dict[str, DAG] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)

    def register(self, namespace: MutableMapping[str, Any]) -> None:
        """Expose the DAGs in a DAG-file module's ``globals()``; log the broken specs.

        The broken specs are Airflow import errors of the checker DAG file (`check_pipelines`), not of
        the loader: an import error of the loader would mark every pipeline DAG as broken.
        """
        namespace.update(self.dags)
        for error in self.errors:
            log.warning("%s\n(not loaded; listed as the import error of %s)", error, CHECKER_FILE)


class BrokenPipelineSpecs(Exception):
    """Every broken spec of a folder, raised by the checker DAG file: Airflow lists it as its import error."""

    def __init__(self, errors: Sequence[SpecError]) -> None:
        self.errors = list(errors)
        count = f"{len(errors)} pipeline spec{'s are' if len(errors) > 1 else ' is'}"
        details = "\n\n".join(str(error) for error in self.errors)
        super().__init__(f"{count} broken; their pipelines are not loaded until fixed.\n\n{details}")


def check_pipelines(folder: str | os.PathLike[str]) -> None:
    """Raise `BrokenPipelineSpecs` naming every spec in ``folder`` that `load_pipelines` refuses.

    Called at the top level of the checker DAG file (``altcraft_pipelines_check.py``, which holds no
    DAG): Airflow records the exception as that file's import error, under a ``.py`` path the DAG
    processor keeps listing, so the error stays for as long as a spec is broken (see docs/pipelines.md).
    """
    errors = load_pipelines(folder).errors
    if errors:
        raise BrokenPipelineSpecs(errors)


def load_pipelines(folder: str | os.PathLike[str]) -> Pipelines:
    """Read every spec file under ``folder`` (`find_specs`: sub-folders too) into DAGs.

    A spec that cannot be read, validated or built becomes a `SpecError`, as does whatever `find_specs`
    reports; the others load regardless. Specs sharing an ``id`` are all errors, each naming the others
    (none shadows another, whatever their order), as is a spec whose ``id`` a DAG of another file takes
    (`altcraft.pipelines.clashes`: Airflow would keep either DAG, by parse order), and so are webhook
    pipelines sharing a secret connection where a proof does not cover the URL (`_replayable`). Each DAG
    is validated here, because Airflow reports a DAG that fails validation against the loader file, which
    would mark every pipeline DAG of that file as having import errors. Errors are in path order.
    """
    from altcraft.pipelines.clashes import other_dags

    result = Pipelines()
    folder = Path(folder)
    specs: dict[Path, PipelineSpec] = {}
    for found in find_specs(folder) if folder.is_dir() else _not_a_folder(folder):
        spec = found if isinstance(found, SpecError) else read_spec(found)
        if isinstance(spec, SpecError):
            result.errors.append(replace(spec, name=spec_name(spec.path, folder)))
        else:
            specs[found] = spec
    same_id = _sharing(specs, lambda spec: spec.id)
    same_secret = _sharing(specs, _webhook_secret)
    elsewhere = other_dags(folder, {spec.id for spec in specs.values()})
    matched_fields: dict[tuple[Any, ...], tuple[str, str]] = {}  # see `_custom_field_clash`
    for path, spec in specs.items():
        name = spec_name(path, folder)
        others = [spec_name(other, folder) for other in same_id[path]]
        replayable = _replayable(spec, [specs[other] for other in same_secret[path]])
        built = (
            _shared_id(spec, path, others)
            if others
            else _shared_id(spec, path, elsewhere[spec.id], dag_files=True)
            if spec.id in elsewhere
            else _shared_secret(spec, path, [spec_name(other, folder) for other in same_secret[path]])
            if replayable
            else _custom_field_clash(spec, path, matched_fields) or _validated_dag(spec, path, name)
        )
        if isinstance(built, SpecError):
            result.errors.append(replace(built, name=name))
            continue
        result.dags[spec.id] = built
        if spec.mapping.matching.needs_field_name:
            matched_fields.setdefault(_custom_scope(spec), (spec.mapping.field_name or "", name))
    result.errors.sort(key=lambda error: error.path)
    return result


def _not_a_folder(folder: Path) -> Iterator[SpecError]:
    """The error of a pipelines folder that is there but no folder: a file, or a link to nothing (a volume
    not mounted) that would drop every pipeline without a word. No folder at all is no error."""
    if os.path.lexists(folder):
        link = f" (a link to {os.readlink(folder)})" if folder.is_symlink() else ""
        yield SpecError(folder, f"  not a folder{link}: no spec in it is loaded")


def find_specs(folder: Path) -> Iterator[Path | SpecError]:
    """The spec files under ``folder``, sub-folders included (links followed), depth first by name.

    A spec file is any ``*.yaml``, ``*.yml`` or ``*.json`` (any letter case), whatever it is: `read_spec`
    reports one that is no regular file (a folder named like a spec, a pipe, a link to nothing). Hidden
    names (``.``-files and ``.``-folders: editors' files, ``.git``) and other suffixes are skipped. What
    would hide specs without a word is a `SpecError`: another entry that cannot be read (a link to
    nothing, no permission), a folder that cannot be listed, a link to a folder already read (a loop, or
    one folder twice), and an ``.airflowignore``, which is not honoured here.
    """
    yield from _walk(folder, {_identity(folder.stat())})


def _walk(folder: Path, seen: set[tuple[int, int]]) -> Iterator[Path | SpecError]:
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as error:
        yield SpecError(
            folder, f"  cannot list the folder: {error.strerror or error}; its specs are not loaded"
        )
        return
    for entry in entries:
        path = Path(entry.path)
        if entry.name == IGNORE_FILE:
            yield SpecError(
                path,
                f"  {IGNORE_FILE} is not honoured in the pipelines folder: every spec file in it is loaded. "
                "Remove this file; to keep a spec unloaded, rename it (welcome.yaml.off) or move it out",
            )
        elif entry.name.startswith("."):
            continue
        elif entry.name.lower().endswith(SPEC_SUFFIXES):
            yield path
        else:
            yield from _folder(entry, seen)


def _folder(entry: os.DirEntry[str], seen: set[tuple[int, int]]) -> Iterator[Path | SpecError]:
    """The specs in ``entry`` if it is a folder (or a link to one) not read yet; nothing for a file."""
    path = Path(entry.path)
    try:
        info = entry.stat()  # of a link's target
    except OSError as error:
        link = f" (a link to {os.readlink(path)})" if entry.is_symlink() else ""
        yield SpecError(path, f"  cannot read it{link}: {error.strerror or error}")
        return
    if not stat.S_ISDIR(info.st_mode):
        return
    if _identity(info) in seen:
        yield SpecError(path, "  a link to a folder already read (a loop?): not read again; remove the link")
        return
    seen.add(_identity(info))
    yield from _walk(path, seen)


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def spec_name(path: Path, folder: Path) -> str:
    """How a spec (or folder) is named to the user: its path in the pipelines folder."""
    return path.relative_to(folder).as_posix() if path != folder else f"{folder.name}/"


def _validated_dag(spec: PipelineSpec, path: Path, name: str) -> DAG | SpecError:
    try:
        dag = build_dag(spec, spec_name=name)
        dag.validate()
    except Exception as error:
        return SpecError(path, f"  cannot build the DAG: {type(error).__name__}: {error}")
    return _refused_by_policy(spec, path, name) or dag


def _refused_by_policy(spec: PipelineSpec, path: Path, name: str) -> SpecError | None:
    """The error of a spec whose DAG the cluster policies of this Airflow (``dag_policy``, ``task_policy``
    of ``airflow_local_settings`` or an ``airflow.policy`` plugin) refuse, or None.

    Airflow applies them as it takes each DAG of the loader file, and reports a refusal as the loader's
    import error, naming no spec and marking every pipeline DAG. Applied here first, when a policy is
    installed, to a DAG built for the check (a policy may change the DAG it is given, and Airflow applies
    it to the registered DAG again); a DAG a policy skips is left for Airflow to skip.
    """
    from airflow import settings
    from airflow.exceptions import AirflowClusterPolicySkipDag

    hook = settings.get_policy_plugin_manager().hook
    if not (hook.dag_policy.get_hookimpls() or hook.task_policy.get_hookimpls()):
        return None
    try:
        dag = build_dag(spec, spec_name=name)
        settings.dag_policy(dag)
        for task in dag.tasks:
            settings.task_policy(task)
    except AirflowClusterPolicySkipDag:
        return None
    except Exception as error:
        return SpecError(
            path, f"  refused by a cluster policy of this Airflow: {type(error).__name__}: {error}"
        )
    return None


def _sharing(
    specs: Mapping[Path, PipelineSpec], key: Callable[[PipelineSpec], str | None]
) -> dict[Path, list[Path]]:
    """For each spec, the other specs with the same ``key`` (a key of None is shared with nobody)."""
    keys = {path: key(spec) for path, spec in specs.items()}
    owners: dict[str, list[Path]] = {}
    for path, value in keys.items():
        if value is not None:
            owners.setdefault(value, []).append(path)
    return {
        path: [other for other in owners[value] if other != path] if value is not None else []
        for path, value in keys.items()
    }


def _webhook_secret(spec: PipelineSpec) -> str | None:
    """The secret connection of a webhook pipeline, None for others."""
    return (
        spec.trigger.secret_conn_id if spec.trigger is not None and spec.trigger.type == "webhook" else None
    )


def _replayable(spec: PipelineSpec, sharing: Sequence[PipelineSpec]) -> bool:
    """Whether a delivery to one of these webhook pipelines sharing a secret could be posted to another:
    one of them checks a proof that does not cover the URL (`altcraft.webhooks.kinds.may_share_a_secret`)."""
    from altcraft.webhooks.kinds import may_share_a_secret

    return bool(sharing) and not may_share_a_secret(
        *(other.trigger.auth for other in (spec, *sharing) if other.trigger is not None)
    )


def _shared(path: Path, field: tuple[str, ...], text: str) -> SpecError:
    """The error of a spec whose ``field`` it may not share with other specs; ``text`` says with which."""
    line = field_line(path, field)
    return SpecError(path, f"  {f'line {line}, ' if line else ''}{'.'.join(field)}: {text}", line)


def _shared_id(
    spec: PipelineSpec, path: Path, others: Sequence[str], *, dag_files: bool = False
) -> SpecError:
    """The error of a spec whose id other specs of its folder take, or (``dag_files``) DAGs of other files:
    Airflow keeps one DAG per id, its DAG processor whichever file it parsed last."""
    owners = f"a DAG in {', '.join(others)}" if dag_files else ", ".join(others)
    outcome = (
        "Airflow keeps one DAG per id (its DAG processor takes whichever file it parsed last), so this "
        "pipeline is"
        if dag_files
        else "a DAG id belongs to one spec, so none of them is"
    )
    return _shared(
        path, ("id",), f"{spec.id!r} is also the id of {owners}; {outcome} loaded until the ids differ"
    )


def _shared_secret(spec: PipelineSpec, path: Path, others: Sequence[str]) -> SpecError:
    from altcraft.webhooks.kinds import KINDS

    blind = ", ".join(name for name, kind in KINDS.items() if not kind.covers_url)
    return _shared(
        path,
        ("trigger", "secret_conn_id"),
        f"{_webhook_secret(spec)!r} is also the webhook secret of {', '.join(others)}; the proofs of auth "
        f"{blind} do not cover the URL, so a delivery to one of them could be posted to another and be "
        "taken there. Give each pipeline a secret connection of its own; none of them is loaded until then",
    )


def _custom_scope(spec: PipelineSpec) -> tuple[Any, ...]:
    """The ledger rows a custom-matching spec's contacts share: its ledger, Altcraft connection, scenario."""
    return (spec.ledger_conn_id, spec.altcraft_conn_id, spec.scenario.id, spec.mapping.matching)


def _custom_field_clash(
    spec: PipelineSpec, path: Path, matched_fields: Mapping[tuple[Any, ...], tuple[str, str]]
) -> SpecError | None:
    """The error of a spec matching on another custom field than an earlier spec of the same scenario.

    The ledger knows a custom-matched contact by the field's value alone (``custom:<value>``), so two
    pipelines launching one scenario on different fields would take a value of one for the other's
    contact, and skip the second as already launched.
    """
    if not spec.mapping.matching.needs_field_name:
        return None
    field_name, owner = matched_fields.get(_custom_scope(spec), (None, None))
    if owner is None or field_name == spec.mapping.field_name:
        return None
    return _shared(
        path,
        ("mapping", "field_name"),
        f"{spec.mapping.field_name!r}, but {owner} launches scenario {spec.scenario.id} matching "
        f"{spec.mapping.matching.value} on {field_name!r}; the ledger knows such contacts by the value "
        "alone, so one pipeline's value would stand for the other's contact. Match on one field, or launch "
        "separate scenarios",
    )
