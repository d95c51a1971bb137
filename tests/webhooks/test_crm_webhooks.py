"""CRM webhooks: each CRM's payload and proof at the endpoint, then the run fetching the full contacts.

The endpoint app runs in-process (FastAPI's TestClient) on a real SQLite store; the CRM source reads
the stored ids and fetches the contacts from a fake CRM over HTTP.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from altcraft.sources import ERROR_FIELD, MemoryStateStore
from altcraft.sources.crm import AmoCrmSpec, Bitrix24Spec, HubSpotSpec
from altcraft.sources.crm.base import WebhookRead, not_a_stored_id
from altcraft.sources.webhook import WebhookSource
from altcraft.webhooks.app import WebhookConfig, create_app
from altcraft.webhooks.kinds import HUBSPOT_SIGNATURE, HUBSPOT_TIMESTAMP, hubspot_signature
from altcraft.webhooks.store import WebhookStore
from tests.fake_crms import FakeAmoCrm, FakeBitrix24, FakeHubSpot, serving, without
from tests.fake_crms.server import people

SECRET = "crm-webhook-secret-for-tests"
FAST = {"requests_per_second": 1000, "backoff_seconds": 0.01}


@pytest.fixture
def store(tmp_path, monkeypatch) -> WebhookStore:
    monkeypatch.setenv("AIRFLOW_CONN_CRM_HOOK_LEDGER", f"sqlite:///{tmp_path / 'ledger.db'}")
    store = WebhookStore.from_conn_id("crm_hook_ledger")
    store.ensure_schema()
    return store


@pytest.fixture
def client(store) -> TestClient:
    configs = {
        name: WebhookConfig(name, name.removesuffix("_welcome"), SECRET, "crm_hook_ledger", 65536)
        for name in ("amocrm_welcome", "bitrix24_welcome", "hubspot_welcome")
    }
    return TestClient(create_app(configs.get), base_url="https://airflow.example.org")


FORM = {"content-type": "application/x-www-form-urlencoded"}


def amo_body(*ids: int | str) -> bytes:
    fields = [("account[subdomain]", "example"), ("account[id]", "28805383")]
    for n, contact_id in enumerate(ids):
        fields += [
            (f"contacts[add][{n}][id]", str(contact_id)),
            (f"contacts[add][{n}][name]", f"Contact {contact_id}"),
        ]
    return urlencode(fields).encode()


def b24_body(
    contact_id: int | str, token: str = SECRET, ts: int = 1724775198, event: str = "ONCRMCONTACTADD"
) -> bytes:
    return urlencode(
        [
            ("event", event),
            ("event_handler_id", "15"),
            ("data[FIELDS][ID]", str(contact_id)),
            ("ts", str(ts)),
            ("auth[domain]", "some-domain.bitrix24.com"),
            ("auth[member_id]", "a223c6b3710f85df22e9377d6c4f7553"),
            ("auth[application_token]", token),
        ]
    ).encode()


def hubspot_body(*ids: int, event_base: int = 3816279340) -> bytes:
    return json.dumps(hubspot_events(*ids, event_base=event_base)).encode()


def hubspot_events(*ids: int | str, event_base: int = 3816279340) -> list[dict]:
    return [
        {
            "eventId": event_base + n,
            "subscriptionId": 25,
            "portalId": 33,
            "appId": 1160452,
            "occurredAt": 1462216307945,
            "subscriptionType": "contact.creation",
            "attemptNumber": 0,
            "objectId": contact_id,
            "changeSource": "CRM",
            "changeFlag": "NEW",
        }
        for n, contact_id in enumerate(ids)
    ]


def hubspot_headers(
    body: bytes, *, secret: str = SECRET, at_ms: int | None = None, url: str | None = None
) -> dict:
    stamp = str(int(time.time() * 1000) if at_ms is None else at_ms)
    url = url or "https://airflow.example.org/hubspot_welcome"
    return {
        "content-type": "application/json",
        HUBSPOT_TIMESTAMP: stamp,
        HUBSPOT_SIGNATURE: hubspot_signature(secret, "POST", url, body, stamp),
    }


def stored_ids(store, pipeline) -> list[list[str]]:
    return [[r["id"] for r in records] for _, records in store.read(pipeline, None)]


# ----------------------------------------------------------------------------------------- amoCRM


def hubspot_webhook_source(fake: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The HubSpot source reading the ``hubspot_welcome`` webhook's stored ids, its connection at ``fake``."""
    host, port = fake.url.rsplit(":", 1)
    conn = {"conn_type": "generic", "host": host, "port": int(port), "password": fake.token}
    monkeypatch.setenv("AIRFLOW_CONN_CRM_HOOK", json.dumps(conn))
    read = WebhookRead(endpoint="hubspot_welcome", ledger_conn_id="crm_hook_ledger")
    return HubSpotSpec(type="hubspot", conn_id="crm_hook", webhook=read, **FAST).build(MemoryStateStore())


