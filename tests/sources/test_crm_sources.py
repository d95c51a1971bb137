"""The CRM presets against fake amoCRM, Bitrix24 and HubSpot accounts over real HTTP."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from fastapi.responses import Response
from tests.fake_crms import FakeAmoCrm, FakeBitrix24, FakeHubSpot, serving, without
from tests.fake_crms.amocrm import contact
from tests.fake_crms.bitrix24 import item
from tests.fake_crms.hubspot import result
from tests.fake_crms.server import EPOCH, people

from altcraft.sources import ERROR_FIELD, MemoryStateStore, SourceError, Window
from altcraft.sources.crm import AmoCrmSpec, Bitrix24Spec, HubSpotSpec
from altcraft.sources.crm.amocrm import TOKENS_KEY
from altcraft.sources.crm.base import WATERMARK_KEY

FAST = {"requests_per_second": 1000, "backoff_seconds": 0.01}


def connect(monkeypatch, conn_id: str, crm, **fields) -> None:
    host, port = crm.url.rsplit(":", 1)
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "generic", "host": host, "port": int(port), **fields}),
    )


def ids(source, window=None, batch_size=100) -> list[int]:
    return [int(r["id"]) for batch in source.batches(window, batch_size) for r in batch]


def hours(a: int, b: int) -> Window:
    """Contacts a..b-1 of `people` (contact n is created at EPOCH + (n-1) h)."""
    return Window(EPOCH + timedelta(hours=a - 1), EPOCH + timedelta(hours=b - 1))


# ------------------------------------------------------------------------------------------ amoCRM


@pytest.fixture
def amo(monkeypatch):
    with serving(FakeAmoCrm(contacts=people(700))) as crm:
        connect(monkeypatch, "amo_test", crm, password="amo-token")
        yield crm


def amo_source(state=None, **fields):
    return AmoCrmSpec(type="amocrm", conn_id="amo_test", **FAST, **fields).build(state)


def test_amocrm_reads_a_window_across_its_250_contact_pages(amo):
    records = [r for batch in amo_source().batches(hours(10, 610), 100) for r in batch]

    assert [int(r["id"]) for r in records] == list(range(10, 610))
    pages = [r["query"] for r in amo.requests]
    spans = [((int(q["page"]) - 1) * int(q["limit"]), int(q["page"]) * int(q["limit"])) for q in pages]
    assert spans == [(0, 250), (249, 498), (496, 744)]  # each page starts with the last contact(s) read
    settled = hours(10, 610).shifted(timedelta(minutes=5))  # settle_seconds: 300 by default
    assert {q["filter[created_at][from]"] for q in pages} == {str(int(settled.start.timestamp()))}
    first = records[0]
    assert (first["email"], first["phone"], first["first_name"], first["last_name"]) == (
        "c10@example.org",
        "+79000000010",
        "First10",
        "Last10",
    )
    assert first["cf_77"] == "0" and first["created_at"] == "2024-03-01T09:00:00+00:00"


@pytest.mark.parametrize("mode", ["refuse", "ignore"])
def test_amocrm_account_without_the_filter_is_read_by_update_time(amo, mode):
    amo.filter_mode = mode

    assert ids(amo_source(), hours(650, 660)) == list(range(650, 660))
    fallback = [r for r in amo.requests if "order[updated_at]" in r["query"]]
    assert fallback and all("if-modified-since" in r["headers"] for r in fallback)
    # the newest page already reaches before the window; a second pass, from the newest update read,
    # finds no contact updated meanwhile
    assert len(fallback) == 2
    newest = max(person.updated for person in amo.contacts)
    assert fallback[1]["headers"]["if-modified-since"] == format_datetime(newest - timedelta(seconds=1), True)


def test_amocrm_rate_limit_storm_is_waited_out(amo):
    amo.storm = 6
    source = amo_source()

    assert ids(source, hours(1, 300)) == list(range(1, 300))
    assert source.http.retries == 6


def test_amocrm_storm_longer_than_the_retries_fails_the_read_naming_the_limit(amo):
    amo.storm = 100
    with pytest.raises(
        SourceError, match=r"amoCRM: contacts: HTTP 429 after 2 retries \(the CRM's request limit\)"
    ):
        ids(amo_source(max_retries=2), hours(1, 5))


def amo_oauth(refresh_token: str) -> dict[str, str]:
    """The amoCRM connection's extras for an OAuth integration with this refresh token."""
    return {
        "client_id": "client-id",
        "client_secret": "client-secret",
        "refresh_token": refresh_token,
        "redirect_uri": "https://example.org/cb",
    }


def test_amocrm_oauth_refresh_on_401_keeps_the_new_pair_encrypted(amo, monkeypatch):
    from airflow.sdk.crypto import get_fernet
    from cryptography.fernet import Fernet

    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    get_fernet.cache_clear()
    amo.access_tokens, amo.refresh_tokens = {"somebody-else"}, {"refresh-1"}
    connect(monkeypatch, "amo_test", amo, password="expired-token", extra=amo_oauth("refresh-1"))
    state = MemoryStateStore()
    try:
        assert ids(amo_source(state), hours(1, 4)) == [1, 2, 3]
        stored = state.get(TOKENS_KEY)
        (access,) = amo.access_tokens
        assert amo.refreshes == 1 and access not in json.dumps(stored)
        # the next run starts with the stored token: no refresh, and the spent refresh token is not reused
        assert ids(amo_source(state), hours(4, 6)) == [4, 5]
        assert amo.refreshes == 1
        amo.access_tokens = {"rotated-by-amocrm"}  # access token expired again: the stored refresh works
        assert ids(amo_source(state), hours(6, 7)) == [6]
        assert amo.refreshes == 2
    finally:
        get_fernet.cache_clear()


