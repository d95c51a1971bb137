"""The probe's table (pasted into support tickets) and the connection Test button quote server text only
cleaned: no form of the token, no contact in clear, and no pydantic message quoting an answer's values."""

from __future__ import annotations

import json

import pytest
from hostile_server import HostileServer, http_answer

from altcraft.__main__ import main
from altcraft.hooks.altcraft import AltcraftHook
from altcraft.probe import Exchanger

EMAIL = "anna.petrova@example.org"


@pytest.fixture
def hostile(servers, monkeypatch):
    def start(token: str, answer: dict) -> None:
        server = HostileServer(lambda seen: http_answer(200 if answer.get("error") == 0 else 401, answer))
        servers.append(server)
        monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", server.connection(token, timeout=5))

    return start


def _leaks(token: str, text: str) -> list[str]:
    forms = {token, json.dumps(token)[1:-1], json.dumps(token, ensure_ascii=False)[1:-1], repr(token)[1:-1]}
    return [form for form in forms if form in text] + ([EMAIL] if EMAIL in text else [])


@pytest.mark.parametrize("token", ["TOKEN-plain-5b1e0c", "tök-én-ünicode-5b1e", "tok\\back-slash-5b1e"])
@pytest.mark.parametrize(
    "error_text",
    [lambda t: f"invalid token {t} of {EMAIL}", lambda t: {"token": [f"invalid {t}", EMAIL]}],
    ids=["text", "object"],
)
def test_server_text_quoting_the_token_reaches_the_table_and_the_test_button_cleaned(
    hostile, capsys, token, error_text
):
    hostile(token, {"error": 401, "error_text": error_text(token), token: "as a key"})
    assert main(["probe"]) == 1
    table = capsys.readouterr().out
    ok, message = AltcraftHook().test_connection()
    assert not ok and "***" in table and "***" in message
    assert not _leaks(token, table + message), table + message


@pytest.mark.parametrize(
    "answer",
    [
        {"error": 0, "data": f"token TOKEN-plain-5b1e0c has no access; owner {EMAIL}"},
        {"error": 0, "data": [], "total": "token TOKEN-plain-5b1e0c"},
    ],
)
def test_an_answer_that_does_not_fit_is_named_by_its_places_not_its_values(hostile, capsys, answer):
    hostile("TOKEN-plain-5b1e0c", answer)
    ok, message = AltcraftHook().test_connection()
    assert main(["probe"]) == 2
    printed = capsys.readouterr()
    assert not ok and "unexpected answer" in message and "unexpected answer" in printed.err
    assert "input_value" not in message + printed.err
    assert not _leaks("TOKEN-plain-5b1e0c", message + printed.out + printed.err)


@pytest.mark.parametrize("keep_contact", [False, True], ids=["masked", "keep-contact"])
def test_the_recording_cleans_the_keys_of_an_answer_as_its_values(hostile, tmp_path, keep_contact):
    """``--record`` wrote each answer's keys as the server sent them: one quoting the token kept it in clear
    in a file meant to be shared (and, without ``--keep-contact``, an email too)."""
    token = "TOKEN-plain-5b1e0c"
    hostile(token, {"error": 0, f"echo {token}": {EMAIL: 1}, "data": []})
    record = tmp_path / "exchanges.json"
    main(["probe", "--record", str(record), *(["--keep-contact"] if keep_contact else [])])
    recorded = record.read_text("utf-8")
    assert "echo ***" in recorded
    assert token not in recorded and (keep_contact or EMAIL not in recorded), recorded


def test_the_probe_client_shows_neither_the_token_nor_a_proxy_password(hostile):
    from altcraft.probe import exchanger_for_connection

    hostile("TOKEN-plain-5b1e0c", {"error": 0})
    shown = repr(
        Exchanger("http://x", "TOKEN-plain-5b1e0c", proxies={"https": "http://u:PROXY-PW@proxy:3128"})
    )
    shown += repr(exchanger_for_connection("altcraft_default", keep_contact=False))
    assert "TOKEN-plain" not in shown and "PROXY-PW" not in shown, shown