def test_amocrm_form_with_the_url_secret_stores_the_added_ids(client, store):
    answer = client.post(f"/amocrm_welcome?secret={SECRET}", content=amo_body(7, 8), headers=FORM)
    assert answer.json() == {"status": "accepted", "records": 2}
    assert (
        client.post(f"/amocrm_welcome?secret={SECRET}", content=amo_body(7, 8), headers=FORM).json()["status"]
        == "duplicate"
    )
    assert stored_ids(store, "amocrm_welcome") == [["7", "8"]]


@pytest.mark.parametrize("query", ["", "?secret=wrong", "?token=" + SECRET])
def test_amocrm_forged_deliveries_get_401(client, store, query):
    answer = client.post(f"/amocrm_welcome{query}", content=amo_body(7), headers=FORM)
    assert answer.status_code == 401 and SECRET not in answer.text
    assert store.count("amocrm_welcome") == 0


def test_amocrm_other_events_or_a_json_body_are_400(client, store):
    updated = urlencode([("contacts[update][0][id]", "7")]).encode()
    for body in (updated, b'{"contacts": {"add": [{"id": 7}]}}'):
        assert client.post(f"/amocrm_welcome?secret={SECRET}", content=body, headers=FORM).status_code == 400
    assert store.count("amocrm_welcome") == 0


# --------------------------------------------------------------------------------------- Bitrix24


def test_bitrix24_event_with_the_application_token_stores_the_id_once(client, store):
    assert (
        client.post("/bitrix24_welcome", content=b24_body(554), headers=FORM).json()["status"] == "accepted"
    )
    replayed_later = b24_body(554, ts=1724779999)  # a replay with another ts is still that contact
    assert (
        client.post("/bitrix24_welcome", content=replayed_later, headers=FORM).json()["status"] == "duplicate"
    )
    assert stored_ids(store, "bitrix24_welcome") == [["554"]]


def test_bitrix24_forged_token_or_other_event_is_refused(client, store):
    assert (
        client.post("/bitrix24_welcome", content=b24_body(1, token="forged"), headers=FORM).status_code == 401
    )
    assert (
        client.post(
            "/bitrix24_welcome",
            content=b24_body(1).replace(b"auth%5Bapplication_token%5D", b"x"),
            headers=FORM,
        ).status_code
        == 401
    )
    assert (
        client.post("/bitrix24_welcome", content=b24_body(1, event="ONCRMDEALADD"), headers=FORM).status_code
        == 400
    )
    assert store.count("bitrix24_welcome") == 0


def test_bitrix24_a_body_that_is_not_a_form_is_401_not_500(client, store):
    """The token is looked for before the sender is known: a body that is no form has none."""
    many_fields = b"&".join([b"x=1"] * 2000) + b"&" + b24_body(1)
    for body in (b"\xff\xfe{}", b"a&&b", b'{"auth": {"application_token": "x"}}', many_fields):
        answer = client.post("/bitrix24_welcome", content=body, headers=FORM)
        assert answer.status_code == 401, answer.text
    assert store.count("bitrix24_welcome") == 0


