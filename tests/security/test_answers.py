"""Defect 3: every answer that does not parse is a typed error; after a launch, delivery-uncertain."""

from __future__ import annotations

import json
import os
import uuid

import pytest
import sqlalchemy as sa
from hostile_server import TOKEN, http_answer, run_async

from altcraft.api.errors import AltcraftDeliveryUncertain, AltcraftError
from altcraft.api.models import (
    BatchLaunchRequest,
    BatchResult,
    ImportAndStartRequest,
    ProfileResult,
    Scenario,
)
from altcraft.delivery import Delivery, DeliveryStopped
from altcraft.hooks.altcraft import AltcraftHook
from altcraft.ledger import Ledger, RunRef
from altcraft.mapping import ProfileMapping
from altcraft.modes import DeliveryMode
from tests.async_calls import launch_batch

ODD_SHAPES = {
    "result is a dict": {"error": 0, "result": {"error": 0}},
    "result is null": {"error": 0, "result": None},
    "a result item is a string": {"error": 0, "result": ["ok"]},
    "error is text": {"error": "invalid token", "error_text": f"bad {TOKEN}"},
    "a number where text is expected": {"error": 0, "error_text": 5, "profile_id": {"id": 1}, "result": [1]},
    "a result item's error is text": {"error": 0, "result": [{"error": "no", "error_text": []}]},
    "data is a list of numbers": {"error": 0, "data": [1, 2], "result": [{"error": 0}], "next_from_id": "x"},
    "a JSON array": [{"error": 0}],
}
KEYS = ["email:a@example.org"]
MAPPING = ProfileMapping.model_validate({"matching": "email", "key": {"email": "email"}})
PG_URL = os.environ.get("ALTCRAFT_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def _batch() -> BatchLaunchRequest:
    return BatchLaunchRequest(workflow_id=12, matching="email", data=[{"email": "a@example.org", "data": {}}])


def _single() -> ImportAndStartRequest:
    return ImportAndStartRequest(workflow_id=12, matching="email", email="a@example.org")


@pytest.fixture(params=ODD_SHAPES)
def odd(request, serve):
    return serve(lambda seen: http_answer(200, ODD_SHAPES[request.param]), max_retries=0)


def test_unexpected_answer_after_a_launch_is_delivery_uncertain(request, odd):
    hook = AltcraftHook()
    launches = {
        "batch": lambda: hook.import_and_start_batch(_batch(), keys=KEYS),
        "single": lambda: hook.import_and_start(_single(), keys=KEYS),
        "task": lambda: hook.submit_import_and_start_batch_task(_batch(), keys=KEYS),
        "async batch": lambda: run_async(lambda ahook: launch_batch(ahook, _batch(), keys=KEYS)),
    }
    for name, launch in launches.items():
        try:
            result = launch()
        except AltcraftDeliveryUncertain as uncertain:
            assert uncertain.keys == KEYS
            assert TOKEN not in str(uncertain)
        else:  # the shape is a valid answer for this endpoint (e.g. `result` is not read by a single launch)
            assert "batch" not in name or request.node.callspec.params["odd"] == "data is a list of numbers"
            assert isinstance(result, BatchResult | ProfileResult | str), (name, result)


def test_unexpected_answer_to_a_read_is_a_typed_error(odd):
    hook = AltcraftHook()
    for read in (
        hook.get_scenario,
        lambda _: hook.list_scenarios(),
        lambda _: hook.list_databases(),
        hook.get_database_fields,
        lambda _: hook.get_task_status("t1").profile_results(),
    ):
        try:
            read(12)
        except AltcraftError as exc:
            assert TOKEN not in str(exc)
    _, message = hook.test_connection()
    assert TOKEN not in message


#: Answers whose values no ledger column takes as they are: every contact is recorded all the same.
UNSTORABLE = {
    "error code beyond 32 bits": (
        {"error": 0, "result": [{"error": 2**40, "error_text": "x"}] * 3},
        "uncertain",
    ),
    "batch error beyond 32 bits": ({"error": -(2**40), "error_text": "x"}, "uncertain"),
    "fractional error code": ({"error": 0, "result": [{"error": 0.5, "profile_id": "p"}] * 3}, "uncertain"),
    "profile id of 300 characters": (
        {"error": 0, "result": [{"error": 0, "profile_id": "p" * 300}] * 3},
        "uncertain",
    ),
    "NUL in a text": ({"error": 0, "result": [{"error": 400, "error_text": "bad\u0000x"}] * 3}, "failed"),
    "NUL in a profile id": ({"error": 0, "result": [{"error": 0, "profile_id": "p\u00001"}] * 3}, "launched"),
    "lone surrogate": (
        b'{"error":0,"result":' + b"[" + b",".join([b'{"error":400,"error_text":"\\ud800"}'] * 3) + b"]}",
        "failed",
    ),
    "lone surrogate as its UTF-8 bytes": (
        b'{"error":0,"result":[' + b",".join([b'{"error":400,"error_text":"\xed\xa0\x80"}'] * 3) + b"]}",
        "failed",
    ),
    "NUL in a text, the answer in UTF-16": (
        json.dumps({"error": 0, "result": [{"error": 400, "error_text": "bad\u0000x"}] * 3}).encode("utf-16"),
        "failed",
    ),
    "NUL in a profile id, the answer in UTF-32": (
        json.dumps({"error": 0, "result": [{"error": 0, "profile_id": "p\u00001"}] * 3}).encode("utf-32"),
        "launched",
    ),
    "text of 70,000 characters": (
        {"error": 0, "result": [{"error": 400, "error_text": "t" * 70_000}] * 3},
        "failed",
    ),
    "task id of 300 characters": ({"error": 0, "data": {"task_id": "t" * 300}}, "uncertain"),
}
LEDGERS = {"postgresql": PG_URL, "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test"}


@pytest.mark.parametrize("ledger_url", LEDGERS.values(), ids=LEDGERS)
@pytest.mark.parametrize("case", UNSTORABLE)
def test_every_contact_is_recorded_whatever_values_the_answer_holds(serve, ledger_url, case):
    """An error code beyond the ledger's INTEGER, a profile id beyond its VARCHAR(255), NUL, a lone surrogate
    or a megabyte of text made the settle fail: the run crashed with a database error (quoting the contacts)
    and left every contact ``sending``. Now the answer is read as what it is, and each contact recorded."""
    answer, outcome = UNSTORABLE[case]
    serve(lambda seen: http_answer(200, answer), max_retries=0)
    hook = AltcraftHook()
    hook.get_conn()
    ledger = Ledger(sa.create_engine(ledger_url))
    run = RunRef("hostile", "t", f"run-{uuid.uuid4().hex[:12]}", 1, "w")
    delivery = Delivery.create(
        hook,
        ledger,
        run,
        scenario_id=uuid.uuid4().int % 10**9,
        mapping=MAPPING,
        key_column="id",
        mode=DeliveryMode.ASYNC if "task" in case else DeliveryMode.BATCH,
    )
    try:
        delivery.process([[{"id": i, "email": f"user{i}@example.org"} for i in range(3)]])
    except DeliveryStopped as stopped:
        assert outcome == "uncertain" and "anna" not in str(stopped)
    hook.close()
    assert list(ledger.contact_states(delivery.scope).values()) == [outcome] * 3


def test_a_list_whose_pages_repeat_stops_with_a_typed_error(serve):
    """The server moves the cursor on but answers the same scenarios again: paging stops at the second page
    (it would ask forever), with an error saying why."""
    asked: list[int] = []

    def same_page(seen):
        asked.append(1)
        page = [{"id": 12, "name": "Welcome", "is_active": True}]
        return http_answer(200, {"error": 0, "data": page, "next_from_id": 13 + len(asked)})

    serve(same_page)
    with pytest.raises(AltcraftError, match="repeats the one before"):
        AltcraftHook().list_scenarios()
    assert len(asked) == 2


def test_a_server_error_whose_body_says_429_is_uncertain_not_rate_limited(serve):
    """A 502 carrying Altcraft's ``error: 429``: the server (or a gateway) broke while handling the launch,
    which it may have processed, so it is not retried as a refused, rate-limited request."""
    server = serve(lambda seen: http_answer(502, {"error": 429, "error_text": "Too many requests"}))
    with pytest.raises(AltcraftDeliveryUncertain):
        AltcraftHook().import_and_start_batch(_batch(), keys=KEYS)
    assert len(server.seen) == 1


#: Rate-limit answers that also report on profiles: some may have been launched.
RATE_LIMITED_WITH_RESULTS = {
    "HTTP 200, error 429": (200, {"error": 429, "result": [{"error": 0, "profile_id": "p1"}]}),
    "HTTP 429, a profile id": (429, {"error": 429, "error_text": "slow down", "profile_id": "p1"}),
}


@pytest.mark.parametrize("case", RATE_LIMITED_WITH_RESULTS)
def test_a_429_that_reports_on_profiles_is_uncertain_not_resent(serve, case):
    """An answer with ``error: 429`` (or HTTP 429) that also carries per-profile output says something was
    done for some profiles: it is no refusal of the whole request. It was read as a rate limit, which a
    launch retries: the hooks sent the batch 51 times (rate_limit_retries + 1), each time launching again."""
    status, body = RATE_LIMITED_WITH_RESULTS[case]
    server = serve(lambda seen: http_answer(status, body))
    with pytest.raises(AltcraftDeliveryUncertain):
        AltcraftHook().import_and_start_batch(_batch(), keys=KEYS)
    assert len(server.seen) == 1
    with pytest.raises(AltcraftDeliveryUncertain):
        run_async(lambda ahook: launch_batch(ahook, _batch(), keys=KEYS))
    assert len(server.seen) == 2


#: A ``Retry-After`` HTTP-date whose year no date holds: parsing it raised OverflowError.
HUGE_YEAR = "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"


def _rate_limited_once(answer: dict):
    """A 429 with `HUGE_YEAR` to the first request, ``answer`` to every later one."""
    asked: list[int] = []

    def respond(seen):
        asked.append(1)
        if len(asked) == 1:
            return http_answer(429, {"error": 429}, {"Retry-After": HUGE_YEAR})
        return http_answer(200, answer)

    return respond


def test_a_retry_after_of_no_date_is_waited_as_none(serve):
    """``parse_retry_after`` caught ValueError and TypeError, not the OverflowError a year past C's long
    raises: a 429 carrying it crashed the hooks (a launch's contacts then recorded only as an interrupted
    try's) and the CRM sources with a bare OverflowError. It is read as no Retry-After: the usual backoff."""
    from altcraft.sources.crm.base import Limits
    from altcraft.sources.crm.http import CrmHttp

    launched = {"error": 0, "result": [{"error": 0, "profile_id": "p1"}]}
    server = serve(_rate_limited_once(launched))
    assert AltcraftHook().import_and_start_batch(_batch(), keys=KEYS).result[0].ok
    assert len(server.seen) == 2
    server = serve(_rate_limited_once(launched))
    assert run_async(lambda ahook: launch_batch(ahook, _batch(), keys=KEYS)).result[0].ok
    crm = serve(_rate_limited_once({"results": []}), connect=False)
    client = CrmHttp("hubspot", crm.url, {}, Limits(requests_per_second=100, backoff_seconds=0.01))
    assert client.request("GET", "/crm/v3/objects/contacts", label="contacts").status_code == 200


def _kept_alive(document: dict) -> bytes:
    """A complete 200 answer that leaves the connection open."""
    body = json.dumps(document).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b" % (
        len(body),
        body,
    )


