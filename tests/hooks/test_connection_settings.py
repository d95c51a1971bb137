"""Connection extras → settings: one pure function."""

from __future__ import annotations

import json

import pytest

from altcraft.hooks.connection import base_url, connection_settings


def test_defaults():
    settings = connection_settings({})
    assert settings.token_in_body is True
    assert settings.retry_policy.max_retries == 5


def test_ui_prefixed_and_blank_values():
    settings = connection_settings(
        {"extra__altcraft__timeout": "15", "max_retries": "", "token_in_body": "false", "unrelated": 1}
    )
    assert settings.timeout == 15.0 and settings.max_retries == 5 and settings.token_in_body is False


def test_invalid_extra_names_the_field():
    with pytest.raises(ValueError, match="max_retries"):
        connection_settings({"max_retries": "-1"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("timeout", 1e12),
        ("timeout", "inf"),
        ("max_answer_bytes", 2**40),
        ("max_retries", 10**6),
        ("backoff_initial", 1e300),
        ("backoff_max", 86_400 * 365),
        ("rate_limit_retries", 10**9),
        ("rate_limit_max_wait", 1e300),
    ],
)
def test_a_number_past_its_bound_is_refused_naming_the_extra(name, value):
    """Taken as it was, it failed later, deep in a socket or a sleep (OverflowError), naming nothing."""
    with pytest.raises(ValueError, match=rf"Invalid extra of the Altcraft connection: {name}: .*less than"):
        connection_settings({name: value})


def test_the_largest_numbers_are_taken():
    bounds = {"timeout": 86_400, "max_answer_bytes": 2**30, "max_retries": 100, "backoff_initial": 3600}
    bounds |= {"backoff_max": 3600, "rate_limit_retries": 10_000, "rate_limit_max_wait": 86_400}
    settings = connection_settings(bounds)
    assert {name: getattr(settings, name) for name in bounds} == bounds


@pytest.mark.parametrize(
    ("host", "schema", "port", "expected"),
    [
        ("ru.altkraft.com", None, None, "https://ru.altkraft.com"),
        ("http://127.0.0.1", None, 8765, "http://127.0.0.1:8765"),
        ("https://crm.example.org/", None, None, "https://crm.example.org"),
        ("example.org", "http", None, "http://example.org"),
    ],
)
def test_base_url(host, schema, port, expected):
    assert base_url(host, schema, port) == expected


@pytest.mark.parametrize(
    "host",
    [
        "https://ru.altkraft.com/api/v1.1",
        "https://ru.altkraft.com/api/v1.1/",
        "altcraft.example.org/api/v1.1/workflows/start",
    ],
)
def test_a_platform_url_holding_the_api_path_is_refused(host: str):
    """Copied from a request of the developer guide, every call went to /api/v1.1/api/v1.1/...: the task
    failed (and was retried) on a 404 from its first call, and nothing said that the URL was wrong."""
    with pytest.raises(ValueError, match=r"Platform URL \(host\) must not hold the API's path /api/v1.1/"):
        base_url(host)


def test_a_platform_url_with_a_path_of_its_own_is_kept():
    assert base_url("https://example.org/altcraft/") == "https://example.org/altcraft"


def test_base_url_requires_host():
    with pytest.raises(ValueError, match="Platform URL"):
        base_url("")


@pytest.mark.parametrize(
    "host",
    [
        "https://proxyuser:proxy-pass-77@altcraft.example.com",
        "proxyuser:proxy-pass-77@altcraft.example.com",
        "https://proxy-pass-77@altcraft.example.com/",
    ],
)
def test_a_platform_url_with_a_user_name_or_password_is_refused_without_echoing_it(host: str):
    # it was kept as the ledger's platform, shown on the UI's pipelines page and in the scenario link
    with pytest.raises(ValueError, match=r"Platform URL \(host\) must not hold a user name or password") as e:
        base_url(host)

    assert "proxy-pass-77" not in str(e.value) and "proxyuser" not in str(e.value)


def test_the_hook_refuses_a_connection_whose_host_holds_a_password(monkeypatch: pytest.MonkeyPatch):
    from altcraft.hooks.altcraft import AltcraftHook

    host = "https://proxyuser:proxy-pass-77@altcraft.example.com"
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", json.dumps({"conn_type": "altcraft", "host": host}))

    with pytest.raises(ValueError, match="Platform URL") as raised:
        AltcraftHook().get_conn()
    assert "proxy-pass-77" not in str(raised.value)


def test_the_settings_repr_does_not_show_a_proxy_password():
    settings = connection_settings({"proxies": {"https": "http://puser:proxy-secret-88@proxy:3128"}})

    assert settings.proxies == {"https": "http://puser:proxy-secret-88@proxy:3128"}
    assert "proxy-secret-88" not in repr(settings)


