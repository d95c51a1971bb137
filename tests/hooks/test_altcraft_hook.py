"""AltcraftHook over real HTTP against the shipped emulator."""

from __future__ import annotations

import json

import pytest

from altcraft.api.errors import (
    AltcraftApiError,
    AltcraftDeliveryUncertain,
    AltcraftRateLimited,
    AltcraftTransportError,
)
from altcraft.api.matching import MatchingMode
from altcraft.api.models import (
    BatchLaunchRequest,
    ImportAndStartRequest,
    ImportBatchRequest,
    ImportProfileRequest,
    StartRequest,
    TaskState,
)
from altcraft.hooks.altcraft import AltcraftHook

WELCOME = 12  # active scenario of the demo seed, on database 1
INACTIVE = 13


def launches(emulator, scenario_id=WELCOME):
    return emulator.journal(scenario_id=scenario_id)


def test_connection_test_succeeds(hook):
    ok, message = hook.test_connection()
    assert ok, message
    assert "database" in message


def test_connection_test_reports_a_bad_token(emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALTCRAFT_DEFAULT",
        json.dumps({"conn_type": "altcraft", "host": emulator.url, "password": "wrong-token-123"}),
    )
    ok, message = AltcraftHook().test_connection()
    assert not ok
    assert "403" in message and "wrong-token-123" not in message


def test_list_scenarios_reads_every_page(hook, emulator):
    emulator.seed(
        scenarios=[
            {"id": 100 + i, "name": f"s{i}", "db_id": 1, "is_active": True, "mode": "skip"}
            for i in range(2300)
        ]
    )
    scenarios = hook.list_scenarios()
    ids = {s.id for s in scenarios}
    assert {WELCOME, INACTIVE, 100, 2399} <= ids and len(ids) == len(scenarios)
    assert hook.requests_made == 3


@pytest.mark.parametrize("total_key", ["total", "total_count"])
def test_scenario_lookup_and_total_variants(hook, emulator, total_key):
    emulator.config(total_key=total_key)
    scenario = hook.get_scenario(WELCOME)
    assert scenario.is_active and scenario.db_id == 1
    assert hook.get_scenario(99999) is None
    assert not hook.get_scenario(INACTIVE).is_active


def test_databases_and_fields(hook):
    assert 1 in {db.id for db in hook.list_databases()}
    fields = {f.name: f for f in hook.get_database_fields(1)}
    assert {"email", "phones", "_fname", "CRM_ID"} <= set(fields)
    assert fields["CRM_ID"].is_custom


def test_import_profile_and_batch(hook, emulator):
    one = hook.import_profile(
        ImportProfileRequest(
            db_id=1, email="anna@example.org", data={"email": "anna@example.org", "_fname": "Anna"}
        )
    )
    assert one.ok and len(one.profile_id) == 24
    again = hook.import_profile(
        ImportProfileRequest(db_id=1, email="anna@example.org", data={"_lname": "Petrova"})
    )
    assert again.profile_id == one.profile_id
    batch = hook.import_profiles(
        ImportBatchRequest(
            db_id=1,
            data=[
                {"email": "b@example.org", "data": {"_fname": "B"}},
                {"email": "c@example.org", "data": {"NOPE": 1}},
            ],
        )
    )
    assert [r.ok for r in batch.result] == [True, False]
    assert "NOPE" in batch.result[1].error_text
    assert launches(emulator) == []


@pytest.mark.parametrize(("token_in_body", "token_in"), [(True, ["header", "body"]), (False, ["header"])])
def test_token_in_body_extra_decides_whether_the_body_carries_the_token(
    emulator, monkeypatch, token_in_body, token_in
):
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", emulator.connection_json(token_in_body=token_in_body))
    hook = AltcraftHook()
    request = BatchLaunchRequest(workflow_id=WELCOME, matching="email", data=[{"email": "t@example.org"}])
    assert hook.import_and_start_batch(request).result[0].ok
    assert [entry["token_in"] for entry in launches(emulator)] == [token_in]