def read_back(pipeline: str) -> list[tuple[str, str | None]]:
    """What a run reads of the pipeline's stored deliveries (the stored ids the CRM source fetches, and the
    rejections): (id or place, reason)."""
    source = WebhookSource(
        pipeline,
        key_column="id",
        ledger_conn_id="crm_hook_ledger",
        state=MemoryStateStore(),
        check=not_a_stored_id,
    )
    return [(r["id"], r.get(ERROR_FIELD)) for batch in source.batches(None, 10) for r in batch]


#: per CRM: the form field of the second contact's id, and the deliveries of contacts 7, 8 and 10 with that
#: field given twice (8, then 9)
NAMED_TWICE = {
    "amocrm": ("contacts[add][1][id]", lambda again: [amo_body(7, 8, 10) + again]),
    "bitrix24": ("data[FIELDS][ID]", lambda again: [b24_body(7), b24_body(8) + again, b24_body(10)]),
}


@pytest.mark.parametrize("crm", sorted(NAMED_TWICE))
def test_a_contact_whose_form_names_a_field_twice_is_its_rejection_and_the_others_are_stored(
    client, store, crm
):
    """Every value of the form was taken: a contact naming its id twice (two values for one field) had both
    ids fetched and launched, whichever its sender meant; a JSON record naming a key twice is rejected."""
    field, deliveries = NAMED_TWICE[crm]
    for body in deliveries(b"&" + urlencode([(field, "9")]).encode()):
        assert client.post(f"/{crm}_welcome?secret={SECRET}", content=body, headers=FORM).status_code == 200

    [(delivery, records)] = [d for d in store.read(f"{crm}_welcome", None) if "id" not in d[1][-1]]
    rejected = (f"delivery {delivery} item {len(records)}", f"the form names {field!r} twice")
    expected = (
        [("7", None), ("10", None), rejected] if crm == "amocrm" else [("7", None), rejected, ("10", None)]
    )
    assert read_back(f"{crm}_welcome") == expected


#: ids no CRM sends (not a number, empty, negative, more than 20 digits, with a space or a point inside)
NOT_IDS = ["abc", "", "-5", "1" * 21, "1 2", "7.5"]


@pytest.mark.parametrize("bad", NOT_IDS)
@pytest.mark.parametrize("crm", sorted(NAMED_TWICE))
def test_a_contact_whose_id_is_no_contact_id_is_its_rejection_and_the_others_are_stored(
    client, store, crm, bad
):
    """Such an id made the whole delivery 400: its valid contacts were lost with it (a CRM resends nothing,
    or everything); a bad contact is its own rejection naming the field, never its value."""
    field = {"amocrm": "contacts[add][1][id]", "bitrix24": "data[FIELDS][ID]"}[crm]
    bodies = [amo_body(7, bad, 10)] if crm == "amocrm" else [b24_body(7), b24_body(bad), b24_body(10)]
    for body in bodies:
        answer = client.post(f"/{crm}_welcome?secret={SECRET}", content=body, headers=FORM)
        assert answer.status_code == 200, answer.text

    [(delivery, records)] = [d for d in store.read(f"{crm}_welcome", None) if "id" not in d[1][-1]]
    reason = f"{field} is {'not a contact id' if bad else 'empty'} (1 to 20 digits)"
    rejected = (f"delivery {delivery} item {len(records)}", reason)
    expected = (
        [("7", None), ("10", None), rejected] if crm == "amocrm" else [("7", None), rejected, ("10", None)]
    )
    assert read_back(f"{crm}_welcome") == expected
    assert records[-1] == {ERROR_FIELD: reason}  # the value itself is stored nowhere


def hubspot_rejected(attempt: int) -> bytes:
    """A HubSpot event naming its objectId twice and carrying no eventId, as attempt ``attempt`` sends it."""
    [event] = hubspot_events(66)
    del event["eventId"]
    event["attemptNumber"] = attempt
    return json.dumps([event]).replace('"objectId": 66', '"objectId": 6, "objectId": 7').encode()


