"""The webhook endpoint without Airflow: verification per kind, size limit, replay, storage first.

The app runs in-process (FastAPI's TestClient) on a real SQLite store; only the settings lookup, which
reads Airflow's metadata database in the API server, is given by the test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from altcraft.mapping import Mapper, Profile, ProfileMapping, Rejection
from altcraft.records import ErrorRecord, NamedTwice
from altcraft.sources import ERROR_FIELD, MemoryStateStore
from altcraft.sources.webhook import WebhookSource
from altcraft.webhooks import app as app_module
from altcraft.webhooks.app import (
    CACHE_ENTRIES,
    FAILURE_ENTRIES,
    KEY_REUSED,
    WebhookConfig,
    _Cached,
    _Failures,
    create_app,
    pinned_url,
)
from altcraft.webhooks.kinds import (
    HUBSPOT_SIGNATURE,
    HUBSPOT_TIMESTAMP,
    KINDS,
    SECRET_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadPayload,
    TooManyRecords,
    Unauthorized,
    WebhookRequest,
    delivery_json,
    signature,
    strict_json,
)
from altcraft.webhooks.store import KeyConflict, WebhookStore, deliveries_table, heads_table
from tests.fake_crms.server import serving_app

SECRET = "s3cret-for-tests"
CONTACT = {"email": "ann@example.com", "first_name": "Ann"}


def signed(body: bytes, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if at is None else at)
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: signature(secret, stamp, body)}


# ------------------------------------------------------------------------------------ verification


def test_hmac_accepts_a_fresh_signature_and_refuses_every_alteration():
    kind, body = KINDS["hmac"], json.dumps(CONTACT).encode()
    good = signed(body)
    kind.verify(WebhookRequest(good, {}, body), SECRET)
    refused = [
        WebhookRequest(good, {}, body + b" "),  # body changed
        WebhookRequest(signed(body, "other secret"), {}, body),  # wrong secret
        WebhookRequest({TIMESTAMP_HEADER: good[TIMESTAMP_HEADER]}, {}, body),  # no signature
        WebhookRequest(
            {**good, TIMESTAMP_HEADER: str(int(good[TIMESTAMP_HEADER]) + 1)}, {}, body
        ),  # ts moved
        WebhookRequest(signed(body, at=int(time.time()) - 301), {}, body),  # too old to replay
        WebhookRequest({SIGNATURE_HEADER: signature(SECRET, "x", body), TIMESTAMP_HEADER: "x"}, {}, body),
    ]
    for case in refused:
        with pytest.raises(Unauthorized):
            kind.verify(case, SECRET)


def test_shared_secret_compares_the_header():
    kind = KINDS["secret"]
    kind.verify(WebhookRequest({SECRET_HEADER: SECRET}, {}, b"{}"), SECRET)
    for headers in ({}, {SECRET_HEADER: SECRET + "x"}, {SECRET_HEADER: ""}):
        with pytest.raises(Unauthorized):
            kind.verify(WebhookRequest(headers, {}, b"{}"), SECRET)


def test_delivery_key_is_the_idempotency_key_else_the_body():
    kind = KINDS["hmac"]
    assert kind.delivery_key(WebhookRequest({}, {}, b"a")) == kind.delivery_key(WebhookRequest({}, {}, b"a"))
    assert kind.delivery_key(WebhookRequest({}, {}, b"a")) != kind.delivery_key(WebhookRequest({}, {}, b"b"))
    keyed = [WebhookRequest({"idempotency-key": "42"}, {}, body) for body in (b"a", b"b")]
    assert kind.delivery_key(keyed[0]) == kind.delivery_key(keyed[1])


def test_a_hubspot_event_id_holding_a_lone_surrogate_keys_its_delivery():
    """Its key failed with UnicodeEncodeError, outside the endpoint's handling: a 500 with a traceback."""
    keys = {
        KINDS["hubspot"].delivery_key(WebhookRequest({}, {}, f'[{{"eventId": "{event}"}}]'.encode()))
        for event in ("\\ud800", "\\udc00", "1")
    }
    assert len(keys) == 3


# -------------------------------------------------------------------------------------- endpoint


@pytest.fixture
def store(tmp_path, monkeypatch) -> WebhookStore:
    monkeypatch.setenv("AIRFLOW_CONN_WEBHOOK_LEDGER", f"sqlite:///{tmp_path / 'ledger.db'}")
    store = WebhookStore.from_conn_id("webhook_ledger")
    store.ensure_schema()
    return store


@pytest.fixture
def client(store) -> TestClient:
    configs = {
        name: WebhookConfig(name, auth, SECRET, "webhook_ledger", 2048)
        for name, auth in (("signed", "hmac"), ("shared", "secret"))
    }
    return TestClient(create_app(configs.get))


def test_a_signed_delivery_is_stored_before_200_and_a_replay_is_stored_once(client, store):
    body = json.dumps([CONTACT, {**CONTACT, "email": "bob@example.com"}]).encode()
    first = client.post("/signed", content=body, headers=signed(body))
    assert first.status_code == 200, first.text
    assert first.json() == {"status": "accepted", "records": 2}
    assert store.count("signed") == 1
    assert next(records for _, records in store.read("signed", None))[1]["email"] == "bob@example.com"
    replay = client.post("/signed", content=body, headers=signed(body))
    assert replay.json()["status"] == "duplicate"
    assert store.count("signed") == 1
    assert store.probe("signed", None).records == 2


@pytest.mark.parametrize(
    "headers",
    [{}, {SIGNATURE_HEADER: "sha256=" + "0" * 64, TIMESTAMP_HEADER: str(int(time.time()))}, "wrong-secret"],
)
def test_forged_or_unsigned_deliveries_get_401_and_nothing_is_stored(client, store, headers):
    body = json.dumps(CONTACT).encode()
    headers = signed(body, "wrong") if headers == "wrong-secret" else headers
    answer = client.post("/signed", content=body, headers=headers)
    assert answer.status_code == 401
    assert SECRET not in answer.text and "ann@" not in answer.text
    assert store.count("signed") == 0


def test_a_record_naming_a_key_twice_is_its_runs_rejection_and_the_others_are_delivered(client, store):
    """json.loads kept the last value without a word: the contact was launched with an address its sender
    may not have meant, where a JSON Lines file refuses the line."""
    body = (
        b'[{"email": "ann@example.com", "first_name": "Ann"},'
        b' {"email": "bob@example.com", "email": "eve@example.com"},'
        b' {"email": "cy@example.com", "tags": {"a": 1, "a": 2}}]'
    )
    assert client.post("/signed", content=body, headers=signed(body)).json() == {
        "status": "accepted",
        "records": 3,
    }
    source = WebhookSource(
        "signed", key_column="email", ledger_conn_id="webhook_ledger", state=MemoryStateStore()
    )

    records = [r for batch in source.batches(None, 10) for r in batch]

    [delivery_id] = [delivery_id for delivery_id, _ in store.read("signed", None)]
    assert [(r["email"], r.get(ERROR_FIELD)) for r in records] == [
        ("ann@example.com", None),
        (f"delivery {delivery_id} item 2", "an object names 'email' twice"),
        (f"delivery {delivery_id} item 3", "an object names 'a' twice"),
    ]
    assert "eve@" not in json.dumps(records)