def test_amocrm_tokens_obtained_at_runtime_never_reach_a_debug_log(
    amo, monkeypatch, capsys, urllib3_debug_lines
):
    """Airflow masks the connection's password and secret-named extras, not the token pair amoCRM hands out
    at runtime. Logged at DEBUG the way the requests docs show (http.client's ``send:`` lines, urllib3's
    request lines), a failing read after a refresh showed the refreshed access token in its
    ``Authorization`` header and the stored refresh token in the next exchange's body."""
    import http.client

    from airflow.sdk.crypto import get_fernet
    from airflow.sdk.log import mask_logs
    from cryptography.fernet import Fernet

    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    monkeypatch.setattr(http.client.HTTPConnection, "debuglevel", 1)
    get_fernet.cache_clear()
    amo.access_tokens, amo.refresh_tokens = {"somebody-else"}, {"refresh-1"}
    connect(monkeypatch, "amo_test", amo, password="expired-token", extra=amo_oauth("refresh-1"))
    state, seen = MemoryStateStore(), []
    try:
        assert ids(amo_source(state), hours(1, 4)) == [1, 2, 3]  # refreshed in this run
        seen += amo.access_tokens | amo.refresh_tokens
        amo.access_tokens = {"rotated-by-amocrm"}  # the stored access token expired: the stored refresh
        assert ids(amo_source(state), hours(4, 6)) == [4, 5]
        seen += amo.access_tokens
        amo.storm = 100  # a run on the stored token whose requests fail
        with pytest.raises(SourceError, match="HTTP 429 after 1 retries"):
            ids(amo_source(state, max_retries=1), hours(6, 7))
    finally:
        get_fernet.cache_clear()
    logged = capsys.readouterr().out + "\n".join(urllib3_debug_lines)
    assert all(token in logged for token in seen)  # as logged: in headers and in the exchange's body
    written = mask_logs(None, "debug", {"event": logged})["event"]  # as the task log writes them
    assert not [token for token in seen if token in written], written


@pytest.mark.parametrize("refusal", [400, 401])
def test_amocrm_refused_token_refresh_fails_once_naming_the_refresh(amo, monkeypatch, refusal):
    amo.refusal, amo.access_tokens = refusal, {"somebody-else"}
    connect(monkeypatch, "amo_test", amo, password="expired-token", extra=amo_oauth("revoked-refresh"))

    with pytest.raises(SourceError, match=rf"^amoCRM: the token refresh was refused \(HTTP {refusal}\)"):
        ids(amo_source(MemoryStateStore()), hours(1, 4))

    assert [r["path"] for r in amo.requests] == ["/api/v4/contacts", "/oauth2/access_token"]


def test_a_crm_keeps_a_position_in_watermark_mode_only():
    """A window is read again by a retry or a new run over it (the Altcraft page's resend); an id watermark
    is not: the run moved past it."""
    assert not amo_source().tracks_progress
    assert amo_source(mode="watermark").tracks_progress


def test_amocrm_watermark_reads_only_contacts_above_the_last_id(amo):
    state = MemoryStateStore()
    amo.contacts = people(300)
    first = amo_source(state, mode="watermark")
    assert ids(first) == list(range(1, 301))
    first.commit()
    amo.contacts += people(5, start=301)
    amo.requests.clear()

    assert ids(amo_source(state, mode="watermark")) == list(range(301, 306))
    assert state.get(WATERMARK_KEY) == 300
    assert len(amo.requests) == 1 and amo.requests[0]["query"]["order[id]"] == "desc"


# ---------------------------------------------------------------------------------------- Bitrix24


@pytest.fixture
def bitrix(monkeypatch):
    with serving(FakeBitrix24(contacts=people(130))) as crm:
        monkeypatch.setenv(
            "AIRFLOW_CONN_B24_TEST",
            json.dumps({"conn_type": "generic", "password": f"{crm.url}/rest/{crm.user}/{crm.secret}/"}),
        )
        yield crm


def b24_source(state=None, **fields):
    return Bitrix24Spec(type="bitrix24", conn_id="b24_test", **FAST, **fields).build(state)


def test_bitrix24_reads_a_window_by_id_cursor_in_pages_of_50(bitrix):
    records = [r for b in b24_source().batches(hours(5, 125), 30) for r in b]

    assert [int(r["id"]) for r in records] == list(range(5, 125))
    bodies = [json.loads(r["body"]) for r in bitrix.requests]
    assert [b["filter"].get(">id") for b in bodies] == [None, 54, 104]
    assert {b["start"] for b in bodies} == {-1} and {json.dumps(b["order"]) for b in bodies} == {
        '{"id": "ASC"}'
    }
    assert (records[0]["email"], records[0]["phone"], records[0]["first_name"]) == (
        "c5@example.org",
        "+79000000005",
        "First5",
    )
    assert records[0]["ufCrm1Loyalty"] == 0 and records[0]["created_at"] == "2024-03-01T04:00:00+00:00"


