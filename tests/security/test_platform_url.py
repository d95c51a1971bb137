"""The Altcraft connection's Platform URL may hold neither the API token (in any form) nor a query or a
fragment: the URL is sent with every request (into proxies' and servers' access logs), and kept in the
ledger, the scenario link (XCom, the extra link) and the Test button's message. Such a connection is refused
before anything is sent, by the hooks, the connection test and the probe, naming the field, never the URL."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from hostile_server import TOKEN, HostileServer, http_answer, run_async

from altcraft.__main__ import main
from altcraft.hooks.altcraft import AltcraftHook

HOSTS = {
    "token as a query parameter": "{url}/?token={token}",
    "token in the path": "{url}/{token}/",
    "token lower-cased in the path": "{url}/{lower}",
    "token base64-encoded in the path": "{url}/k/{b64}",
    "a query": "{url}/?account=7",
    "a fragment": "{url}/#x",
    "another scheme": "ftp://{address}",
}


@pytest.fixture(params=HOSTS)
def server(request, servers, monkeypatch) -> HostileServer:
    server = HostileServer(lambda seen: http_answer(200, {"error": 0, "data": []}))
    servers.append(server)
    b64 = quote(base64.b64encode(TOKEN.encode()).decode(), safe="")
    address = server.url.removeprefix("http://")
    host = HOSTS[request.param].format(
        url=server.url, address=address, token=TOKEN, lower=TOKEN.lower(), b64=b64
    )
    connection = {"conn_type": "altcraft", "host": host, "password": TOKEN, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", json.dumps(connection))
    return server


def test_a_platform_url_holding_the_token_or_a_query_is_refused_before_anything_is_sent(server, capsys):
    hook = AltcraftHook()
    with pytest.raises(ValueError, match=r"Platform URL \(host\)") as refused:
        hook.get_scenario(12)
    with pytest.raises(ValueError, match=r"Platform URL \(host\)"):
        hook.scenario_url(12)
    with pytest.raises(ValueError, match=r"Platform URL \(host\)"):
        run_async(lambda ahook: ahook.get_task_status("t1"))
    ok, message = AltcraftHook().test_connection()
    assert main(["probe"]) == 2
    printed = capsys.readouterr()

    assert not ok and "Platform URL (host)" in message and "Platform URL (host)" in printed.err
    assert server.seen == [], "nothing is sent"
    shown = "\n".join([str(refused.value), message, printed.out, printed.err])
    assert TOKEN[:8].lower() not in shown.lower() and "account=7" not in shown, shown


def test_a_connection_uris_path_is_named_when_read_as_the_scheme(servers, monkeypatch):
    """``altcraft://:TOKEN@host/altcraft`` gives the schema ``altcraft``, the URL's scheme when the host has
    none: every request failed as "InvalidSchema ... could not be built", naming no field."""
    server = HostileServer(lambda seen: http_answer(200, {"error": 0, "data": []}))
    servers.append(server)
    address = server.url.removeprefix("http://")
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", f"altcraft://:{TOKEN}@{address}/altcraft")

    ok, message = AltcraftHook().test_connection()

    assert (
        not ok and "must start with https:// or http:// (the schema field, a connection URI's path" in message
    )
    assert server.seen == [] and TOKEN not in message


@pytest.mark.parametrize(
    "token",
    [
        f"{TOKEN}\n",
        f"{TOKEN}\r\n",
        f"TOKEN\x00{TOKEN}",
        f"{TOKEN}\u200b",
        f"{TOKEN}\u2028",
        f"{TOKEN} ",
        f"\t{TOKEN}",
    ],
    ids=["LF", "CRLF", "NUL", "zero-width-space", "line-separator", "trailing-space", "leading-tab"],
)
def test_a_token_no_header_can_carry_is_refused_naming_the_field(servers, monkeypatch, capsys, token):
    """A token read from a file with its last newline: the sync hook failed as an invalid header (naming
    nothing), the async hook with a bare ValueError its callers do not catch, and the Test button said the
    token was accepted in the body. One pasted with a zero-width space: the sync hook failed with a bare
    UnicodeEncodeError, the async hook sent its UTF-8 bytes. One pasted with a space at an end: the header
    (whose ends servers strip) and the body carried two different tokens. (Latin-1 letters are carried.)"""
    server = HostileServer(lambda seen: http_answer(200, {"error": 0, "data": []}))
    servers.append(server)
    connection = {"conn_type": "altcraft", "host": server.url, "password": token, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", json.dumps(connection))
    field = r"the API token \(password field\) holds a line break, a space at either end or another character"

    with pytest.raises(ValueError, match=field) as refused:
        AltcraftHook().get_scenario(12)
    with pytest.raises(ValueError, match=field):
        run_async(lambda ahook: ahook.get_task_status("t1"))
    ok, message = AltcraftHook().test_connection()
    assert main(["probe"]) == 2

    assert not ok and "password field" in message and "password field" in capsys.readouterr().err
    assert server.seen == [] and TOKEN not in str(refused.value) + message