def _interim_then_late(seen):
    """``workflows/list`` from id 2: its page at once. Anything else: an interim ``102 Processing``, then,
    0.3 s later on the same connection, the final answer (scenario 1's page, or one launched profile)."""
    asked = json.loads(seen.body)
    if asked.get("from_id") == 2:
        return [(_kept_alive({"error": 0, "data": [{"id": 2, "name": "two"}]}), 0.0)]
    late = {"error": 0, "data": [{"id": 1, "name": "one"}], "result": [{"error": 0, "profile_id": "p1"}]}
    return [(b"HTTP/1.1 102 Processing\r\n\r\n", 0.0), (_kept_alive(late), 0.3)]


def test_an_interim_1xx_answer_leaves_no_late_answer_for_the_next_request(serve):
    """http.client takes a 1xx other than 100 for the final answer (with no body): the sync hook read
    ``102 Processing`` as error 102 and put its connection back in the pool, where the real answer came in
    after the next request was sent, and was read as that request's. On main the scenario read after a
    launch (or after a read) got the launch's (or that read's) answer: scenario 1 for scenario 2. Now the
    connection of a 1xx is closed and the exchange is a transport error (a launch: uncertain)."""
    serve(_interim_then_late, keep_alive=True)
    hook = AltcraftHook()
    with pytest.raises(AltcraftDeliveryUncertain):
        hook.import_and_start_batch(_batch(), keys=KEYS)
    assert hook.get_scenario(2) == Scenario(id=2, name="two"), "the launch's late answer read as this read's"
    with pytest.raises(AltcraftError, match="InterimAnswer talking to Altcraft"):
        hook.get_scenario(1)
    assert hook.get_scenario(2) == Scenario(id=2, name="two"), (
        "the first read's late answer read as this one's"
    )
    # aiohttp reads past an interim answer to the final one
    assert run_async(lambda ahook: launch_batch(ahook, _batch(), keys=KEYS)).result[0].ok