@pytest.mark.parametrize("status", [503, 429])
def test_bitrix24_limit_answers_are_waited_out(bitrix, status):
    bitrix.storm, bitrix.limit_status = 4, status
    source = b24_source()

    assert ids(source, hours(1, 131)) == list(range(1, 131))
    assert source.http.retries == 4


def test_bitrix24_errors_never_show_the_webhook_url(bitrix, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_B24_TEST",
        json.dumps({"conn_type": "generic", "password": f"{bitrix.url}/rest/1/wrong-secret/"}),
    )
    with pytest.raises(SourceError) as failure:
        ids(b24_source(), hours(1, 3))
    assert "HTTP 401" in str(failure.value) and "wrong-secret" not in str(failure.value)
    assert bitrix.url not in str(failure.value)


def test_bitrix24_webhook_secret_is_redacted_from_the_debug_lines_of_each_request(
    bitrix, urllib3_debug_lines
):
    """urllib3 logs each request's line at DEBUG (``"POST /rest/1/<secret>/crm.item.list HTTP/1.1" 200``).
    Airflow redacts the connection's password from task logs, but that is the whole webhook URL, which the
    line does not hold: the secret must be redacted on its own."""
    from airflow.sdk.log import mask_logs

    lines = urllib3_debug_lines
    ids(b24_source(), hours(1, 3))
    assert any("crm.item.list" in line for line in lines), lines  # the request lines were logged
    written = mask_logs(None, "debug", {"event": "\n".join(lines)})["event"]  # as the task log writes them
    assert bitrix.secret not in written, written


def test_bitrix24_watermark(bitrix):
    state = MemoryStateStore()
    source = b24_source(state, mode="watermark")
    assert ids(source) == list(range(1, 131))
    source.commit()
    bitrix.contacts += people(3, start=131)
    assert ids(b24_source(state, mode="watermark")) == [131, 132, 133]


def test_a_crm_watermark_commit_after_a_higher_one_leaves_the_higher(bitrix):
    """Two runs read from one id watermark; the one that read more commits first, then the other. Main
    saved blindly: the watermark moved back to 130, and the next run read 131-133 again (under every_run,
    launched them again). A commit now keeps the higher id."""
    state = MemoryStateStore()
    less, more = b24_source(state, mode="watermark"), b24_source(state, mode="watermark")
    assert ids(less) == list(range(1, 131))
    bitrix.contacts += people(3, start=131)
    assert ids(more) == list(range(1, 134))
    more.commit()
    less.commit()
    assert ids(b24_source(state, mode="watermark")) == []


def test_a_crm_watermark_read_starts_from_the_position_it_named(bitrix):
    """`start_position` names the stored id a run starts from and fixes it for the read: another run
    committing meanwhile moves neither. Window mode reads no position."""
    state = MemoryStateStore()
    source = b24_source(state, mode="watermark")
    assert source.ignores_window and source.start_position() == "null"
    state.set(WATERMARK_KEY, 100)  # another run commits
    assert ids(source) == list(range(1, 131))
    assert b24_source(state, mode="watermark").start_position() == "100"
    assert not b24_source(state).ignores_window


# ----------------------------------------------------------------------------------------- HubSpot


@pytest.fixture
def hubspot(monkeypatch):
    with serving(FakeHubSpot(contacts=people(120))) as crm:
        connect(monkeypatch, "hubspot_test", crm, password=crm.token)
        yield crm


def hs_source(state=None, **fields):
    return HubSpotSpec(type="hubspot", conn_id="hubspot_test", **FAST, **fields).build(state)


def test_hubspot_search_reads_a_window_by_object_id_keyset_pages(hubspot):
    records = [r for b in hs_source(page_size=50).batches(hours(3, 103), 40) for r in b]

    assert [int(r["id"]) for r in records] == list(range(3, 103))
    bodies = [json.loads(r["body"]) for r in hubspot.requests]
    assert [
        [(f["propertyName"], f["operator"]) for f in b["filterGroups"][0]["filters"]] for b in bodies
    ] == [
        [("createdate", "GTE"), ("createdate", "LT")],
        [("createdate", "GTE"), ("createdate", "LT"), ("hs_object_id", "GT")],
    ]
    assert bodies[1]["filterGroups"][0]["filters"][2]["value"] == "52"
    assert {json.dumps(b["sorts"]) for b in bodies} == {
        '[{"propertyName": "hs_object_id", "direction": "ASCENDING"}]'
    }
    assert not any("after" in b for b in bodies)
    assert (records[0]["email"], records[0]["first_name"], records[0]["last_name"]) == (
        "c3@example.org",
        "First3",
        "Last3",
    )


def test_netrc_credentials_for_the_crm_do_not_replace_its_token(hubspot, netrc_for_localhost):
    # requests put Basic credentials in place of the Bearer token
    assert ids(hs_source(), hours(1, 11)) == list(range(1, 11))