#: per CRM: the first delivery of an event whose one contact is rejected, and its repetition as the CRM sends
#: it again (Bitrix24: another ``ts``; HubSpot: the next ``attemptNumber``; amoCRM: the same form)
REPEATED_REJECTIONS = {
    "amocrm": (amo_body("x1"), amo_body("x1")),
    "bitrix24": (b24_body("x1"), b24_body("x1", ts=1724779999)),
    "hubspot": (hubspot_rejected(0), hubspot_rejected(1)),
}


@pytest.mark.parametrize("crm", sorted(REPEATED_REJECTIONS))
def test_a_repeated_event_of_a_rejected_contact_is_a_duplicate_stored_once(client, store, crm):
    """An accepted contact's event was keyed by what names it (the contact id, the eventId), a rejected
    one's by its body, which the CRM's repetition changes: stored, and so rejected, once per repetition."""
    first, again = REPEATED_REJECTIONS[crm]
    answers = []
    for body in (first, again):
        signed = crm == "hubspot"  # its signature covers the URL
        url = f"/{crm}_welcome" if signed else f"/{crm}_welcome?secret={SECRET}"
        answer = client.post(url, content=body, headers=hubspot_headers(body) if signed else FORM)
        answers.append(answer.json())
    assert [answer["status"] for answer in answers] == ["accepted", "duplicate"], answers
    assert [len(read_back(f"{crm}_welcome"))] == [1]


def test_two_bitrix24_events_of_other_rejected_contacts_are_two_deliveries(client, store):
    """Keyed by its data, not by its reason: another event rejected for the same reason is not a replay."""
    for contact in ("x1", "x2"):
        answer = client.post("/bitrix24_welcome", content=b24_body(contact), headers=FORM)
        assert answer.json()["status"] == "accepted"
    assert store.count("bitrix24_welcome") == 2


def test_an_amocrm_contact_without_an_id_is_its_rejection_not_dropped(client, store):
    """Only ``[id]`` fields were read: a contact without one vanished from its delivery without a word."""
    body = amo_body(7, 10) + b"&" + urlencode([("contacts[add][2][name]", "Nameless")]).encode()
    assert client.post(f"/amocrm_welcome?secret={SECRET}", content=body, headers=FORM).status_code == 200
    [(delivery, _)] = store.read("amocrm_welcome", None)
    assert read_back("amocrm_welcome") == [
        ("7", None),
        ("10", None),
        (f"delivery {delivery} item 3", "the form has no contacts[add][2][id]"),
    ]


# ---------------------------------------------------------------------------------------- HubSpot


def test_a_hubspot_event_that_is_no_creation_of_a_contact_id_is_its_rejection_and_the_others_stored(
    client, store
):
    """An event that is no object, names a key twice, or whose objectId is no contact id made the whole
    delivery 400, losing its other events (HubSpot does not retry a 4xx)."""
    good, bad_id, missing, twice, other = hubspot_events(512, "x1", 0, 66, 0)
    del missing["objectId"]
    other["subscriptionType"] = "contact.propertyChange"  # not ours: left out, as before
    events = [good, bad_id, missing, twice, 5, other, *hubspot_events(513, event_base=9)]
    body = json.dumps(events).replace('"objectId": 66', '"objectId": 6, "objectId": 7').encode()
    answer = client.post("/hubspot_welcome", content=body, headers=hubspot_headers(body))
    assert answer.json() == {"status": "accepted", "records": 6}, answer.text
    [(delivery, _)] = store.read("hubspot_welcome", None)
    assert read_back("hubspot_welcome") == [
        ("512", None),
        ("513", None),
        (f"delivery {delivery} item 3", "event 2 objectId is not a contact id (1 to 20 digits)"),
        (f"delivery {delivery} item 4", "event 3 objectId is empty (1 to 20 digits)"),
        (f"delivery {delivery} item 5", "event 4: an object names 'objectId' twice"),
        (f"delivery {delivery} item 6", "event 5: not a JSON object but int"),
    ]


