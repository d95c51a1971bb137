"""What a finished ``workflows/import_and_start_batch_task`` says about each contact.

The docs are silent on this task's ``result``. ``tasks/status`` is documented once, for the profile export
task: ``{"data": {"status": "completed", "progress": 100, "result": {"errors": [], "source_id": 1,
"total": 1343, "type": "database", "urls": [...]}}, "error": 0, ...}`` (developer-guide/profiles/3115796;
another version of the page writes the terminal status ``success``). So the result may hold

1. a per-profile list (our reading; under ``result``, ``results`` or ``profiles``) — used one to one when
   it has exactly one entry per contact sent and no entry names another contact than the one sent at its
   position (`altcraft.api.result_identity`);
2. only counts (``total``, ``errors``) — every contact launched **only** when the task succeeded, ``total``
   equals the number sent and ``errors`` is there and empty or 0; anything else (no error count at all
   included) cannot say who entered the scenario;
3. nothing — unknown.

Cases 2 and 3 that do not prove success give :class:`TaskVerdict` ``uncertain`` with a reason saying
exactly why; the caller records every contact as uncertain with that reason and logs it as an error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from altcraft.api.models import ProfileResult, TaskState, TaskStatus
from altcraft.api.result_identity import keys_misattributed

_LIST_KEYS = ("result", "results", "profiles")
#: keys that count errors: ``errors`` (documented, a list), and any other naming errors or failures
#: (``error_count``, ``failed``, ``failed_count``, ...): each must say none for the counts to prove success
_ERROR_KEY = re.compile(r"error|fail", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class TaskVerdict:
    """``results``: one per contact, in order; else ``all_launched`` or ``uncertain`` with ``reason``."""

    results: list[ProfileResult] | None = None
    all_launched: bool = False
    reason: str = ""

    @property
    def uncertain(self) -> bool:
        return self.results is None and not self.all_launched


def task_verdict(status: TaskStatus, keys: Sequence[str]) -> TaskVerdict:
    """Judge a terminal task that was sent the contacts of ``keys`` (ledger keys, in request order)."""
    sent = len(keys)
    where = f"Altcraft task {status.task_id} ended {status.status!r}"
    if status.state is not TaskState.SUCCEEDED:
        return TaskVerdict(reason=f"{where}: it may have launched some contacts before it stopped")
    result = status.result
    try:
        items = _per_profile(result)
    except ValidationError as error:
        places = ", ".join(".".join(map(str, e["loc"])) for e in error.errors()[:3])
        return TaskVerdict(reason=f"{where} with per-contact results that cannot be read ({places})")
    except ValueError as error:
        return TaskVerdict(reason=f"{where} with per-contact results that cannot be read ({error})")
    if items is not None:
        if len(items) != sent:
            return TaskVerdict(reason=f"{where} with {len(items)} per-contact result(s) for {sent} sent")
        why = keys_misattributed(keys, _listed(result))
        if why is not None:
            return TaskVerdict(reason=f"{where} with per-contact results out of order ({why})")
        return TaskVerdict(results=items)
    if not isinstance(result, dict):
        return TaskVerdict(reason=f"{where} without a result: nothing says which contacts were launched")
    total, errors = _count(result.get("total")), _errors(result)
    if total == sent and errors == 0:
        return TaskVerdict(all_launched=True)
    counts = [f"{k}={_shown(v)}" for k, v in result.items() if k == "total" or _ERROR_KEY.search(str(k))]
    return TaskVerdict(
        reason=f"{where} without per-contact results ({', '.join(counts) or 'no counts'} for {sent} sent): "
        "the counts do not prove that every contact was launched"
    )


def _per_profile(result: Any) -> list[ProfileResult] | None:
    """The per-contact results, or None when the result holds no list of them.

    :raises ValueError: a list is there but an entry is not an object; ValidationError: an entry is not a
        result (e.g. no ``error`` code). Either way no entry may be read as success, nor the counts beside.
    """
    items = _listed(result)
    if items is None:
        return None
    if not all(isinstance(item, dict) for item in items):
        raise ValueError("an entry is not an object")
    return [ProfileResult.model_validate(item) for item in items]


def _listed(result: Any) -> list[Any] | None:
    """The raw per-contact list of a task result: the result itself, or under one of `_LIST_KEYS`."""
    if isinstance(result, dict):
        return next((result[k] for k in _LIST_KEYS if isinstance(result.get(k), list)), None)
    return result if isinstance(result, list) else None


def _shown(value: Any) -> str:
    """A count as the reason shows it: a number, a list's length, else the kind (a list of errors may name
    contacts; the reason goes to logs and the ledger)."""
    if isinstance(value, list):
        return f"[{len(value)} item(s)]"
    number = _count(value)
    return str(number) if number is not None else type(value).__name__


def _count(value: Any) -> int | None:
    """A whole number given as an int, an integral float or decimal text; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _errors(result: dict[str, Any]) -> int | None:
    """How many errors the counts report: 0 only when an error key is present and every one present says
    none; None when none is present (no count of errors is no proof of none) or one cannot be read."""
    present = [value for key, value in result.items() if _ERROR_KEY.search(str(key))]
    if not present:
        return None
    seen = 0
    for value in present:
        number = len(value) if isinstance(value, list) else _count(value)
        if number is None:
            return None
        seen += number
    return seen