@pytest.mark.parametrize("mode", ["window", "watermark"])
def test_hubspot_reads_past_the_search_result_cap_contacts_sharing_one_instant_once(hubspot, mode):
    hubspot.max_results = 20  # HTTP 400 past 20 results of one search (HubSpot: past 10,000)
    hubspot.contacts = people(45, every=timedelta(0)) + people(30, start=46)  # 1-45 created at EPOCH

    got = ids(
        hs_source(MemoryStateStore(), mode=mode, page_size=10), Window(EPOCH, EPOCH + timedelta(days=10))
    )

    assert got == list(range(1, 76))
    assert len(hubspot.requests) == 8


def test_hubspot_a_page_that_goes_back_below_the_last_id_fails_instead_of_reading_forever(hubspot):
    pages = hs_source(page_size=50).batches(hours(1, 121), 50)
    assert [int(r["id"]) for r in next(pages)] == list(range(1, 51))
    back = {
        "results": [result(p, ["createdate"]) for p in people(40)],
        "paging": {"next": {"after": "50"}},
    }
    hubspot.instead = [Response(json.dumps(back), media_type="application/json")]

    with pytest.raises(
        SourceError, match=r"^HubSpot: contacts/search: page 2 does not get past hs_object_id 50"
    ):
        next(pages)


def test_hubspot_rate_limit_storm(hubspot):
    hubspot.storm = 5
    source = hs_source()
    assert ids(source, hours(1, 121)) == list(range(1, 121))
    assert source.http.retries == 5


def test_hubspot_watermark_by_object_id(hubspot):
    state = MemoryStateStore()
    source = hs_source(state, mode="watermark", page_size=50)
    assert ids(source) == list(range(1, 121))
    source.commit()
    hubspot.contacts += people(2, start=121)
    hubspot.requests.clear()
    assert ids(hs_source(state, mode="watermark")) == [121, 122]
    filters = json.loads(hubspot.requests[0]["body"])["filterGroups"][0]["filters"]
    assert filters == [{"propertyName": "hs_object_id", "operator": "GT", "value": "120"}]


@pytest.mark.parametrize("mode", ["window", "watermark"])
def test_an_account_that_ignores_paging_fails_instead_of_reading_forever(hubspot, bitrix, amo, mode):
    for crm, build, label in (
        (hubspot, hs_source, "HubSpot: contacts/search"),
        (bitrix, b24_source, "Bitrix24: crm.item.list"),
        (amo, amo_source, "amoCRM: contacts"),
    ):
        crm.deaf = True
        crm.requests.clear()
        with pytest.raises(
            SourceError, match=rf"^{label}: page 2 repeats page 1: the API ignores its paging"
        ):
            ids(build(MemoryStateStore(), mode=mode), hours(1, 600))
        assert len(crm.requests) == 2


def test_a_partitioned_window_reads_each_contact_once(hubspot, bitrix, amo):
    for build, count in ((hs_source, 120), (b24_source, 130), (amo_source, 700)):
        window = hours(1, count + 1)
        parts = [n for i in range(3) for n in ids_part(build(), window, (i, 3))]
        assert sorted(parts) == list(range(1, count + 1))


def ids_part(source, window, partition):
    return [int(r["id"]) for b in source.batches(window, 100, partition=partition) for r in b]


#: each CRM's source and name
CRMS = {"amo": (amo_source, "amoCRM"), "bitrix": (b24_source, "Bitrix24"), "hubspot": (hs_source, "HubSpot")}
#: each CRM's contact as its fake account answers it
RENDERED = {"amo": contact, "bitrix": item, "hubspot": lambda person: result(person, ["email"])}


@pytest.mark.parametrize("mode", ["window", "watermark"])
@pytest.mark.parametrize("crm_name", sorted(CRMS))
def test_an_unreadable_contact_is_its_error_record_and_the_others_are_delivered(request, crm_name, mode):
    """Contact 2 answered as a string, 3 without its id, 4 without its creation time: each is rejected
    with its reason; the run is not failed and no other contact is lost."""
    crm = request.getfixturevalue(crm_name)
    build, label = CRMS[crm_name]
    crm.broken = {2: lambda item: "not a contact", 3: without("id"), 4: without(*crm.created_fields)}
    state = MemoryStateStore()
    source = build(state, mode=mode)

    records = [r for batch in source.batches(hours(1, 8), 100) for r in batch]

    errors = [(r["id"], r[ERROR_FIELD]) for r in records if ERROR_FIELD in r]
    assert errors == [
        ("page 1 item 2", "not a JSON object but str"),
        ("page 1 item 3", f"{label} contact without a numeric id"),
        ("4", f"{label} contact: no {crm.created_fields[-1].rsplit('.')[-1]}"),
    ]
    delivered = [int(r["id"]) for r in records if ERROR_FIELD not in r]
    assert delivered[:3] == [1, 5, 6] and delivered == sorted(delivered)
    if mode == "watermark":
        source.commit()
        assert state.get(WATERMARK_KEY) == len(crm.contacts)
    else:
        assert delivered == [1, 5, 6, 7]