def test_a_hubspot_events_error_key_is_never_stored_as_the_endpoints_reason(client, store):
    """A signed event with an ``"__error__"`` key was stored as the endpoint's rejection, the sender's text
    its reason (``event 1: <text>``), though it names a contact: now it is read as the event it is."""
    text = "Hidden Personname, 5 Secretstreet"
    forged, other = hubspot_events(512, 513)
    forged["__error__"] = text
    other["__error__"], other["subscriptionType"] = text, "contact.propertyChange"  # not ours: left out
    body = json.dumps([forged, other]).encode()
    answer = client.post("/hubspot_welcome", content=body, headers=hubspot_headers(body))
    assert answer.json() == {"status": "accepted", "records": 1}, answer.text
    assert read_back("hubspot_welcome") == [("512", None)]


def test_hubspot_signed_events_store_the_contact_ids_and_a_replay_is_a_duplicate(client, store):
    body = hubspot_body(512, 513)
    assert client.post("/hubspot_welcome", content=body, headers=hubspot_headers(body)).json() == {
        "status": "accepted",
        "records": 2,
    }
    again = client.post("/hubspot_welcome", content=body, headers=hubspot_headers(body))
    assert again.json()["status"] == "duplicate"
    assert stored_ids(store, "hubspot_welcome") == [["512", "513"]]


def test_hubspot_behind_a_proxy_is_verified_against_the_public_url(client, store):
    body = hubspot_body(600)
    direct = hubspot_headers(body, url="https://hooks.example.com/hubspot_welcome")
    direct |= {"x-forwarded-proto": "https", "x-forwarded-host": "hooks.example.com"}
    assert client.post("/hubspot_welcome", content=body, headers=direct).json()["status"] == "accepted"
    unproxied = hubspot_headers(hubspot_body(601), url="https://hooks.example.com/hubspot_welcome")
    assert client.post("/hubspot_welcome", content=hubspot_body(601), headers=unproxied).status_code == 401


HOST_A, HOST_B = "hooks.a.example", "hooks.b.example"
PROXIED = {"x-forwarded-proto": "https"}


def pinned_client(public_url: str | None) -> TestClient:
    """The endpoint at an internal address (behind a proxy), its HubSpot webhook pinned to ``public_url``."""
    config = WebhookConfig(
        "hubspot_welcome", "hubspot", SECRET, "crm_hook_ledger", 65536, public_url=public_url
    )
    return TestClient(create_app({"hubspot_welcome": config}.get), base_url="http://airflow-api:8080")


def signed_for(host: str, contact: int, query: str = "") -> tuple[bytes, dict]:
    """A HubSpot delivery of one contact, signed for ``https://<host>/hubspot_welcome<query>``."""
    body = hubspot_body(contact, event_base=contact)
    return body, hubspot_headers(body, url=f"https://{host}/hubspot_welcome{query}")


def test_hubspot_pinned_to_its_public_url_refuses_a_delivery_signed_for_another_host(store, caplog):
    """The host the signature covers was the request's Host or X-Forwarded-Host, which the sender chooses:
    a delivery captured on its way to host A, posted to B within its 5 minutes naming A, was taken by B."""
    caplog.set_level(logging.WARNING, logger="altcraft.webhooks.app")
    client = pinned_client(f"https://{HOST_B}/")
    body, for_a = signed_for(HOST_A, 700)
    for naming_a in ({"host": HOST_A, **PROXIED}, {"x-forwarded-host": HOST_A, **PROXIED}):
        assert client.post("/hubspot_welcome", content=body, headers=for_a | naming_a).status_code == 401
    body, for_b = signed_for(HOST_B, 701, "?portal=33")
    proxied = for_b | {"x-forwarded-host": HOST_B, **PROXIED}
    answer = client.post("/hubspot_welcome?portal=33", content=body, headers=proxied)
    assert answer.json()["status"] == "accepted", answer.text
    body, for_b = signed_for(HOST_B, 702)  # whatever the headers say
    answer = client.post("/hubspot_welcome", content=body, headers=for_b | {"x-forwarded-host": HOST_A})
    assert answer.json()["status"] == "accepted", answer.text
    assert stored_ids(store, "hubspot_welcome") == [["701"], ["702"]]
    assert "public_url" not in caplog.text


