"""The probe (and the Test button, which runs its checks) said only ``SSLError`` or ``ConnectionError`` when
a request got no answer: a Platform URL without a scheme is read as https://, and pointed at the emulator,
which serves plain HTTP, it failed the TLS handshake with nothing to say which field to change."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from altcraft.emulator.state import DEFAULT_TOKEN
from altcraft.probe import Exchanger


def test_a_platform_url_without_a_scheme_on_a_plain_http_server_names_the_scheme_and_the_field(emulator):
    host = emulator.url.removeprefix("http://")
    connection = {"conn_type": "altcraft", "host": host, "password": emulator.token}
    done = subprocess.run(
        [sys.executable, "-m", "altcraft", "probe", "--scenario", "12"],
        env={**os.environ, "AIRFLOW_CONN_ALTCRAFT_DEFAULT": json.dumps(connection)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 1, done.stderr
    said = (
        f"no answer: https://{host} does not speak TLS, plain HTTP perhaps (a Platform URL (host) without a "
        f"scheme is read as https://): write http://{host} in that field if the server serves HTTP"
    )
    assert f"token (header) | FAIL     | Authorization: Bearer header: {said}" in done.stdout, done.stdout
    assert "SSLError" not in done.stdout and emulator.token not in done.stdout


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("url_of", "said"),
    [
        (
            lambda https: https.replace("https://", "http://"),
            "closed the connection without an HTTP answer: if it serves HTTPS, write https://127.0.0.1:",
        ),
        (
            lambda https: https,
            "is not trusted (certificate verify failed): give its CA bundle in the `verify` extra",
        ),
        (
            lambda https: f"https://127.0.0.1:{_closed_port()}",
            "refused the connection: check the host and port of the Platform URL (host)",
        ),
        (
            lambda https: "https://altcraft.invalid",
            "no answer: the name altcraft.invalid does not resolve: check the Platform URL (host)",
        ),
    ],
    ids=["http_to_https", "untrusted_certificate", "refused", "unknown_name"],
)
def test_each_request_without_an_answer_says_what_to_change(https_emulator, url_of, said):
    url = url_of(https_emulator)
    answer = Exchanger(url, DEFAULT_TOKEN, timeout=10).post("databases/list", {"limit": 1})

    assert answer.status == 0 and said in answer.error, answer.error
    assert "HTTP 0" not in answer.error


def test_both_hooks_say_the_same_in_a_task(emulator, monkeypatch):
    """A task's transport error said only ``SSLError talking to Altcraft``."""
    import asyncio

    from altcraft.api.errors import AltcraftTransportError
    from altcraft.hooks.altcraft import AltcraftHook
    from altcraft.hooks.altcraft_async import AltcraftAsyncHook

    host = emulator.url.removeprefix("http://")
    connection = {
        "conn_type": "altcraft",
        "host": host,
        "password": emulator.token,
        "extra": {"max_retries": 0},
    }
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_NO_SCHEME", json.dumps(connection))
    said = f"talking to Altcraft: https://{host} does not speak TLS, plain HTTP perhaps"

    with pytest.raises(AltcraftTransportError, match=f"^SSLError {said}") as sync:
        AltcraftHook("altcraft_no_scheme").get_task_status("task_nope")

    async def ask() -> None:
        async with AltcraftAsyncHook("altcraft_no_scheme") as hook:
            await hook.get_task_status("task_nope")

    with pytest.raises(AltcraftTransportError, match=said) as unanswered:
        asyncio.run(ask())
    assert emulator.token not in str(sync.value) + str(unanswered.value)