def test_an_interim_1xx_answer_leaves_no_late_answer_for_the_probe(serve):
    """The probe's exchanges read answers as the sync hook does (`read_capped`), on one keep-alive session:
    on main its second question got the first one's late answer (scenario 1's page for scenario 2)."""
    from altcraft.probe import Exchanger

    server = serve(_interim_then_late, keep_alive=True, connect=False)
    with Exchanger(server.url, TOKEN, timeout=5) as exchanger:
        assert not exchanger.post("workflows/list", {"from_id": 1}).ok
        assert exchanger.post("workflows/list", {"from_id": 2}).document["data"] == [{"id": 2, "name": "two"}]


#: Answers naming one key twice with two values: json.loads keeps the last, the server may have meant either.
TWICE = {
    "a result's error": b'{"error":0,"result":[{"error":0,"profile_id":"p1","error":400}]}',
    "the answer's error": b'{"error":0,"result":[{"error":0,"profile_id":"p1"}],"error":400}',
    "the result list": b'{"error":0,"result":[{"error":0,"profile_id":"p1"}],"result":[{"error":400}]}',
}


@pytest.mark.parametrize("case", TWICE)
def test_an_answer_with_a_key_twice_is_uncertain(serve, case):
    """Read as json.loads reads it (the last value wins), a result saying both launched and refused settled
    its contact ``failed`` -- sent again by the next run, though the first value said launched -- or the
    whole request refused. Such an answer says nothing for sure: after a launch it is delivery-uncertain."""
    serve(lambda seen: http_answer(200, TWICE[case]), max_retries=0)
    with pytest.raises(AltcraftDeliveryUncertain):
        AltcraftHook().import_and_start_batch(_batch(), keys=KEYS)
    with pytest.raises(AltcraftDeliveryUncertain):
        run_async(lambda ahook: launch_batch(ahook, _batch(), keys=KEYS))