def test_hubspot_not_pinned_takes_the_host_the_request_names_and_says_so_once(store, caplog):
    """Without a public_url the behaviour is as before, and the log says what that leaves unproved."""
    caplog.set_level(logging.WARNING, logger="altcraft.webhooks.app")
    client = pinned_client(None)
    for contact, naming_a in ((710, {"host": HOST_A}), (711, {"x-forwarded-host": HOST_A})):
        body, for_a = signed_for(HOST_A, contact)
        answer = client.post("/hubspot_welcome", content=body, headers=for_a | naming_a | PROXIED)
        assert answer.json()["status"] == "accepted", answer.text
    [warning] = [record.getMessage() for record in caplog.records if "public_url" in record.getMessage()]
    assert warning.startswith(
        "Webhook hubspot_welcome: its signature covers the URL, but the scheme and host"
    )


def test_hubspot_forged_altered_and_replayed_later_deliveries_get_401(client, store):
    body = hubspot_body(512)
    old = int((time.time() - 301) * 1000)
    cases = [
        hubspot_headers(body, secret="not-the-app-secret"),
        {**hubspot_headers(body), HUBSPOT_SIGNATURE: ""},
        hubspot_headers(body, at_ms=old),  # captured more than 5 minutes ago
        hubspot_headers(body, url="https://airflow.example.org/other_pipeline"),
    ]
    for headers in cases:
        assert client.post("/hubspot_welcome", content=body, headers=headers).status_code == 401
    tampered = hubspot_headers(body)
    assert client.post("/hubspot_welcome", content=hubspot_body(999), headers=tampered).status_code == 401
    assert store.count("hubspot_welcome") == 0


# ------------------------------------------------------------------ the run fetches the contacts


@pytest.mark.parametrize("crm", ["amocrm", "bitrix24", "hubspot"])
def test_the_run_fetches_the_full_contacts_of_the_stored_ids_and_moves_on(crm, client, store, monkeypatch):
    fakes = {"amocrm": FakeAmoCrm, "bitrix24": FakeBitrix24, "hubspot": FakeHubSpot}
    specs = {"amocrm": AmoCrmSpec, "bitrix24": Bitrix24Spec, "hubspot": HubSpotSpec}
    with serving(fakes[crm](contacts=people(60))) as fake:
        host, port = fake.url.rsplit(":", 1)
        conn = {
            "amocrm": {"host": host, "port": int(port), "password": "amo-token"},
            "bitrix24": {"password": f"{fake.url}/rest/1/{getattr(fake, 'secret', '')}/"},
            "hubspot": {"host": host, "port": int(port), "password": getattr(fake, "token", "")},
        }[crm]
        monkeypatch.setenv("AIRFLOW_CONN_CRM_HOOK", json.dumps({"conn_type": "generic", **conn}))
        deliver = {
            "amocrm": lambda *ids: client.post(
                f"/amocrm_welcome?secret={SECRET}", content=amo_body(*ids), headers=FORM
            ),
            "bitrix24": lambda *ids: [
                client.post("/bitrix24_welcome", content=b24_body(i), headers=FORM) for i in ids
            ],
            "hubspot": lambda *ids: client.post(
                "/hubspot_welcome",
                content=(b := hubspot_body(*ids, event_base=ids[0])),
                headers=hubspot_headers(b),
            ),
        }[crm]
        deliver(3, 4)
        deliver(59, 404)  # 404: deleted in the CRM since
        fake.broken = {4: without(*fake.created_fields)}  # answered without its creation time
        state = MemoryStateStore()
        read = WebhookRead(endpoint=f"{crm}_welcome", ledger_conn_id="crm_hook_ledger")

        def source():
            return specs[crm](type=crm, conn_id="crm_hook", webhook=read, **FAST).build(state)

        first = source()
        records = [r for b in first.batches(None, 10) for r in b]
        assert [r["id"] for r in records] == ["3", "4", "59", "404"]
        assert records[0]["email"] == "c3@example.org" and records[0]["first_name"] == "First3"
        assert "no created" in records[1]["__error__"].lower()  # that contact rejected, the others read
        assert "__error__" in records[3] and "no contact 404" in records[3]["__error__"]
        first.commit()
        deliver(10)
        assert [r["id"] for b in source().batches(None, 10) for r in b] == ["10"]


