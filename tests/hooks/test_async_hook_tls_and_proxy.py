"""The hooks (the async one is the triggerer's) and the connection test honour the verify, cert and proxies
extras, and the environment's proxy and CA bundle variables."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from altcraft.api.errors import AltcraftApiError, AltcraftError, AltcraftTransportError
from altcraft.emulator.state import DEFAULT_TOKEN
from altcraft.hooks.altcraft_async import AltcraftAsyncHook


def connect(monkeypatch, conn_id: str, host: str, **extra) -> str:
    """Connection ``conn_id`` to ``host`` with the emulator's token and these extras; its id."""
    conn = {"conn_type": "altcraft", "host": host, "password": DEFAULT_TOKEN, "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    return conn_id


def unknown_task_status(monkeypatch, host: str, **extra) -> AltcraftError:
    """Ask for a task Altcraft does not know through a connection with these extras: the error raised."""
    connect(monkeypatch, "altcraft_extras", host, max_retries=0, **extra)

    async def ask() -> None:
        async with AltcraftAsyncHook("altcraft_extras") as hook:
            await hook.get_task_status("task_nope")

    with pytest.raises(AltcraftError) as error:
        asyncio.run(ask())
    return error.value


def answered_404(error: AltcraftError) -> bool:
    return isinstance(error, AltcraftApiError) and error.code == 404


def test_a_ca_bundle_in_verify_is_trusted(monkeypatch, https_emulator, certificate):
    # aiohttp refused the path itself (TypeError: ssl should be SSLContext, bool, Fingerprint or None)
    assert answered_404(unknown_task_status(monkeypatch, https_emulator, verify=str(certificate[0])))


def test_verify_false_skips_the_check_and_true_refuses_an_unknown_ca(monkeypatch, https_emulator):
    assert answered_404(unknown_task_status(monkeypatch, https_emulator, verify=False))
    refused = unknown_task_status(monkeypatch, https_emulator)
    assert isinstance(refused, AltcraftTransportError)
    assert "Certificate" in str(refused)


def test_requests_go_through_the_proxy_for_the_platforms_scheme(monkeypatch, emulator):
    # altcraft.invalid resolves nowhere: only the proxy (the emulator, reading the absolute URL) answers
    error = unknown_task_status(monkeypatch, "http://altcraft.invalid", proxies={"http": emulator.url})

    assert answered_404(error)


def test_the_environments_proxy_is_used_as_by_the_sync_hook(monkeypatch, emulator):
    monkeypatch.setenv("HTTP_PROXY", emulator.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    assert answered_404(unknown_task_status(monkeypatch, "http://altcraft.invalid"))


def test_the_connection_test_goes_through_the_proxy(monkeypatch, emulator):
    from altcraft.hooks.altcraft import AltcraftHook

    conn_id = connect(
        monkeypatch, "altcraft_extras", "http://altcraft.invalid", proxies={"http": emulator.url}
    )

    ok, message = AltcraftHook(conn_id).test_connection()

    assert ok, message


def sync_task_status(monkeypatch, host: str, **extra) -> AltcraftError:
    """`unknown_task_status` through the sync hook (its session settles the environment once)."""
    from altcraft.hooks.altcraft import AltcraftHook

    hook = AltcraftHook(connect(monkeypatch, "altcraft_sync", host, max_retries=0, **extra))
    errors = []
    for _ in range(2):  # the second request on the settled session, not only the first
        with pytest.raises(AltcraftError) as error:
            hook.get_task_status("task_nope")
        errors.append(error.value)
    assert [type(e) for e in errors] == [type(errors[0])] * 2
    return errors[-1]


def test_the_sync_hook_uses_the_environments_proxy_and_no_proxy(monkeypatch, emulator):
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", emulator.url)
    assert answered_404(sync_task_status(monkeypatch, "http://altcraft.invalid"))

    monkeypatch.setenv("NO_PROXY", "altcraft.invalid")  # not through the proxy: the name resolves nowhere
    assert isinstance(sync_task_status(monkeypatch, "http://altcraft.invalid"), AltcraftTransportError)


def through_both_hooks(monkeypatch, host: str, **extra) -> list[bool]:
    """For the sync hook, the async hook and the connection test: whether Altcraft answered (the emulator
    as the proxy, ``host`` resolving nowhere)."""
    from altcraft.hooks.altcraft import AltcraftHook

    ok, message = AltcraftHook(connect(monkeypatch, "altcraft_test", host, **extra)).test_connection()
    sync, unknown = (
        sync_task_status(monkeypatch, host, **extra),
        unknown_task_status(monkeypatch, host, **extra),
    )
    assert DEFAULT_TOKEN not in message
    return [answered_404(sync), answered_404(unknown), ok]


@pytest.fixture
def no_proxy_variables(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_the_connections_proxy_wins_over_the_environments_in_both_hooks(
    monkeypatch, emulator, no_proxy_variables
):
    # requests let HTTP_PROXY override the extra: the sync hook and the Test button went through the
    # environment's proxy (here a closed port), the async hook through the connection's
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")

    assert (
        through_both_hooks(monkeypatch, "http://altcraft.invalid", proxies={"http": emulator.url})
        == [True] * 3
    )


@pytest.mark.parametrize("key", ["all", "http://altcraft.invalid", "all://altcraft.invalid"])
def test_a_proxy_keyed_as_requests_keys_it_is_used_by_both_hooks(
    monkeypatch, emulator, no_proxy_variables, key
):
    # the async hook looked up the scheme alone, and went direct (here: a name that resolves nowhere)
    assert (
        through_both_hooks(monkeypatch, "http://altcraft.invalid", proxies={key: emulator.url}) == [True] * 3
    )


def test_the_environments_all_proxy_is_used_by_both_hooks(monkeypatch, emulator, no_proxy_variables):
    monkeypatch.setenv("ALL_PROXY", emulator.url)  # aiohttp reads only HTTP(S)_PROXY

    assert through_both_hooks(monkeypatch, "http://altcraft.invalid") == [True] * 3


@pytest.mark.parametrize("switch", ["false", "False", "0"])
def test_verify_false_as_a_string_is_the_switch_in_both_hooks(monkeypatch, https_emulator, switch):
    # every extra of a connection URI is a string (?verify=false): it was read as a CA bundle's path
    assert through_both_hooks(monkeypatch, https_emulator, verify=switch) == [True] * 3


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("verify", lambda cert, key: "/nonexistent/ca.pem"),
        ("verify", lambda cert, key: key),  # no certificate in it
        ("cert", lambda cert, key: "/nonexistent/client.pem"),
        ("cert", lambda cert, key: cert),  # no key in it
    ],
    ids=["verify-missing", "verify-no-certificate", "cert-missing", "cert-no-key"],
)
def test_a_tls_file_that_cannot_be_read_is_refused_naming_the_extra(
    monkeypatch, https_emulator, certificate, name, path
):
    """requests failed at the first request with a bare OSError (the Test button raised it), aiohttp with
    a FileNotFoundError naming nothing; now both hooks and the Test button name the extra, sending nothing."""
    from altcraft.hooks.altcraft import AltcraftHook

    extra = {name: str(path(*certificate))} | ({"verify": False} if name == "cert" else {})
    message = rf"Invalid extra of the Altcraft connection: {name}: .*no .* readable at"
    hook = AltcraftHook(connect(monkeypatch, "altcraft_tls", https_emulator, **extra))
    with pytest.raises(ValueError, match=message):
        hook.get_task_status("task_nope")
    assert hook.requests_made == 0
    ok, said = hook.test_connection()
    assert not ok and re.search(message, said)

    async def ask() -> None:
        async with AltcraftAsyncHook("altcraft_tls") as async_hook:
            await async_hook.get_task_status("task_nope")

    with pytest.raises(ValueError, match=message):
        asyncio.run(ask())


def test_the_sync_hook_trusts_the_environments_ca_bundle(monkeypatch, https_emulator, certificate):
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    assert isinstance(sync_task_status(monkeypatch, https_emulator), AltcraftTransportError)

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificate[0]))
    assert answered_404(sync_task_status(monkeypatch, https_emulator))