def test_start_existing_profile(hook, emulator):
    hook.import_profile(
        ImportProfileRequest(db_id=1, email="start@example.org", data={"email": "start@example.org"})
    )
    result = hook.start(StartRequest(id=WELCOME, matching=MatchingMode.EMAIL, email="start@example.org"))
    assert result.ok
    assert [entry["scenario_id"] for entry in launches(emulator)] == [WELCOME]
    with pytest.raises(AltcraftApiError) as err:
        hook.start(StartRequest(id=WELCOME, email="nobody@example.org"))
    assert err.value.code == 404


def _key_for(mode: MatchingMode, n: int) -> tuple[dict, dict]:
    """Request keys and profile data that let ``mode`` find-or-create profile ``n``."""
    email, phone = f"user{n}@example.org", f"+7900000{n:04d}"
    sub_email = {"channel": "email", "resource_id": 1, "email": email}
    sub_sms = {"channel": "sms", "resource_id": 1, "phone": phone}
    sub_push = {
        "channel": "push",
        "resource_id": 1,
        "provider": "android-firebase",
        "subscription_id": f"push{n}",
    }
    return {
        MatchingMode.EMAIL: ({"email": email}, {"email": email}),
        MatchingMode.EMAIL_PROFILE: ({"email": email}, {"email": email}),
        MatchingMode.EMAIL_SUB: ({"email": email}, {"subscriptions": [sub_email]}),
        MatchingMode.PHONE: ({"phone": phone}, {"phones": [phone]}),
        MatchingMode.PHONE_SUB: ({"phone": phone}, {"subscriptions": [sub_sms]}),
        MatchingMode.PROFILE_ID: ({}, {}),
        MatchingMode.PUSH_SUB: (
            {"provider": "android-firebase", "subscription_id": f"push{n}"},
            {"subscriptions": [sub_push]},
        ),
        MatchingMode.CUSTOM: ({"field_name": "CRM_ID", "field_value": f"A-{n}"}, {"CRM_ID": f"A-{n}"}),
        MatchingMode.CUSTOM_SUB: (
            {"field_name": "id", "field_value": f"tg-{n}"},
            {"subscriptions": [{"channel": "telegram_bot", "resource_id": 1, "cc_data": {"id": f"tg-{n}"}}]},
        ),
        MatchingMode.EMAIL_PHONE: ({"email": email, "phone": phone}, {"email": email, "phones": [phone]}),
        MatchingMode.EMAIL_PHONE_SUB: (
            {"email": email, "phone": phone},
            {"subscriptions": [sub_email, sub_sms]},
        ),
    }[mode]


@pytest.mark.parametrize("mode", list(MatchingMode))
def test_import_and_start_in_every_matching_mode(hook, emulator, mode):
    keys, data = _key_for(mode, 1)
    if mode is MatchingMode.PROFILE_ID:
        created = hook.import_profile(
            ImportProfileRequest(db_id=1, email="pid@example.org", data={"email": "pid@example.org"})
        )
        keys = {"profile_id": created.profile_id}
    first = hook.import_and_start(
        ImportAndStartRequest(workflow_id=WELCOME, matching=mode, data=data, **keys)
    )
    second = hook.import_and_start(
        ImportAndStartRequest(workflow_id=WELCOME, matching=mode, data=data, **keys)
    )
    assert first.ok and second.profile_id == first.profile_id, "matching must find the profile again"
    assert len(launches(emulator)) == 2


def test_batch_launch_with_per_profile_errors(hook, emulator):
    request = BatchLaunchRequest(
        workflow_id=WELCOME,
        matching=MatchingMode.EMAIL,
        data=[
            {"email": "ok1@example.org", "data": {"_fname": "One"}},
            {"email": "bad@example.org", "data": {"NO_SUCH_FIELD": "x"}},
            {"email": "ok2@example.org", "data": {}},
        ],
    )
    result = hook.import_and_start_batch(request)
    assert [r.ok for r in result.result] == [True, False, True]
    assert "NO_SUCH_FIELD" in result.result[1].error_text
    launched = launches(emulator)
    assert [entry["key"] for entry in launched] == ["ok1@example.org", "ok2@example.org"]
    assert [entry["profile_id"] for entry in launched] == [
        result.result[0].profile_id,
        result.result[2].profile_id,
    ]


