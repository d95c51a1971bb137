"""The token is removed from server text where it is base64-encoded too (``Basic`` credentials, a JWT, an
echoed header): in the standard and the URL-safe alphabet, at each of the 3 byte offsets it may start at in
the encoded bytes, padded or not, whatever is encoded before or after it."""

from __future__ import annotations

import base64
import json
import logging
import re

import pytest
from hostile_server import TOKEN, HostileServer, http_answer, run_async

from altcraft.api.errors import AltcraftError
from altcraft.api.models import BatchLaunchRequest
from altcraft.hooks.altcraft import AltcraftHook
from tests.async_calls import launch_batch, read_scenario

#: what is encoded before the token (0, 2 and 1 bytes past a multiple of 3) and after it
BEFORE = ["", "u:", "Bearer "]
AFTER = ["", "\n", ":x"]
#: a token whose base64 has ``+`` and ``/`` (the two alphabets differ), and one with letters beyond ASCII
TOKENS = [TOKEN, "tok?>>>~~~ü-5b1e0c", "tök-én-ünicode-5b1e"]


def encoded(token: str, before: str, after: str, *, url_safe: bool, padded: bool) -> str:
    raw = (before + token + after).encode()
    text = (base64.urlsafe_b64encode if url_safe else base64.b64encode)(raw).decode()
    return text if padded else text.rstrip("=")


def encodings(token: str) -> list[str]:
    return [
        encoded(token, before, after, url_safe=url_safe, padded=padded)
        for before in BEFORE
        for after in AFTER
        for url_safe in (False, True)
        for padded in (False, True)
    ]


