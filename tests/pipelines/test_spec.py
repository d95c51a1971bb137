"""The YAML spec: every example validates; every broken spec gives one error naming its file, line, field."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from types import NoneType
from typing import get_args

import pytest
import yaml
from pydantic import ValidationError

from altcraft.pipelines import PipelineSpec, SpecError, read_spec
from altcraft.pipelines.docs import spec_models
from altcraft.pipelines.factory import build_dag
from altcraft.pipelines.spec import MAX_DURATION, field_line, parse_duration
from altcraft.spec_checks import MAX_BYTES, MAX_INT32, MAX_INT64, MAX_LOOKUPS, MAX_TIMEOUT_SECONDS
from tests.pipelines.conftest import BROKEN, EXAMPLES

# file -> (line, field, words of the message)
BROKEN_EXPECTED = {
    "bad_yaml.yaml": (20, "invalid YAML", "flow mapping started on line 19"),
    "cron_seconds.yaml": (4, "schedule", "Airflow reads a sixth as seconds"),
    "duplicate_key.yaml": (19, "invalid YAML", "'schedule' is given twice"),
    "injected_id.yaml": (2, "id", "is not a valid DAG id"),
    "injected_table.yaml": (16, "source.table", "is not a plain SQL identifier"),
    "missing_connection.yaml": (13, "source.conn_id", "required field is missing"),
    "pool_slots_overflow.yaml": (17, "pool_slots", "less than or equal to 2147483647"),
    "rest_credentials.yaml": (14, "source.endpoint", "a URL with a user name or password"),
    "unknown_field.yaml": (19, "retry", "unknown field (did you mean 'retries'?)"),
    "watermark_partitions.yaml": (19, "partitions", "partitions must be 1"),
    "wrong_type.yaml": (19, "delivery.batch_size", "valid integer"),
}

MINIMAL = {
    "id": "minimal",
    "schedule": "1d",
    "timezone": "UTC",
    "start_date": "2025-01-01",
    "source": {
        "type": "sql_table",
        "conn_id": "crm",
        "table": "contacts",
        "key_column": "id",
        "created_at_column": "created_at",
    },
    "mapping": {"matching": "email", "key": {"email": "email"}},
    "scenario": {"id": 12},
}


def spec_with(**changes: object) -> PipelineSpec:
    return PipelineSpec.model_validate({**MINIMAL, **changes})


def error_of(**changes: object) -> str:
    with pytest.raises(ValidationError) as failure:
        spec_with(**changes)
    return str(failure.value)


def file_error_of(tmp_path: Path, **changes: object) -> SpecError:
    """What `read_spec` says of MINIMAL with ``changes``, written as a YAML file."""
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, **changes}, sort_keys=False))
    error = read_spec(path)
    assert isinstance(error, SpecError), error
    return error


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(path: Path):
    spec = read_spec(path)

    assert isinstance(spec, PipelineSpec), spec
    assert spec.id == path.stem
    assert spec.scenario.id == 12 and spec.scenario.db_id == 1
    assert {"CRM_ID", "LOYALTY"} <= set(spec.mapping.fields)


def test_the_examples_cover_every_source_kind_and_the_demo():
    specs = {path.stem: read_spec(path) for path in EXAMPLES}

    assert {spec.source.type for spec in specs.values()} == {
        *("sql_table", "sql_query", "file", "rest"),
        *("amocrm", "bitrix24", "hubspot"),
    }
    assert {spec.source.conn_id for spec in specs.values() if spec.source.type.startswith("sql")} == {
        "crm_postgres",
        "crm_mysql",
        "demo_crm",
    }
    assert specs["welcome_rest_crm"].source.http_conn_id == "crm_api"
    assert specs["demo_sqlite_welcome"].source.conn_id == "demo_crm"
    crm = {n: spec for n, spec in specs.items() if spec.source.type in ("amocrm", "bitrix24", "hubspot")}
    assert {spec.source.conn_id for spec in crm.values()} == {"crm_amocrm", "crm_bitrix24", "crm_hubspot"}
    for spec in crm.values():  # the preset's key and names, with the example's own fields laid over it
        assert spec.mapping.key == {"email": "email"} and spec.mapping.fields["_fname"].source == "first_name"
    assert specs["welcome_hubspot"].source.webhook.endpoint == "welcome_hubspot"


def test_the_broken_fixtures_are_exactly_the_expected_ones():
    assert sorted(p.name for p in BROKEN.glob("*.yaml")) == sorted(BROKEN_EXPECTED)


@pytest.mark.parametrize("name", sorted(BROKEN_EXPECTED))
def test_a_broken_spec_is_one_error_naming_file_line_and_field(name: str):
    line, field, words = BROKEN_EXPECTED[name]

    error = read_spec(BROKEN / name)

    assert isinstance(error, SpecError)
    assert error.path == BROKEN / name
    assert error.line == line
    text = str(error)
    assert text.startswith(f"Pipeline spec {name} is invalid:")
    assert f"line {line}, " in text
    assert f"{field}: " in text
    assert words in text
    last = field.rpartition(".")[2]
    assert f"{field}: {last}: " not in text, "a check that names its field is not prefixed twice"


def test_several_faults_are_all_listed_in_file_order(tmp_path: Path):
    path = tmp_path / "two_faults.yaml"
    path.write_text("id: two_faults\nschedule: sometimes\ntimezone: Mars/Olympus\nstart_date: 2025-01-01\n")

    error = read_spec(path)

    lines = str(error).splitlines()[1:]
    assert [line.split(":")[0].strip() for line in lines[:2]] == ["line 2, schedule", "line 3, timezone"]
    assert any("source: required field is missing" in line for line in lines)
    assert error.line == 2


def test_a_file_that_is_not_a_mapping_is_an_error(tmp_path: Path):
    path = tmp_path / "list.yaml"
    path.write_text("- id: a\n- id: b\n")

    assert "must hold a mapping" in str(read_spec(path))


@pytest.mark.parametrize(
    ("name", "content", "said"),
    [
        ("empty.yaml", b"", "  the file holds no spec: it is empty, or only comments"),
        ("comments.yaml", b"# id: draft\n", "  the file holds no spec: it is empty, or only comments"),
        (
            "latin1.yaml",
            b"id: a\ndescription: caf\xe9\n",
            "  line 2: not UTF-8 text (byte 0xe9); save the file as UTF-8",
        ),
        (
            "broken.json",
            b'{"id": "a",\n}',
            "  line 2, column 1: invalid JSON: Expecting property name enclosed in double quotes",
        ),
        ("twice.json", b'{"id": "a", "id": "b"}', "  invalid JSON: 'id' is given twice in one object"),
    ],
)
def test_a_file_that_holds_no_readable_spec_is_an_error_saying_why(
    tmp_path: Path, name: str, content: bytes, said: str
):
    path = tmp_path / name
    path.write_bytes(content)

    assert str(read_spec(path)) == f"Pipeline spec {name} is invalid:\n{said}"


def test_a_json_spec_is_read_as_json(tmp_path: Path):
    """As YAML, the escaped emoji ``json.dumps`` writes is an error and ``1e1`` a string, not 10; as
    plain JSON, a byte order mark is an error."""
    data = {**MINIMAL, "description": "Welcome \N{WAVING HAND SIGN}", "retries": 1}
    path = tmp_path / "Welcome.JSON"
    text = json.dumps(data, indent="\t").replace('"retries": 1', '"retries": 1e1')
    path.write_text(text, encoding="utf-8-sig")  # with the byte order mark Windows editors write

    spec = read_spec(path)

    assert isinstance(spec, PipelineSpec), str(spec)
    assert (spec.description, spec.retries) == ("Welcome \N{WAVING HAND SIGN}", 10)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2025-02-30", "'2025-02-30' as timestamp: day is out of range for month"),
        ("2025-13-01", "as timestamp: month must be in 1..12"),
        ("2025-01-01 25:00:00", "as timestamp: hour must be in 0..23"),
        ("!!timestamp soon", "'soon' as timestamp"),
        ("!!int abc", "'abc' as int"),
        ("!!float abc", "'abc' as float"),
        ("!!bool maybe", "'maybe' as bool"),
        ("!!map [1]", "cannot read a sequence as map"),
        ("9" * 5000, "as int: Exceeds the limit"),
        ("1" + ":59" * 200 + ".5", "as float: int too large to convert to float"),
    ],
)
def test_a_value_yaml_cannot_build_is_an_error_at_its_line(tmp_path: Path, value: str, words: str):
    # PyYAML's constructors raise plain ValueError, TypeError, KeyError, OverflowError for these
    path = tmp_path / "bad_value.yaml"
    path.write_text(f"id: bad_value\ntimezone: UTC\nstart_date: {value}\n")

    error = read_spec(path)

    assert isinstance(error, SpecError), error
    assert error.line == 3 and "line 3, column 13: invalid YAML: cannot read " in error.message, error.message
    assert words in error.message, error.message


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ("0123", "octal number 83"),
        ("-007", "octal number -7"),
        ("9:30", "sexagesimal number 570"),
        ("1:30.5", "sexagesimal number 90.5"),
    ],
)
def test_a_number_yaml_11_reads_unlike_its_text_is_an_error_at_its_line(
    tmp_path: Path, value: str, number: str
):
    """YAML 1.1 reads 0123 as octal and 9:30 as base 60: a constant agent code 0123 was sent as "83", a
    constant time 9:30 as "570" (and a resource_id: 010 would have been 8)."""
    path = tmp_path / "numbers.yaml"
    spec = {**MINIMAL, "mapping": {**MINIMAL["mapping"], "fields": {"CODE": {"const": "PLACEHOLDER"}}}}
    text = yaml.safe_dump(spec, sort_keys=False)
    path.write_text(text.replace("PLACEHOLDER", value))

    error = read_spec(path)

    assert isinstance(error, SpecError), error
    assert (
        f"invalid YAML: YAML reads {value} as the {number}: quote it ('{value}') or write the number"
        in error.message
    )
    assert error.line == text.splitlines().index("      const: PLACEHOLDER") + 1, error.message


@pytest.mark.parametrize(
    ("field", "value", "read_as"),
    [
        ("id", "true", "true or false"),
        ("description", "2025-01-01", "a date or time (an unquoted 2025-01-01 is read so)"),
        ("owner", "1_000", "a number"),
        ("tags", "[false]", "true or false"),
        ("tags", "[NULL]", "null (an unquoted null, Null, NULL or ~ is read so)"),
    ],
)
def test_text_yaml_reads_as_another_type_is_an_error_saying_to_quote_it(
    tmp_path: Path, field: str, value: str, read_as: str
):
    """``id: true``, ``tags: [false]``, ``description: 2025-01-01``: "Input should be a valid string" named
    the field but not why, to someone who wrote text there."""
    path = tmp_path / "text.yaml"
    path.write_text(
        yaml.safe_dump({**MINIMAL, field: "PLACEHOLDER"}, sort_keys=False).replace("PLACEHOLDER", value)
    )

    error = read_spec(path)

    assert isinstance(error, SpecError), error
    assert f"Input should be a valid string, got {read_as}: quote it" in error.message, error.message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("'0123'", "0123"), ("0", "0"), ("1_000", "1000"), ("0x1F", "31"), ("-0.5", "-0.5")],
)
def test_numbers_written_as_yaml_reads_them_load(tmp_path: Path, value: str, expected: str):
    path = tmp_path / "numbers.yaml"
    spec = {**MINIMAL, "mapping": {**MINIMAL["mapping"], "fields": {"CODE": {"const": "PLACEHOLDER"}}}}
    path.write_text(yaml.safe_dump(spec, sort_keys=False).replace("PLACEHOLDER", value))

    spec = read_spec(path)

    assert isinstance(spec, PipelineSpec), spec
    assert str(spec.mapping.fields["CODE"].const) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
    ],
)
def test_durations(text: str, expected: timedelta):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["0m", "1.5h", "1y", "h", "-1d", ""])
def test_bad_durations(text: str):
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("schedule", "interval"),
    [
        ("0 6 * * *", None),
        ("@daily", None),
        ("*/15 * * * 1-5", None),
        ("15m", timedelta(minutes=15)),
        ("1d", timedelta(days=1)),
    ],
)
def test_schedules_are_cron_or_interval(schedule: str, interval: timedelta | None):
    assert spec_with(schedule=schedule).schedule_interval == interval


@pytest.mark.parametrize(
    "schedule", ["@once", "0 25 * * *", "daily", "* * *", "None", "1 h", "0 0 6 * * * 2030"]
)
def test_bad_schedules(schedule: str):
    assert "schedule\n" in error_of(schedule=schedule)


@pytest.mark.parametrize("schedule", ["*/5 * * * * *", "0 0 6 * * *", "0 6 * * * 0"])
def test_a_six_field_cron_is_refused_as_seconds_airflow_would_run_every_second(schedule: str):
    message = error_of(schedule=schedule)

    assert "schedule\n" in message and "has five fields" in message and "a sixth as seconds" in message


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("schedule", "999999w", "must be at most 366 days"),
        ("schedule", "53w", "must be at most 366 days"),
        ("retry_delay", "999999w", "must be at most 366 days"),
        ("lookback", "367d", "must be at most 366 days"),
        ("trigger", {"type": "poll", "interval": "999999w"}, "must be at most 366 days"),
        ("schedule", "0 0 31 2 *", "never fires"),
        ("schedule", "0 0 31 4,6,9,11 *", "never fires"),
        ("start_date", "0001-01-01", "the year must be from 1970 to 2999, got 1"),
        ("start_date", "9999-12-31T23:00:00", "the year must be from 1970 to 2999, got 9999"),
        ("end_date", "3000-01-01", "the year must be from 1970 to 2999, got 3000"),
    ],
)
def test_values_that_would_overflow_or_never_run_are_field_errors(field: str, value: object, words: str):
    # each built a DAG that failed to build without naming the field, never ran, or overflowed at run time
    message = error_of(**{field: value})

    assert f"\n{field}" in message and words in message, message


REST = {"type": "rest", "http_conn_id": "api", "endpoint": "v1/contacts", "key_column": "id"}
GRACE = int(MAX_DURATION.total_seconds())


def test_every_integer_field_of_a_spec_has_an_upper_bound():
    # pool_slots: 10**23 loaded, then every run failed to be created (SQLite INTEGER / PostgreSQL int4)
    integers = [
        (model, name, field)
        for model in spec_models()
        for name, field in model.model_fields.items()
        if {kind for kind in get_args(field.annotation) or (field.annotation,) if kind is not NoneType}
        == {int}
    ]
    unbounded = [
        f"{model.__name__}.{name}"
        for model, name, field in integers
        if not any(getattr(item, "le", None) is not None for item in field.metadata)
    ]

    assert len(integers) > 20 and unbounded == []


@pytest.mark.parametrize(
    ("changes", "field", "largest"),
    [
        ({"pool_slots": 10**23}, ("pool_slots",), MAX_INT32),
        ({"scenario": {"id": 10**30}}, ("scenario", "id"), MAX_INT64),
        ({"scenario": {"id": 12, "db_id": 2**63}}, ("scenario", "db_id"), MAX_INT64),
        (
            {"scenario": {"id": 12, "reconcile_grace_seconds": 10**30}},
            ("scenario", "reconcile_grace_seconds"),
            GRACE,
        ),
        (
            {"scenario": {"id": 12, "reconcile_max_lookups": 10**30}},
            ("scenario", "reconcile_max_lookups"),
            MAX_LOOKUPS,
        ),
        (
            {"mapping": {**MINIMAL["mapping"], "max_field_chars": 10**30}},
            ("mapping", "max_field_chars"),
            MAX_BYTES,
        ),
        (
            {"mapping": {**MINIMAL["mapping"], "max_profile_bytes": 10**30}},
            ("mapping", "max_profile_bytes"),
            MAX_BYTES,
        ),
        ({"mapping": {**MINIMAL["mapping"], "resource_id": 10**30}}, ("mapping", "resource_id"), MAX_INT64),
        ({"delivery": {"max_request_bytes": 10**30}}, ("delivery", "max_request_bytes"), MAX_BYTES),
        ({"source": {**REST, "max_answer_bytes": 10**30}}, ("source", "max_answer_bytes"), MAX_BYTES),
        ({"source": {**REST, "timeout": 1e10}}, ("source", "timeout"), MAX_TIMEOUT_SECONDS),
        (
            {"source": {**REST, "paginator": {"type": "offset", "limit": 2**31}}},
            ("source", "paginator", "limit"),
            MAX_INT32,
        ),
        (
            {"source": {"type": "hubspot", "conn_id": "crm", "timeout": 1e30}},
            ("source", "timeout"),
            MAX_TIMEOUT_SECONDS,
        ),
    ],
)
def test_a_number_beyond_where_it_goes_is_an_error_naming_its_line_and_field(
    tmp_path: Path, changes: dict, field: tuple[str, ...], largest: int
):
    error = file_error_of(tmp_path, **changes)

    line = field_line(error.path, field)
    assert line is not None and error.line == line
    assert f"  line {line}, {'.'.join(field)}: " in error.message, error.message
    assert f"less than or equal to {largest}" in error.message, error.message


WITHOUT_CREATED_AT = {name: value for name, value in MINIMAL["source"].items() if name != "created_at_column"}


@pytest.mark.parametrize(
    ("changes", "field", "meant"),
    [
        (
            {"source": {**WITHOUT_CREATED_AT, "created_at_colum": "created_at"}},
            "source.created_at_colum",
            "created_at_column",
        ),
        ({"delivery": {"bach_size": 100}}, "delivery.bach_size", "batch_size"),
        ({"scenario": {"id": 12, "dbid": 1}}, "scenario.dbid", "db_id"),
        (
            {"mapping": {**MINIMAL["mapping"], "fields": {"CRM_ID": {"source": "id", "typ": "string"}}}},
            "mapping.fields.CRM_ID.typ",
            "type",
        ),
        (
            {"mapping": {**MINIMAL["mapping"], "subscriptions": [{"chanel": "email", "email": "email"}]}},
            "mapping.subscriptions.0.chanel",
            "channel",
        ),
        ({"source": {"type": "hubspot", "conn_id": "crm", "mdoe": "watermark"}}, "source.mdoe", "mode"),
        ({"trigger": {"type": "poll", "intervl": "5s"}}, "trigger.intervl", "interval"),
        ({"on_failure": {"callback": "a.b:c", "kwarg": {}}}, "on_failure.kwarg", "kwargs"),
    ],
)
def test_a_misspelt_field_at_any_depth_names_the_field_meant(
    tmp_path: Path, changes: dict, field: str, meant: str
):
    """A typo in a nested field name (``source.created_at_colum``) names the field of that block it is
    close to, as one at the top does (broken_specs/unknown_field.yaml); only a top-level typo did."""
    error = file_error_of(tmp_path, **changes)

    assert f"{field}: unknown field (did you mean {meant!r}?)" in error.message, error.message


def test_a_misspelt_field_given_beside_its_right_spelling_gets_no_suggestion(tmp_path: Path):
    error = file_error_of(tmp_path, delivery={"batch_size": 100, "bach_size": 100})

    assert error.message.endswith("delivery.bach_size: unknown field"), error.message


def test_the_largest_numbers_still_build_a_dag():
    spec = spec_with(
        pool_slots=MAX_INT32,
        scenario={
            "id": MAX_INT64,
            "db_id": MAX_INT64,
            "reconcile_grace_seconds": GRACE,
            "reconcile_max_lookups": MAX_LOOKUPS,
        },
        mapping={**MINIMAL["mapping"], "max_field_chars": MAX_BYTES, "max_profile_bytes": MAX_BYTES},
        delivery={"max_request_bytes": MAX_BYTES},
    )

    assert build_dag(spec).get_task("import_and_launch").partial_kwargs["pool_slots"] == MAX_INT32


def test_a_crm_request_rate_near_zero_is_refused():
    # the wait between two requests (1 / rate) overflowed the sleep
    assert "source.hubspot.requests_per_second\n" in error_of(
        source={"type": "hubspot", "conn_id": "crm", "requests_per_second": 1e-300}
    )


SECRET = "s3cretpass"
FILES = {"type": "file", "path": "/in", "key_column": "id", "window_by": "mtime"}
PYTHON = {"type": "python", "callable": "crm.read:contacts", "key_column": "id"}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        (
            {"source": {**REST, "endpoint": f"https://user:{SECRET}@crm.example.org/v1"}},
            "source.endpoint",
            "URL",
        ),
        ({"source": {**REST, "endpoint": f"https://{SECRET}@crm.example.org/v1"}}, "source.endpoint", "URL"),
        (
            {"source": {**REST, "headers": {"Authorization": f"Bearer {SECRET}"}}},
            "source.headers",
            "'Authorization'",
        ),
        (
            {"source": {**REST, "headers": {"X-API-Key": SECRET, "Cookie": SECRET}}},
            "source.headers",
            "'Cookie'",
        ),
        ({"source": {**REST, "params": {"api_key": SECRET}}}, "source.params", "'api_key'"),
        ({"source": {**REST, "endpoint": f"v1/contacts?api_key={SECRET}"}}, "source.endpoint", "'api_key'"),
        (
            {"source": {**REST, "endpoint": f"https://crm.example.org/v1?a=1&access_token={SECRET}"}},
            "source.endpoint",
            "'access_token'",
        ),
        ({"source": {**REST, "params": {"accessToken": SECRET}}}, "source.params", "'accessToken'"),
        (
            {"source": {**REST, "params": {"next": {"url": f"https://u:{SECRET}@x.org"}}}},
            "source.params",
            "next.url",
        ),
        ({"source": {**FILES, "path": f"s3://AKIA:{SECRET}@bucket/in/"}}, "source.path", "URL"),
        (
            {"source": {**PYTHON, "kwargs": {"dsn": [f"postgresql://app:{SECRET}@db/crm"]}}},
            "source.kwargs",
            "dsn[0]",
        ),
        (
            {"on_failure": {"callback": "a.b:c", "kwargs": {"to": f"https://h:{SECRET}@hook"}}},
            "on_failure.kwargs",
            "at to",
        ),
        ({"source": {**PYTHON, "kwargs": {"password": SECRET}}}, "source.kwargs", "'password'"),
        (
            {"on_failure": {"notifier": "a.b:C", "kwargs": {"to": "ops", "slack_token": SECRET}}},
            "on_failure.kwargs",
            "'slack_token'",
        ),
        ({"description": f"see https://admin:{SECRET}@wiki.example.org"}, "description", "URL"),
        # names of well-known API key headers and parameters that loaded and were served with the DAG
        (
            {"source": {**REST, "headers": {"X-Auth-Email": "ops@example.org", "X-Auth-Key": SECRET}}},
            "source.headers",
            "'X-Auth-Key'",
        ),
        (
            {"source": {**REST, "headers": {"Ocp-Apim-Subscription-Key": SECRET}}},
            "source.headers",
            "'Ocp-Apim-Subscription-Key'",
        ),
        ({"source": {**REST, "headers": {"X-Master-Key": SECRET}}}, "source.headers", "'X-Master-Key'"),
        ({"source": {**REST, "params": {"jwt": SECRET}}}, "source.params", "'jwt'"),
        ({"source": {**REST, "params": {"user": "api", "pass": SECRET}}}, "source.params", "'pass'"),
        ({"source": {**PYTHON, "kwargs": {"app_key": SECRET}}}, "source.kwargs", "'app_key'"),
        # a key inside a value names its credential as well: it was loaded and served with the DAG
        (
            {"source": {**PYTHON, "kwargs": {"db": {"host": "crm", "password": SECRET}}}},
            "source.kwargs",
            "'db.password'",
        ),
        (
            {"source": {**REST, "params": {"filter": [{"api_key": SECRET}]}}},
            "source.params",
            "'filter[0].api_key'",
        ),
        (
            {"on_failure": {"notifier": "a.b:C", "kwargs": {"slack": {"token": SECRET}}}},
            "on_failure.kwargs",
            "'slack.token'",
        ),
    ],
)
def test_a_credential_in_a_spec_is_refused_naming_its_field_never_shown(
    tmp_path: Path, changes: dict, field: str, words: str
):
    # a spec's values are stored with the serialized DAG, which the UI and the REST API serve
    error = file_error_of(tmp_path, **changes)

    line = field_line(error.path, tuple(field.split(".")))
    assert f"  line {line}, {field}: " in error.message and words in error.message, error.message
    assert "connection" in error.message and SECRET not in error.message


def test_a_rest_source_keeps_headers_params_and_urls_that_carry_no_credential():
    source = {
        **REST,
        "endpoint": "https://crm.example.org/v1/contacts?owner=sales@example.org",
        "headers": {"Accept": "application/json", "X-Tenant": "acme"},
        "params": {
            "email": "a@example.org",
            "sort": "created",
            "author": "me",
            "next": "https://x.org/p?a=b@c",
            "page_token": "",  # a cursor, not a credential
            "nextToken": "",
            "sort_key": "created",  # a key that opens nothing
            "keyword": "vip",
            "passport_country": "RU",
        },
    }

    spec = spec_with(source=source)

    assert spec.source.headers == source["headers"] and spec.source.params == source["params"]


@pytest.mark.parametrize(
    ("changes", "value", "words"),
    [
        ({"source": {**REST, "params": {"country": "PLACEHOLDER"}}}, "NO", "reads NO as false"),
        ({"source": {**PYTHON, "kwargs": {"vip": "PLACEHOLDER"}}}, "on", "reads on as true"),
        ({"catchup": "PLACEHOLDER"}, "yes", "reads yes as true: quote it ('yes') for text, or write true"),
        ({"dry_run": "PLACEHOLDER"}, "Off", "reads Off as false"),
    ],
)
def test_a_boolean_yaml_11_reads_from_a_word_is_an_error_at_its_line(
    tmp_path: Path, changes: dict, value: str, words: str
):
    """YAML 1.1 reads yes, no, on, off as booleans: ``params: {country: NO}`` (Norway) loaded and every
    request asked for ``country=False``; ``kwargs: {vip: on}`` gave the function True."""
    path = tmp_path / "words.yaml"
    text = yaml.safe_dump({**MINIMAL, **changes}, sort_keys=False)
    path.write_text(text.replace("PLACEHOLDER", value))

    error = read_spec(path)

    assert isinstance(error, SpecError), error
    assert f"invalid YAML: YAML 1.1 {words}" in error.message, error.message
    assert error.line == next(n for n, line in enumerate(text.splitlines(), 1) if "PLACEHOLDER" in line)


FREE_VALUES = {
    "source.params": {"source": {**REST, "method": "POST", "params": {"list": "PLACEHOLDER"}}},
    "source.kwargs": {"source": {**PYTHON, "kwargs": {"list": "PLACEHOLDER"}}},
    "on_failure.kwargs": {"on_failure": {"callback": "a.b:c", "kwargs": {"list": "PLACEHOLDER"}}},
}


@pytest.mark.parametrize("field", FREE_VALUES)
@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2025-01-01", "a date or time (at list): YAML reads an unquoted 2025-01-01 as one, not as text"),
        ("2025-01-01T10:00:00Z", "a date or time (at list): "),
        ("[a, 2025-01-01 10:00:00]", "a date or time (at list[1]): "),
        ("{since: .inf}", "not a finite number (at list.since): "),
        (".nan", "not a finite number (at list): "),
        ("!!set {a, b}", "a set (at list): not JSON data"),
        ("!!binary aGk=", "a bytes (at list): not JSON data"),
        ("{1: a}", "a key that is not text (at list): quote it"),
    ],
)
def test_a_free_value_that_is_no_json_data_is_an_error_at_its_line(
    tmp_path: Path, field: str, value: str, words: str
):
    """REST params, python and notifier kwargs are JSON data: a POST sends them as a JSON body, and the
    triggerer's watcher rebuilds the source from its JSON. A YAML timestamp loaded: a POST failed every run
    ("Object of type datetime is not JSON serializable"), a GET sent ``2025-01-01 10:00:00+00:00`` where
    the watcher sent ``2025-01-01T10:00:00Z``, and ``.inf`` was sent by one and dropped by the other."""
    path = tmp_path / "free.yaml"
    text = yaml.safe_dump({**MINIMAL, **FREE_VALUES[field]}, sort_keys=False).replace("PLACEHOLDER", value)
    path.write_text(text.replace(f"'{value}'", value))

    error = read_spec(path)

    assert isinstance(error, SpecError), error
    line = field_line(path, tuple(field.split(".")))
    assert f"  line {line}, {field}: " in error.message and words in error.message, error.message


def test_free_values_of_json_data_load_and_survive_the_watchers_json():
    params = {"since": "2025-01-01", "limit": 10, "ratio": 0.5, "vip": True, "none": None, "ids": [1, "a"]}
    source = {**REST, "params": params, "window_params": {"start": "from", "end": "to"}}

    spec = spec_with(source=source, trigger={"type": "poll"})

    assert spec.source.params == params
    assert type(spec.source).model_validate(spec.source.model_dump(mode="json", by_alias=True)) == spec.source


def test_keyword_arguments_naming_a_connection_are_no_credentials():
    """A connection id is where a credential belongs: ``password_conn_id`` names one, it holds none."""
    kwargs = {"crm_conn_id": "crm", "token_conn_id": "vault", "secret_connection_id": "s"}

    spec = spec_with(source={**PYTHON, "kwargs": kwargs}, on_failure={"callback": "a.b:c", "kwargs": kwargs})

    assert spec.source.kwargs == kwargs and spec.on_failure.kwargs == kwargs


def test_the_longest_values_still_build():
    spec = spec_with(schedule="52w", retry_delay="366d", lookback="366d", start_date="1970-01-01")

    assert spec.schedule_interval == timedelta(weeks=52)
    assert spec_with(schedule="0 0 29 2 *", end_date="2999-12-31").schedule == "0 0 29 2 *"


def test_dates_are_read_in_the_spec_timezone_later():
    spec = spec_with(start_date="2025-03-01", end_date="2025-03-02T12:00:00")

    assert spec.start_date == datetime(2025, 3, 1)
    assert spec.end_date == datetime(2025, 3, 2, 12)
    assert "end_date\n  Value error, must be after start_date" in error_of(
        start_date="2025-03-02", end_date="2025-03-01"
    )


def test_timezone_is_explicit_and_real():
    without = {name: value for name, value in MINIMAL.items() if name != "timezone"}
    with pytest.raises(ValidationError) as failure:
        PipelineSpec.model_validate(without)

    assert [(e["loc"], e["type"]) for e in failure.value.errors()] == [(("timezone",), "missing")]
    assert "unknown time zone" in error_of(timezone="Europe/Atlantis")


@pytest.mark.parametrize("zone", ["America", "Etc", "x" * 300])
def test_a_folder_of_zones_or_an_overlong_name_is_a_timezone_error(zone: str):
    # ZoneInfo raises IsADirectoryError / OSError for these, which pydantic does not turn into an error
    assert "timezone\n" in error_of(timezone=zone)
    assert "source.sql_table.timezone\n" in error_of(source={**MINIMAL["source"], "timezone": zone})


@pytest.mark.parametrize("zone", ["America", "Etc", "x" * 5000, "Europe/Atlantis"])
@pytest.mark.parametrize("block", ["source", "mapping"])
def test_every_timezone_of_a_spec_is_one_check_naming_its_line_and_field(
    tmp_path: Path, block: str, zone: str
):
    # mapping.timezone had its own check, which let ZoneInfo's OSError escape: no field, an internal path
    error = file_error_of(tmp_path, **{block: {**MINIMAL[block], "timezone": zone}})

    line = field_line(error.path, (block, "timezone"))
    assert line is not None and error.line == line
    assert error.message.startswith(f"  line {line}, {block}.timezone: unknown time zone "), error.message
    assert "cannot read the spec" not in error.message and "zoneinfo" not in error.message
    assert len(error.message) < 200


def test_identifiers_cannot_carry_injection():
    assert "not a valid DAG id" in error_of(id="a b")
    assert "not a valid DAG id" in error_of(id="1st")
    assert "not a valid connection id" in error_of(altcraft_conn_id="x; rm -rf /")
    assert "not a valid connection id" in error_of(ledger_conn_id="")
    assert "not a valid pool name" in error_of(pool="pool with spaces")
    assert "not a valid tag" in error_of(tags=["<script>"])
    assert "control characters" in error_of(description="line\x07bell")


def test_relaunch_policy_is_checked_and_normalised():
    assert spec_with(relaunch_policy="cooldown:720h").relaunch_policy == "cooldown:30d"
    assert "relaunch_policy" in error_of(relaunch_policy="twice")
    # past the cap, or past what timedelta holds (it raised OverflowError, which pydantic passes on)
    for policy in ("cooldown:36501d", "cooldown:99999999999d", "cooldown:9999999999999999999999h"):
        assert "relaunch_policy\n" in error_of(relaunch_policy=policy)
    assert spec_with(relaunch_policy="cooldown:36500d").relaunch_policy == "cooldown:36500d"


def test_read_spec_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def fail(data: object) -> None:
        raise RuntimeError("a check nobody foresaw")

    monkeypatch.setattr(PipelineSpec, "model_validate", fail)
    path = tmp_path / "odd.yaml"
    path.write_text("id: odd\n")

    assert str(read_spec(path)) == (
        "Pipeline spec odd.yaml is invalid:\n  cannot read the spec: RuntimeError: a check nobody foresaw"
    )


def test_partitions_need_a_source_that_reads_the_window():
    no_window_query = {"type": "sql_query", "conn_id": "crm", "sql": "SELECT id FROM t", "key_column": "id"}
    no_window_rest = {"type": "rest", "http_conn_id": "api", "endpoint": "v1/c", "key_column": "id"}

    assert spec_with(partitions=4).partitions == 4
    assert "cannot be split in time" in error_of(partitions=2, source=no_window_query)
    assert "cannot be split in time" in error_of(partitions=2, source=no_window_rest)
    assert spec_with(partitions=1, source=no_window_query).partitions == 1


def test_files_windowed_by_column_cannot_be_split():
    files = {"type": "file", "path": "/in", "key_column": "id", "timestamp_column": "at"}

    assert "with window_by column, partitions must be 1" in error_of(partitions=2, source=files)
    assert spec_with(partitions=2, source={**files, "window_by": "mtime"}).partitions == 2


def test_watermark_sources_take_neither_partitions_nor_the_pipelines_lookback():
    watermark = {**MINIMAL["source"], "created_at_column": None, "watermark_column": "seq"}

    assert spec_with(source=watermark).lookback is None
    assert (
        "remove lookback: to read again a margin below the watermark, give it as the source's lookback"
        in (error_of(source=watermark, lookback="1h"))
    )
    assert "partitions must be 1" in error_of(source=watermark, partitions=2)


@pytest.mark.parametrize(
    ("given", "read"),
    [(1000, 1000), (0, 0), (2.5, 2.5), ("15m", timedelta(minutes=15)), ("2d", timedelta(days=2))],
)
def test_a_sql_watermark_takes_a_lookback_of_its_columns_units_or_a_duration(given, read):
    watermark = {**MINIMAL["source"], "created_at_column": None, "watermark_column": "seq"}

    assert spec_with(source={**watermark, "lookback": given}).source.lookback == read


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"watermark_column": "seq", "lookback": -1}, "lookback: expected a duration such as 15m"),
        ({"watermark_column": "seq", "lookback": True}, "lookback: expected a duration such as 15m"),
        ({"watermark_column": "seq", "lookback": float("nan")}, "lookback: expected a duration such as 15m"),
        ({"watermark_column": "seq", "lookback": "1000"}, "expected a duration such as 30m"),
        ({"watermark_column": "seq", "lookback": "400d"}, "must be at most 366 days"),
        ({"created_at_column": "at", "lookback": "15m"}, "lookback: a margin below a watermark"),
    ],
)
def test_a_source_lookback_that_is_no_margin_below_a_watermark_is_refused_naming_it(source, message):
    error = error_of(source={**MINIMAL["source"], "created_at_column": None, **source})

    assert "source.sql_table" in error
    assert message in error


def test_notification_is_one_dotted_path_never_imported_at_parse():
    spec = spec_with(on_failure={"callback": "no_such_package.alerts.on_failure"})

    assert spec.on_failure.callback == "no_such_package.alerts:on_failure"
    assert "exactly one of callback and notifier" in error_of(on_failure={"kwargs": {}})
    assert "path" in error_of(on_failure={"callback": "not a path"})


def test_delivery_limits():
    assert spec_with(delivery={"mode": "async", "batch_size": 10_000}).delivery.batch_size == 10_000
    assert "delivery.batch_size" in error_of(delivery={"batch_size": 10_001})
    assert "delivery.mode" in error_of(delivery={"mode": "fast"})


def test_end_date_may_be_aware_while_start_date_is_a_plain_date():
    from datetime import UTC, date, datetime

    import yaml

    from altcraft.pipelines.spec import PipelineSpec

    from .conftest import EXAMPLES

    data = yaml.safe_load(EXAMPLES[0].read_text())
    data.update(start_date=date(2026, 3, 1), end_date=datetime(2026, 3, 1, 1, tzinfo=UTC), timezone="UTC")
    assert PipelineSpec.model_validate(data).end_date.tzinfo is UTC
    data.update(end_date=datetime(2026, 2, 28, 23, tzinfo=UTC))
    with pytest.raises(ValueError, match="end_date"):
        PipelineSpec.model_validate(data)


def test_matching_not_documented_for_the_delivery_endpoint_is_a_spec_error():
    mapping = {"matching": "email_sub", "key": {"email": "email"}}
    with pytest.raises(ValidationError, match="not documented for workflows/import_and_start_batch"):
        spec_with(mapping=mapping)
    allowed = spec_with(mapping=mapping, delivery={"mode": "batch", "allow_undocumented_matching": True})
    assert allowed.delivery.allow_undocumented_matching
    assert spec_with(mapping={**mapping, "matching": "email_profile"}).delivery.mode == "batch"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"source": {"type": [], "conn_id": "crm"}}, "source"),
        ({"source": {"type": {"amocrm": 1}, "conn_id": "crm"}}, "source"),
        (
            {"source": {"type": "amocrm", "conn_id": "crm"}, "mapping": {"fields": ["email"]}},
            "mapping.fields",
        ),
        ({"source": {"type": "hubspot", "conn_id": "crm"}, "mapping": "email"}, "mapping"),
    ],
)
def test_a_hostile_source_type_or_crm_mapping_is_a_spec_error(changes, field):
    """Found by the property test: an unhashable ``type`` or a CRM mapping of the wrong shape raised
    TypeError instead of a validation error naming the field."""
    assert field in error_of(**changes)


def test_field_line_of_a_file_gone_or_no_longer_regular_is_unknown(tmp_path: Path):
    """The duplicate-id check reads the file again: one removed or replaced meanwhile costs only the line."""
    assert field_line(tmp_path / "gone.yaml", ("id",)) is None
    (tmp_path / "folder.yaml").mkdir()
    assert field_line(tmp_path / "folder.yaml", ("id",)) is None
    (tmp_path / "ok.yaml").write_text("schedule: 1d\nid: ok\n")
    assert field_line(tmp_path / "ok.yaml", ("id",)) == 2