def test_an_item_that_is_no_object_is_its_runs_rejection_and_the_others_are_delivered(client, store):
    """A delivery holding one item that is no object was 400 whole: its contacts were lost with it (a body
    holding no object at all is still 400: see the bad payloads below)."""
    body = json.dumps([CONTACT, 5, None, ["x"], {**CONTACT, "email": "bob@example.com"}]).encode()
    assert client.post("/signed", content=body, headers=signed(body)).json() == {
        "status": "accepted",
        "records": 5,
    }
    source = WebhookSource(
        "signed", key_column="email", ledger_conn_id="webhook_ledger", state=MemoryStateStore()
    )
    [(delivery_id, _)] = store.read("signed", None)
    assert [(r["email"], r.get(ERROR_FIELD)) for batch in source.batches(None, 10) for r in batch] == [
        ("ann@example.com", None),
        (f"delivery {delivery_id} item 2", "not a JSON object but int"),
        (f"delivery {delivery_id} item 3", "not a JSON object but null"),
        (f"delivery {delivery_id} item 4", "not a JSON object but list"),
        ("bob@example.com", None),
    ]


#: Free text a sender wrote under the key the endpoint once stored its own reasons under (a name and an
#: address: no masking hides them)
SENDER_TEXT = "Hidden Personname, 5 Secretstreet"


def test_a_senders_error_key_is_data_never_the_endpoints_reason(client, store):
    """An object with a top-level ``"__error__"`` key: with the key column it was rejected by the mapper,
    without it read back as the endpoint's reason, the sender's text as the reason in both (its run's log,
    XCom summary and ledger). Now the first is a contact, the second rejected for its missing key."""
    body = json.dumps([{**CONTACT, ERROR_FIELD: SENDER_TEXT}, {ERROR_FIELD: SENDER_TEXT}]).encode()
    assert client.post("/signed", content=body, headers=signed(body)).json()["status"] == "accepted"
    source = WebhookSource(
        "signed", key_column="email", ledger_conn_id="webhook_ledger", state=MemoryStateStore()
    )
    mapping = ProfileMapping(matching="email", key={"email": "email"}, fields={"_fname": "first_name"})
    mapper = Mapper(mapping, source_key_column="email")
    mapped = [mapper.map(record) for batch in source.batches(None, 10) for record in batch]
    assert isinstance(mapped[0], Profile) and mapped[0].data == {"_fname": "Ann"}
    assert isinstance(mapped[1], Rejection)
    assert SENDER_TEXT not in repr(mapped)


def test_deliveries_an_earlier_version_stored_with_its_reasons_are_read_as_rejections(store):
    """An earlier endpoint stored a rejected item as ``{"__error__": reason}``: still a rejection, its text
    not repeated (a sender's object holding only that key was stored alike); its other records are read."""
    with store.engine.begin() as conn:
        conn.execute(
            deliveries_table.insert().values(
                pipeline="signed",
                delivery_key="legacy",
                received_at=datetime.now(),
                kind="hmac",
                record_count=2,
                records=json.dumps([CONTACT, {ERROR_FIELD: SENDER_TEXT}]),
            )
        )
    source = WebhookSource(
        "signed", key_column="email", ledger_conn_id="webhook_ledger", state=MemoryStateStore()
    )
    [first, second] = [record for batch in source.batches(None, 10) for record in batch]
    assert first == CONTACT and not isinstance(first, ErrorRecord)
    assert isinstance(second, ErrorRecord) and SENDER_TEXT not in repr(second)


@pytest.mark.parametrize("earlier", [True, False], ids=["earlier-version", "other-wording"])
def test_a_replay_of_a_stored_delivery_is_a_duplicate_whatever_its_rejections_say_now(client, store, earlier):
    """Its rejection stored in other words (``{"__error__": ...}`` by an earlier version) made the replay of
    a stored delivery a key stored with other records: 422, where its sender expects 200."""
    key = KINDS["hmac"].delivery_key(WebhookRequest({"idempotency-key": "d-1"}, {}, b""))
    rejection = {ERROR_FIELD: "an earlier wording"} if earlier else [ERROR_FIELD, "an earlier wording"]
    with store.engine.begin() as conn:
        conn.execute(
            deliveries_table.insert().values(
                pipeline="signed",
                delivery_key=key,
                received_at=datetime.now(),
                kind="hmac",
                record_count=2,
                records=json.dumps([CONTACT, rejection]),
            )
        )

    def post(*records: object) -> dict:
        body = json.dumps(records).encode()
        return client.post("/signed", content=body, headers={**signed(body), "Idempotency-Key": "d-1"}).json()

    assert post(CONTACT, 5) == {"status": "duplicate", "records": 2}
    assert post(CONTACT, [1]) == {"status": "duplicate", "records": 2}  # rejected for another reason
    for other in ((CONTACT,), ({**CONTACT, "email": "bob@example.com"}, 5), (CONTACT, 5, 5)):
        assert post(*other) == {"error": KEY_REUSED}
    assert store.count("signed") == 1


def test_a_webhooks_public_url_is_its_specs_else_the_api_servers_option(monkeypatch):
    option = "AIRFLOW__ALTCRAFT__WEBHOOK_PUBLIC_URL"
    hubspot = {"auth": "hubspot", "public_url": None}
    monkeypatch.delenv(option, raising=False)
    assert pinned_url(hubspot) is None
    monkeypatch.setenv(option, "https://hooks.example.com/")
    assert pinned_url(hubspot) == "https://hooks.example.com"
    assert pinned_url({**hubspot, "public_url": "https://crm.example.com"}) == "https://crm.example.com"
    monkeypatch.setenv(option, "https://ann:pa55@hooks.example.com")
    with pytest.raises(ValueError, match=r"^\[altcraft\] webhook_public_url: a user name or") as caught:
        pinned_url(hubspot)
    assert "pa55" not in str(caught.value)
    assert pinned_url({"auth": "hmac"}) is None  # its proof does not cover the URL: never refused for it


def test_shared_secret_endpoint(client, store):
    assert client.post("/shared", json=CONTACT, headers={SECRET_HEADER: SECRET}).status_code == 200
    assert client.post("/shared", json=CONTACT, headers={SECRET_HEADER: "nope"}).status_code == 401
    assert store.count("shared") == 1