class _NamedTwice(dict):
    """A contact the fake CRM answers naming its ``id`` twice (the JSON encoder writes what items() gives)."""

    def items(self):
        return [*super().items(), ("id", self["id"])]


@pytest.mark.parametrize("crm_name", sorted(CRMS))
def test_a_contact_naming_a_key_twice_is_its_error_record_and_the_others_are_delivered(request, crm_name):
    """json.loads kept the last value without a word, as in REST pages and webhook bodies."""
    crm = request.getfixturevalue(crm_name)
    build, label = CRMS[crm_name]
    crm.broken = {2: _NamedTwice}

    records = [
        r for batch in build(MemoryStateStore(), mode="window").batches(hours(1, 8), 100) for r in batch
    ]

    assert [(r["id"], r[ERROR_FIELD]) for r in records if ERROR_FIELD in r] == [
        ("page 1 item 2", f"{label} contact names 'id' twice")
    ]
    assert [int(r["id"]) for r in records if ERROR_FIELD not in r][:2] == [1, 3]


#: per CRM: an answer of one contact (``{}``) whose envelope names a key twice, its call and the key
ENVELOPES_NAMING_A_KEY_TWICE = {
    "amo": (
        '{{"_page": 1, "_links": {{"next": {{"href": "?page=2"}}}}, "_links": {{}}, '
        '"_embedded": {{"contacts": [{}]}}}}',
        "contacts",
        "_links",
    ),
    "bitrix": ('{{"result": {{"items": [{}]}}, "next": 50, "next": 100}}', "crm.item.list", "next"),
    "hubspot": (
        '{{"results": [{}], "paging": {{"next": {{"after": "1"}}}}, "paging": {{}}}}',
        "contacts/search",
        "paging",
    ),
}


@pytest.mark.parametrize("mode", ["window", "watermark"])
@pytest.mark.parametrize("crm_name", sorted(CRMS))
def test_an_answer_naming_a_key_twice_outside_its_contacts_fails_the_read(request, crm_name, mode):
    """json.loads kept the last value without a word: which next page (or list) the CRM meant was picked
    unseen, as REST pages' envelopes were before."""
    crm = request.getfixturevalue(crm_name)
    build, label = CRMS[crm_name]
    body, call, key = ENVELOPES_NAMING_A_KEY_TWICE[crm_name]
    first = json.dumps(RENDERED[crm_name](crm.contacts[0]))
    crm.instead = [Response(body.format(first), media_type="application/json")]

    with pytest.raises(SourceError, match=rf"^{label}: {call}: the answer names '{key}' twice outside"):
        ids(build(MemoryStateStore(), mode=mode), hours(1, 8))


@pytest.mark.parametrize("filter_mode", ["apply", "refuse", "ignore"])
def test_amocrm_contact_without_created_at_is_rejected_in_the_window_of_its_update(amo, filter_mode):
    """A contact without created_at was dropped without a word where the filter was refused or ignored
    (read by update time), and made an account applying the filter look like one ignoring it."""
    amo.filter_mode = filter_mode
    amo.broken = {6: without("created_at")}
    before, after = hours(1, 5), hours(5, 9)  # contact 6 is updated 5 minutes after its creation

    assert ids(amo_source(), before) == [1, 2, 3, 4]
    records = [r for batch in amo_source().batches(after, 100) for r in batch]

    assert [(r["id"], r.get(ERROR_FIELD)) for r in records] == [
        ("5", None),
        ("6", "amoCRM contact: no created_at"),
        *((str(n), None) for n in range(7, 9)),
    ]
    fallback = [r for r in amo.requests if "order[updated_at]" in r["query"]]
    assert bool(fallback) == (filter_mode != "apply")


def test_a_crm_answer_nested_too_deeply_to_parse_fails_with_a_clear_error(crm):
    """A CRM's JSON nested past Python's recursion limit (the REST fake answers one)."""
    from altcraft.sources.crm.base import Limits
    from altcraft.sources.crm.http import CrmHttp

    client = CrmHttp("amocrm", crm.url.rstrip("/"), {}, Limits(requests_per_second=100))
    answer = client.request("GET", "/v1/deep", label="contacts")

    with pytest.raises(SourceError, match="contacts: the answer is JSON nested too deeply") as failure:
        client.json(answer, "contacts")
    assert failure.value.__cause__ is None and failure.value.__suppress_context__


