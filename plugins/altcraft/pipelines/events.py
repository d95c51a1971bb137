"""Event-driven runs: the event asset, its watermark, and the window of a run without a data interval.

A pipeline with ``trigger:`` is scheduled on its *event asset* ``altcraft-pipeline://<id>/events``, watched
by `altcraft.triggers.new_rows.NewRowsTrigger` in the triggerer. The asset's state store holds the
pipeline's progress, shared by the trigger and the tasks:

* ``window:watermark`` -- where the next event run's window starts: the end of the last successful
  window that covered it (ISO 8601, UTC). The trigger sets it when it first starts.
* ``webhook:positions`` -- the last stored webhook delivery a run handled, per ledger database, by where
  it is (`altcraft.sources.webhook.position_key`); ``webhook:last_id``, the last one alone, as earlier
  versions kept it.
* ``webhook:watched`` / ``webhook:stored`` -- where the watcher watches, and the API server stores, the
  deliveries (`altcraft.sources.webhook.placement`), which a worker checks before reading.
* ``trigger:seen`` -- what the trigger last fired for, so it fires once per change, not once per poll.

Asset-triggered (and manual) runs have no data interval; their window is ``[watermark, now)`` (the plan
applies ``lookback``, as for a scheduled window). Scheduled runs keep their data interval.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Asset

WATERMARK_KEY = "window:watermark"
SEEN_KEY = "trigger:seen"


def event_asset(
    dag_id: str, *, extra: dict[str, Any] | None = None, watchers: list[Any] | None = None
) -> Asset:
    """The asset a triggered pipeline is scheduled on and keeps its progress in.

    ``extra`` must be the same wherever the asset appears (Airflow keeps one ``extra`` per asset).
    """
    return Asset(
        name=f"altcraft_pipeline_{dag_id}_events",
        uri=f"altcraft-pipeline://{dag_id}/events",
        extra=extra or {},
        watchers=watchers or [],
    )


def event_window_start(watermark: Any, fallback: datetime) -> datetime:
    """Where a run without a data interval starts reading: the stored watermark, else ``fallback``."""
    return datetime.fromisoformat(watermark) if isinstance(watermark, str) else fallback


def advanced_watermark(current: Any, start: datetime, end: datetime) -> str | None:
    """The new watermark after the window ``[start, end)`` was handled, or None if it does not move.

    It moves to ``end`` only when the window covers it (``start <= watermark < end``), so a scheduled
    window in the past or one that leaves a gap never skips rows an event run has not read.
    """
    if current is None:
        return end.astimezone(UTC).isoformat()
    mark = datetime.fromisoformat(current)
    return end.astimezone(UTC).isoformat() if start <= mark < end else None