def test_a_non_ascii_secret_authenticates_in_its_header_and_in_a_signature(store):
    """Header values were Starlette's Latin-1 text of their bytes, so a secret with a letter outside
    ASCII, sent in UTF-8, never equalled the connection's password: every delivery was 401."""
    secret = "пароль-für-webhooks"
    configs = {
        name: WebhookConfig(name, auth, secret, "webhook_ledger", 2048)
        for name, auth in (("shared", "secret"), ("signed", "hmac"))
    }
    client = TestClient(create_app(configs.get))
    answer = client.post("/shared", json=CONTACT, headers=[(SECRET_HEADER.encode(), secret.encode())])
    assert answer.json() == {"status": "accepted", "records": 1}, answer.text
    body = json.dumps({"email": "bob@example.com"}).encode()
    assert client.post("/signed", content=body, headers=signed(body, secret)).status_code == 200
    for wrong in (secret[:-1], "пароль-fur-webhooks", secret.encode("utf-16")):
        value = wrong if isinstance(wrong, bytes) else wrong.encode()
        other = client.post("/shared", json=CONTACT, headers=[(SECRET_HEADER.encode(), value)])
        assert other.status_code == 401, wrong
    assert store.count("shared") == store.count("signed") == 1


def test_an_idempotency_key_is_a_duplicate_only_with_the_same_contacts(client, store):
    """The key is not signed, so a key alone never makes a delivery a duplicate: with other contacts it is
    422 and nothing is stored (else a request replayed under a key its sender would use later made that
    later delivery a 200 'duplicate', its contacts never stored)."""
    first, ann_again = json.dumps([CONTACT]).encode(), json.dumps(CONTACT, indent=1).encode()
    captured = signed(first)
    answer = client.post("/signed", content=first, headers={**captured, "Idempotency-Key": "d-1"})
    assert answer.json()["status"] == "accepted"
    retry = client.post("/signed", content=ann_again, headers={**signed(ann_again), "Idempotency-Key": "d-1"})
    assert retry.json()["status"] == "duplicate"  # a retry of the same contacts, however serialised
    other = json.dumps([CONTACT, {"email": "eve@example.com"}]).encode()
    answer = client.post("/signed", content=other, headers={**signed(other), "Idempotency-Key": "d-1"})
    assert answer.status_code == 422 and "Idempotency-Key" in answer.json()["error"], answer.text
    assert "eve@" not in answer.text
    assert [records for _, records in store.read("signed", None)] == [[CONTACT]]


def test_a_captured_signed_request_replayed_under_a_new_idempotency_key_is_a_duplicate(client, store):
    """The key is not signed, the signature is: the same signature under another key is the same request
    (within its 5 minutes), so it is not stored again (a second launch under `every_run`), and the key
    it claimed stays free for the delivery that comes with it later."""
    first = json.dumps([CONTACT]).encode()
    captured = signed(first)
    assert client.post("/signed", content=first, headers={**captured, "Idempotency-Key": "d-1"}).json() == {
        "status": "accepted",
        "records": 1,
    }
    for key in ("d-2", "d-3", None):
        headers = {**captured, **({"Idempotency-Key": key} if key else {})}
        assert client.post("/signed", content=first, headers=headers).json()["status"] == "duplicate"
    later = json.dumps({"email": "bob@example.com"}).encode()
    answer = client.post("/signed", content=later, headers={**signed(later), "Idempotency-Key": "d-2"})
    assert answer.json()["status"] == "accepted", answer.text
    resent = client.post(
        "/signed",
        content=first,
        headers={**signed(first, at=int(captured[TIMESTAMP_HEADER]) + 1), "Idempotency-Key": "d-4"},
    )
    assert resent.json()["status"] == "accepted", "signed anew by the sender, with a new key: a new delivery"
    assert [records for _, records in store.read("signed", None)] == [
        [CONTACT],
        [{"email": "bob@example.com"}],
        [CONTACT],
    ]


def test_a_signature_in_upper_case_hex_is_accepted_and_is_the_same_request_as_in_lower_case(client, store):
    """Upper-case hex (.NET's Convert.ToHexString) was 'malformed': every delivery of such a sender 401.
    Accepted, it must stay one request: the same signature in the other case, under a new
    Idempotency-Key, is a replay, not a second delivery."""
    body = json.dumps([CONTACT]).encode()
    headers = signed(body)
    upper = {
        **headers,
        SIGNATURE_HEADER: "sha256=" + headers[SIGNATURE_HEADER].removeprefix("sha256=").upper(),
    }
    answer = client.post("/signed", content=body, headers={**upper, "Idempotency-Key": "d-1"})
    assert answer.json() == {"status": "accepted", "records": 1}, answer.text
    again = client.post("/signed", content=body, headers={**headers, "Idempotency-Key": "d-2"})
    assert again.json()["status"] == "duplicate"
    wrong = {
        **upper,
        SIGNATURE_HEADER: upper[SIGNATURE_HEADER][:-1] + ("0" if upper[SIGNATURE_HEADER][-1] != "0" else "1"),
    }
    assert client.post("/signed", content=body, headers=wrong).status_code == 401
    assert store.count("signed") == 1


def test_a_key_stored_with_other_records_is_a_conflict_and_the_same_records_in_any_order_a_replay(store):
    two = [{"email": "a@example.com"}, {"email": "b@example.com", "x": {"p": 1, "q": 2}}]
    assert store.put("p", "k", "hmac", two)
    assert not store.put("p", "k", "hmac", [{"x": {"q": 2, "p": 1}, "email": "b@example.com"}, two[0]])
    for other in ([two[0]], [*two, two[0]], [{"email": "c@example.com"}]):
        with pytest.raises(KeyConflict):
            store.put("p", "k", "hmac", other)
    assert store.count("p") == 1


def test_a_delivery_of_more_records_than_the_pipeline_takes_gets_413_and_is_stored_nowhere(store):
    client = TestClient(
        create_app({"few": WebhookConfig("few", "hmac", SECRET, "webhook_ledger", max_records=3)}.get)
    )
    three = json.dumps([{"email": f"p{i}@example.com"} for i in range(3)]).encode()
    assert client.post("/few", content=three, headers=signed(three)).json() == {
        "status": "accepted",
        "records": 3,
    }
    four = b"[{}, {}, {}, {}]"
    refused = client.post("/few", content=four, headers=signed(four))
    assert refused.status_code == 413
    assert refused.json() == {
        "error": "more than 3 records in one delivery (the pipeline's trigger.max_records)"
    }
    assert store.count("few") == 1