def test_batch_launch_with_pre_encoded_items(hook, emulator):
    raw = json.dumps([{"email": f"raw{i}@example.org", "data": {}} for i in range(3)]).encode()
    request = BatchLaunchRequest(workflow_id=WELCOME, matching=MatchingMode.EMAIL, data=[])
    assert all(r.ok for r in hook.import_and_start_batch(request, raw_data=raw).result)
    assert len(launches(emulator)) == 3


@pytest.mark.parametrize("success_status", ["completed", "success"])
def test_async_task_lifecycle(hook, emulator, success_status):
    import time

    emulator.config(task_success_status=success_status, task_delay_seconds=0.1)
    request = BatchLaunchRequest(
        workflow_id=WELCOME, matching=MatchingMode.EMAIL, data=[{"email": "t@example.org", "data": {}}]
    )
    task_id = hook.submit_import_and_start_batch_task(request)
    deadline = time.monotonic() + 10
    status = hook.get_task_status(task_id)
    while not status.state.is_terminal and time.monotonic() < deadline:
        time.sleep(0.05)
        status = hook.get_task_status(task_id)
    assert status.state is TaskState.SUCCEEDED and status.status == success_status
    assert [r.ok for r in status.profile_results()] == [True]
    assert len(launches(emulator)) == 1


@pytest.mark.parametrize("error_http_status", ["mirror", "always_200"])
@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (ImportAndStartRequest(workflow_id=999, matching="email", email="x@example.org"), 404),
        (ImportAndStartRequest(workflow_id=INACTIVE, matching="email", email="x@example.org"), 400),
        (
            ImportAndStartRequest(
                workflow_id=WELCOME, matching="email", email="x@example.org", data={"NOPE": 1}
            ),
            400,
        ),
        (ImportAndStartRequest(workflow_id=WELCOME, matching="email"), 400),
        (ImportAndStartRequest(workflow_id=WELCOME, matching="email", email="x@example.org", db_id=777), 400),
    ],
)
def test_api_errors_become_typed_exceptions(hook, emulator, request_, code, error_http_status):
    emulator.config(error_http_status=error_http_status)
    with pytest.raises(AltcraftApiError) as err:
        hook.import_and_start(request_)
    assert err.value.code == code and not err.value.retryable
    assert err.value.text
    assert err.value.__cause__ is not err.value, "a refusal that stays itself is not its own cause"
    assert hook.requests_made == 1, "a refused request is not retried"
    assert launches(emulator) == []


def test_ambiguous_match_is_409(hook, emulator):
    for email in ("twin1@example.org", "twin2@example.org"):
        hook.import_profile(
            ImportProfileRequest(db_id=1, email=email, data={"email": email, "phones": ["+79001112233"]})
        )
    with pytest.raises(AltcraftApiError) as err:
        hook.import_and_start(
            ImportAndStartRequest(workflow_id=WELCOME, matching="phone", phone="+79001112233")
        )
    assert err.value.code == 409 and not err.value.retryable


def test_restricted_token_gets_403(hook, emulator, monkeypatch):
    emulator.seed(tokens=[{"token": "limited-token", "databases": [2], "scenarios": []}])
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALTCRAFT_DEFAULT",
        json.dumps({"conn_type": "altcraft", "host": emulator.url, "password": "limited-token"}),
    )
    with pytest.raises(AltcraftApiError) as err:
        AltcraftHook().import_and_start(
            ImportAndStartRequest(workflow_id=WELCOME, matching="email", email="r@example.org")
        )
    assert err.value.code == 403