def test_an_unknown_extra_is_named_in_a_warning_and_changes_nothing(caplog):
    with caplog.at_level("WARNING", logger="altcraft.hooks.connection"):
        settings = connection_settings({"timout": 5, "extra__altcraft__max_retries": 1, "verify": False})
    assert settings.timeout == 60.0 and settings.max_retries == 1 and settings.verify is False
    [record] = caplog.records
    assert "'timout'" in record.getMessage() and "timeout" in record.getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="altcraft.hooks.connection"):
        connection_settings({"timeout": 5, "extra__altcraft__max_retries": ""})
    assert caplog.records == []


@pytest.mark.parametrize("conn_type", ["postgres", "http", "generic"])
def test_a_connection_of_another_type_is_refused_before_anything_is_sent(emulator, monkeypatch, conn_type):
    """``altcraft_conn_id`` naming a database's or a CRM's connection: its password would have travelled as
    the Altcraft token to its host. Both hooks and the Test button refuse it, naming the connection."""
    import asyncio

    from altcraft.hooks.altcraft import AltcraftHook
    from altcraft.hooks.altcraft_async import AltcraftAsyncHook

    connection = {"conn_type": conn_type, "host": emulator.url, "password": emulator.token}
    monkeypatch.setenv("AIRFLOW_CONN_NOT_ALTCRAFT", json.dumps(connection))
    message = f"Connection 'not_altcraft' is of type '{conn_type}', not 'altcraft'"
    hook = AltcraftHook("not_altcraft")
    with pytest.raises(ValueError, match=message) as raised:
        hook.get_scenario(1)
    assert hook.requests_made == 0 and emulator.token not in str(raised.value)
    # the Test button names no id: Airflow tests a copy of the connection under a random one
    tested = str(raised.value).replace("Connection 'not_altcraft'", "The connection")
    assert hook.test_connection() == (False, f"Altcraft connection test failed: {tested}")

    async def task_status() -> None:
        async with AltcraftAsyncHook("not_altcraft") as async_hook:
            await async_hook.get_task_status("task-1")

    with pytest.raises(ValueError, match=message):
        asyncio.run(task_status())


@pytest.mark.parametrize(
    "pattern",
    ["{base_url}/workflows/{id}", "{base_url}/w/{0}", "{base_url}/{scenario_id"],  # ruff: ignore[missing-f-string-syntax]
)
def test_a_scenario_link_pattern_that_cannot_be_filled_is_refused_naming_the_extra(pattern):
    """It failed in the task right after the pre-flight check, as a bare ``KeyError: 'id'``."""
    with pytest.raises(
        ValueError, match=r"Invalid extra of the Altcraft connection: scenario_url: .*\{base_url\}"
    ):
        connection_settings({"scenario_url": pattern})


@pytest.mark.parametrize(
    ("value", "expected"), [("false", False), ("FALSE", False), ("0", False), ("true", True)]
)
def test_verify_as_a_string_is_read_as_the_switch(value, expected):
    """Every extra of a connection URI is a string: ``?verify=false`` was the path of a CA bundle."""
    assert connection_settings({"verify": value}).verify is expected


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ('{"verify": false,}', "is not valid JSON"),  # Airflow read it as no extra: verify silently on
        ("{'timeout': 5}", "is not valid JSON"),
        ('["timeout", 5]', "is a JSON list, not an object"),  # AttributeError: 'list' object has no ...
        ('"timeout=5"', "is a JSON str, not an object"),
        ("5", "is a JSON int, not an object"),
    ],
)
def test_an_extra_that_is_not_a_json_object_is_refused_naming_the_connection(
    emulator, monkeypatch, extra, said
):
    import asyncio

    from altcraft.hooks.altcraft import AltcraftHook
    from altcraft.hooks.altcraft_async import AltcraftAsyncHook

    connection = {"conn_type": "altcraft", "host": emulator.url, "password": emulator.token, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_EXTRA", json.dumps(connection))
    message = f"Connection 'altcraft_extra': its Extra {said}"
    hook = AltcraftHook("altcraft_extra")
    with pytest.raises(ValueError, match=message):
        hook.get_scenario(1)
    assert hook.requests_made == 0
    ok, answer = hook.test_connection()
    assert not ok and f"The connection: its Extra {said}" in answer  # the Test button names no id

    async def task_status() -> None:
        async with AltcraftAsyncHook("altcraft_extra") as async_hook:
            await async_hook.get_task_status("task-1")

    with pytest.raises(ValueError, match=message):
        asyncio.run(task_status())


@pytest.mark.parametrize("extra", ["", "  ", "null", "{}"])
def test_an_empty_extra_is_no_extra(emulator, monkeypatch, extra):
    from altcraft.hooks.altcraft import AltcraftHook

    connection = {"conn_type": "altcraft", "host": emulator.url, "password": emulator.token, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_EXTRA", json.dumps(connection))

    assert AltcraftHook("altcraft_extra").test_connection()[0]