def test_records_beyond_the_bound_are_not_parsed():
    """Ten MiB of ``{},`` were 3.4 million dicts before the records were counted: now reading stops at the
    first record beyond the bound (what follows it, even no JSON, is never looked at)."""
    with pytest.raises(TooManyRecords, match="more than 3 records"):
        delivery_json(b"[{}, {}, {},\n {}, " + b"never read" * 1000, 3)
    assert delivery_json(b' [ {"a": [1, {"b": 2}]} , 2.5 ] ', 3) == [{"a": [1, {"b": 2}]}, 2.5]
    assert delivery_json(b'{"email": "a@example.com"}', 1) == {"email": "a@example.com"}


def test_size_limit_unknown_pipeline_and_bad_payloads_store_nothing(client, store):
    big = json.dumps({"email": "x@example.com", "pad": "x" * 4096}).encode()
    assert client.post("/signed", content=big, headers=signed(big)).status_code == 413
    assert client.post("/nobody", json=CONTACT).status_code == 404
    assert client.post("/bad-name!", json=CONTACT).status_code == 404
    for body in (b"not json", b"[]", b"[1, 2]", b'"text"'):
        assert client.post("/signed", content=body, headers=signed(body)).status_code == 400
    assert store.count("signed") == 0


def test_nesting_past_the_recursion_limit_is_400(store):
    """It was 500. (A contact that is parsed but nests too deep is its rejection: see the next test.)"""
    config = WebhookConfig("shared", "secret", SECRET, "webhook_ledger", 1_048_576)
    client = TestClient(create_app({"shared": config}.get))
    answer = client.post("/shared", content=b"[" * 100_000 + b"]" * 100_000, headers={SECRET_HEADER: SECRET})
    assert answer.status_code == 400 and "nests deeper than 32" in answer.json()["error"]
    assert store.count("shared") == 0


#: A delivery whose values no database stores as they are: a lone surrogate (JSON's ``\ud83d``), a NUL
ODD_DELIVERY = (
    b'[{"email": "ann@example.com", "name": "Ann \\ud83d", "nested": {"a": [1, {"b\\udcff": 2}]}},'
    b' {"email": "bob\\u0000@example.com", "name": "Bob"}, {"email": "cid@example.com", "name": "Cid"}]'
)


def assert_odd_delivery_is_stored_as_sent_and_its_contacts_rejected(
    conn_id: str, store: WebhookStore
) -> None:
    """`ODD_DELIVERY` is stored (a lone surrogate was 500, as no database encoding takes it, then U+FFFD:
    the contact launched with a name its sender never sent), read back as sent, recognised when replayed,
    and its contacts holding such values are rejected naming the field while the third maps."""
    config = WebhookConfig("shared", "secret", SECRET, conn_id, 1_048_576)
    client, headers = TestClient(create_app({"shared": config}.get)), {SECRET_HEADER: SECRET}
    assert client.post("/shared", content=ODD_DELIVERY, headers=headers).status_code == 200
    assert client.post("/shared", content=ODD_DELIVERY, headers=headers).json()["status"] == "duplicate"
    [(_, records)] = store.read("shared", None)
    assert records == json.loads(ODD_DELIVERY)
    source = WebhookSource("shared", key_column="email", ledger_conn_id=conn_id, state=MemoryStateStore())
    mapping = ProfileMapping(matching="email", key={"email": "email"}, fields={"_fname": "name"})
    mapper = Mapper(mapping, source_key_column="email")
    mapped = [mapper.map(record) for batch in source.batches(None, 10) for record in batch]
    assert [(m.field, m.reason) for m in mapped[:2]] == [
        ("_fname", "contains a lone surrogate (invalid unicode)"),
        ("email", "contains a control or invisible character (U+0000)"),
    ]
    assert mapped[2].data == {"_fname": "Cid"}


def test_a_delivery_no_database_stores_as_is_is_stored_as_sent_on_sqlite(store):
    assert_odd_delivery_is_stored_as_sent_and_its_contacts_rejected("webhook_ledger", store)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"1" * 5000, "a number has more than 4300 digits"),
        (b"1e999", "a number of 5 characters is too large"),
        (b"NaN", "NaN is no JSON value (only finite numbers are)"),
        (b"-Infinity", "-Infinity is no JSON value (only finite numbers are)"),
        (b"[" * 40 + b"]" * 40, "it nests deeper than 32 levels"),
        (b"[" * 600 + b"]" * 600, "it nests deeper than 32 levels"),  # past named_twice's recursion: a 500
    ],
)
def test_a_contact_holding_a_value_no_json_or_python_reads_is_its_rejection_and_the_others_stored(
    store, value, reason
):
    """Such a value (a 5,000-digit integer was a 500, past Python's digit limit for int(); NaN, Infinity and
    1e999, read as inf, which are no JSON, were stored) made the whole delivery 400: the other contacts were
    lost with it. Now that contact is stored as its reason only, in an array or as the whole body, and the
    others as they came; a body that is such a value alone still is 400."""
    config = WebhookConfig("shared", "secret", SECRET, "webhook_ledger", 1_048_576)
    client, headers = TestClient(create_app({"shared": config}.get)), {SECRET_HEADER: SECRET}
    odd = b'{"email": "y@example.com", "score": {"points": ' + value + b"}}"
    for body in (b'[{"email": "x@example.com"}, ' + odd + b', {"email": "z@example.com"}]', odd):
        answer = client.post("/shared", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
    source = WebhookSource(
        "shared", key_column="email", ledger_conn_id="webhook_ledger", state=MemoryStateStore()
    )
    first, second = (delivery_id for delivery_id, _ in store.read("shared", None))
    assert [(r["email"], r.get(ERROR_FIELD)) for batch in source.batches(None, 10) for r in batch] == [
        ("x@example.com", None),
        (f"delivery {first} item 2", reason),
        ("z@example.com", None),
        (f"delivery {second} item 1", reason),
    ]
    assert "y@example" not in json.dumps(list(store.read("shared", None)))
    answer = client.post("/shared", content=value, headers=headers)
    assert answer.status_code == 400 and "x@example" not in answer.text


def test_a_store_that_is_down_or_a_stale_kind_is_503_with_nothing_of_the_contact_logged(monkeypatch):
    """Both were a 500 with a traceback (the store's error quoting the database's message) in the log."""
    monkeypatch.setenv("AIRFLOW_CONN_WEBHOOK_DOWN", "postgresql://postgres@127.0.0.1:9/test")
    configs = {
        "down": WebhookConfig("down", "secret", SECRET, "webhook_down", 2048),
        "stale": WebhookConfig("stale", "kind-of-another-version", SECRET, "webhook_down", 2048),
    }
    client, lines = TestClient(create_app(configs.get)), []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("altcraft.webhooks.app").addHandler(handler)
    for pipeline in configs:
        answer = client.post(f"/{pipeline}", json=CONTACT, headers={SECRET_HEADER: SECRET})
        assert answer.status_code == 503, answer.text
        assert "ann@" not in answer.text and SECRET not in answer.text
    assert answer.json() == {"error": "webhook not configured"}
    logging.getLogger("altcraft.webhooks.app").removeHandler(handler)
    logged = "\n".join(lines)
    assert "down: a delivery was not stored: OperationalError" in logged
    assert "ann@" not in logged and SECRET not in logged


def test_deliveries_stored_in_the_default_sqlite_ledger_say_who_must_see_that_file(tmp_path, monkeypatch):
    """Without a ledger_conn_id the API server stored deliveries in the SQLite file of its own machine,
    answered 200, and a triggerer or worker elsewhere (docker-compose, Celery) never saw them: acknowledged,
    never launched, not a word."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__ALTCRAFT__LEDGER_CONN_ID", "")
    client = TestClient(create_app({"shared": WebhookConfig("shared", "secret", SECRET, None, 2048)}.get))
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("altcraft.webhooks.app").addHandler(handler)
    try:
        for email in ("ann@example.com", "bob@example.com"):
            answer = client.post("/shared", json={"email": email}, headers={SECRET_HEADER: SECRET})
            assert answer.json()["status"] == "accepted", answer.text
    finally:
        logging.getLogger("altcraft.webhooks.app").removeHandler(handler)
    warned = [line for line in lines if "without a ledger_conn_id" in line]
    assert len(warned) == 1 and str(tmp_path / "altcraft_ledger.db") in warned[0], lines
    assert "triggerer and the workers" in warned[0]


def raw_post(url: str, path: str, headers: dict[str, str], declared: int, sent: bytes = b"") -> str:
    """POST over a socket declaring a ``declared``-byte body but sending only ``sent``: the status line
    of the answer, or '' when the server is still waiting for the rest of the body after 2 s."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {declared}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection((host, int(port)), timeout=2) as conn:
        conn.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + sent)
        try:
            return conn.recv(4096).decode().split("\r\n")[0]
        except TimeoutError:
            return ""