# ------------------------------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 500},
        {"kind": "status", "status": 503},
        {"kind": "html", "status": 502},
        {"kind": "malformed"},
        {"kind": "drop_before"},
        {"kind": "drop_after"},
        {"kind": "status", "status": 429, "retry_after": 0},
    ],
    ids=lambda f: f"{f['kind']}-{f.get('status', '')}",
)
def test_reads_are_retried(hook, emulator, fault):
    emulator.add_faults({"endpoint": "workflows/list", "every": 1, "count": 2, **fault})
    assert hook.get_scenario(WELCOME).id == WELCOME
    assert hook.requests_made == 3


def test_reads_give_up_after_max_retries(hook, emulator):
    emulator.add_faults(
        {"endpoint": "databases/list", "kind": "status", "status": 503, "every": 1, "count": None}
    )
    with pytest.raises(AltcraftApiError) as err:
        hook.list_databases()
    assert err.value.http_status == 503
    assert hook.requests_made == 4  # the first try + max_retries=3


def test_launch_is_retried_on_429_and_launched_once(hook, emulator):
    emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start",
            "kind": "status",
            "status": 429,
            "retry_after": 0,
            "every": 1,
            "count": 2,
        }
    )
    result = hook.import_and_start(
        ImportAndStartRequest(workflow_id=WELCOME, matching="email", email="rl@example.org")
    )
    assert result.ok
    assert hook.requests_made == 3
    assert len(launches(emulator)) == 1


def test_retry_after_zero_does_not_burn_the_retry_budget(hook, emulator):
    emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start",
            "kind": "status",
            "status": 429,
            "retry_after": 0,
            "every": 1,
            "count": 8,
        }
    )
    assert hook.import_and_start(
        ImportAndStartRequest(workflow_id=WELCOME, matching="email", email="z@example.org")
    ).ok
    assert hook.requests_made == 9  # 8 answers of 429 and max_retries=3 still left intact


def test_retry_after_is_honoured(hook, emulator):
    import time

    emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start",
            "kind": "status",
            "status": 429,
            "retry_after": 1,
            "every": 1,
            "count": 1,
        }
    )
    started = time.monotonic()
    hook.import_and_start(ImportAndStartRequest(workflow_id=WELCOME, matching="email", email="w@example.org"))
    assert time.monotonic() - started >= 1.0


def test_launch_dropped_after_processing_is_uncertain_and_never_resent(hook, emulator):
    emulator.add_faults(
        {"endpoint": "workflows/import_and_start_batch", "kind": "drop_after", "every": 1, "count": 1}
    )
    request = BatchLaunchRequest(
        workflow_id=WELCOME,
        matching="email",
        data=[{"email": "u1@example.org", "data": {}}, {"email": "u2@example.org", "data": {}}],
    )
    with pytest.raises(AltcraftDeliveryUncertain) as err:
        hook.import_and_start_batch(request, keys=["email:u1@example.org", "email:u2@example.org"])
    assert err.value.keys == ["email:u1@example.org", "email:u2@example.org"]
    assert "u1@example.org" not in str(err.value)
    assert hook.requests_made == 1
    assert len(launches(emulator)) == 2  # processed exactly once: one journal entry per profile


def test_launch_dropped_before_processing_is_still_uncertain(hook, emulator):
    emulator.add_faults(
        {"endpoint": "workflows/import_and_start", "kind": "drop_before", "every": 1, "count": 1}
    )
    with pytest.raises(AltcraftDeliveryUncertain):
        hook.import_and_start(
            ImportAndStartRequest(workflow_id=WELCOME, matching="email", email="d@example.org")
        )
    assert hook.requests_made == 1 and launches(emulator) == []


@pytest.mark.parametrize(
    "fault",
    [{"kind": "status", "status": 500}, {"kind": "html", "status": 502}, {"kind": "malformed"}],
    ids=["500", "502-html", "malformed"],
)
def test_launch_5xx_or_garbage_is_uncertain(hook, emulator, fault):
    emulator.add_faults({"endpoint": "workflows/import_and_start", "every": 1, "count": 1, **fault})
    with pytest.raises(AltcraftDeliveryUncertain):
        hook.import_and_start(
            ImportAndStartRequest(workflow_id=WELCOME, matching="email", email="g@example.org")
        )
    assert hook.requests_made == 1


