"""Which window a run reads: given when triggering, its data interval, or the last complete interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from airflow.timetables.interval import CronDataIntervalTimetable as CoreCron
from pendulum import instance

from altcraft.pipelines.window import Schedule, WindowError, cron_of, run_window

DAILY = Schedule("UTC", cron="0 0 * * *")
MOSCOW = ZoneInfo("Europe/Moscow")


@pytest.mark.parametrize(
    ("interval", "start", "cron"),
    [
        (timedelta(minutes=15), datetime(2025, 1, 1, 0, 5), "5-59/15 * * * *"),
        (timedelta(minutes=1), datetime(2025, 1, 1), "* * * * *"),
        (timedelta(hours=1), datetime(2025, 1, 1, 0, 30), "30 * * * *"),
        (timedelta(hours=6), datetime(2025, 1, 1, 8), "0 2-23/6 * * *"),
        (timedelta(days=1), datetime(2025, 1, 1), "0 0 * * *"),
        (timedelta(days=1), datetime(2025, 1, 1, 6, 30), "30 6 * * *"),
        (timedelta(weeks=1), datetime(2025, 1, 1), "0 0 * * 3"),  # a Wednesday
        (timedelta(minutes=7), datetime(2025, 1, 1), None),
        (timedelta(hours=5), datetime(2025, 1, 1), None),
        (timedelta(days=2), datetime(2025, 1, 1), None),
        (timedelta(seconds=90), datetime(2025, 1, 1), None),
        (timedelta(days=1), datetime(2025, 1, 1, 0, 0, 30), None),
    ],
)
def test_an_interval_a_cron_expression_can_say_becomes_it(interval, start, cron):
    assert cron_of(interval, start) == cron


@pytest.mark.parametrize(
    ("cron", "zone", "run_after"),
    [
        ("0 0 * * *", "UTC", datetime(2025, 3, 5, 13, 7, tzinfo=UTC)),
        ("0 0 * * *", "UTC", datetime(2025, 3, 5, 0, 0, tzinfo=UTC)),  # on a boundary
        ("30 6 * * *", "Europe/Moscow", datetime(2025, 3, 5, 2, 0, tzinfo=UTC)),  # 05:00 in Moscow
        ("*/15 * * * *", "UTC", datetime(2025, 3, 5, 13, 7, 12, tzinfo=UTC)),
        ("0 * * * *", "Europe/Moscow", datetime(2025, 3, 5, 13, 7, tzinfo=UTC)),
    ],
)
def test_the_last_complete_interval_is_what_airflow_gives_a_manual_run_with_that_logical_date(
    cron, zone, run_after
):
    expected = CoreCron(cron, zone).infer_manual_data_interval(run_after=instance(run_after))

    assert Schedule(zone, cron=cron).last_complete(run_after) == (expected.start, expected.end)


def test_a_fixed_interval_no_cron_can_say_counts_whole_intervals_from_the_start_date():
    schedule = Schedule.of("5h", "Europe/Moscow", datetime(2025, 1, 1), timedelta(hours=5))
    assert schedule.cron is None and schedule.anchor == datetime(2025, 1, 1, tzinfo=MOSCOW)

    start, end = schedule.last_complete(datetime(2025, 1, 1, 12, 0, tzinfo=MOSCOW))

    assert (start, end) == (datetime(2025, 1, 1, 5, tzinfo=MOSCOW), datetime(2025, 1, 1, 10, tzinfo=MOSCOW))
    with pytest.raises(WindowError, match="no interval of the schedule ended"):
        schedule.last_complete(datetime(2025, 1, 1, 4, tzinfo=MOSCOW))


def test_a_window_given_when_triggering_wins_and_a_naive_one_is_in_the_schedules_zone():
    start, end, origin = run_window(
        params={"window_start": "2025-03-01", "window_end": "2025-03-02T12:00:00+00:00"},
        data_interval=(datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)),
        run_after=datetime(2025, 3, 5, tzinfo=UTC),
        schedule=Schedule("Europe/Moscow", cron="0 0 * * *"),
    )

    assert (start, end) == (datetime(2025, 3, 1, tzinfo=MOSCOW), datetime(2025, 3, 2, 12, tzinfo=UTC))
    assert origin == "the window given when triggering"


def test_the_data_interval_comes_next_then_the_last_complete_interval_before_run_after():
    interval = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC))
    run_after = datetime(2025, 3, 5, 13, tzinfo=UTC)

    assert run_window(params={}, data_interval=interval, run_after=run_after, schedule=DAILY)[:2] == interval
    start, end, origin = run_window(
        params={}, data_interval=(None, None), run_after=run_after, schedule=DAILY
    )
    assert (start, end) == (datetime(2025, 3, 4, tzinfo=UTC), datetime(2025, 3, 5, tzinfo=UTC))
    assert origin.startswith("no logical date: the last complete interval before 2025-03-05T13:00:00")


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"window_start": "2025-03-01T00:00:00+00:00"}, "window_end is missing"),
        ({"window_end": "2025-03-01T00:00:00+00:00", "window_start": None}, "window_start is missing"),
        (
            {"window_start": "yesterday", "window_end": "2025-03-01T00:00:00+00:00"},
            "'yesterday' is not an ISO",
        ),
        ({"window_start": "2025-03-02", "window_end": "2025-03-01"}, "is not before window_end"),
    ],
)
def test_a_window_that_cannot_be_read_says_how_to_trigger_the_run(params, reason):
    with pytest.raises(WindowError) as raised:
        run_window(params=params, data_interval=(None, None), run_after=datetime.now(UTC), schedule=DAILY)

    assert reason in str(raised.value)
    assert "Trigger the pipeline without window parameters" in str(raised.value)


@pytest.mark.parametrize(
    ("given", "instant"),
    [
        (
            "2025-03-01+03:00",
            datetime(2025, 2, 28, 21, tzinfo=UTC),
        ),  # a date with an offset: its midnight there
        ("2025-03-01Z", datetime(2025, 3, 1, tzinfo=UTC)),  # ... in UTC, not the schedule's zone
        (" 2025-03-01T10:00+0300 ", datetime(2025, 3, 1, 7, tzinfo=UTC)),  # pasted with spaces
    ],
)
def test_a_triggered_window_bound_in_any_iso_form_is_the_instant_it_names(given, instant):
    """``datetime.fromisoformat`` of Python 3.11 read a date with an offset as that many hours, naive (in
    the schedule's zone): ``2025-03-01+03:00`` was 03:00 Moscow, ``2025-03-01Z`` midnight in Moscow."""
    start, _, _ = run_window(
        params={"window_start": given, "window_end": "2025-03-05T00:00+00:00"},
        data_interval=(None, None),
        run_after=None,
        schedule=Schedule("Europe/Moscow", cron="0 0 * * *"),
    )
    assert start == instant


@pytest.mark.parametrize(
    ("given", "zone", "reason"),
    [
        ("2025-03-01x05:00", "UTC", "window_end '2025-03-01x05:00' is not an ISO 8601 date or date-time ("),
        (
            "2025-03-01T24:00",
            "UTC",
            "window_end '2025-03-01T24:00' is not an ISO 8601 date or date-time (hour",
        ),
        ("2025-02-30", "UTC", "window_end '2025-02-30' is not an ISO 8601 date or date-time (day is out of"),
        (
            "2026-03-29T02:30",
            "Europe/Berlin",
            "window_end '2026-03-29T02:30' happens twice or never in Europe/",
        ),
        (
            "2026-10-25T02:30",
            "Europe/Berlin",
            "window_end '2026-10-25T02:30' happens twice or never in Europe/",
        ),
        (  # past 9999 in UTC: an OverflowError when the window was made
            "9999-12-31T23:00",
            "America/New_York",
            "window_end '9999-12-31T23:00' is not a time of the years 1 to 9999 in UTC",
        ),
    ],
)
def test_a_triggered_window_bound_read_no_single_way_is_refused_naming_the_key_and_why(given, zone, reason):
    """Accepted and misread before (a letter between date and time; a wall-clock time the zone skips or
    repeats, silently taken as one of two instants or one that never was), or refused without a reason
    (24:00, February 30)."""
    with pytest.raises(WindowError) as refused:
        run_window(
            params={"window_start": "2025-01-01T00:00+00:00", "window_end": given},
            data_interval=(None, None),
            run_after=None,
            schedule=Schedule(zone, cron="0 0 * * *"),
        )
    assert reason in str(refused.value)


@pytest.mark.parametrize(
    ("cron", "zone", "day"),
    [
        ("0 * * * *", "Europe/Berlin", datetime(2026, 3, 29, tzinfo=UTC)),  # spring: 02:00 -> 03:00
        ("*/15 * * * *", "Europe/Berlin", datetime(2026, 10, 25, tzinfo=UTC)),  # autumn: 02:00-03:00 twice
        ("0 * * * *", "America/New_York", datetime(2026, 11, 1, 3, tzinfo=UTC)),
        ("30 1 * * *", "America/New_York", datetime(2026, 11, 1, 3, tzinfo=UTC)),  # 01:30 happens twice
        ("30 2 * * *", "Europe/Berlin", datetime(2026, 3, 29, tzinfo=UTC)),  # 02:30 does not happen
    ],
)
def test_across_a_daylight_saving_change_the_last_complete_interval_is_airflows(cron, zone, day):
    """Every 5 minutes through a day with a clock change: the window of a run without a logical date is the
    interval Airflow's own timetable gives (main gave an empty window, or one overlapping two scheduled
    intervals)."""
    core = CoreCron(cron, zone)
    for step in range(0, 30 * 60, 5):
        run_after = day + timedelta(minutes=step, seconds=step % 2)
        expected = core.infer_manual_data_interval(run_after=instance(run_after))

        start, end = Schedule(zone, cron=cron).last_complete(run_after)

        # compared in UTC: Python never finds a local time in a gap or a fold equal to one of another zone
        assert (start.astimezone(UTC), end.astimezone(UTC)) == (expected.start, expected.end), run_after


def test_a_fixed_interval_counts_whole_intervals_of_elapsed_time_across_a_clock_change():
    """A fixed interval's intervals are elapsed time from the start date, as Airflow's delta timetable
    counts them, not wall-clock time (which a clock change moves by an hour)."""
    schedule = Schedule.of("5h", "Europe/Berlin", datetime(2026, 3, 28), timedelta(hours=5))
    anchor = datetime(2026, 3, 28, tzinfo=ZoneInfo("Europe/Berlin"))

    start, end = schedule.last_complete(datetime(2026, 3, 30, 12, tzinfo=UTC))

    assert end - start == timedelta(hours=5)
    assert (end.astimezone(UTC) - anchor.astimezone(UTC)) % timedelta(hours=5) == timedelta(0)
    assert end <= datetime(2026, 3, 30, 12, tzinfo=UTC) < end + timedelta(hours=5)