def test_a_ca_bundle_of_the_environment_where_nothing_is_is_named(monkeypatch, https_emulator):
    """The sync hook failed each request with a bare OSError, and the Test button raised it."""
    from altcraft.hooks.altcraft import AltcraftHook

    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/bundle.pem")
    message = r"No CA bundle file or folder at '/nonexistent/bundle.pem', which REQUESTS_CA_BUNDLE"
    hook = AltcraftHook(connect(monkeypatch, "altcraft_bundle", https_emulator, max_retries=0))

    with pytest.raises(ValueError, match=message):
        hook.get_task_status("task_nope")
    ok, said = hook.test_connection()
    assert not ok and re.search(message, said) and hook.requests_made == 0


def test_netrc_credentials_for_the_platform_do_not_replace_the_token(
    monkeypatch, emulator, netrc_for_localhost
):
    # the token only in the header: requests put Basic credentials from .netrc there instead (401)
    assert answered_404(sync_task_status(monkeypatch, emulator.url, token_in_body=False))


def test_netrc_credentials_for_the_platform_do_not_break_the_async_hook(
    monkeypatch, emulator, netrc_for_localhost
):
    assert answered_404(unknown_task_status(monkeypatch, emulator.url, token_in_body=False))


def test_verify_false_in_the_connection_wins_over_the_environments_ca_bundle(monkeypatch, https_emulator):
    import certifi  # a bundle that does not hold the emulator's self-signed certificate

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    assert answered_404(sync_task_status(monkeypatch, https_emulator, verify=False))