def test_a_request_its_head_disproves_is_refused_before_its_body_is_read(client, store):
    """A header or query secret, a signature's header and timestamp are checked before the body is read:
    the body came first (up to max_bytes), so any client made the server wait for and buffer it."""
    kinds = {"shared": "secret", "signed": "hmac", "amocrm": "amocrm", "hubspot": "hubspot"}
    configs = {
        name: WebhookConfig(name, auth, SECRET, "webhook_ledger", 1_048_576) for name, auth in kinds.items()
    }
    fresh, stale = str(int(time.time())), str(int(time.time()) - 3600)
    refused = [
        ("/shared", {SECRET_HEADER: "wrong"}),
        ("/amocrm?secret=wrong", {}),
        ("/signed", {TIMESTAMP_HEADER: fresh}),  # no signature
        ("/signed", {TIMESTAMP_HEADER: stale, SIGNATURE_HEADER: "sha256=" + "0" * 64}),
        ("/hubspot", {HUBSPOT_TIMESTAMP: fresh + "000", HUBSPOT_SIGNATURE: "not base64 of 32 bytes"}),
    ]
    with serving_app(create_app(configs.get)) as url:
        for path, headers in refused:
            assert raw_post(url, path, headers, 1_000_000, b"[") == "HTTP/1.1 401 Unauthorized", headers
        assert raw_post(url, "/shared", {SECRET_HEADER: SECRET}, 1_000_000, b"[") == ""  # right: read on
    over = json.dumps({"email": "x@example.com", "pad": "x" * 4096}).encode()
    assert client.post("/shared", content=over, headers={SECRET_HEADER: "wrong"}).status_code == 401
    assert client.post("/shared", content=over, headers={SECRET_HEADER: SECRET}).status_code == 413
    assert store.count("shared") == 0


def test_a_body_not_sent_whole_in_time_is_408_and_one_cut_off_leaves_no_traceback(monkeypatch):
    """A client trickling its body held the connection and its buffer as long as it liked: also one
    without the secret, where the proof needs the body (a signature's shape and time are all it takes).
    And a client gone mid-body was an 'Exception in ASGI application' traceback in the log."""
    monkeypatch.setattr(app_module, "BODY_SECONDS", 1)
    configs = {"signed": WebhookConfig("signed", "hmac", SECRET, "webhook_ledger", 1_048_576)}
    forged = {TIMESTAMP_HEADER: str(int(time.time())), SIGNATURE_HEADER: "sha256=" + "0" * 64}
    head = ["POST /signed HTTP/1.1", "Host: x", "Content-Length: 1000"]
    head += [f"{name}: {value}" for name, value in forged.items()]
    errors: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: errors.append(record.getMessage())  # type: ignore[method-assign]
    try:
        with serving_app(create_app(configs.get)) as url:
            logging.getLogger("uvicorn.error").addHandler(handler)  # uvicorn set its loggers up on start
            address = url.removeprefix("http://").split(":")
            with socket.create_connection((address[0], int(address[1])), timeout=0.3) as conn:
                conn.sendall("\r\n".join(head).encode() + b"\r\n\r\n")
                started, answer = time.monotonic(), b""
                while not answer and time.monotonic() - started < 5:
                    conn.sendall(b"[")  # a byte every 0.3 s: never idle, never whole
                    with contextlib.suppress(TimeoutError):
                        answer = conn.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert time.monotonic() - started < 3
            with socket.create_connection((address[0], int(address[1])), timeout=2) as conn:
                conn.sendall("\r\n".join(head).encode() + b"\r\n\r\n[{")
            time.sleep(0.5)  # the server sees the client gone
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    assert errors == []


