"""ImportAndLaunchScenarioOperator: the Airflow step that replaces Albato's "import and launch".

Thin glue around :mod:`altcraft.delivery`: it reads the task's context (window, run identity, task state),
runs the pre-flight checks, streams the source through the delivery, and reports the outcome (XCom
summary, log table, extra link, asset event). Contact data never goes to XCom.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator, BaseOperatorLink, XComArg
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from altcraft.operators import arguments as check

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.sdk.types import TaskInstanceKey

    from altcraft.delivery import Delivery
    from altcraft.hooks.altcraft import AltcraftHook
    from altcraft.mapping import ProfileMapping
    from altcraft.sources.base import Source, Window

DEFAULT_CONN_ID = "altcraft_default"
#: Default share of a run's contacts that may be rejected before the task fails (after delivery).
DEFAULT_MAX_REJECTED_RATIO = 0.1
#: ``reconcile`` unless given: a manual run's ``{"reconcile": true}`` (conf) or a DAG param of that name.
RECONCILE_FROM_RUN = "{{ (dag_run.conf or {}).get('reconcile', params.get('reconcile', False)) }}"
SCENARIO_URL_XCOM_KEY = "altcraft_scenario_url"
_TASKS_KEY = "altcraft_tasks"
_SUMMARY_KEY = "altcraft_summary"  # task_state_store: the summary across a deferral
_MOVED = "position_moved"  # in it: whether the source's position moved before the deferral
_NAMED = "window_name"  # in it: the try's window name in the ledger (`_ledger_window_name`)
#: The prefix of a window named by the source position a run starts from (`position_window_name`).
POSITION_WINDOW = "position/"
#: XCom key of every try's summary, pushed also when the try fails (the return value only on success).
SUMMARY_XCOM_KEY = "altcraft_summary"
#: The templated arguments (`arguments.rendered`) and the attribute each is kept in.
_TEMPLATED = {
    "scenario_id": "scenario_id",
    "db_id": "db_id",
    "content": "content",
    "dry_run": "dry_run_mode",
    "relaunch": "relaunch",
    "resend_uncertain": "resend_uncertain",
    "reconcile": "reconcile",
    "only_contacts": "only_contacts",
    "window_start": "window_start",
    "window_end": "window_end",
}
#: The summary's counts in the scenario asset event's ``extra``.
_COUNTERS = ("found", "launched", "skipped", "rejected", "failed", "uncertain", "in_flight_elsewhere")


class AltcraftScenarioLink(BaseOperatorLink):
    """ "Altcraft scenario" button on the task instance: opens the scenario in the Altcraft UI."""

    name = "Altcraft scenario"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.bases.xcom import BaseXCom

        return BaseXCom.get_value(ti_key=ti_key, key=SCENARIO_URL_XCOM_KEY) or ""


class ImportAndLaunchScenarioOperator(BaseOperator):
    """Import contacts into Altcraft and launch each into a scenario exactly once.

    :param scenario_id: Altcraft scenario ("workflow") id. Templated.
    :param mapping: how a source record becomes a profile (:class:`altcraft.mapping.ProfileMapping` or dict);
        the source's naive date-times are read in its ``timezone``, and one naming no ``timezone`` writes
        date-times in it too. A mapping naming a zone other than UTC that reads dates or date-times from a
        SQL, file or REST source given no ``timezone`` (so UTC) is refused, naming both: give the source
        the zone its naive times are in.
    :param source: where contacts come from (:class:`altcraft.sources.base.Source`); or give ``contacts``.
    :param contacts: records as an iterable, or an upstream task's small output (an XComArg, read when the
        task runs); needs ``key_column``. Not templated: Airflow would keep the records among the task's
        rendered fields (its database, the UI).
    :param key_column: the record field identifying a contact (taken from ``source`` when given).
    :param db_id: database the scenario must work on; checked before anything is sent. Templated. It is
        also where reconciliation looks profiles up when Altcraft's scenario names no database; with
        neither, only an Altcraft task recorded for a contact's request can decide it.
    :param delivery: ``single``, ``batch`` (default) or ``async`` (batch task + deferrable wait).
    :param batch_size: contacts per request (≤ 10,000) and per source read.
    :param max_request_bytes: cap of one request's encoded JSON (default just under 10 MB).
    :param relaunch_policy: ``once`` (default), ``cooldown:30d`` or ``every_run``; see docs/ledger.md.
    :param relaunch: launch again contacts the policy would skip (never twice within one run). Templated.
    :param resend_uncertain: send again contacts whose earlier delivery is uncertain. Templated.
    :param dry_run: map, validate and check the ledger, but send nothing, write nothing and emit no
        asset event. Templated.
    :param only_contacts: ledger hashes of the contacts to limit this run to (a list, or its JSON text);
        every other contact is skipped. Empty or None: all contacts. Templated; the Altcraft page sets it
        through the pipeline's ``contact_hashes`` param.
    :param max_rejected_ratio: fail the task (after delivering everything valid) when rejected / found
        exceeds this share. Default 0.1.
    :param max_failed_ratio: fail the task when contacts refused by Altcraft / found exceeds this share.
        Default 0: any refusal fails the task (a retry or the next run reading them sends them again; a
        source keeping a position between runs, such as a watermark, has moved past them: not retried).
    :param max_uncertain_ratio: fail the task when contacts still uncertain after reconciliation / found
        exceeds this share. Default 0.
    :param launch_marker_field: custom profile field (string) written with the sending try's id in every
        launching request, so reconciliation can prove whether an uncertain request was processed. One
        field per scenario. See docs/ledger.md.
    :param reconcile: before delivering, check every uncertain contact of the scenario in Altcraft, and
        every one whose claim is dead (left ``sending`` by a claim older than the ledger's ``stale_after``);
        those met by a claim are always checked. Templated; default the run's
        ``reconcile`` conf or param.
    :param reconcile_grace: how long after its answer was lost a request sent ``single`` or ``batch`` may
        still be running in Altcraft (a lost answer does not stop it): until then a missing marker or
        profile leaves the contact uncertain instead of "not processed" (seconds or a timedelta; default
        ten minutes, ``altcraft.reconciliation.DEFAULT_GRACE``).
    :param reconcile_max_lookups: how many uncertain contacts one try checks in Altcraft at most (whole
        scenario and those its claims meet), oldest first; the others are left as they are, never resent
        by the try, for later runs, and counted ``reconciled.deferred`` (default 10,000,
        ``altcraft.reconciliation.DEFAULT_MAX_LOOKUPS``; at most 1,000,000,000).
    :param ledger_conn_id: SQL connection of the sync ledger; default ``[altcraft] ledger_conn_id`` of the
        Airflow configuration, else a SQLite file in AIRFLOW_HOME.
    :param window_start, window_end: the data interval to read. Templated; default the run's data interval.
    :param window_name: the window's name in the ledger, in place of its ``[start, end)``: runs reading
        windows of one name share their launches for policies ``every_run`` and ``cooldown`` (a pipeline's
        event runs name theirs by the watermark they start from; see `PlanWindowsOperator`). A source that
        ignores the window (a watermark: `Source.ignores_window`) names it by the stored position the run
        starts from instead (`position_window_name`), whatever this says.
    :param content: passed to Altcraft. Templated (strings inside are rendered). A URL with a user name or
        password in it is refused (it would be stored and shown with the DAG).
    :param skip_triggers, skip_invalid_subscriptions, detect_geo: passed to Altcraft.
    :param deferrable: in ``async`` mode, wait for Altcraft tasks in the triggerer (default True).
    :param allow_undocumented_matching: accept a matching mode the docs do not list for the delivery's
        endpoint (``altcraft.api.matching.DOCUMENTED_MATCHING``); without it such a mode is a parse error.
    :param state_asset: asset whose ``asset_state_store`` keeps the source's watermark / processed files
        across runs (it must also be one of the task's outlets).
    """

    # Only these are Jinja templates. `matching` and `field_name` come from the mapping, which is data
    # (in a YAML pipeline, the spec author's): never rendered, so "{{ conn.x.password }}" stays text.
    template_fields: Sequence[str] = (
        "scenario_id",
        "db_id",
        "content",
        "dry_run_mode",
        "window_start",
        "window_end",
        "relaunch",
        "resend_uncertain",
        "only_contacts",
        "reconcile",
    )
    template_fields_renderers = {"content": "json"}
    operator_extra_links = (AltcraftScenarioLink(),)
    ui_color = "#ffd8b0"
    _position_moved = False  # whether this try moved a source's position (watermark, files, cursor)
    _named: str | None = None  # this try's window name in the ledger (`_ledger_window_name`)

    def __init__(
        self,
        *,
        scenario_id: int | str,
        mapping: ProfileMapping | Mapping[str, Any],
        source: Source | None = None,
        contacts: Iterable[Mapping[str, Any]] | None = None,
        key_column: str | None = None,
        db_id: int | str | None = None,
        altcraft_conn_id: str = DEFAULT_CONN_ID,
        delivery: str = "batch",
        batch_size: int = 1000,
        max_request_bytes: int | None = None,
        relaunch_policy: str = "once",
        relaunch: bool = False,
        resend_uncertain: bool = False,
        dry_run: bool | str = False,
        only_contacts: Sequence[str] | str | None = None,
        max_rejected_ratio: float = DEFAULT_MAX_REJECTED_RATIO,
        max_failed_ratio: float = 0.0,
        max_uncertain_ratio: float = 0.0,
        launch_marker_field: str | None = None,
        reconcile: bool | str = RECONCILE_FROM_RUN,
        reconcile_grace: timedelta | float | None = None,
        reconcile_max_lookups: int | None = None,
        ledger_conn_id: str | None = None,
        window_start: datetime | str | None = "{{ data_interval_start }}",
        window_end: datetime | str | None = "{{ data_interval_end }}",
        window_name: str | None = None,
        content: dict[str, Any] | None = None,
        skip_triggers: bool | None = None,
        skip_invalid_subscriptions: bool | None = None,
        detect_geo: bool | None = None,
        deferrable: bool = True,
        poll_interval: float = 5.0,
        task_timeout: timedelta | float = timedelta(hours=6),
        state_asset: Asset | None = None,
        allow_undocumented_matching: bool = False,
        **kwargs: Any,
    ) -> None:
        from pydantic import ValidationError

        from altcraft.api.matching import check_launch_matching
        from altcraft.batching import DEFAULT_MAX_REQUEST_BYTES, MAX_BATCH_ITEMS
        from altcraft.mapping import ProfileMapping, ZoneNames, in_source_zone, naive_times_moved
        from altcraft.modes import DeliveryMode
        from altcraft.relaunch import RelaunchPolicy
        from altcraft.spec_checks import (
            MAX_BYTES,
            MAX_DURATION,
            MAX_LOOKUPS,
            MAX_TIMEOUT_SECONDS,
            checked,
            no_credentials,
        )

        if (source is None) == (contacts is None):
            raise ValueError("Give exactly one of `source` or `contacts`")
        if contacts is not None and not isinstance(contacts, XComArg):  # an XComArg: checked once read
            check.records("contacts", contacts)
        try:
            self.mapping = (
                mapping if isinstance(mapping, ProfileMapping) else ProfileMapping.model_validate(mapping)
            )
        except ValidationError as error:
            raise ValueError(f"`mapping` is not a valid profile mapping: {error}") from None
        moved = naive_times_moved(
            self.mapping,
            getattr(source, "timezone_defaulted", False),
            ZoneNames("the `timezone` of `source`", "the `timezone` of `mapping`", "`mapping` fields"),
        )
        if moved:
            raise ValueError(moved)
        self.mapping = in_source_zone(self.mapping, getattr(source, "timezone", None))
        if source is not None and key_column not in (None, source.key_column):
            raise ValueError(
                f"`key_column` {key_column!r} differs from the source's key column {source.key_column!r}: "
                "give it on the source only"
            )
        self.key_column = check.name("key_column", source.key_column if source is not None else key_column)
        if state_asset is not None and source is None:
            raise ValueError("`state_asset` keeps a source's position between runs: `contacts` keep none")
        if delivery not in list(DeliveryMode):
            modes = ", ".join(DeliveryMode)
            raise ValueError(f"`delivery` must be one of {modes}, got {delivery!r}")
        check_launch_matching(
            delivery,
            self.mapping.matching,
            allow_undocumented=check.boolean("allow_undocumented_matching", allow_undocumented_matching),
        )
        ratios = {
            name: check.number(name, ratio, 0, 1)
            for name, ratio in (
                ("max_rejected_ratio", max_rejected_ratio),
                ("max_failed_ratio", max_failed_ratio),
                ("max_uncertain_ratio", max_uncertain_ratio),
            )
        }
        policy = RelaunchPolicy.parse(relaunch_policy)  # fail at parse time on a typo
        if policy.kind != "once" and getattr(source, "lookback", None):  # a SQL watermark's margin
            raise ValueError(
                f"`relaunch_policy` {policy} with the source's `lookback` {source.lookback}: each run reads "
                "again the rows within lookback below the watermark, for as long as no higher value comes, "
                "and would launch them again. Use relaunch_policy 'once', or no lookback"
            )
        # templated, so stored with the serialized DAG: a URL with a password in it would be shown
        checked(type(self).__name__, "content", content, no_credentials)
        templated = {
            "scenario_id": scenario_id,
            "db_id": db_id,
            "content": content,
            "dry_run": dry_run,
            "relaunch": relaunch,
            "resend_uncertain": resend_uncertain,
            "only_contacts": only_contacts,
            "reconcile": reconcile,
            "window_start": window_start,
            "window_end": window_end,
        }
        given = check.rendered(  # a template or an upstream task's output (XComArg): checked once rendered
            {k: v for k, v in templated.items() if not check.is_template(v) and not isinstance(v, XComArg)}
        )
        if isinstance(given.get("scenario_id"), int) and "outlets" not in kwargs:
            kwargs["outlets"] = [scenario_asset(altcraft_conn_id, given["scenario_id"])]
        super().__init__(**kwargs)
        self.scenario_id = given.get("scenario_id", scenario_id)
        self.db_id = db_id
        self.matching = self.mapping.matching.value
        self.field_name = self.mapping.field_name
        self.source = source
        self.contacts = contacts
        if isinstance(contacts, XComArg):  # an upstream task's output: that task runs first
            XComArg.apply_upstream_relationship(self, contacts)
        self.altcraft_conn_id = check.name("altcraft_conn_id", altcraft_conn_id)
        self.delivery = str(delivery)
        self.batch_size = check.count("batch_size", batch_size, 1, MAX_BATCH_ITEMS)
        self.max_request_bytes = (
            DEFAULT_MAX_REQUEST_BYTES
            if max_request_bytes is None
            else check.count("max_request_bytes", max_request_bytes, 1, MAX_BYTES)
        )
        self.relaunch_policy = relaunch_policy
        self.relaunch = relaunch
        self.resend_uncertain = resend_uncertain
        self.dry_run_mode = dry_run
        self.only_contacts = only_contacts
        self.max_rejected_ratio = ratios["max_rejected_ratio"]
        self.max_failed_ratio = ratios["max_failed_ratio"]
        self.max_uncertain_ratio = ratios["max_uncertain_ratio"]
        self.launch_marker_field = check.name("launch_marker_field", launch_marker_field, optional=True)
        self.reconcile = reconcile
        self.reconcile_grace = (
            None
            if reconcile_grace is None
            else check.duration("reconcile_grace", reconcile_grace, high=MAX_DURATION, positive=False)
        )
        self.reconcile_max_lookups = (
            None
            if reconcile_max_lookups is None
            else check.count("reconcile_max_lookups", reconcile_max_lookups, 1, MAX_LOOKUPS)
        )
        self.ledger_conn_id = check.name("ledger_conn_id", ledger_conn_id, optional=True)
        self.window_start = window_start
        self.window_end = window_end
        self.window_name = check.name("window_name", window_name, optional=True)
        self.content = content
        self.skip_triggers = check.boolean("skip_triggers", skip_triggers, optional=True)
        self.skip_invalid_subscriptions = check.boolean(
            "skip_invalid_subscriptions", skip_invalid_subscriptions, optional=True
        )
        self.detect_geo = check.boolean("detect_geo", detect_geo, optional=True)
        self.deferrable = check.boolean("deferrable", deferrable)
        self.poll_interval = check.number(
            "poll_interval", poll_interval, 0, MAX_TIMEOUT_SECONDS, above_low=True
        )
        self.task_timeout = check.duration("task_timeout", task_timeout, high=MAX_DURATION, positive=True)
        self.state_asset = state_asset
        self._running: Delivery | None = None  # this try's delivery, for `on_kill`
        self._mark_dag()

    def _mark_dag(self) -> None:
        """Tag the DAG for the Altcraft page as a pipeline's factory does (`altcraft.ui.marker`): a
        hand-written DAG whose source keeps a position is then offered no resend or relaunch, which would
        read none of a run's contacts again, and its own reconciliation grace is waited for."""
        from altcraft.ui.marker import marker_tag

        grace = self.reconcile_grace
        tag = marker_tag(
            keeps_position=self.source is not None and self.source.tracks_progress,
            grace_seconds=None if grace is None else int(grace.total_seconds()),
        )
        if tag and self.has_dag():
            self.dag.tags.add(tag)

    # -------------------------------------------------------------------------------------- execution

    def execute(self, context: Context) -> dict[str, Any]:
        from altcraft.hooks.altcraft import AltcraftHook

        self._check_rendered()
        hook = AltcraftHook(self.altcraft_conn_id)
        self._position_moved = False
        db_id = self._preflight(hook)
        context["ti"].xcom_push(key=SCENARIO_URL_XCOM_KEY, value=hook.scenario_url(self.scenario_id))
        window = self._window()
        self._named = self._ledger_window_name(context)
        delivery = self._running = self._delivery(hook, context, window, self._named, profiles_db_id=db_id)
        try:
            return self._execute(delivery, context, window)
        finally:
            self._running = None
            delivery.ledger.close()

    def _execute(self, delivery: Delivery, context: Context, window: Window | None) -> dict[str, Any]:
        if delivery.dry_run:
            # Airflow emits the outlets' asset events when the task succeeds, reading the task's
            # outlets then: a dry run must not schedule anything downstream.
            self.outlets = []
        source = self._source(context)
        self.log.info(
            "Delivering %s into scenario %s (%s mode%s, window %s)",
            source.describe(),
            self.scenario_id,
            delivery.mode.value,
            ", dry run" if delivery.dry_run else "",
            f"[{window.start.isoformat()}, {window.end.isoformat()})" if window else "none",
        )
        try:
            if not delivery.dry_run:
                delivery.recover(
                    _task_book(context),
                    timeout=self.task_timeout.total_seconds(),
                    poll_interval=self.poll_interval,
                )
            _identify(delivery)
            if self.reconcile and not delivery.dry_run:
                delivery.reconcile()
            delivery.process(_read(source, window, self.batch_size))
            if delivery.mode == "async" and not delivery.dry_run:
                self._wait_for_tasks(delivery, context, source)
            self._move_source(delivery, source)
        except TaskDeferred:
            raise
        except BaseException:
            self._report(delivery, context, final=False)
            raise
        return self._finish(delivery, context)

    def on_kill(self) -> None:
        """Airflow asks the task to stop (a terminate signal: the task marked failed or cleared, its
        execution_timeout): the request out is answered and settled, and no further request is made."""
        if self._running is not None:
            self._running.stop()

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger saw every Altcraft task of this try finish."""
        from altcraft.hooks.altcraft import AltcraftHook

        self._check_rendered()
        hook = AltcraftHook(self.altcraft_conn_id)
        saved = context["task_state_store"].get(_SUMMARY_KEY) or {}
        # the window as named before the deferral: the position it names has moved since
        delivery = self._delivery(hook, context, self._window(), saved.pop(_NAMED, self.window_name))
        try:
            return self._complete(delivery, context, event, saved)
        finally:
            delivery.ledger.close()

    def _complete(
        self, delivery: Delivery, context: Context, event: dict[str, Any], saved: dict[str, Any]
    ) -> dict[str, Any]:
        self._position_moved = bool(saved.pop(_MOVED, False))
        for name, value in saved.items():
            setattr(delivery.summary, name, value)
        if event.get("status") != "done":
            # still running at Altcraft: keep them in task_state_store; the retry re-attaches to them
            self._report(delivery, context, final=False)
            from altcraft.triggers.task_status import timed_out

            raise AirflowException(timed_out(event, self.task_timeout.total_seconds()))
        try:
            delivery.settle_tasks(_task_book(context), timeout=None)
        except BaseException:
            self._report(delivery, context, final=False)
            raise
        return self._finish(delivery, context)

    # ---------------------------------------------------------------------------------------- set-up

    def _check_rendered(self) -> None:
        """The templated arguments as rendered, checked and normalised (ids, flags, hashes, datetimes). One
        that does not fit fails the task without a retry: a retry renders the same."""
        try:
            values = check.rendered({name: getattr(self, attr) for name, attr in _TEMPLATED.items()})
        except ValueError as error:
            raise AirflowFailException(str(error)) from None
        for name, attr in _TEMPLATED.items():
            setattr(self, attr, values[name])

    def _preflight(self, hook: AltcraftHook) -> int | None:
        """Fail at once, before anything is sent, when the scenario cannot take launches.

        Returns the scenario's database (where uncertain contacts are looked up), if known.
        """
        from altcraft.api.errors import AltcraftApiError

        scenario_id = self.scenario_id
        try:
            scenario = hook.get_scenario(scenario_id)
        except AltcraftApiError as exc:
            if not exc.token_refused:
                raise
            raise AirflowFailException(
                f"Altcraft refused the token of connection {self.altcraft_conn_id!r} ({exc}): put a token "
                "from Settings → Tokens in its API token (password field)"
            ) from None
        if scenario is None:
            raise AirflowFailException(
                f"Altcraft scenario {scenario_id} does not exist or the token of "
                f"connection {self.altcraft_conn_id!r} cannot see it"
            )
        if not scenario.is_active:
            raise AirflowFailException(f"Altcraft scenario {scenario_id} ({scenario.name!r}) is not active")
        if self.db_id is not None and scenario.db_id is not None and self.db_id != scenario.db_id:
            raise AirflowFailException(
                f"Altcraft scenario {scenario_id} works on database {scenario.db_id}, not db_id={self.db_id}"
            )
        self.log.info("Scenario %s %r is active (database %s)", scenario_id, scenario.name, scenario.db_id)
        if scenario.db_id is not None:
            return scenario.db_id
        return self.db_id

    def _delivery(
        self,
        hook: AltcraftHook,
        context: Context,
        window: Window | None,
        window_name: str | None,
        profiles_db_id: int | None = None,
    ) -> Delivery:
        from altcraft.delivery import Delivery
        from altcraft.ledger import Ledger, RunRef
        from altcraft.reconciliation import DEFAULT_GRACE, DEFAULT_MAX_LOOKUPS

        ledger = Ledger.from_conn_id(self.ledger_conn_id)  # None: [altcraft] ledger_conn_id, else SQLite
        hook.get_conn()
        ti = context["ti"]
        run = RunRef.create(
            ti.dag_id,
            ti.task_id,
            ti.run_id,
            ti.try_number,
            (window.start, window.end) if window else None,
            map_index=ti.map_index,
            window_name=window_name,
        )
        return Delivery.create(
            hook,
            ledger,
            run,
            scenario_id=self.scenario_id,
            mapping=self.mapping,
            key_column=self.key_column,
            mode=self.delivery,
            policy=self.relaunch_policy,
            db_id=self.db_id,
            content=self.content,
            skip_triggers=self.skip_triggers,
            skip_invalid_subscriptions=self.skip_invalid_subscriptions,
            detect_geo=self.detect_geo,
            layout=hook.settings.batch_item_layout,
            launch_marker_field=self.launch_marker_field,
            complete_records=self.source is not None and self.source.complete_records,
            source_zone=getattr(self.source, "timezone", None),
            relaunch=self.relaunch,
            resend_uncertain=self.resend_uncertain,
            batch_size=self.batch_size,
            max_request_bytes=self.max_request_bytes,
            dry_run=self.dry_run_mode,
            tasks=_task_book(context),
            only=self.only_contacts,
            profiles_db_id=profiles_db_id,
            reconcile_grace=DEFAULT_GRACE if self.reconcile_grace is None else self.reconcile_grace,
            reconcile_max_lookups=self.reconcile_max_lookups or DEFAULT_MAX_LOOKUPS,
        )

    def _window(self) -> Window | None:
        from altcraft.sources.base import Window

        start, end = self.window_start, self.window_end
        if start is None or end is None:
            return None
        if start == end:
            self.log.warning(
                "The window [%s, %s) is empty: a windowed source reads nothing. A plain cron schedule gives "
                "empty data intervals in Airflow 3; use CronDataIntervalTimetable or an interval.",
                start,
                end,
            )
        return Window(start=start, end=end)

    def _ledger_window_name(self, context: Context) -> str | None:
        """The window's name in the ledger: for a source that ignores the window, the stored position the
        run starts from (`position_window_name`), fixed for its read, so runs starting from one position
        share their launches (overlapping runs, a backfill, a manual run beside a scheduled one, a run
        after one that kept the position) and each new position is a new window; else ``window_name``."""
        if self.source is None or not self.source.ignores_window:
            return self.window_name
        position = self._source(context).start_position()
        name = position_window_name(position)
        self.log.info(
            "Ledger window: %s, the source's stored position %s%s (shared by the runs starting from it)",
            name,
            position,
            f", in place of window_name {self.window_name!r}" if self.window_name else "",
        )
        return name

    def _source(self, context: Context) -> Source:
        from altcraft.sources.python import IterableSource

        if self.source is None:
            return IterableSource(self._contacts(context), key_column=self.key_column)
        if self.state_asset is not None and getattr(self.source, "state", False) is None:
            self.source.state = context["asset_state_store"][self.state_asset]
        return self.source

    def _contacts(self, context: Context) -> Iterable[Mapping[str, Any]]:
        """The records given in ``contacts``; an upstream task's output (an XComArg) is read now. Not a
        template field: Airflow would keep the records, rendered, in its database and show them."""
        contacts = self.contacts
        if isinstance(contacts, XComArg):
            contacts = contacts.resolve(context)
        try:
            return check.records("contacts", contacts)
        except ValueError as error:
            raise AirflowFailException(str(error)) from None

    def _move_source(self, delivery: Delivery, source: Source) -> None:
        """Move the source's position past this try's contacts, only when none of them is left to decide:
        a source keeping a position (a watermark, processed files, a CRM's cursor, webhook deliveries) would
        never read them again, so after a try that fails on them, or one limited to selected contacts, the
        next try or run reads them again and the ledger decides."""
        if delivery.dry_run or self._position_moved:
            return
        why = self._why_keep_position(delivery)
        if why:
            if source.tracks_progress:
                self.log.warning(
                    "%s: the source's position does not move, the next try or run reads them again and the "
                    "ledger decides",
                    why,
                )
            return
        if getattr(source, "state", None) is None:  # keeps nothing (a factory's source: AttributeError)
            source.commit()
        else:
            self._commit_position(delivery, source)
        self._position_moved = source.tracks_progress

    def _commit_position(self, delivery: Delivery, source: Source) -> None:
        """Commit the source's position (a factory's source: its window watermark too) under the ledger's
        lock of the state asset (`Ledger.position_lock`), so that of two runs committing at once the
        later read and set never come between the other's: Airflow's state store has no compare-and-set,
        and the lower position would be set last. The lock is named for the state asset (where none: the
        DAG), which all runs keeping this position share."""
        from altcraft.ledger import PositionLocked

        name = self.state_asset.name if self.state_asset is not None else delivery.run.dag_id
        try:
            with delivery.ledger.position_lock(name):
                source.commit()  # watermarks and processed files move on only after every record was settled
        except PositionLocked as exc:
            raise AirflowException(
                f"Pipeline {delivery.run.dag_id}: {exc}. The next try reads these contacts again and the "
                "ledger skips those launched; if this repeats, look for a run of the pipeline stuck in its "
                "commit (docs/pipelines.md#what-a-run-does)"
            ) from exc

    def _why_keep_position(self, delivery: Delivery) -> str:
        """Why the source's position must stay where it is after this try; empty when it may move."""
        if delivery.only is not None:
            return "This run was limited to selected contacts, and skipped the others it read"
        if delivery.summary.in_flight_elsewhere:
            # another run (an overlapping event run) may yet fail to launch them
            return f"{delivery.summary.in_flight_elsewhere} contact(s) were in flight in another run"
        if any(self._problems(delivery, moved_past=False)):
            return "This try leaves contacts rejected, refused or uncertain beyond the allowed ratios"
        return ""

    # ------------------------------------------------------------------------------------ async mode

    def _wait_for_tasks(self, delivery: Delivery, context: Context, source: Source) -> None:
        from altcraft.triggers.task_status import AltcraftTaskTrigger

        tasks = _task_book(context)
        if not tasks:
            return
        if self.deferrable:
            # the source cannot be moved after the deferral (its position is read in this process): it
            # moves now, before the tasks' outcomes are known
            self._move_source(delivery, source)
            self._report(delivery, context, final=False)
            context["task_state_store"].set(
                _SUMMARY_KEY,
                {
                    **delivery.summary.as_dict(),
                    "reasons": delivery.summary.reasons,
                    _MOVED: self._position_moved,
                    _NAMED: self._named,
                },
            )
            self.defer(
                trigger=AltcraftTaskTrigger(
                    task_ids=list(tasks.values()),
                    altcraft_conn_id=self.altcraft_conn_id,
                    poll_interval=self.poll_interval,
                    timeout=self.task_timeout.total_seconds(),
                ),
                method_name="execute_complete",
                timeout=self.task_timeout,
            )
        delivery.settle_tasks(
            tasks, timeout=self.task_timeout.total_seconds(), poll_interval=self.poll_interval
        )

    # ------------------------------------------------------------------------------------- reporting

    def _finish(self, delivery: Delivery, context: Context) -> dict[str, Any]:
        result = self._report(delivery, context, final=True)
        for outlet in self.outlets:
            if isinstance(outlet, Asset) and outlet.uri.startswith("altcraft://"):
                context["outlet_events"][outlet].extra = {
                    **{k: result[k] for k in _COUNTERS},
                    "scope": result["scope"],
                }
        # A position moved past this try's contacts (only before a deferral, whatever the tasks' outcomes):
        # a retry would read nothing and turn green, so refusals fail the task for good.
        moved_past = self._position_moved
        rejected, failed, uncertain = self._problems(delivery, moved_past=moved_past)
        message = " ".join(m for m in (failed, uncertain, rejected) if m)
        if message and self.source is not None and self.source.tracks_progress and not moved_past:
            message += (
                " This source's position (a watermark, processed files, a CRM's cursor) did not move: a "
                "retry, the next run or this task cleared reads these contacts again, and the ledger skips "
                "those already launched."
            )
        if failed and not moved_past:  # a retry reads the same contacts and sends refused ones again
            raise AirflowException(message)
        if message:
            raise AirflowFailException(message)
        undone = _left_undone(delivery.summary, moved_past=moved_past)
        if undone:  # the last line of a green try's log: it is not a clean one
            self.log.warning(
                "Not a clean run%s: %s", " (dry run, predicted)" if delivery.dry_run else "", undone
            )
        return result

    def _problems(self, delivery: Delivery, *, moved_past: bool) -> tuple[str, str, str]:
        return _problems(
            delivery.summary,
            self.max_rejected_ratio,
            None if delivery.dry_run else self.max_failed_ratio,
            None if delivery.dry_run else self.max_uncertain_ratio,
            moved_past=moved_past,
            reconciling=bool(self.reconcile),
        )

    def _report(self, delivery: Delivery, context: Context, *, final: bool) -> dict[str, Any]:
        """Read the scenario's standing, then push the summary to XCom and log it: every report of a try
        (success, failure, deferral) states the standing as it is after what the try did."""
        self._measure(delivery)
        result = self._publish(delivery, context)
        self._log_summary(delivery, final=final)
        return result

    def _measure(self, delivery: Delivery) -> None:
        """Set the summary's ``scope`` to the scenario's standing in the ledger now; empty (unknown, not
        zero) when the ledger cannot be read. A dry run reads it too: it writes nothing, so it is the
        standing the run found."""
        try:
            delivery.summary.scope = delivery.standing()
        except Exception as exc:  # the summary must still be published
            delivery.summary.scope = {}
            self.log.warning("Could not read the scenario's standing from the ledger: %s", exc)

    def _publish(self, delivery: Delivery, context: Context) -> dict[str, Any]:
        """The try's summary, pushed to XCom whether the try ends well or not."""
        result = {
            **delivery.summary.as_dict(),
            "scenario_id": self.scenario_id,
            "delivery": delivery.mode.value,
            "window": delivery.run.window_key,
        }
        context["ti"].xcom_push(key=SUMMARY_XCOM_KEY, value=result)
        return result

    def _log_summary(self, delivery: Delivery, *, final: bool) -> None:
        title = "Altcraft delivery summary" if final else "Altcraft delivery so far"
        self.log.info("%s (scenario %s):\n%s", title, self.scenario_id, delivery.summary.table())
        if delivery.sample and final:
            self.log.info("Sample (masked):\n  %s", "\n  ".join(delivery.sample))


def _problems(
    summary: Any,
    max_rejected: float,
    max_failed: float | None,
    max_uncertain: float | None,
    *,
    moved_past: bool = False,
    reconciling: bool = False,
) -> tuple[str, str, str]:
    """Why a try is not a clean success: (rejected, failed, uncertain) messages, empty when fine.

    ``reconciling``: the try was asked to reconcile the whole scenario, so the contacts its reconciliation
    left undecided (checked, or not looked up: ``reconciled.deferred``) fail it too when more than
    ``max_uncertain`` of those it met, though none of them was in its own input."""
    rejected = failed = uncertain = ""
    if summary.ratio("rejected") > max_rejected:
        rejected = (
            f"{summary.rejected} of {summary.found} contacts were rejected "
            f"({summary.ratio('rejected'):.1%}), above max_rejected_ratio={max_rejected:.1%}; "
            "all valid contacts were delivered. "
            "Fix the source data or the mapping; reasons are in the log and in altcraft_outcomes."
        )
    if max_failed is not None and summary.failed and summary.ratio("failed") > max_failed:
        failed = (
            f"{summary.failed} contact(s) were refused by Altcraft (failed): they were not launched"
            + (
                ", and this source's position (a watermark, processed files) moved past them before "
                "Altcraft's tasks finished: no retry or later run reads them again unless their records "
                "change."
                if moved_past
                else " and a retry or the next run sends them again."
            )
            + " Reasons are in the log and in altcraft_outcomes; raise max_failed_ratio if such refusals "
            "are expected."
        )
    if max_uncertain is not None and summary.uncertain and summary.ratio("uncertain") > max_uncertain:
        uncertain = (
            f"{summary.uncertain} contact(s) are still uncertain after reconciliation: Altcraft may have "
            "launched them, so they are not resent. Set launch_marker_field so reconciliation can decide, "
            "then run with reconcile=true; or check them in Altcraft and rerun with resend_uncertain=True "
            "(see docs/ledger.md)."
        )
    deferred = summary.reconciled.get("deferred", 0)  # absent from a summary saved by an earlier version
    met, left = sum(summary.reconciled.values()), summary.reconciled["uncertain"]
    too_many = reconciling and max_uncertain is not None and (left + deferred) / (met or 1) > max_uncertain
    if too_many and left:
        undecided = (
            f"{left} of the {met - deferred} uncertain contact(s) this run checked in Altcraft are still "
            "undecided (each one's evidence, or why its profile could not be read, is in the log and in "
            "altcraft_contacts.error_text): they are not resent. Run with reconcile=true again once the "
            "reconciliation grace has passed or Altcraft answers, or check them in Altcraft and rerun with "
            "resend_uncertain=True (see docs/ledger.md)."
        )
        uncertain = f"{uncertain} {undecided}".strip()
    if deferred and (uncertain or too_many):
        uncertain = f"{uncertain} {deferred} {NOT_LOOKED_UP}.".strip()
    return rejected, failed, uncertain


#: What a try's ``reconciled.deferred`` contacts are, after their count.
NOT_LOOKED_UP = (
    "uncertain contact(s) were not looked up in Altcraft, left as they are and not resent: this try "
    "reached its reconcile_max_lookups. A later run with reconcile=true goes on with them, the longest "
    "waiting first (see docs/ledger.md)"
)


def _left_undone(summary: Any, *, moved_past: bool) -> str:
    """What a try that succeeds (its problems within the allowed ratios) left undone, and what to do about
    each; empty when every contact it found was launched or skipped by the ledger's rules."""
    refused_next = (
        "this source's position moved past them, so it does not read them again unless their records change"
        if moved_past
        else "a later run that reads them again sends them"
    )
    parts = (
        (
            summary.rejected,
            "rejected: fix the source data or the mapping (reasons above and in altcraft_outcomes)",
        ),
        (summary.failed, f"refused by Altcraft (failed), not launched: {refused_next}"),
        (
            summary.uncertain,
            "uncertain: Altcraft may have launched them, so they are not resent; run with reconcile=true "
            "(see docs/ledger.md)",
        ),
        (summary.reconciled.get("deferred", 0), NOT_LOOKED_UP),
        (
            summary.in_flight_elsewhere,
            "in flight in another run, skipped: that run's outcome decides them (it is named in the reason "
            "of their skipped outcome in altcraft_outcomes); if it fails to launch them, its retry or a "
            "later run reading them sends them",
        ),
    )
    return "; ".join(f"{count} {what}" for count, what in parts if count)


def scenario_asset(altcraft_conn_id: str, scenario_id: int) -> Asset:
    """The asset standing for one Altcraft scenario on one connection; each run's event carries its counts
    in ``extra``.

    Its name is its URI, ``altcraft://<conn_id>/scenarios/<id>``: Airflow activates an asset only if no
    other active asset has its name or its URI, so the name must be as unique as the URI (one scenario id
    on two connections is two assets), and equal to the name a consumer's ``Asset("altcraft://…")`` gets.
    """
    uri = f"altcraft://{altcraft_conn_id}/scenarios/{scenario_id}"
    return Asset(name=uri, uri=uri)


class _StoredTasks(MutableMapping[str, str]):
    """This task's Altcraft tasks (batch id → task id) in ``task_state_store``, so a later try finds them."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def _tasks(self) -> dict[str, str]:
        return dict(self._store.get(_TASKS_KEY) or {})

    def __getitem__(self, batch_id: str) -> str:
        return self._tasks()[batch_id]

    def __setitem__(self, batch_id: str, task_id: str) -> None:
        self._store.set(_TASKS_KEY, {**self._tasks(), batch_id: task_id})

    def __delitem__(self, batch_id: str) -> None:
        tasks = self._tasks()
        del tasks[batch_id]
        self._store.set(_TASKS_KEY, tasks)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks())

    def __len__(self) -> int:
        return len(self._tasks())


def _read(source: Source, window: Window | None, batch_size: int) -> Iterator[list[dict[str, Any]]]:
    """The source's batches; an error reading them is raised as a `SourceError` naming the source, its text
    with emails and phones masked: a driver's message may quote a row (``invalid input syntax for type
    integer: "anna@..."``). The original is not chained, as its text would be printed in clear; its frames
    are kept. Airflow's own control exceptions (skip, fail without retry, reschedule) pass unchanged."""
    from airflow.sdk.exceptions import AirflowRescheduleException, AirflowSkipException

    from altcraft.masking import scrub
    from altcraft.sources.base import SourceError

    try:
        yield from source.batches(window, batch_size)
    except (AirflowSkipException, AirflowFailException, AirflowRescheduleException):
        raise
    except Exception as exc:
        text, name = scrub(exc), source.describe()
        if not isinstance(exc, SourceError):
            text = f"{name}: {type(exc).__name__}: {text}"
        elif not text.startswith(name):  # a source's own errors mostly name it already
            text = f"{name}: {text}"
        raise SourceError(text).with_traceback(exc.__traceback__) from None


def _identify(delivery: Delivery) -> None:
    """`Delivery.identify`; a mapping keying contacts otherwise than this pipeline did before fails the task
    without retries (a retry would key them the same)."""
    from altcraft.ledger import IdentityChanged

    try:
        delivery.identify()
    except IdentityChanged as error:
        raise AirflowFailException(str(error)) from None


def position_window_name(position: str) -> str:
    """The ledger's name of the window of a run reading past the stored ``position``
    (`Source.start_position`): a short digest of it, a window key being at most
    `altcraft.ledger.model.KEY_LEN` characters."""
    import hashlib

    return POSITION_WINDOW + hashlib.sha256(position.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _task_book(context: Context) -> MutableMapping[str, str]:
    store = context.get("task_state_store")
    return {} if store is None else _StoredTasks(store)