def test_the_connection_test_ignores_netrc_credentials_for_the_platform(
    monkeypatch, emulator, netrc_for_localhost
):
    from altcraft.hooks.altcraft import AltcraftHook

    ok, message = AltcraftHook(connect(monkeypatch, "altcraft_netrc", emulator.url)).test_connection()

    assert ok, message


@pytest.fixture
def recording_proxy(emulator) -> Iterator[tuple[int, list[tuple[str, str | None]]]]:
    """A tiny HTTP proxy on localhost: it forwards plain HTTP requests to the emulator and refuses a
    CONNECT (403), recording each request's method and ``Proxy-Authorization``; its port and the records."""
    import requests

    seen: list[tuple[str, str | None]] = []
    direct = requests.Session()
    direct.trust_env = False

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(("POST", self.headers.get("Proxy-Authorization")))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            forwarded = {
                name: self.headers[name] for name in ("Authorization", "Content-Type") if name in self.headers
            }
            answer = direct.post(
                emulator.url + urlsplit(self.path).path, data=body, headers=forwarded, timeout=30
            )
            self.send_response(answer.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def do_CONNECT(self) -> None:
            seen.append(("CONNECT", self.headers.get("Proxy-Authorization")))
            self.send_error(403)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()
    direct.close()


@pytest.mark.parametrize("credentials", ["", "proxy-user:proxy-pass@"], ids=["none", "in_the_url"])
def test_both_hooks_give_the_proxy_the_credentials_of_its_url_only(
    monkeypatch, tmp_path, recording_proxy, no_proxy_variables, credentials
):
    """The async hook sent the API token to the proxy as ``Proxy-Authorization: Bearer ...`` (aiohttp adds
    a session's headers to the proxy's), on an HTTPS platform's CONNECT too. Neither hook reads proxy
    credentials from ``~/.netrc``: both send those of the proxy's URL, or none."""
    port, seen = recording_proxy
    (tmp_path / ".netrc").write_text("machine localhost login netrc-user password netrc-pass\n", "utf-8")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NETRC", raising=False)
    proxies = {"all": f"http://{credentials}localhost:{port}"}

    for platform in ("http://altcraft.invalid", "https://altcraft.invalid"):
        sync_task_status(monkeypatch, platform, proxies=proxies)
        unknown_task_status(monkeypatch, platform, proxies=proxies)

    expected = "Basic " + base64.b64encode(b"proxy-user:proxy-pass").decode() if credentials else None
    assert sorted({method for method, _ in seen}) == ["CONNECT", "POST"]
    assert [auth for _, auth in seen] == [expected] * len(seen), seen