def test_a_stored_item_without_a_numeric_contact_id_is_rejected_and_the_rest_fetched(store, monkeypatch):
    """The run took every stored item's ``id`` as a CRM contact id: an item without one (left by the
    pipeline's earlier ``source: {type: webhook}``, whose deliveries are whole contacts) was a KeyError
    that failed every run and held the position there for good, and a non-numeric one was asked of the
    CRM as an id."""
    store.put("hubspot_welcome", "a" * 64, "hmac", [{"email": "ann@example.com"}, {"id": "x1"}, {"id": "3"}])
    store.put("hubspot_welcome", "b" * 64, "hubspot", [{"id": "4"}])
    with serving(FakeHubSpot(contacts=people(10))) as fake:
        source = hubspot_webhook_source(fake, monkeypatch)
        records = [r for b in source.batches(None, 10) for r in b]
    delivery = next(delivery_id for delivery_id, _ in store.read("hubspot_welcome", None))
    assert [(r["id"], r.get("__error__")) for r in records if "__error__" in r] == [
        (f"delivery {delivery} item 1", "not a CRM contact id (no id)"),
        (f"delivery {delivery} item 2", "not a CRM contact id (str)"),
    ]
    assert [r["email"] for r in records if "__error__" not in r] == ["c3@example.org", "c4@example.org"]
    assert "ann@" not in json.dumps(records)


def test_a_200_batch_read_without_its_results_fails_the_run_instead_of_rejecting_the_ids(store, monkeypatch):
    """An HTTP 200 batch read holding an error object was read as "no such contacts": every stored id was
    rejected as deleted in the CRM, and the commit moved the webhook position past them for good."""
    from fastapi.responses import JSONResponse

    from altcraft.sources import SourceError

    store.put("hubspot_welcome", "a" * 64, "hubspot", [{"id": "3"}, {"id": "4"}])
    with serving(FakeHubSpot(contacts=people(10))) as fake:
        fake.instead = [JSONResponse({"status": "error", "message": "internal error, try again"})]
        source = hubspot_webhook_source(fake, monkeypatch)
        with pytest.raises(
            SourceError, match=r"^HubSpot: contacts/batch/read: no list of contacts at results"
        ):
            [r for b in source.batches(None, 10) for r in b]


def test_a_stored_id_with_leading_zeros_is_the_contact_of_its_number(store, monkeypatch):
    """The webhook keeps an id as the digits it was sent (``0003``); the CRM answers the contact as ``3``:
    no answered id matched the asked one, so the contact was rejected as deleted in the CRM and never
    delivered; and the same contact stored as ``3`` as well was not the same id, so not read once."""
    store.put("hubspot_welcome", "a" * 64, "hubspot", [{"id": "0003"}, {"id": "4"}])
    store.put("hubspot_welcome", "b" * 64, "hubspot", [{"id": "3"}])
    with serving(FakeHubSpot(contacts=people(10))) as fake:
        source = hubspot_webhook_source(fake, monkeypatch)
        records = [r for b in source.batches(None, 10) for r in b]

    assert [(r["id"], r.get("__error__"), r.get("email")) for r in records] == [
        ("3", None, "c3@example.org"),
        ("4", None, "c4@example.org"),
    ]
