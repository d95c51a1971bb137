"""What a finished ``workflows/import_and_start_batch_task`` says about each contact.

The docs are silent on this task's ``result``. ``tasks/status`` is documented once, for the profile export
task: ``{"data": {"status": "completed", "progress": 100, "result": {"errors": [], "source_id": 1,
"total": 1343, "type": "database", "urls": [...]}}, "error": 0, ...}`` (developer-guide/profiles/3115796;
another version of the page writes the terminal status ``success``). So the result may hold

1. a per-profile list (our reading; under ``result``, ``results`` or ``profiles``) — used one to one when
   it has exactly one entry per contact sent;
2. only counts (``total``, ``errors``) — every contact launched **only** when the task succeeded, ``total``
   equals the number sent and ``errors`` is empty or 0; anything else cannot say who entered the scenario;
3. nothing — unknown.

Cases 2 and 3 that do not prove success give :class:`TaskVerdict` ``uncertain`` with a reason saying
exactly why; the caller records every contact as uncertain with that reason and logs it as an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from altcraft.api.models import ProfileResult, TaskState, TaskStatus

_LIST_KEYS = ("result", "results", "profiles")
_ERROR_KEYS = ("errors", "error_count", "failed")


@dataclass(frozen=True, slots=True)
class TaskVerdict:
    """``results``: one per contact, in order; else ``all_launched`` or ``uncertain`` with ``reason``."""

    results: list[ProfileResult] | None = None
    all_launched: bool = False
    reason: str = ""

    @property
    def uncertain(self) -> bool:
        return self.results is None and not self.all_launched


def task_verdict(status: TaskStatus, sent: int) -> TaskVerdict:
    """Judge a terminal task that was sent ``sent`` contacts."""
    where = f"Altcraft task {status.task_id} ended {status.status!r}"
    if status.state is not TaskState.SUCCEEDED:
        return TaskVerdict(reason=f"{where}: it may have launched some contacts before it stopped")
    result = status.result
    items = _per_profile(result)
    if items is not None:
        if len(items) == sent:
            return TaskVerdict(results=items)
        return TaskVerdict(reason=f"{where} with {len(items)} per-contact result(s) for {sent} sent")
    if not isinstance(result, dict):
        return TaskVerdict(reason=f"{where} without a result: nothing says which contacts were launched")
    total, errors = _count(result.get("total")), _errors(result)
    if total == sent and errors == 0:
        return TaskVerdict(all_launched=True)
    counts = ", ".join(f"{k}={result[k]!r}" for k in ("total", *_ERROR_KEYS) if k in result) or "no counts"
    return TaskVerdict(
        reason=f"{where} without per-contact results ({counts} for {sent} sent): "
        "the counts do not prove that every contact was launched"
    )


def _per_profile(result: Any) -> list[ProfileResult] | None:
    items = result
    if isinstance(result, dict):
        items = next((result[k] for k in _LIST_KEYS if isinstance(result.get(k), list)), None)
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        return None
    return [ProfileResult.model_validate(item) for item in items]


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _errors(result: dict[str, Any]) -> int | None:
    """How many errors the counts report: 0 only when every error key present says none."""
    seen = 0
    for key in _ERROR_KEYS:
        if key not in result:
            continue
        value = result[key]
        number = len(value) if isinstance(value, list) else _count(value)
        if number is None:
            return None
        seen += number
    return seen