def test_failed_authentications_are_limited_per_address_and_pipeline_and_authenticated_ones_never(
    store, monkeypatch
):
    """Each forged delivery cost a body read, an HMAC and a log line, however many a client sent."""
    monkeypatch.setattr(app_module, "FAILURE_WINDOW", 2)
    configs = {
        name: WebhookConfig(name, auth, SECRET, "webhook_ledger", 2048, auth_failures_per_minute=3)
        for name, auth in (("signed", "hmac"), ("shared", "secret"))
    }
    app, lines = create_app(configs.get), []
    flood, crm = TestClient(app, client=("203.0.113.9", 1)), TestClient(app, client=("198.51.100.7", 1))
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("altcraft.webhooks.app").addHandler(handler)
    try:
        for n in range(10):  # authenticated deliveries are never counted
            body = json.dumps({"email": f"c{n}@example.com"}).encode()
            assert crm.post("/signed", content=body, headers=signed(body)).status_code == 200
        forged = signed(body, "wrong")
        answers = [flood.post("/signed", content=body, headers=forged) for _ in range(6)]
        assert [a.status_code for a in answers] == [401, 401, 401, 429, 429, 429]
        assert 1 <= int(answers[-1].headers["retry-after"]) <= 2
        assert flood.post("/signed", content=body, headers=signed(body)).status_code == 429  # needs the body
        assert crm.post("/signed", content=body, headers=signed(body)).json()["status"] == "duplicate"
        # a secret header proves a delivery without the body: a right one passes; a pipeline counts apart
        wrong, right = {SECRET_HEADER: "nope"}, {SECRET_HEADER: SECRET}
        codes = [flood.post("/shared", json=CONTACT, headers=wrong).status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        assert flood.post("/shared", json=CONTACT, headers=right).status_code == 200
        time.sleep(2.1)  # the window is over
        assert flood.post("/signed", content=body, headers=forged).status_code == 401
        assert flood.post("/signed", content=body, headers=signed(body)).json()["status"] == "duplicate"
    finally:
        logging.getLogger("altcraft.webhooks.app").removeHandler(handler)
    assert sum("refused a delivery from 203.0.113.9" in line for line in lines) == 3 + 3 + 1
    assert sum("3 failed authentications from 203.0.113.9" in line for line in lines) == 2


def test_an_ipv6_client_is_limited_by_its_64_not_by_each_address(store):
    """A host is given a whole IPv6 /64: counted per address, it had 30 more tries with each of its 2**64
    addresses, and spraying them pushed every other client's count out of the table."""
    configs = {
        "shared": WebhookConfig(
            "shared", "secret", SECRET, "webhook_ledger", 2048, auth_failures_per_minute=3
        )
    }
    app, wrong = create_app(configs.get), {SECRET_HEADER: "nope"}
    hosts = [f"2001:db8:0:7::{n:x}" for n in range(1, 6)]
    codes = [TestClient(app, client=(host, 1)).post("/shared", json=CONTACT, headers=wrong) for host in hosts]
    assert [answer.status_code for answer in codes] == [401, 401, 401, 429, 429]
    mapped = [TestClient(app, client=(host, 1)) for host in ("::ffff:192.0.2.5", "192.0.2.5")]
    codes = [client.post("/shared", json=CONTACT, headers=wrong) for client in mapped * 2]
    assert [answer.status_code for answer in codes] == [401, 401, 401, 429], "IPv4-mapped is IPv4"
    for other in ("2001:db8:0:8::1", "192.0.2.6"):  # another /64, another IPv4 address: not limited
        answer = TestClient(app, client=(other, 1)).post("/shared", json=CONTACT, headers=wrong)
        assert answer.status_code == 401


def test_a_client_posting_to_names_that_are_no_webhook_is_limited_like_failed_authentications(
    store, monkeypatch
):
    """Each made-up pipeline name cost a metadata lookup, however many a client sent."""
    monkeypatch.setattr(app_module, "AUTH_FAILURES_PER_MINUTE", 3)
    monkeypatch.setattr(app_module, "FAILURE_WINDOW", 2)
    config, looked_up = WebhookConfig("shared", "secret", SECRET, "webhook_ledger", 2048), []

    def lookup(pipeline: str) -> WebhookConfig | None:
        looked_up.append(pipeline)
        return config if pipeline == "shared" else None

    app = create_app(lookup)
    prober, crm = TestClient(app, client=("203.0.113.9", 1)), TestClient(app, client=("198.51.100.7", 1))
    headers = {SECRET_HEADER: SECRET}
    assert prober.post("/shared", json=CONTACT, headers=headers).status_code == 200
    codes = [prober.post(f"/guess_{n}", json=CONTACT).status_code for n in range(6)]
    assert codes == [404, 404, 404, 429, 429, 429]
    assert looked_up == ["shared", "guess_0", "guess_1", "guess_2"], "no lookup past the limit"
    assert prober.post("/shared", json=CONTACT, headers=headers).json()["status"] == "duplicate", (
        "known: passes"
    )
    assert crm.post("/guess_9", json=CONTACT).status_code == 404, "another client is not limited"
    time.sleep(2.1)  # the window is over
    assert prober.post("/guess_10", json=CONTACT).status_code == 404


def test_a_pipeline_whose_lookup_fails_is_looked_up_once_in_a_while_and_its_errors_are_limited(monkeypatch):
    """A pipeline whose secret connection is missing answered 503 after a metadata query and a secrets
    backend call per delivery, each logged, however many deliveries a client sent."""
    monkeypatch.setattr(app_module, "AUTH_FAILURES_PER_MINUTE", 3)
    looked_up, lines = [], []

    def lookup(pipeline: str) -> WebhookConfig | None:
        looked_up.append(pipeline)
        raise LookupError(f"connection 'hook_secret' of webhook {pipeline} has no password")

    app = create_app(lookup)
    prober, crm = TestClient(app, client=("203.0.113.9", 1)), TestClient(app, client=("198.51.100.7", 1))
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("altcraft.webhooks.app").addHandler(handler)
    try:
        codes = [prober.post("/broken", json=CONTACT).status_code for _ in range(6)]
        assert crm.post("/broken", json=CONTACT).status_code == 503
    finally:
        logging.getLogger("altcraft.webhooks.app").removeHandler(handler)
    assert codes == [503, 503, 503, 429, 429, 429]
    assert looked_up == ["broken"], "one lookup within CACHE_SECONDS"
    assert sum("Webhook broken is not usable: LookupError" in line for line in lines) == 3 + 1


def test_failures_are_counted_for_a_bounded_number_of_addresses():
    """Like the settings cache: a client spraying addresses or pipeline names must not grow memory."""
    failures = _Failures()
    failures.fail(("192.0.2.1", "first"))
    for n in range(FAILURE_ENTRIES):
        failures.fail((f"10.0.{n // 256}.{n % 256}", "p"))
    assert failures.wait(("10.0.15.255", "p"), 1) is not None  # recent counts are kept
    assert failures.wait(("192.0.2.1", "first"), 1) is None  # the oldest was dropped to make room


def test_the_settings_cache_keeps_a_bounded_number_of_pipelines():
    """Each made-up pipeline name a client posted to stayed in the cache for good (memory without bound)."""
    asked: list[str] = []
    cached = _Cached(lambda pipeline: asked.append(pipeline))
    cached("first")
    for n in range(CACHE_ENTRIES):
        cached(f"made_up_{n}")
    cached(f"made_up_{CACHE_ENTRIES - 1}")
    assert asked.count(f"made_up_{CACHE_ENTRIES - 1}") == 1  # recent answers are still kept
    cached("first")
    assert asked.count("first") == 2  # the oldest was dropped to make room


def test_store_reads_in_id_order_past_a_position(store):
    for index in range(5):
        key = hashlib.sha256(str(index).encode()).hexdigest()
        assert store.put("p", key, "hmac", [{"email": f"c{index}@example.com"}])
    ids = [delivery_id for delivery_id, _ in store.read("p", None, batch=2)]
    assert ids == sorted(ids) and len(ids) == 5
    assert [d for d, _ in store.read("p", ids[2])] == ids[3:]
    assert store.probe("p", ids[-1]).newest is None
    with store.engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM altcraft_webhook_deliveries")) == 5


def test_a_webhook_commit_after_a_higher_one_leaves_the_higher_position(store):
    """Two runs read from one position; the one that read more (a later delivery too) commits first, then
    the other. Main saved blindly: the position moved back, and the next run read the later delivery
    again. A commit now keeps the later position; `start_position` names the one a read starts from."""
    state = MemoryStateStore()

    def source() -> WebhookSource:
        return WebhookSource("p", key_column="email", ledger_conn_id="webhook_ledger", state=state)

    def put(index: int) -> None:
        assert store.put("p", f"{index:064x}", "hmac", [{"email": f"c{index}@example.com"}])

    put(1)
    less, more = source(), source()
    assert len([r for batch in less.batches(None, 10) for r in batch]) == 1
    put(2)
    assert len([r for batch in more.batches(None, 10) for r in batch]) == 2
    more.commit()
    less.commit()
    assert list(source().batches(None, 10)) == []
    later = source()
    assert later.ignores_window and later.start_position() == str(max(d for d, _ in store.read("p", None)))


def test_a_store_probe_waiting_on_a_lock_is_cancelled_after_its_timeout():
    """The trigger's probe of the deliveries waited for as long as a lock held the table (a migration),
    holding its connection; the database cancels it after the timeout, and the next probe answers. In a
    schema of its own, so that the lock holds up no other test."""
    schema = f"probe_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    engine = sa.create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/test",
        connect_args={"options": f"-csearch_path={schema}"},
    )
    store = WebhookStore(engine)
    try:
        assert store.probe("p", None).deliveries == 0
        with engine.connect() as locker:
            locker.exec_driver_sql("LOCK TABLE altcraft_webhook_deliveries IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(
                TimeoutError, match=r"^no answer within 0\.3s: the database cancelled the query"
            ):
                store.probe("p", None, timeout=0.3)
            assert time.monotonic() - started < 3
            locker.rollback()
        assert store.probe("p", None, timeout=0.3).deliveries == 0
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def test_an_unreadable_stored_delivery_or_record_is_its_error_record_and_the_rest_are_read(store):
    """A delivery cut short by an older TEXT column (or a record that is not an object) failed every run
    at json.loads and held the pipeline's position there for good."""
    for index in range(3):
        key = hashlib.sha256(str(index).encode()).hexdigest()
        assert store.put("p", key, "hmac", [{"email": f"c{index}@example.com"}, {"email": f"d{index}@x.org"}])
    ids = [delivery_id for delivery_id, _ in store.read("p", None)]
    table = "altcraft_webhook_deliveries"
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {table} SET records = :t WHERE id = :i"), {"t": '[{"email": "c1@ex', "i": ids[1]}
        )
        conn.execute(
            sa.text(f"UPDATE {table} SET records = :t WHERE id = :i"),
            {"t": '[7, {"email": "e@x.org"}]', "i": ids[2]},
        )
    state = MemoryStateStore()
    source = WebhookSource("p", key_column="email", ledger_conn_id="webhook_ledger", state=state)

    records = [r for batch in source.batches(None, 10) for r in batch]
    source.commit()

    assert [(r["email"], r.get(ERROR_FIELD)) for r in records] == [
        ("c0@example.com", None),
        ("d0@x.org", None),
        (f"delivery {ids[1]}", "its stored records are not a JSON list (cut short?)"),
        (f"delivery {ids[2]} item 1", "not a JSON object but int"),
        ("e@x.org", None),
    ]
    assert list(source.batches(None, 10)) == []


