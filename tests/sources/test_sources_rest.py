"""RestSource against the fake CRM over real HTTP, one paginator style per endpoint."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import chain
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_crm import CONTACTS, EPOCH, PAGE_SIZE, contacts_between, running_crm

from altcraft.mapping import Mapper, ProfileMapping, Rejection
from altcraft.sources import (
    ERROR_FIELD,
    CursorPaginator,
    NextLinkPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    RestSource,
    SourceError,
    Window,
)

CONN = "src_test_crm"
WINDOW = Window(EPOCH + timedelta(hours=4), EPOCH + timedelta(hours=30))  # ids 2..14, 15 is at the end
WINDOW_PARAMS = {"start": "created_from", "end": "created_to"}

PAGINATED = {
    "page numbers, stop at an empty page": ("v1/pages", "data.items", PageNumberPaginator()),
    "page numbers, stop at the total": (
        "v1/pages",
        "data.items",
        PageNumberPaginator(total_pages_path="data.total_pages"),
    ),
    "offset, stop at an empty page": ("v1/offset", "items", OffsetPaginator(limit=5)),
    "offset, stop at the total": ("v1/offset", "items", OffsetPaginator(limit=5, total_path="total")),
    "cursor": ("/v1/cursor", "data.items", CursorPaginator(cursor_path="next_cursor", cursor_param="cursor")),
    "Link header": ("v1/link", "items", NextLinkPaginator()),
    "next link in the body": ("v1/link-in-body", "items", NextLinkPaginator(next_path="next")),
}


def source(endpoint: str, record_path: str | None, paginator, **kwargs) -> RestSource:
    return RestSource(
        CONN,
        endpoint,
        key_column="id",
        record_path=record_path,
        paginator=paginator,
        window_params=WINDOW_PARAMS,
        **kwargs,
    )


def ids(batches) -> list[int]:
    return [record["id"] for batch in batches for record in batch]


@pytest.mark.parametrize("style", PAGINATED)
def test_every_paginator_reads_the_window_in_api_order(crm, style):
    endpoint, record_path, paginator = PAGINATED[style]
    crm.requests.clear()

    batches = list(source(endpoint, record_path, paginator).batches(WINDOW, 5))

    assert ids(batches) == list(range(2, 15))
    assert [len(batch) for batch in batches] == [5, 5, 3]
    assert batches[0][0] == CONTACTS[2]
    window_sent = {(query["created_from"], query["created_to"]) for _, query in crm.requests}
    assert window_sent == {("2024-03-01T04:00:00+00:00", "2024-03-02T06:00:00+00:00")}


def test_stopping_at_the_total_saves_the_trailing_empty_page(crm):
    pages = -(-len(contacts_between(WINDOW.start, WINDOW.end)) // PAGE_SIZE)
    requested = {}
    for paginator in (PageNumberPaginator(total_pages_path="data.total_pages"), PageNumberPaginator()):
        crm.requests.clear()
        list(source("v1/pages", "data.items", paginator).batches(WINDOW, 100))
        requested[paginator.total_pages_path] = [int(query["page"]) for _, query in crm.requests]

    assert requested == {"data.total_pages": list(range(1, pages + 1)), None: list(range(1, pages + 2))}


def test_without_a_paginator_one_request_is_made(crm):
    crm.requests.clear()

    assert ids(source("v1/pages", "data.items", None).batches(WINDOW, 100)) == list(range(2, 2 + PAGE_SIZE))
    assert len(crm.requests) == 1


def test_epoch_window_params_and_fixed_params_are_sent(crm):
    crm.requests.clear()
    paginator = OffsetPaginator(limit=50)
    rest = source("v1/offset", "items", paginator, window_format="epoch", params={"list": "vip"})

    assert ids(rest.batches(WINDOW, 100)) == list(range(2, 15))
    path, query = crm.requests[0]
    assert (path, query) == (
        "/v1/offset",
        {
            "list": "vip",
            "created_from": str(int(WINDOW.start.timestamp())),
            "created_to": str(int(WINDOW.end.timestamp())),
            "offset": "0",
            "limit": "50",
        },
    )


def test_post_sends_the_parameters_as_a_json_body(crm):
    crm.requests.clear()
    rest = source("v1/cursor", "data.items", CursorPaginator(), method="post", params={"list": "vip"})

    assert ids(rest.batches(WINDOW, 100)) == list(range(2, 15))
    assert crm.requests[1] == (
        "/v1/cursor",
        {
            "list": "vip",
            "created_from": WINDOW.start.isoformat(),
            "created_to": WINDOW.end.isoformat(),
            "cursor": "c4",
        },
    )


def test_empty_window_and_no_window(crm):
    empty = Window(datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC))
    rest = source("v1/cursor", "data.items", CursorPaginator())

    assert list(rest.batches(empty, 10)) == []
    assert ids(rest.batches(None, 10)) == list(range(25))


def test_partitions_split_the_window_in_time(crm):
    rest = source("v1/pages", "data.items", PageNumberPaginator())

    parts = [ids(rest.batches(WINDOW, 4, partition=(index, 3))) for index in range(3)]

    assert all(parts)
    assert list(chain.from_iterable(parts)) == ids(rest.batches(WINDOW, 4))
    with pytest.raises(ValueError, match="window_params for both"):
        list(RestSource(CONN, "v1/pages", key_column="id").batches(WINDOW, 4, partition=(0, 2)))


def test_http_errors_fail_without_leaking_the_answer(crm):
    rest = source("v1/unavailable?segment=s3cr3t", None, None)

    with pytest.raises(SourceError) as failure:
        list(rest.batches(WINDOW, 10))

    assert "HTTP 503 from v1/unavailable after 4 retries" in str(failure.value)
    assert "example.org" not in str(failure.value)
    assert "s3cr3t" not in str(failure.value)


def test_a_limit_answer_is_waited_out_and_the_page_asked_again(crm, caplog):
    """HTTP 429 failed the run at once, and its retry started again from page 1, to meet the limit again:
    an API limiting its pages was never read to its end."""
    crm.requests.clear()

    records = ids(source("v1/limited", "data.items", PageNumberPaginator()).batches(WINDOW, 100))

    assert records == list(range(2, 15))
    assert len(crm.requests) == 3 * 5  # four pages and the empty fifth, each answered the third time
    assert "HTTP 429 from v1/limited; retry 2 in 0.00s" in caplog.text


def test_an_answer_nested_too_deeply_to_parse_fails_with_a_clear_error(crm):
    with pytest.raises(SourceError, match=r"v1/deep.*JSON nested too deeply to read") as failure:
        list(source("v1/deep", None, None).batches(WINDOW, 10))

    assert failure.value.__cause__ is None and failure.value.__suppress_context__


def test_a_next_link_away_from_the_connection_is_not_followed(crm):
    rest = source("v1/escaping-link", "items", NextLinkPaginator(next_path="next"))

    with pytest.raises(SourceError, match="leads away from the connection's base URL"):
        list(rest.batches(WINDOW, 10))


@pytest.mark.parametrize(
    ("endpoint", "paginator", "error", "requests"),
    [
        ("v1/looping-link", NextLinkPaginator(next_path="next"), "page 4 asks for a page read before", 3),
        ("v1/looping-cursor", CursorPaginator(), "page 4 asks for a page read before", 3),
        ("v1/deaf", PageNumberPaginator(), "page 2 repeats page 1", 2),
        ("v1/deaf", OffsetPaginator(), "page 2 repeats page 1", 2),
        ("v1/deaf", CursorPaginator(), "page 2 repeats page 1", 2),
        ("v1/deaf", NextLinkPaginator(next_path="next"), "page 2 repeats page 1", 2),
    ],
)
def test_a_pagination_that_loops_fails_instead_of_reading_forever(crm, endpoint, paginator, error, requests):
    crm.requests.clear()

    with pytest.raises(SourceError, match=rf"^rest GET {endpoint} .*: {error}"):
        list(source(endpoint, "items", paginator).batches(WINDOW, 100))

    assert len(crm.requests) == requests


@pytest.mark.parametrize(
    "link",
    [
        "/v1/../steal",
        "/v1/%2e%2e/steal",
        "/v1/.%2E/steal",
        "/v1/..%2fsteal",
        "/v1/..%5csteal",
        "/v1/x/../../steal",
    ],
)
def test_a_next_link_climbing_out_of_the_base_path_is_not_followed(crm, monkeypatch, link):
    monkeypatch.setenv(
        "AIRFLOW_CONN_SRC_TEST_CRM_V1", json.dumps({"conn_type": "http", "host": f"{crm.url}/v1"})
    )
    crm.requests.clear()
    rest = RestSource(
        "src_test_crm_v1",
        "echo-link",
        key_column="id",
        params={"next": crm.url + link},
        record_path="items",
        paginator=NextLinkPaginator(next_path="next"),
    )

    with pytest.raises(SourceError, match="leads away from the connection's base URL"):
        list(rest.batches(None, 10))

    assert [path for path, _ in crm.requests] == ["/v1/echo-link"]


def test_a_request_that_gets_no_answer_fails_without_quoting_the_connection_headers(crm, monkeypatch):
    extra = {"X-Api-Key": "s3cr3t-key\n"}  # a key pasted with its line break: requests quotes the header
    monkeypatch.setenv(
        "AIRFLOW_CONN_SRC_TEST_CRM_KEY", json.dumps({"conn_type": "http", "host": crm.url, "extra": extra})
    )

    with pytest.raises(SourceError, match=r"no answer \(InvalidHeader\) from v1/pages$") as failure:
        list(
            RestSource("src_test_crm_key", "v1/pages", key_column="id", record_path="data.items").batches(
                None, 10
            )
        )

    assert "s3cr3t" not in str(failure.value) and failure.value.__cause__ is None


def test_cursors_that_are_emails_reach_no_log_line(monkeypatch, capfd, urllib3_debug_lines):
    """The API gives contacts' emails as the next pages' cursors, then stops answering: neither the query of
    a request answered (urllib3's DEBUG line ``"GET /v1/contacts?cursor=anna... HTTP/1.1" 200``) nor that of
    the request that failed (quoted by the connection error) appears in a log line or the error."""
    anna, boris = "anna.petrova@example.org", "boris.ivanov@example.org"
    following = {None: anna, anna: boris}  # the page after boris's cursor finds no one listening

    class TwoPages(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            cursor = parse_qs(urlsplit(self.path).query).get("cursor", [None])[0]
            body = json.dumps({"items": [{"id": len(cursor or "")}], "next": following[cursor]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            if following[cursor] == boris:
                threading.Thread(target=server.shutdown).start()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), TwoPages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("AIRFLOW_CONN_SRC_TEST_TWO_PAGES", json.dumps({"conn_type": "http", "host": url}))
    rest = RestSource(
        "src_test_two_pages",
        "v1/contacts",
        key_column="id",
        record_path="items",
        paginator=CursorPaginator(cursor_path="next"),
    )
    debug = urllib3_debug_lines
    try:
        batches = rest.batches(None, 1)
        assert next(batches) == [{"id": 0}] and next(batches) == [{"id": len(anna)}]
        server.shutdown()  # (the second page's handler asked for it already)
        server.server_close()
        with pytest.raises(SourceError, match=r"no answer \(ConnectionError\) from v1/contacts$") as failure:
            next(batches)
    finally:
        server.shutdown()
        server.server_close()

    assert sum('"GET /' in line for line in debug) == 2, debug  # the answered requests' lines were logged
    shown = "\n".join([str(failure.value), *debug, *capfd.readouterr()])
    assert "anna.petrova" not in shown and "boris.ivanov" not in shown, shown


def test_an_item_that_is_not_an_object_is_that_items_error_and_the_others_are_read(crm):
    records = [r for batch in source("v1/mixed", "items", None).batches(None, 10) for r in batch]
    assert [r["id"] for r in records if ERROR_FIELD not in r] == [c["id"] for c in CONTACTS[:2]]
    assert [(r["id"], r[ERROR_FIELD]) for r in records if ERROR_FIELD in r] == [
        ("page 1 item 2", "not a JSON object but str"),
        ("page 1 item 3", "not a JSON object but null"),
        ("page 1 item 4", "not a JSON object but list"),
        ("page 1 item 5", "not a JSON object but int"),
    ]


@pytest.mark.parametrize("path", ["v1/odd-bytes", "v1/odd-units"])
def test_a_byte_that_is_not_utf8_is_its_contacts_rejection_and_the_others_are_delivered(crm, path):
    """The byte was read as U+FFFD (requests' ``Response.json()``): the contact mapped, and was launched, with
    an address its CRM never held. A UTF-16 answer's lone surrogate (bytes below 0x80, which
    ``surrogateescape`` cannot keep) failed the whole answer as "not JSON"."""
    records = [r for batch in source(path, "items", None).batches(None, 10) for r in batch]
    mapper = Mapper(ProfileMapping(matching="email", key={"email": "email"}), source_key_column="id")
    mapped = [mapper.map(record) for record in records]
    assert [(m.source_key, m.field, m.reason) for m in mapped if isinstance(m, Rejection)] == [
        ("1", "email", "contains a lone surrogate (invalid unicode)")
    ]
    assert [m.match for m in mapped if not isinstance(m, Rejection)] == [
        {"email": c["email"]} for c in (CONTACTS[0], CONTACTS[2])
    ]


def test_a_record_naming_a_key_twice_is_that_records_error_and_the_others_are_read(crm):
    """json.loads kept the last value unseen, so the contact was launched with a value its sender may not
    have meant; files refuse such a line already."""
    records = [r for batch in source("v1/twice", "items", None).batches(None, 10) for r in batch]
    assert [r["id"] for r in records if ERROR_FIELD not in r] == [CONTACTS[0]["id"], CONTACTS[2]["id"]]
    assert [(r["id"], r[ERROR_FIELD]) for r in records if ERROR_FIELD in r] == [
        ("page 1 item 2", "an object names 'email' twice"),
        ("page 1 item 3", "an object names 'city' twice"),
    ]


def test_an_answer_naming_a_key_twice_outside_its_records_fails_the_read(crm):
    paginator = CursorPaginator(cursor_path="next_cursor", cursor_param="cursor")
    with pytest.raises(
        SourceError, match=r"page 1: the answer names 'next_cursor' twice outside its records"
    ):
        list(source("v1/twice-envelope", "items", paginator).batches(None, 10))


def test_a_missing_record_list_is_an_error(crm):
    with pytest.raises(SourceError, match=r"no list at record_path 'data\.contacts'"):
        list(source("v1/pages", "data.contacts", PageNumberPaginator()).batches(WINDOW, 10))


@pytest.mark.parametrize(
    ("paginator", "params", "message"),
    [
        (
            OffsetPaginator(limit=PAGE_SIZE, limit_param="created_to"),
            {},
            "paginator: 'created_to' is also the parameter of window_params' end",
        ),
        (
            PageNumberPaginator(page_param="created_from"),
            {},
            "paginator: 'created_from' is also the parameter",
        ),
        (CursorPaginator(cursor_param="created_to"), {}, "paginator: 'created_to' is also the parameter"),
        (PageNumberPaginator(), {"page": 3}, "paginator: 'page' is also the parameter of params"),
        (
            None,
            {"created_from": "2024-01-01"},
            "window_params: 'created_from' is also the parameter of params",
        ),
    ],
)
def test_a_parameter_two_settings_name_is_refused_instead_of_one_replacing_the_other(
    crm, paginator, params, message
):
    """The paginator's value replaced the window bound (or a parameter given) in every request: with an
    offset paginator whose ``limit_param`` named the end bound, the API was asked for the contacts created
    before epoch second 4, and every window read no contact, the run clean."""
    with pytest.raises(ValueError, match=rf"^{message}"):
        source("v1/offset", "items", paginator, params=params)
    with pytest.raises(
        ValueError, match=r"^window_params: 'at' is also the parameter of window_params' start"
    ):
        RestSource(CONN, "v1/offset", key_column="id", window_params={"start": "at", "end": "at"})


def test_settings_are_checked_and_describe_shows_no_query(crm):
    with pytest.raises(ValueError, match=r"^window_params: "):
        RestSource(CONN, "v1/pages", key_column="id", window_params={"from": "created_from"})

    rest = source("v1/pages?segment=s3cr3t", "data.items", PageNumberPaginator())
    assert rest.describe() == "rest GET v1/pages on connection 'src_test_crm', page_number"


@pytest.mark.parametrize(
    "odd", ["absent", "null", '"many"', "-1", "true", "2.5", '{"pages": 3}', '"\\u00b2"']
)
@pytest.mark.parametrize(
    "paginator",
    [
        PageNumberPaginator(total_pages_path="total_pages"),
        OffsetPaginator(limit=PAGE_SIZE, total_path="total"),
    ],
)
def test_a_total_that_is_missing_or_no_count_fails_the_read_instead_of_ending_it(crm, paginator, odd):
    """A total the answer left out (or null, or negative) ended the listing after its first page: the rest
    of the window unread and the run clean; one that is no number failed with a bare ValueError."""
    path = getattr(paginator, "total_path", None) or paginator.total_pages_path
    rest = source("v1/odd-paging", "items", paginator, params={"odd": odd})

    with pytest.raises(SourceError, match=rf"^rest GET v1/odd-paging .*: page 1: no count at {path!r} \("):
        list(rest.batches(WINDOW, 100))


def test_an_answer_whose_content_length_is_no_number_is_read_by_its_body(crm):
    """``Content-Length: ²`` passed ``str.isdigit`` and failed int(): a bare ValueError out of the read (of
    every answer read through `read_capped`: REST, CRM, Altcraft's own)."""
    assert ids(source("v1/odd-length", "items", None).batches(None, 10)) == [0, 1]


@pytest.mark.parametrize("odd", ["7", "true", '{"href": "v1/odd-paging?page=2"}', '["x"]'])
def test_a_next_link_that_is_no_text_fails_the_read_naming_its_path(crm, odd):
    """It failed with a bare TypeError out of urljoin."""
    rest = source("v1/odd-paging", "items", NextLinkPaginator(next_path="next"), params={"odd": odd})

    with pytest.raises(SourceError, match=r"^rest GET v1/odd-paging .*: page 1: no link at 'next' \("):
        list(rest.batches(WINDOW, 100))


def test_empty_pages_that_keep_giving_a_next_cursor_fail_the_read_instead_of_reading_on(crm):
    """Each empty page's cursor was new, so neither loop check saw a repeat: the fake stops at 200 pages,
    a hostile API never did, and the run read empty pages for ever."""
    crm.requests.clear()

    with pytest.raises(SourceError, match=r"^rest GET v1/empty-pages .*: 50 empty pages in a row"):
        list(source("v1/empty-pages", "items", CursorPaginator()).batches(WINDOW, 10))

    assert len(crm.requests) == 50


def test_window_field_gives_a_record_at_the_bound_to_one_window_when_the_api_includes_the_end(crm):
    """Contact 2 is created at 04:00, the end of the first window and the start of the second: an API whose
    end bound is inclusive answers it to both. Main trusted the API, so two runs launched it."""
    first, second = (
        Window(EPOCH, EPOCH + timedelta(hours=4)),
        Window(EPOCH + timedelta(hours=4), EPOCH + timedelta(hours=8)),
    )
    trusting = RestSource(
        CONN, "v1/inclusive", key_column="id", record_path="items", window_params=WINDOW_PARAMS
    )
    assert [ids(trusting.batches(w, 10)) for w in (first, second)] == [[0, 1, 2], [2, 3, 4]]

    checking = RestSource(
        CONN,
        "v1/inclusive",
        key_column="id",
        record_path="items",
        window_params=WINDOW_PARAMS,
        window_field="created_at",
    )
    assert [ids(checking.batches(w, 10)) for w in (first, second)] == [[0, 1], [2, 3]]
    parts = [ids(checking.batches(first, 10, partition=(index, 3))) for index in range(3)]
    assert sorted(chain.from_iterable(parts)) == [0, 1]


def test_window_field_reads_epoch_and_naive_times_and_rejects_a_time_that_is_not_one(crm):
    rest = RestSource(
        CONN,
        "v1/odd-times",
        key_column="id",
        record_path="items",
        window_field="created_at",
        timezone="Europe/Berlin",
    )

    [records] = list(rest.batches(Window(EPOCH - timedelta(hours=1), EPOCH + timedelta(minutes=1)), 10))

    # 0: "soon"; 1: one second past EPOCH; 2: 01:00 in Berlin is EPOCH, the window's end is one minute later
    assert [record["id"] for record in records] == ["0", 1, 2]
    assert records[0][ERROR_FIELD] == "created_at: not ISO 8601 text or epoch seconds"


def test_probe_counts_only_what_a_run_reads_of_an_api_that_ignores_the_window(crm):
    """``/v1/deaf`` answers its first contacts (created in 2024) whatever window is asked. A run with
    ``window_field`` reads none of them after a watermark of now, but the probe counted them all: the
    trigger fired after every run, each run reading nothing. With ``window_field`` the probe counts what
    the run keeps."""
    since = datetime.now(UTC) - timedelta(minutes=1)
    kwargs = {"key_column": "id", "record_path": "items", "window_params": WINDOW_PARAMS}
    checking = RestSource(CONN, "v1/deaf", window_field="created_at", **kwargs)
    assert ids(checking.batches(Window(since, datetime.now(UTC)), 10)) == []
    assert checking.probe(since) == (0, None)
    assert RestSource(CONN, "v1/deaf", **kwargs).probe(since) == (PAGE_SIZE, None)  # no field: the API's word


def test_the_probes_of_a_trigger_and_the_pages_of_a_read_go_over_one_connection_closed_at_the_end(
    monkeypatch,
):
    """Each probe (every few seconds, for as long as the trigger runs) opened a new connection: a TCP (and
    TLS) handshake per poll, and the connections of the ones before left to the garbage collector. The
    probes keep one until `close_probe`; a read closes its own at its end. No cookie an answer sets goes
    with the next request (``/v1/cookie`` answers nothing to one that sends it back)."""
    with running_crm(keep_alive=True) as server:
        monkeypatch.setenv("AIRFLOW_CONN_SRC_TEST_KEEP_ALIVE", server.url)
        probing = RestSource(
            "src_test_keep_alive",
            "v1/cookie",
            key_column="id",
            record_path="items",
            window_params=WINDOW_PARAMS,
        )
        try:
            assert [probing.probe(EPOCH) for _ in range(3)] == [(PAGE_SIZE, None)] * 3
            assert (server.connections, len(server.requests)) == (1, 3)
        finally:
            probing.close_probe()
        assert server.closed.acquire(timeout=5), "close_probe closes the connection"

        reading = RestSource(
            "src_test_keep_alive",
            "v1/cursor",
            key_column="id",
            record_path="data.items",
            window_params=WINDOW_PARAMS,
            paginator=CursorPaginator(),
        )
        assert len(ids(reading.batches(WINDOW, 100))) == 13
        assert (server.connections, len(server.requests)) == (2, 3 + 4)
        assert server.closed.acquire(timeout=5), "a read closes its connection at its end"