def test_launch_timeout_is_uncertain(emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALTCRAFT_DEFAULT", emulator.connection_json(timeout=0.3, backoff_initial=0)
    )
    emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start",
            "kind": "latency",
            "latency_ms": 1500,
            "every": 1,
            "count": 1,
        }
    )
    hook = AltcraftHook()
    with pytest.raises(AltcraftDeliveryUncertain) as err:
        hook.import_and_start(
            ImportAndStartRequest(workflow_id=WELCOME, matching="email", email="slow@example.org")
        )
    assert isinstance(err.value.cause, AltcraftTransportError) and err.value.cause.sent
    assert hook.requests_made == 1


def test_connection_refused_is_retried_even_for_launches(monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALTCRAFT_DEFAULT",
        json.dumps(
            {
                "conn_type": "altcraft",
                "host": f"http://127.0.0.1:{port}",
                "password": "tok",
                "extra": {"backoff_initial": 0, "max_retries": 2},
            }
        ),
    )
    hook = AltcraftHook()
    with pytest.raises(AltcraftTransportError) as err:
        hook.import_and_start(ImportAndStartRequest(workflow_id=1, matching="email", email="x@example.org"))
    assert err.value.sent is False and hook.requests_made == 3


def test_rate_limit_budget_is_bounded(emulator, monkeypatch, caplog):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALTCRAFT_DEFAULT", emulator.connection_json(rate_limit_retries=4, backoff_initial=0)
    )
    emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start",
            "kind": "status",
            "status": 429,
            "retry_after": 0,
            "every": 1,
            "count": None,
        }
    )
    hook = AltcraftHook()
    with pytest.raises(AltcraftRateLimited):
        hook.import_and_start(
            ImportAndStartRequest(workflow_id=WELCOME, matching="email", email="q@example.org")
        )
    assert hook.requests_made == 5 and launches(emulator) == []
    assert "429 5 times, more than the connection's rate_limit_retries allow" in caplog.text


def test_a_wait_beyond_the_rate_limit_budget_gives_up_at_once_saying_why(emulator, monkeypatch, caplog):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALTCRAFT_DEFAULT", emulator.connection_json(rate_limit_max_wait=60, backoff_initial=0)
    )
    emulator.add_faults(
        {"endpoint": "workflows/import_and_start", "kind": "status", "status": 429, "retry_after": 3600}
    )
    hook = AltcraftHook()
    with pytest.raises(AltcraftRateLimited):
        hook.import_and_start(
            ImportAndStartRequest(workflow_id=WELCOME, matching="email", email="q@example.org")
        )
    assert hook.requests_made == 1 and launches(emulator) == []
    assert "wait 3600 s in all (Retry-After), more than the connection's rate_limit_max_wait of 60 s" in (
        caplog.text
    )


@pytest.mark.parametrize("entry", ["run", "run_and_check", "run_with_advanced_retry"])
def test_httphooks_generic_requests_are_refused_and_send_nothing(hook, emulator, entry):
    """HttpHook's own request methods would follow redirects, log raw answers and retry a launch blindly:
    on an AltcraftHook they send nothing and say which methods to use."""
    hook.import_profile(
        ImportProfileRequest(db_id=1, email="raw@example.org", data={"email": "raw@example.org"})
    )
    body = {"id": WELCOME, "matching": "email", "email": "raw@example.org"}
    request = {"endpoint": "/api/v1.1/workflows/start", "json": body}
    arguments = {"_retry_args": {"stop": None}, **request} if entry == "run_with_advanced_retry" else request
    if entry == "run_and_check":
        arguments = {"session": hook.get_conn(), "prepped_request": None, "extra_options": {}}
    with pytest.raises(NotImplementedError, match=r"AltcraftHook\.call"):
        getattr(hook, entry)(**arguments)
    assert launches(emulator) == []
