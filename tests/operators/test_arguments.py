"""The operator's arguments, wrong as a DAG author gets them wrong: refused when the DAG is parsed, naming
the argument (a templated one once rendered: tests/operators/test_operator.py)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from airflow.sdk import Asset

from altcraft.operators import arguments as check
from altcraft.operators.import_and_launch import ImportAndLaunchScenarioOperator, scenario_asset
from altcraft.sources.files import FileSource
from altcraft.sources.python import IterableSource
from altcraft.sources.rest import RestSource
from altcraft.sources.sql import SqlQuerySource, SqlTableSource
from altcraft.sources.webhook import WebhookSource

from .conftest import EMAIL_MAPPING

LOOKING_BACK = SqlTableSource("crm", "c", key_column="id", watermark_column="id", lookback=1000)
GIVEN = {"task_id": "t", "scenario_id": 1, "mapping": EMAIL_MAPPING, "contacts": [], "key_column": "id"}


@pytest.mark.parametrize(
    ("wrong", "message"),
    [
        ({"scenario_id": "abc"}, "`scenario_id` must be a positive integer id, got 'abc'"),
        ({"scenario_id": 1.5}, "`scenario_id` must be a positive integer id, got 1.5"),
        ({"scenario_id": True}, "`scenario_id` must be a positive integer id, got True"),
        ({"db_id": 0}, "`db_id` must be a positive integer id, got 0"),
        ({"batch_size": "100"}, "`batch_size` must be a whole number between 1 and 10000, got '100'"),
        ({"batch_size": 10.5}, "`batch_size` must be a whole number between 1 and 10000, got 10.5"),
        ({"max_request_bytes": 0}, "`max_request_bytes` must be a whole number between 1 and"),
        ({"max_rejected_ratio": "0.1"}, "`max_rejected_ratio` must be a number at least 0 and at most 1"),
        ({"max_failed_ratio": float("nan")}, "`max_failed_ratio` must be a number at least 0 and at most 1"),
        ({"poll_interval": 0}, "`poll_interval` must be a number above 0 and at most 86400, got 0"),
        ({"task_timeout": "6h"}, "`task_timeout` must be seconds or a timedelta, above zero"),
        ({"task_timeout": timedelta(0)}, "`task_timeout` must be seconds or a timedelta, above zero"),
        (
            {"task_timeout": 10**12},
            "above zero and at most 366 days, got 1000000000000",
        ),
        (
            {"reconcile_grace": -1},
            "`reconcile_grace` must be seconds or a timedelta, not negative and at most 366 days, got -1 s",
        ),
        ({"reconcile_grace": "10m"}, "`reconcile_grace` must be seconds or a timedelta, not negative"),
        (
            {"reconcile_max_lookups": 0},
            "`reconcile_max_lookups` must be a whole number between 1 and 1000000000, got 0",
        ),
        ({"reconcile_max_lookups": "10"}, "`reconcile_max_lookups` must be a whole number between 1 and"),
        ({"dry_run": "ture"}, "`dry_run` must be true or false, got 'ture'"),
        ({"relaunch": 2}, "`relaunch` must be true or false, got 2"),
        ({"deferrable": "no"}, "`deferrable` must be True or False, got 'no'"),
        ({"allow_undocumented_matching": "yes"}, "`allow_undocumented_matching` must be True or False"),
        ({"detect_geo": "no"}, "`detect_geo` must be True or False or None, got 'no'"),
        ({"only_contacts": ["abc"]}, "`only_contacts` must be a list of ledger contact hashes"),
        ({"window_start": "yesterday"}, "`window_start` must be an ISO 8601 date and time, got 'yesterday'"),
        (
            {"window_end": "2026-03-01T00:00:00"},
            "`window_end` must have a time zone",
        ),
        (  # before year 1 in UTC: an OverflowError when the task made its window
            {"window_start": "0001-01-01T00:00:00+03:00"},
            "`window_start` must be a time of the years 1 to 9999 in UTC, got 0001-01-01T00:00:00+03:00",
        ),
        ({"content": ["a", "b"]}, "`content` must be a mapping of names to values, got list"),
        ({"contacts": "anna@example.org"}, "`contacts` must be a list (or another iterable) of records"),
        ({"contacts": {"id": 1}}, "`contacts` must be a list (or another iterable) of records"),
        ({"altcraft_conn_id": ""}, "`altcraft_conn_id` must be a non-empty text, got ''"),
        ({"ledger_conn_id": 5}, "`ledger_conn_id` must be a non-empty text, got 5"),
        ({"launch_marker_field": ""}, "`launch_marker_field` must be a non-empty text, got ''"),
        ({"state_asset": Asset("x")}, "`state_asset` keeps a source's position between runs"),
        ({"mapping": None}, "`mapping` is not a valid profile mapping"),
        (
            {"contacts": None, "source": IterableSource([], key_column="id"), "key_column": "email"},
            "`key_column` 'email' differs from the source's key column 'id': give it on the source only",
        ),
        (  # a quiet table keeps the margin over the same rows: every run would launch them again
            {"contacts": None, "source": LOOKING_BACK, "relaunch_policy": "cooldown:30d"},
            "`relaunch_policy` cooldown:30d with the source's `lookback` 1000: each run reads again the rows "
            "within lookback below the watermark",
        ),
    ],
)
def test_a_wrong_argument_is_refused_at_parse_time_naming_it(wrong, message):
    with pytest.raises(ValueError) as refused:
        ImportAndLaunchScenarioOperator(**{**GIVEN, **wrong})
    assert message in str(refused.value)


def test_a_sql_watermarks_lookback_is_taken_under_relaunch_policy_once():
    operator = ImportAndLaunchScenarioOperator(**{**GIVEN, "contacts": None, "source": LOOKING_BACK})

    assert (operator.relaunch_policy, operator.source.lookback) == ("once", 1000)


def test_a_window_bound_with_an_offset_after_a_date_is_that_dates_midnight_there():
    """Python 3.11's ``fromisoformat`` read ``2026-03-01+03:00`` as 03:00 with no zone: refused as zoneless,
    and ``2026-03-01x05:00`` was taken for 05:00 (refused as zoneless too, for the wrong reason)."""
    rendered = check.rendered({"window_start": "2026-03-01+03:00"})  # as a task renders it when it runs
    assert rendered["window_start"] == datetime(2026, 3, 1, tzinfo=timezone(timedelta(hours=3)))
    with pytest.raises(ValueError, match="`window_end` must be an ISO 8601 date and time"):
        ImportAndLaunchScenarioOperator(**{**GIVEN, "window_end": "2026-03-01x05:00+03:00"})


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, None), (30, timedelta(seconds=30)), (0.5, timedelta(seconds=0.5)), (timedelta(0), timedelta(0))],
)
def test_reconcile_grace_is_seconds_or_a_timedelta(given, expected):
    operator = ImportAndLaunchScenarioOperator(**GIVEN, reconcile_grace=given)
    assert operator.reconcile_grace == expected


def test_a_scenario_id_given_as_its_digits_is_that_scenario_with_its_asset():
    operator = ImportAndLaunchScenarioOperator(**{**GIVEN, "scenario_id": "42"})
    assert operator.scenario_id == 42
    assert [outlet.uri for outlet in operator.outlets] == ["altcraft://altcraft_default/scenarios/42"]


def test_the_scenario_asset_is_named_by_its_uri_one_per_connection_and_scenario():
    prod, stage = scenario_asset("altcraft_prod", 5), scenario_asset("altcraft_stage", 5)

    # what a consumer DAG declares with the documented URI: same name, same URI
    assert prod == Asset("altcraft://altcraft_prod/scenarios/5")
    assert (prod.name, prod.uri) == ("altcraft://altcraft_prod/scenarios/5",) * 2
    assert prod.name != stage.name and prod.uri != stage.uri  # Airflow needs both unique to activate both
    operator = ImportAndLaunchScenarioOperator(
        **{**GIVEN, "altcraft_conn_id": "altcraft_stage", "scenario_id": 5}
    )
    assert operator.outlets == [stage]


def test_an_upstream_tasks_output_in_a_templated_argument_is_checked_once_resolved():
    from airflow.sdk import DAG, task

    with DAG("arguments_from_upstream", schedule=None):

        @task(multiple_outputs=True)
        def settings() -> dict:
            return {"scenario_id": 7, "dry_run": True}

        given = settings()
        operator = ImportAndLaunchScenarioOperator(
            **{**GIVEN, "scenario_id": given["scenario_id"], "dry_run": given["dry_run"]}
        )
    assert operator.upstream_task_ids == {"settings"}


def test_templated_arguments_are_checked_once_rendered():
    operator = ImportAndLaunchScenarioOperator(
        **{**GIVEN, "scenario_id": "{{ params.scenario }}", "dry_run": "{{ params.dry_run }}"}
    )
    assert (operator.scenario_id, operator.dry_run_mode) == ("{{ params.scenario }}", "{{ params.dry_run }}")


#: A mapping writing date-times in Moscow that reads the source's ``paid``.
MOSCOW_PAID = {
    **EMAIL_MAPPING,
    "timezone": "Europe/Moscow",
    "fields": {"_regdate": {"source": "paid", "type": "datetime"}},
}


@pytest.mark.parametrize(
    ("source", "refused"),
    [
        (lambda: SqlQuerySource("crm", "SELECT 1 AS id", key_column="id"), True),
        (lambda: SqlTableSource("crm", "c", key_column="id", watermark_column="w"), True),
        (lambda: FileSource("/x", key_column="id", timestamp_column="at"), True),
        (lambda: RestSource("api", "/contacts", key_column="id"), True),
        (lambda: SqlQuerySource("crm", "SELECT 1 AS id", key_column="id", timezone="UTC"), False),
        (lambda: FileSource("/x", key_column="id", timestamp_column="at", timezone="Europe/Moscow"), False),
        (lambda: IterableSource([], key_column="id"), False),  # no zone of its own: the mapping's
        (lambda: WebhookSource("hook", key_column="id"), False),
    ],
)
def test_a_mapping_zone_over_a_source_of_naive_times_given_none_is_refused_naming_both(source, refused):
    """Every source of naive times (SQL, file, REST) given no timezone reads them as UTC: a mapping naming
    another zone and reading a date-time from it is refused when the DAG is parsed; a source naming its
    zone, and one with no zone (Python, webhook, CRM: its naive values are the mapping's), are not."""
    arguments = {**GIVEN, "contacts": None, "source": source(), "mapping": MOSCOW_PAID}
    if refused:
        with pytest.raises(ValueError, match="the `timezone` of `source` is not set while the `timezone` of"):
            ImportAndLaunchScenarioOperator(**arguments)
    else:
        assert ImportAndLaunchScenarioOperator(**arguments).mapping.timezone == "Europe/Moscow"
