"""Which window a pipeline run reads: its data interval, a window given when triggering, or the last
complete interval of the schedule for a run triggered without a logical date.

Airflow 3 triggers manual runs without a logical date by default (``airflow dags trigger``, the REST API
with ``logical_date: null``); such a run has no data interval, only ``run_after``. Pure functions: the
``plan`` task calls `run_window`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from altcraft.validation import in_utc_range, iso_datetime

if TYPE_CHECKING:
    from airflow.sdk.bases.timetable import BaseTimetable

HOW_TO_TRIGGER = (
    "Trigger the pipeline without window parameters (the run reads the last complete interval of its "
    "schedule before it starts), with a logical date (the run reads its data interval), or with both "
    "window_start and window_end as ISO 8601 date-times, e.g. "
    '`airflow dags trigger <dag_id> --conf \'{"window_start": "2026-03-01T00:00:00+00:00", '
    '"window_end": "2026-03-02T00:00:00+00:00"}\'`.'
)


class WindowError(ValueError):
    """A run whose window cannot be known; the message says how to trigger it instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}. {HOW_TO_TRIGGER}")


@dataclass(frozen=True)
class Schedule:
    """A pipeline's interval schedule: a cron expression in a time zone, or a fixed interval from ``anchor``.

    A fixed interval that a cron expression can say (``15m``, ``1h``, ``6h``, ``1d``, ``1w`` from the
    start date's minute, hour and weekday) becomes that cron expression, so that every run -- manual ones
    too -- reads whole intervals aligned to the schedule, in the time zone's wall clock.
    """

    timezone: str
    cron: str | None = None
    interval: timedelta | None = None
    anchor: datetime | None = None

    @classmethod
    def of(cls, schedule: str, timezone: str, start: datetime, interval: timedelta | None) -> Schedule:
        """The schedule of a spec: its cron text, or its ``interval`` starting at ``start``."""
        if interval is None:
            return cls(timezone, cron=schedule)
        local = _aware(start, timezone)
        cron = cron_of(interval, local)
        return cls(timezone, cron=cron) if cron else cls(timezone, interval=interval, anchor=local)

    def timetable(self) -> BaseTimetable:
        """Always a data-interval timetable: a run's window is its data interval, never empty."""
        from airflow.sdk import CronDataIntervalTimetable, DeltaDataIntervalTimetable

        if self.cron is not None:
            return CronDataIntervalTimetable(self.cron, timezone=self.timezone)
        assert self.interval is not None
        return DeltaDataIntervalTimetable(self.interval)

    def last_complete(self, moment: datetime) -> tuple[datetime, datetime]:
        """The last whole interval ending at or before ``moment``: for a cron expression Airflow's own
        ``infer_manual_data_interval``, so that across a clock change too it is one of the scheduled
        intervals (wall-clock arithmetic gave an empty window, or one overlapping two intervals); a fixed
        interval counts elapsed time from ``anchor``, as Airflow's delta timetable does."""
        if self.cron is not None:
            import pendulum
            from airflow.timetables.interval import CronDataIntervalTimetable

            timetable = CronDataIntervalTimetable(self.cron, timezone=self.timezone)
            interval = timetable.infer_manual_data_interval(run_after=pendulum.instance(moment))
            return interval.start, interval.end
        assert self.interval is not None and self.anchor is not None
        anchor = self.anchor.astimezone(UTC)
        count = (moment.astimezone(UTC) - anchor) // self.interval
        if count < 1:
            raise WindowError(f"no interval of the schedule ended between {self.anchor} and {moment}")
        end = anchor + count * self.interval
        return end - self.interval, end


def cron_of(interval: timedelta, start: datetime) -> str | None:
    """The cron expression firing every ``interval`` through ``start`` (local time), if there is one."""
    seconds = interval.total_seconds()
    if start.second or start.microsecond or seconds % 60:
        return None
    minutes = int(seconds // 60)
    if minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"{start.minute % minutes}-59/{minutes} * * * *"
    if minutes % 60:
        return None
    hours = minutes // 60
    if hours < 24 and 24 % hours == 0:
        every = "*" if hours == 1 else f"{start.hour % hours}-23/{hours}"
        return f"{start.minute} {every} * * *"
    if hours == 24:
        return f"{start.minute} {start.hour} * * *"
    if hours == 24 * 7:
        return f"{start.minute} {start.hour} * * {start.isoweekday() % 7}"
    return None


def run_window(
    *,
    params: dict[str, Any],
    data_interval: tuple[datetime | None, datetime | None],
    run_after: datetime | None,
    schedule: Schedule,
) -> tuple[datetime, datetime, str]:
    """The window ``[start, end)`` a run reads, and where it came from.

    In order: ``window_start`` and ``window_end`` given when triggering (both or neither); the run's data
    interval; the last complete interval of ``schedule`` before ``run_after``. WindowError otherwise.
    """
    given = {name: params.get(name) for name in ("window_start", "window_end")}
    if any(given.values()):
        if not all(given.values()):
            missing = next(name for name, value in given.items() if not value)
            raise WindowError(f"{missing} is missing: give window_start and window_end together")
        start, end = (_parse(name, value, schedule.timezone) for name, value in given.items())
        if start >= end:
            raise WindowError(f"window_start {start.isoformat()} is not before window_end {end.isoformat()}")
        return start, end, "the window given when triggering"
    if data_interval[0] is not None and data_interval[1] is not None:
        return data_interval[0], data_interval[1], "the run's data interval"
    if run_after is None:
        raise WindowError("this run has neither a data interval nor a run_after time")
    start, end = schedule.last_complete(run_after)
    return start, end, f"no logical date: the last complete interval before {run_after.isoformat()}"


def _parse(name: str, value: Any, timezone: str) -> datetime:
    """Conf key ``name``'s bound: a datetime, or ISO 8601 text as `iso_datetime` reads it (a date alone is
    its midnight); without an offset it is wall-clock time in ``timezone``, refused where a clock change
    makes that time happen twice or never there."""
    try:
        moment = value if isinstance(value, datetime) else iso_datetime(str(value).strip())
    except ValueError as error:
        raise WindowError(f"{name} {value!r} is not an ISO 8601 date or date-time ({error})") from None
    local = _aware(moment, timezone)
    if moment.tzinfo is None and local.utcoffset() != local.replace(fold=1).utcoffset():
        raise WindowError(
            f"{name} {value!r} happens twice or never in {timezone} (a clock change): give its UTC offset"
        )
    if not in_utc_range(local):
        raise WindowError(f"{name} {value!r} is not a time of the years 1 to 9999 in UTC")
    return local


def _aware(moment: datetime, timezone: str) -> datetime:
    """``moment`` in ``timezone`` (a naive one is read as local time there)."""
    zone = ZoneInfo(timezone)
    return moment.astimezone(zone) if moment.tzinfo else moment.replace(tzinfo=zone)