def test_the_api_server_routes_the_endpoint_to_this_app_beside_every_other_plugin():
    """Airflow mounts plugin apps by URL prefix: another plugin's prefix must not swallow ours."""
    from airflow.api_fastapi.app import init_plugins
    from fastapi import FastAPI

    server = FastAPI()
    init_plugins(server)
    answer = TestClient(server).post("/altcraft-webhooks/no_such_pipeline", json=CONTACT)
    # this app's own answer: unknown pipeline, or no metadata database to look it up in here
    assert answer.status_code in (404, 503) and answer.json().get("error") in (
        "no such webhook",
        "webhook not configured",
    ), answer.text


# ------------------------------------------------------------------------------ PostgreSQL, MariaDB

SERVERS = {"postgresql": "postgresql://postgres@127.0.0.1:5432", "mariadb": "mysql://root@127.0.0.1:3306"}


@pytest.fixture(params=list(SERVERS))
def server_store(request, monkeypatch):
    """A store in a database of its own on PostgreSQL or MariaDB: connection ``webhook_server``."""
    server, name = SERVERS[request.param], f"altcraft_hooks_{uuid.uuid4().hex[:10]}"
    postgres = request.param == "postgresql"
    admin = sa.create_engine(f"{server}/{'postgres' if postgres else 'test'}", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}" + ("" if postgres else " CHARACTER SET utf8mb4"))
    monkeypatch.setenv("AIRFLOW_CONN_WEBHOOK_SERVER", f"{server}/{name}")
    store = WebhookStore.from_conn_id("webhook_server")
    yield store
    store.engine.dispose()
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if postgres else ""))
    admin.dispose()


def server_client(max_bytes: int = 2048) -> TestClient:
    return TestClient(
        create_app({"shared": WebhookConfig("shared", "secret", SECRET, "webhook_server", max_bytes)}.get)
    )


def test_a_delivery_no_database_stores_as_is_is_stored_as_sent(server_store):
    assert_odd_delivery_is_stored_as_sent_and_its_contacts_rejected("webhook_server", server_store)


def test_a_delivery_that_commits_late_is_not_skipped_by_a_run_that_read_a_later_one(server_store):
    """Two API server threads store deliveries of one pipeline at once, the one with the smaller id still
    uncommitted while a run reads: the run must not move its position past it (lost after its 200)."""
    client, paused, release = server_client(), threading.Event(), threading.Event()

    def hold_the_first_insert(conn, cursor, statement, *args) -> None:
        if statement.startswith("INSERT INTO altcraft_webhook_deliveries") and not paused.is_set():
            paused.set()
            release.wait(20)

    def post(email: str) -> int:
        return client.post("/shared", json={"email": email}, headers={SECRET_HEADER: SECRET}).status_code

    state, read = MemoryStateStore(), []

    def run() -> None:
        source = WebhookSource("shared", key_column="email", ledger_conn_id="webhook_server", state=state)
        read.extend(record["email"] for batch in source.batches(None, 10) for record in batch)
        source.commit()

    sa.event.listen(sa.Engine, "after_cursor_execute", hold_the_first_insert)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, "first@example.com")
            assert paused.wait(20)
            second = pool.submit(post, "second@example.com")
            wait([second], timeout=1.5)  # stored at once, or waiting for the first to commit
            run()
            release.set()
            assert first.result() == second.result() == 200
    finally:
        release.set()
        sa.event.remove(sa.Engine, "after_cursor_execute", hold_the_first_insert)
    run()
    assert sorted(read) == ["first@example.com", "second@example.com"]