def test_a_key_twice_with_one_value_is_read(serve):
    """The same value twice leaves no doubt: the answer is read."""
    twice = b'{"error":0,"result":[{"error":0,"error":0,"profile_id":"p1","profile_id":"p1"}]}'
    serve(lambda seen: http_answer(200, twice), max_retries=0)
    assert AltcraftHook().import_and_start_batch(_batch(), keys=KEYS).result[0].profile_id == "p1"


#: A UTF-8 answer with a byte-order mark and a server text in Latin-1 (a byte that is not UTF-8).
BOM_AND_LATIN1 = b'\xef\xbb\xbf{"error":0,"result":[{"error":400,"error_text":"caf\xe9"},{"error":0}]}'


def test_an_answer_with_a_bom_and_a_byte_not_utf8_is_read_per_contact(serve):
    """Bytes that are not UTF-8 are read as U+FFFD so that the answer's codes still settle each contact;
    with a byte-order mark before them that second reading kept the mark, which json.loads refuses: the
    whole answer was unreadable, every contact of the launch uncertain. Now the mark is dropped as the
    first reading drops it (and UTF-16/32 answers are read in their encoding)."""
    serve(lambda seen: http_answer(200, BOM_AND_LATIN1), max_retries=0)
    keys = ["email:a@example.org", "email:b@example.org"]
    request = BatchLaunchRequest(
        workflow_id=12, matching="email", data=[{"email": f"{n}@example.org", "data": {}} for n in "ab"]
    )
    results = AltcraftHook().import_and_start_batch_results(request, keys=keys)
    assert results == [(400, "caf\ufffd", None), (0, "", None)]


def test_the_probe_decodes_answers_as_the_hooks_do(serve):
    """The probe's table tells which item layout an account accepts and whether results keep the request's
    order, from answers it read with json.loads: a result naming ``error`` twice (400, then 0) read as
    launched where the hooks find the answer unreadable, and a BOM'd answer with a Latin-1 byte as "not
    JSON" where the hooks read each result."""
    from altcraft.probe import Exchanger, _item_ok

    twice = b'{"error":0,"result":[{"error":400,"error":0,"profile_id":"p1"}]}'
    answers = iter([http_answer(200, twice), http_answer(200, BOM_AND_LATIN1)])
    server = serve(lambda seen: next(answers), connect=False)
    with Exchanger(server.url, TOKEN, timeout=5) as exchanger:
        assert not _item_ok(exchanger.post("workflows/import_and_start_batch", {}))
        assert exchanger.post("workflows/import_and_start_batch", {}).document["result"][0]["error"] == 400