def revealed(token: str, text: str) -> list[bytes]:
    """Runs of 4 bytes of the token that decoding any base64-like run of ``text`` (at each of its 4
    character offsets, either alphabet) gives back: what a reader could recover."""
    raw = token.encode()
    windows = {raw[i : i + 4] for i in range(len(raw) - 3)}
    found = []
    for run in re.findall(r"[A-Za-z0-9+/_-]{6,}", text):
        for start in range(4):
            piece = run[start:].replace("-", "+").replace("_", "/")
            piece = piece[: len(piece) // 4 * 4]
            try:
                decoded = base64.b64decode(piece)
            except ValueError:
                continue
            found += [window for window in windows if window in decoded]
    return found


def test_the_tokens_are_what_the_cases_say():
    assert any(set("+/") & set(text) for text in encodings(TOKENS[1]))
    assert revealed(TOKEN, encodings(TOKEN)[0]), "the oracle finds a token that is there"


@pytest.fixture
def answering(servers, monkeypatch):
    """``answering(token, answers)``: a hostile server giving ``answers`` in turn, made the default
    connection with ``token``."""

    def start(token: str, answers: list) -> None:
        server = HostileServer(lambda seen: answers[len(server.seen) - 1])
        servers.append(server)
        monkeypatch.setenv(
            "AIRFLOW_CONN_ALTCRAFT_DEFAULT", server.connection(token, max_retries=0, timeout=5)
        )

    return start


@pytest.mark.parametrize("token", TOKENS)
def test_a_base64_token_in_any_answer_text_is_removed(answering, token):
    """Through the sync hook: an error's text, a body that is not JSON, a per-profile error, a value."""
    texts = encodings(token)
    answering(
        token,
        [
            http_answer(401, {"error": 401, "error_text": f"bad credentials {' '.join(texts)}"}),
            http_answer(502, f"<pre>Authorization: Basic {texts[5]}</pre>"),
            http_answer(200, {"error": 0, "result": [{"error": 400, "error_text": text} for text in texts]}),
            http_answer(200, {"error": 0, "data": [{"id": 12, "name": " ".join(texts), "is_active": True}]}),
        ],
    )
    hook = AltcraftHook()
    kept = []
    for call in (
        lambda: hook.get_scenario(12),
        lambda: hook.get_scenario(12),
        lambda: hook.import_and_start_batch(_batch(len(texts)), keys=["k"] * len(texts)).model_dump_json(),
        lambda: hook.get_scenario(12).name,
    ):
        try:
            kept.append(str(call()))
        except AltcraftError as error:
            kept.append(str(error))
    hook.close()
    assert all("***" in text for text in kept), kept
    assert not revealed(token, "\n".join(kept)), kept


@pytest.mark.parametrize("token", TOKENS)
def test_a_base64_token_is_removed_by_the_async_hook(answering, token):
    texts = encodings(token)
    scenario = {"id": 12, "name": " ".join(texts), "is_active": True}
    answering(
        token,
        [
            http_answer(200, {"error": 0, "data": [scenario]}),
            http_answer(200, {"error": 0, "result": [{"error": 400, "error_text": text} for text in texts]}),
        ],
    )

    async def calls(hook):
        found = await read_scenario(hook, 12)
        launched = await launch_batch(hook, _batch(len(texts)))
        return [found.name, launched.model_dump_json()]

    kept = run_async(calls)
    assert all("***" in text for text in kept), kept
    assert not revealed(token, "\n".join(kept)), kept


def test_a_per_profile_error_quoting_the_base64_token_is_kept_nowhere(
    altcraft_emulator, sqlite_delivery, caplog
):
    """The emulator's per-profile error echoes the token as ``Basic`` credentials would: the ledger, the
    summary, the sample and the log keep it removed."""
    token = altcraft_emulator.token
    credentials = encoded(token, "airflow:", "", url_safe=False, padded=True)
    altcraft_emulator.seed(scenarios=[{"id": 4711, "name": "W", "db_id": 1, "is_active": True}])
    altcraft_emulator.add_faults(
        {"kind": "profile_error", "code": 401, "every": 1, "text": f"refused Basic {credentials}"}
    )
    run = sqlite_delivery({"matching": "email", "key": {"email": "email"}})
    caplog.set_level(logging.DEBUG)
    summary = run.delivery.process([[{"id": 1, "email": "anna@example.org"}]])
    run.hook.close()
    assert summary.failed == 1
    kept = run.kept()
    kept += [summary.table(), json.dumps(summary.as_dict()), *run.delivery.sample, caplog.text]
    assert kept[0].startswith("refused Basic ") and kept[0].endswith("***"), kept[0]
    assert not revealed(token, "\n".join(filter(None, kept)))


def _batch(size: int) -> BatchLaunchRequest:
    items = [{"email": f"user{i}@example.org", "data": {}} for i in range(size)]
    return BatchLaunchRequest(workflow_id=12, matching="email", data=items)


def _echoing_authorization(seen) -> list:
    """A 401 quoting the ``Authorization`` header's bytes as they came (the test server reads them as
    Latin-1, which gives each byte back)."""
    raw = seen.headers["authorization"].encode("latin-1")
    return http_answer(401, b'{"error":401,"error_text":"refused ' + raw + b'"}')


def test_a_token_beyond_ascii_travels_and_is_removed_as_one_form(servers, monkeypatch):
    """The sync hook and the probe: requests sent a header's text as Latin-1, aiohttp and the JSON body as
    UTF-8, so a token with "ö" went as two different tokens in the sync hook's header and body (and from
    the two hooks), and a server quoting the sync hook's header gave back bytes that are not UTF-8, read as
    U+FFFD where each such letter was: no form of the token matched, and the rest of it (``nicode-5b1e``)
    was kept in the error."""
    from altcraft.probe import Exchanger

    token = TOKENS[2]
    server = HostileServer(_echoing_authorization)
    servers.append(server)
    monkeypatch.setenv("AIRFLOW_CONN_ALTCRAFT_DEFAULT", server.connection(token, max_retries=0, timeout=5))
    kept = []
    for read in (
        lambda: AltcraftHook().get_scenario(12),
        lambda: run_async(lambda hook: read_scenario(hook, 12)),
    ):
        with pytest.raises(AltcraftError) as refused:
            read()
        kept.append(str(refused.value))
    with Exchanger(server.url, token, timeout=5) as exchanger:  # the probe, the Test button
        kept.append(exchanger.post("workflows/list", {}).error)
    assert all("refused Bearer ***" in text for text in kept), kept
    assert not revealed(token, "\n".join(kept)), kept
    for seen in server.seen:
        assert seen.headers["authorization"].encode("latin-1") == b"Bearer " + token.encode()
        assert json.loads(seen.body).get("token", token) == token
