"""The page's actions as DAG runs: which params, which window, and what to tell the person first.

An action never acts itself: the browser sends the body built here to Airflow's own REST API
(``POST /api/v2/dags/{dag_id}/dagRuns``), so Airflow checks the permission, writes the audit log and
keeps the run in its history. The new run covers the same data interval as the run it starts from; a
source that keeps a position between runs ignores it and reads past its position (`KEEPS_POSITION`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Action(StrEnum):
    RECONCILE = "reconcile"
    RESEND_UNCERTAIN = "resend_uncertain"
    RELAUNCH_SELECTED = "relaunch_selected"
    DRY_RUN = "dry_run"


#: The pipeline DAG's params each action sets (docs/pipelines.md).
PARAMS: dict[Action, dict[str, bool]] = {
    Action.RECONCILE: {"reconcile": True},
    Action.RESEND_UNCERTAIN: {"resend_uncertain": True},
    Action.RELAUNCH_SELECTED: {"relaunch": True},
    Action.DRY_RUN: {"dry_run": True},
}
#: Conf key of the contacts an action is limited to (their ledger hashes, never their keys in clear).
SELECTED_CONF_KEY = "contact_hashes"
MAX_SELECTED = 1000
#: Why a run without a data interval (no logical date, or started by an event) gets no action.
NO_WINDOW = (
    "this run has no data interval (it has no logical date, or an event started it), so a new run cannot be "
    "given its window: trigger the DAG with window_start and window_end instead"
)

#: The actions that must read the run's contacts again to send them.
REREADING = frozenset({Action.RESEND_UNCERTAIN, Action.RELAUNCH_SELECTED})
#: Why a pipeline whose source keeps a position gets no action in `REREADING`.
KEEPS_POSITION = (
    "the pipeline's source keeps a position between runs (a watermark, the files it processed, a CRM cursor "
    "or the webhook deliveries it read) and reads only records past it, not this run's window: a new run "
    "would read none of this run's contacts, so it would resend or relaunch none of them. Reconcile now "
    "still checks the uncertain contacts in Altcraft; a contact is sent again only when the source reads "
    "its record again (for a watermark, once its watermark column moves past the position)"
)


@dataclass(frozen=True)
class Plan:
    """What the confirmation says and what is posted to Airflow."""

    action: Action
    dag_id: str
    people: int
    message: str
    body: dict[str, Any]


def plan(
    action: Action,
    *,
    dag_id: str,
    run_id: str,
    interval: tuple[datetime | None, datetime | None],
    people: int,
    selected: Collection[str] = (),
    keeps_position: bool = False,
    now: datetime | None = None,
) -> Plan:
    """The DAG run body for ``action`` on the window of run ``run_id``; ``people``: who may get messages.

    The new run's logical date is now (a DAG has one run per logical date); its data interval is the
    original run's, so the pipeline reads the same window. A run without a data interval is refused: the
    new run would get the interval Airflow infers for now, another window than the one confirmed. With
    ``keeps_position`` (the source reads past its position, not the window) the actions in `REREADING` are
    refused: they would reach none of the run's contacts.
    """
    start, end = interval
    if start is None or end is None:
        raise ValueError(NO_WINDOW)
    if keeps_position and action in REREADING:
        raise ValueError(KEEPS_POSITION)
    if action is Action.RELAUNCH_SELECTED and not selected:
        raise ValueError("select the contacts to relaunch first")
    if len(selected) > MAX_SELECTED:
        raise ValueError(f"select at most {MAX_SELECTED} contacts at once")
    conf: dict[str, Any] = dict(PARAMS[action])
    if selected:
        conf[SELECTED_CONF_KEY] = sorted(selected)
    body: dict[str, Any] = {
        "logical_date": (now or datetime.now(UTC)).isoformat(),
        "data_interval_start": start.isoformat(),
        "data_interval_end": end.isoformat(),
        "conf": conf,
        "note": f"Altcraft UI: {action.value.replace('_', ' ')} for run {run_id}",
    }
    message = _message(action, dag_id, people, bool(selected), keeps_position=keeps_position)
    return Plan(action, dag_id, people, message, body)


def _message(action: Action, dag_id: str, people: int, selected: bool, *, keeps_position: bool) -> str:
    """The confirmation: who may get the scenario's messages. A run without selected contacts delivers its
    whole window, so contacts new to it may be sent too, whom the ledger cannot count; a source keeping a
    position delivers only records past it, none of the run's."""
    who = f"{people} {'person' if people == 1 else 'people'}"
    if action is Action.DRY_RUN and keeps_position:
        return (
            f"Start a dry run of {dag_id}? Its source reads only records past its position, not this run's "
            "window. Nothing is sent and nothing is written, the position included."
        )
    if action is Action.DRY_RUN:
        return f"Start a dry run of {dag_id} over this window? Nothing is sent and nothing is written."
    if keeps_position:  # reconciling: `plan` refused the actions that must read the run's contacts again
        return (
            f"Start a reconciliation run of {dag_id}? Its uncertain contacts, and those of dead claims, are "
            "first checked in Altcraft, none resent. Its source then reads only records past its position, "
            "not this run's window: none of this run's contacts is sent again, only contacts new to the "
            "source may get the scenario's messages."
        )
    if action is Action.RELAUNCH_SELECTED:
        return f"Relaunch the selected contacts? {who} will get the scenario's messages again."
    if action is Action.RESEND_UNCERTAIN and selected:
        return (
            f"Resend the selected uncertain contacts? Up to {who} may get the scenario's messages, "
            "possibly a second time if Altcraft had launched them after all."
        )
    if action is Action.RESEND_UNCERTAIN:
        return (
            f"Resend the uncertain contacts of this window? The run delivers the window again: up to {who} "
            "of this run (uncertain ones, possibly a second time if Altcraft had launched them after all, "
            "and failed ones) and any contact new to the window may get the scenario's messages."
        )
    return (
        f"Start a reconciliation run of {dag_id} over this window? Its uncertain contacts, and those of "
        "dead claims, are first checked in Altcraft, none resent; then the window is delivered as a "
        f"scheduled run would: up to {who} of this run (failed ones, and uncertain ones Altcraft never "
        "received) and any contact new to the window may get the scenario's messages."
    )