@pytest.mark.parametrize(
    ("crm_name", "precision"),
    [("hubspot", timedelta(milliseconds=1)), ("bitrix", timedelta(seconds=1)), ("amo", timedelta(seconds=1))],
)
def test_a_contact_created_at_a_partition_boundary_finer_than_the_crm_keeps_time_is_read_once(
    request, crm_name, precision
):
    """Partitions end at microseconds (an hour in 7); a CRM keeps milliseconds (HubSpot) or seconds: the
    contact created at a boundary's instant cut to that precision lies in the partition before it, and
    neither partition read it when the filter's bound was cut down to the CRM's precision too."""
    crm = request.getfixturevalue(crm_name)
    build = CRMS[crm_name][0]
    window = Window(EPOCH, EPOCH + timedelta(hours=1))
    boundaries = [window.part(i, 7).start for i in range(1, 7)]
    crm.contacts = [
        replace(person, created=EPOCH + (at - EPOCH) // precision * precision)
        for person, at in zip(people(6), boundaries, strict=True)
    ]

    parts = [n for i in range(7) for n in ids_part(build(settle_seconds=0), window, (i, 7))]

    assert sorted(parts) == list(range(1, 7))


@pytest.mark.parametrize("mode", ["window", "watermark"])
@pytest.mark.parametrize("body", ['{"status": "error", "message": "try later"}', "[]", "null", '"ok"'])
@pytest.mark.parametrize("crm_name", sorted(CRMS))
def test_a_200_answer_without_the_contact_list_fails_the_read_instead_of_reading_no_contacts(
    request, crm_name, body, mode
):
    """An HTTP 200 whose JSON is an error object, or no object at all, was read by amoCRM as an empty
    last page (the window's contacts lost, the run clean) and failed the others with an AttributeError."""
    crm = request.getfixturevalue(crm_name)
    build, label = CRMS[crm_name]
    crm.instead = [Response(body, media_type="application/json")]

    with pytest.raises(
        SourceError, match=rf"^{label}: [^:]+: no list of contacts at [a-z_.]+ in the answer$"
    ):
        ids(build(MemoryStateStore(), mode=mode), hours(1, 8))


@pytest.mark.parametrize("mode", ["window", "watermark"])
def test_hubspot_a_contact_deleted_while_the_search_pages_skips_no_other(hubspot, mode):
    """A contact read on page 1 and deleted (or merged) before page 2 is asked for shifted HubSpot's
    ``after`` offset by one: the contact first on page 2 was never read, and in watermark mode the id
    watermark moved past it for good."""
    state = MemoryStateStore()
    pages = hs_source(state, mode=mode, page_size=50).batches(hours(1, 121), 50)
    read = [int(r["id"]) for r in next(pages)]
    hubspot.contacts = [person for person in hubspot.contacts if person.id != 10]
    read += [int(r["id"]) for batch in pages for r in batch]

    assert read == list(range(1, 121))


@pytest.mark.parametrize("header", ["86400", "Wed, 21 Oct 2099 07:28:00 GMT", "-5", "soon", "nan", "1e308"])
def test_a_hostile_retry_after_waits_at_most_backoff_max_and_the_log_says_the_wait_made(
    hubspot, header, caplog
):
    """A Retry-After of a day (or 1e308) was waited 30 s at most, but logged as "retry 1 in 86400.00s"."""
    from altcraft.sources.crm.base import Limits
    from altcraft.sources.crm.http import CrmHttp

    waits: list[float] = []
    limits = Limits(requests_per_second=1000, backoff_seconds=0.01, backoff_max=0.05)
    headers = {"Authorization": f"Bearer {hubspot.token}"}
    client = CrmHttp("HubSpot", hubspot.url, headers, limits, sleep=waits.append)
    hubspot.instead = [Response(status_code=429, headers={"Retry-After": header})]

    with caplog.at_level("WARNING", logger="altcraft.sources.crm.http"):
        client.request("POST", "/crm/v3/objects/contacts/search", label="contacts/search", json={"limit": 1})

    assert client.retries == 1 and waits and all(0 <= wait <= 0.05 for wait in waits)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("HubSpot: contacts/search answered HTTP 429; retry 1 in 0.0")


# ------------------------------------------------------------------ an account changing during a read


#: per read of contacts 101..600: the account's filter mode, the contact deleted (one read on the first page
#: of the listing it pages) and how many requests come before that page (the filter refused, or ignored:
#: its first page holds contacts outside the window)
CHANGING_READS = {
    "watermark": ("apply", 400, 0),  # order[id]=desc: 600..351 on page 1
    "window": ("apply", 110, 0),  # order[id]=asc: 101..350
    "refuse": ("refuse", 650, 1),  # order[updated_at]=desc: 700..451
    "ignore": ("ignore", 650, 1),
}


@pytest.mark.parametrize("read", sorted(CHANGING_READS))
def test_amocrm_a_contact_deleted_between_two_pages_skips_no_other(amo, read):
    """amoCRM pages by offset (``page``): a contact read on page 1 and deleted before page 2 moved every
    later one a place up, and the one first on page 2 was never read -- in watermark mode (``order[id]=desc``)
    below the new watermark, lost for good; in window mode (``order[id]=asc``) and read by update time
    (``order[updated_at]=desc``, the account refusing or ignoring the filter) lost to the window."""
    state, mode = MemoryStateStore(), "watermark" if read == "watermark" else "window"
    amo.filter_mode, gone, before = CHANGING_READS[read]
    if mode == "watermark":
        amo.contacts = people(100)
        first = amo_source(state, mode=mode)
        assert ids(first) == list(range(1, 101))
        first.commit()
        amo.contacts += people(500, start=101)
    amo.then = [None] * before + [lambda: amo.delete(gone)]  # once the listing's first page is answered
    source = amo_source(state, mode=mode)

    got = ids(source, hours(101, 601))

    assert set(range(101, 601)) - {gone} <= set(got) <= set(range(101, 601))  # `gone` was read on page 1
    if mode == "watermark":
        source.commit()
        assert state.get(WATERMARK_KEY) == 600


@pytest.mark.parametrize("filter_mode", ["refuse", "ignore"])
def test_amocrm_a_contact_updated_while_read_by_update_time_is_read(amo, filter_mode):
    """Read by ``order[updated_at]=desc``, a contact not read yet and updated meanwhile moved to the top,
    above the pages read: it was never read, and lost to its window."""
    amo.filter_mode = filter_mode

    def update() -> None:
        amo.by_id()[200].modified = EPOCH + timedelta(days=40)

    amo.then = [None, update]  # once the listing's first page (700..451) is answered

    assert ids(amo_source(), hours(101, 601)) == list(range(101, 601))


def test_amocrm_a_contact_of_the_window_new_at_every_pass_fails_the_read_instead_of_reading_forever(amo):
    """Contact 200 is answered without its id (told apart by its whole item) and updated after every
    request: each pass over the newest updates finds it anew."""
    amo.filter_mode, amo.broken = "refuse", {200: without("id")}

    def update(n: int) -> None:
        amo.by_id()[200].modified = EPOCH + timedelta(days=40 + n)

    amo.then = [lambda n=n: update(n) for n in range(30)]

    with pytest.raises(SourceError, match=r"^amoCRM: contacts: contacts of the window kept being updated"):
        ids(amo_source(), hours(101, 601))


def test_amocrm_many_contacts_deleted_between_two_pages_skip_no_other(amo):
    """30 contacts deleted past a page's overlap: the read steps back a page and reads on."""
    amo.then = [lambda: [amo.delete(n) for n in range(200, 230)]]

    assert set(range(1, 601)) - set(range(200, 230)) <= set(ids(amo_source(), hours(1, 601)))


def test_amocrm_contacts_moving_up_at_every_page_fail_the_read_instead_of_reading_forever(amo):
    amo.then = [lambda n=n: amo.delete(n) for n in range(1, 500)]  # one deleted after every request

    with pytest.raises(SourceError, match=r"^amoCRM: contacts: contacts kept moving up past the pages read"):
        ids(amo_source(), hours(1, 601))
    assert len(amo.requests) < 150


@pytest.mark.parametrize("size", [50, 249, 250])
def test_amocrm_each_page_after_the_first_overlaps_the_positions_read_and_reads_past_them(size):
    from altcraft.sources.crm.amocrm import overlapping

    for end in [*range(1, 20_000), 2**40 - 1, 2**40]:
        page, limit = overlapping(end, size)
        offset = (page - 1) * limit
        assert 2 <= limit <= size and offset < end < offset + limit, (end, page, limit)


def recent(crm, *numbers: int) -> None:
    """Contacts with these ids, created 30 seconds ago, added to the fake account."""
    ago = datetime.now(UTC) - timedelta(seconds=30)
    crm.contacts += [replace(people(1, start=n)[0], created=ago) for n in numbers]


@pytest.mark.parametrize("crm_name", sorted(CRMS))
def test_a_lower_id_shown_after_a_higher_one_was_read_is_read_by_the_next_watermark_run(request, crm_name):
    """Bitrix24 lists a contact once its transaction commits, so a lower id can show after a higher one was
    read; HubSpot's search index lags. The watermark moved past it, and it was never read."""
    crm = request.getfixturevalue(crm_name)
    build = CRMS[crm_name][0]
    crm.contacts = people(10)
    recent(crm, 11, 12, 13)
    crm.hidden = {12}  # committed (or indexed) after 13 was listed
    state = MemoryStateStore()
    first = build(state, mode="watermark")
    assert ids(first) == [*range(1, 12), 13]
    first.commit()
    assert state.get(WATERMARK_KEY) == 10  # behind the contacts younger than settle_seconds

    crm.hidden = set()
    assert ids(build(state, mode="watermark")) == [11, 12, 13]  # 11 and 13 again: the ledger skips them
    assert ids(build(MemoryStateStore(), mode="watermark", settle_seconds=0)) == list(range(1, 14))


@pytest.mark.parametrize("crm_name", sorted(CRMS))
def test_a_contact_shown_late_is_read_by_a_window_once_it_shows(request, crm_name):
    """HubSpot's search is eventually consistent: a window read right after it closed missed a contact
    created at its end and not yet in the search, and the next window did not cover it."""
    crm = request.getfixturevalue(crm_name)
    build = CRMS[crm_name][0]
    recent(crm, 1000)
    crm.hidden = {1000}
    now, hour = datetime.now(UTC), timedelta(hours=1)

    assert ids(build(), Window(now - hour, now)) == []  # read as the window closes: not shown yet
    crm.hidden = set()
    assert ids(build(), Window(now, now + hour)) == [1000]


#: per CRM: a page of the contacts given (their JSON text), as the CRM answers it, the last page
LAST_PAGES = {
    "amo": '{{"_page": 1, "_embedded": {{"contacts": [{}]}}}}',
    "bitrix": '{{"result": {{"items": [{}]}}}}',
    "hubspot": '{{"results": [{}]}}',
}


def _page_with_id(crm_name: str, crm, literal: str) -> Response:
    """The last page of contacts 1 to 3, contact 2's ``id`` (and HubSpot's ``hs_object_id``) the JSON
    ``literal`` given."""
    items = [RENDERED[crm_name](person) for person in crm.contacts[:3]]
    items[1]["id"] = "<id>"
    items[1].get("properties", {}).pop("hs_object_id", None)
    text = ", ".join(json.dumps(item) for item in items).replace('"<id>"', literal)
    return Response(LAST_PAGES[crm_name].format(text), media_type="application/json")


@pytest.mark.parametrize("mode", ["window", "watermark"])
@pytest.mark.parametrize("crm_name", sorted(CRMS))
@pytest.mark.parametrize(
    "literal", ["1e999", "Infinity", "-Infinity", "2.5", '"1_000"', '" 2"', '"\\u0662"', '"2e0"', "true"]
)
def test_a_contact_whose_id_is_no_whole_number_is_rejected_and_the_others_are_delivered(
    request, crm_name, mode, literal
):
    """A JSON number past a float's range (1e999, Infinity) failed the whole read with OverflowError; a
    fraction was cut to a whole number (2.5: id 2 for the watermark, "2.5" for the record), and text Python's
    int() reads but no CRM writes (``1_000``, spaces, non-ASCII digits) was taken as an id."""
    crm = request.getfixturevalue(crm_name)
    build, label = CRMS[crm_name]
    crm.instead = [_page_with_id(crm_name, crm, literal)]

    records = [r for batch in build(MemoryStateStore(), mode=mode).batches(hours(1, 8), 100) for r in batch]

    assert [(r["id"], r.get(ERROR_FIELD)) for r in records] == [
        ("1", None),
        ("page 1 item 2", f"{label} contact without a numeric id"),
        ("3", None),
    ]


@pytest.mark.parametrize("crm_name", sorted(CRMS))
@pytest.mark.parametrize("literal", ["2", "2.0", '"2"', '"0002"'])
def test_a_contact_id_is_read_as_its_whole_number_in_one_form(request, crm_name, literal):
    """Its record's id was the id's JSON as given ("2.0", "0002"): one contact under two ids in a window's
    deduplication, and no match for the id a webhook stored."""
    crm = request.getfixturevalue(crm_name)
    build, _ = CRMS[crm_name]
    crm.instead = [_page_with_id(crm_name, crm, literal)]

    records = [r for batch in build(MemoryStateStore()).batches(hours(1, 8), 100) for r in batch]

    assert [(r["id"], r.get(ERROR_FIELD)) for r in records] == [("1", None), ("2", None), ("3", None)]


@pytest.mark.parametrize("filter_mode", ["apply", "refuse"])
@pytest.mark.parametrize("value", [True, False, 10**20])
def test_amocrm_a_creation_time_that_is_no_time_is_that_contacts_rejection(amo, filter_mode, value):
    """int(True) is 1: the contact was taken as created at 1970-01-01 00:00:01, in no window, and was lost
    without a word (an applied filter's answer holding it was also taken for an ignored filter); a number
    no datetime holds was placed by that number, in no window either, though its record was an error."""
    amo.filter_mode = filter_mode
    amo.broken = {3: lambda item: {**item, "created_at": value}}

    records = [r for batch in amo_source().batches(hours(1, 6), 100) for r in batch]

    assert [(r["id"], r.get(ERROR_FIELD)) for r in records] == [
        ("1", None),
        ("2", None),
        ("3", f"amoCRM contact: created_at is not a time ({type(value).__name__})"),
        ("4", None),
        ("5", None),
    ]


def test_the_probes_share_one_connection_until_close_probe(hubspot):
    """The trigger calls `close_probe` when it stops: the CRM source's session stayed open, its connection
    with it. Its probes share one connection until then; a probe after it connects anew."""
    source = hs_source()
    since = datetime.now(UTC) - timedelta(minutes=10)
    for _ in range(3):
        source.probe(since)
    source.close_probe()
    source.probe(since)
    source.close_probe()

    ports = [asked["port"] for asked in hubspot.requests]
    assert len(ports) == 4 and len(set(ports[:3])) == 1 and ports[3] != ports[0], ports


@pytest.mark.parametrize("crm_name", ["hubspot", "bitrix", "amo"])
def test_the_probe_counts_the_contacts_a_run_started_now_reads(request, crm_name, monkeypatch):
    """A run reads its window moved back by ``settle_seconds``; the probe counted the window unmoved. A
    contact created less than the settle time ago fired an event whose run did not read it, yet moved the
    watermark past it: no probe counted it again, and a trigger-only pipeline left it unlaunched until
    another contact came. The probe counts the window the run reads: it fires once the contact settled."""
    now = datetime.now(UTC)
    settled, fresh = (
        replace(person, created=now - age)
        for person, age in zip(people(2), (timedelta(minutes=7), timedelta(minutes=1)), strict=True)
    )
    crm = request.getfixturevalue(crm_name)
    crm.contacts = [settled, fresh]
    source = {"hubspot": hs_source, "bitrix": b24_source, "amo": amo_source}[crm_name]()
    since = now - timedelta(minutes=10)
    count, _ = source.probe(since)
    assert (count, ids(source, Window(since, datetime.now(UTC)))) == (1, [settled.id])