def test_a_large_delivery_is_stored_whole_also_in_a_table_of_an_older_version(server_store):
    """MySQL/MariaDB's TEXT holds 64 KiB, far below ``max_bytes``: a larger delivery got 500 at every retry
    (or, without strict mode, was cut); a table made with TEXT is widened."""
    if server_store.engine.dialect.name != "postgresql":
        with server_store.engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE altcraft_webhook_deliveries (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
                " pipeline VARCHAR(100) NOT NULL, delivery_key VARCHAR(64) NOT NULL,"
                " kind VARCHAR(32) NOT NULL, received_at DATETIME NOT NULL, record_count INT NOT NULL,"
                " records TEXT NOT NULL,"
                " UNIQUE KEY uq_altcraft_webhook_delivery (pipeline, delivery_key))"
                " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"
            )
    contacts = [{"email": f"c{n}@example.com", "first_name": "Анна 😀" * 20} for n in range(1000)]
    body = json.dumps(contacts, ensure_ascii=False).encode()
    assert len(body) > 200_000
    answer = server_client(1_048_576).post("/shared", content=body, headers={SECRET_HEADER: SECRET})
    assert answer.status_code == 200, answer.text
    assert [records for _, records in server_store.read("shared", None)] == [contacts]


@pytest.mark.parametrize("proof_column", [False, True], ids=["before-proof", "proof-without-its-key"])
def test_a_table_of_an_older_version_gets_the_proof_and_keeps_its_rows_on_sqlite(store, proof_column):
    assert_older_table_upgraded(WebhookStore(store.engine), proof_column)


@pytest.mark.parametrize("proof_column", [False, True], ids=["before-proof", "proof-without-its-key"])
def test_a_table_of_an_older_version_gets_the_proof_and_keeps_its_rows(server_store, proof_column):
    """``proof-without-its-key``: MySQL/MariaDB commit each statement, so a process ended after the column was
    added and before its unique key left a table every later start took for upgraded: a signed request
    replayed under another ``Idempotency-Key`` was stored again."""
    assert_older_table_upgraded(server_store, proof_column)


def create_older_table(engine: sa.Engine, *, proof_column: bool = False) -> None:
    """The deliveries table as a version before ``proof`` made it (or with the column and not its unique
    key), holding one delivery, and the heads table."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS altcraft_webhook_deliveries")
    old = sa.MetaData()
    sa.Table(
        "altcraft_webhook_deliveries",
        old,
        *(column.copy() for column in deliveries_table.columns if proof_column or column.name != "proof"),
        sa.UniqueConstraint("pipeline", "delivery_key", name="uq_altcraft_webhook_delivery"),
    )
    heads_table.to_metadata(old)
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            old.tables["altcraft_webhook_deliveries"].insert(),
            [{"pipeline": "p", "delivery_key": "k0", "kind": "hmac", "received_at": datetime(2026, 1, 1),
              "record_count": 1, "records": '[{"email": "old@example.com"}]'}],
        )  # fmt: skip


def test_an_upgrade_the_database_user_may_not_make_says_what_to_do(server_store):
    """A table of an older version on a connection whose user may write rows but not alter tables: every
    delivery failed with the database's bare refusal ('must be owner of table', 'ALTER command denied')."""
    from altcraft.ledger.schema import LedgerSchemaError
    from tests.ledger.test_store import user_who_may_only_write_rows

    create_older_table(server_store.engine)
    with user_who_may_only_write_rows(server_store.engine) as writer:
        with pytest.raises(LedgerSchemaError, match=r"webhook store's tables .*docs/ledger\.md"):
            WebhookStore(writer).put("p", "k1", "hmac", [{"email": "a@example.com"}], proof="a" * 64)
        server_store.ensure_schema()  # the DBA (the table's owner) upgrades it
        assert WebhookStore(writer).put("p", "k1", "hmac", [{"email": "a@example.com"}], proof="a" * 64)


def assert_older_table_upgraded(store: WebhookStore, proof_column: bool) -> None:
    """A table made before ``proof``: the column and its unique constraint are added, old rows read on."""
    create_older_table(store.engine, proof_column=proof_column)

    assert store.put("p", "k1", "hmac", [{"email": "a@example.com"}], proof="a" * 64)
    assert not store.put("p", "k2", "hmac", [{"email": "a@example.com"}], proof="a" * 64), "the same request"
    assert store.put("p", "k3", "hmac", [{"email": "b@example.com"}], proof="b" * 64)
    assert store.put("q", "k1", "hmac", [{"email": "a@example.com"}], proof="a" * 64), "another pipeline's"
    assert [records for _, records in store.read("p", None)] == [
        [{"email": "old@example.com"}],
        [{"email": "a@example.com"}],
        [{"email": "b@example.com"}],
    ]
    with store.engine.begin() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(deliveries_table.insert().values(
            pipeline="p", delivery_key="k9", kind="hmac", received_at=datetime(2026, 1, 1), record_count=0,
            records="[]", proof="a" * 64))  # fmt: skip


def test_a_pipelines_head_row_deleted_meanwhile_is_added_again_before_the_next_delivery(server_store):
    """The row each storing transaction locks: deleted while the process runs (by hand, say), the next
    delivery adds it again and takes its lock, rather than committing unserialised."""
    assert server_store.put("shared", "k1", "secret", [{"email": "a@example.com"}])
    with server_store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM altcraft_webhook_heads")
    assert server_store.put("shared", "k2", "secret", [{"email": "b@example.com"}])
    with server_store.engine.connect() as conn:
        heads = conn.exec_driver_sql("SELECT pipeline FROM altcraft_webhook_heads").scalars().all()
    assert heads == ["shared"]
    assert not server_store.put("shared", "k2", "secret", [{"email": "b@example.com"}])  # a replay
    with pytest.raises(KeyConflict):  # the key of another delivery
        server_store.put("shared", "k2", "secret", [{"email": "c@example.com"}])


def test_an_object_naming_a_key_twice_is_a_plain_dict_when_the_reader_takes_it_so():
    twice = b'{"email": "a@example.com", "data": {"x": 1, "x": 2}, "email": "b@example.com"}'
    plain = strict_json(twice, named_twice=False)
    assert plain == {"email": "b@example.com", "data": {"x": 2}}
    assert type(plain) is dict and type(plain["data"]) is dict
    assert type(strict_json(twice)) is NamedTwice and strict_json(twice) == plain
    with pytest.raises(BadPayload, match="NaN is no JSON value"):
        strict_json(b'{"x": NaN}', named_twice=False)
