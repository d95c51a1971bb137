"""The Altcraft page in a real browser, on a running Airflow with a real pipeline run behind it.

Headless Chromium (Debian package ``chromium``) driven by Playwright: the pages render inside the
Airflow UI with the counts the ledger holds, a search finds a contact, an action starts a DAG run
through Airflow's REST API, and an anonymous browser is refused. Screenshots go to ``docs/img/``.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
import sqlalchemy as sa
from demo.airflow_api import FINISHED, wait_for
from demo.airflow_env import REPO
from demo.seed_crm import Contact, sample_contacts, write_contacts

from altcraft.emulator.state import DEFAULT_TOKEN

from .conftest import make_dags_folder, start_airflow

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SCREENSHOTS = REPO / "docs" / "img"
DAG_ID, SCENARIO, LAUNCH = "e2e_ui_welcome", 21, "import_and_launch"
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
FAILED_EVERY = 5  # the emulator fails every 5th profile of a batch (Altcraft error 400)
VIEWER = "viewer"


@pytest.fixture(scope="module")
def contacts(pg_databases: dict[str, str]) -> list[Contact]:
    """A day of sign-ups (the day before yesterday's midnight .. yesterday's), every 6th broken."""
    rows = sample_contacts(end=DAY + timedelta(days=1), days=1, per_day=24, broken_every=6)
    write_contacts(f"postgresql+psycopg2://{pg_databases['crm']}", rows)
    return rows


@pytest.fixture(scope="module")
def local_airflow(tmp_path_factory, pg_databases, e2e_emulator, contacts):
    e2e_emulator.add_faults(
        {
            "endpoint": "workflows/import_and_start_batch",
            "kind": "profile_error",
            "code": 400,
            "text": "rejected by Altcraft",
            "every": FAILED_EVERY,
        }
    )
    spec = {
        "id": DAG_ID,
        "schedule": "1d",
        "timezone": "UTC",
        "start_date": date(2024, 1, 1),
        "retries": 0,
        "source": {
            "type": "sql_table",
            "conn_id": "e2e_crm",
            "table": "contacts",
            "key_column": "id",
            "created_at_column": "created_at",
        },
        "mapping": {"matching": "email", "key": {"email": "email"}, "fields": {"_fname": "first_name"}},
        "scenario": {"id": SCENARIO, "db_id": 1},
        "delivery": {"mode": "batch", "batch_size": 10},
        "ledger_conn_id": "e2e_crm",
        "max_rejected_ratio": 0.9,
        # the page must show refused contacts, in a run that is still green: allow them explicitly
        "max_failed_ratio": 0.9,
    }
    e2e_emulator.seed(scenarios=[{"id": SCENARIO, "name": "Welcome (UI)", "db_id": 1, "is_active": True}])
    home = tmp_path_factory.mktemp("airflow-ui")
    env = {
        "AIRFLOW_CONN_ALTCRAFT_DEFAULT": e2e_emulator.connection_json(),
        "AIRFLOW_CONN_E2E_CRM": f"postgresql://{pg_databases['crm']}",
        "AIRFLOW__ALTCRAFT__LEDGER_CONN_ID": "e2e_crm",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"admin:admin,{VIEWER}:viewer",
        # a busy machine: a task's calls to the API server may wait longer than the default 5 s
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
    }
    metadata = f"postgresql+psycopg2://{pg_databases['metadata']}"
    dags = make_dags_folder(home / "dags", {DAG_ID: spec})
    with start_airflow(home, dags, metadata, env, [DAG_ID]) as airflow:
        airflow.api.timeout = 120  # a busy machine: one API worker may answer slowly, not never
        yield airflow


@pytest.fixture(scope="module")
def finished_run(local_airflow) -> dict[str, Any]:
    """Yesterday's run of the pipeline (a backfill of one day), finished."""
    local_airflow.backfill(DAG_ID, DAY, DAY)
    local_airflow.api.unpause(DAG_ID)
    (run,) = local_airflow.wait_for_runs(DAG_ID, [DAY], 240)
    assert run["state"] == "success"
    return run


@pytest.fixture(scope="module")
def ledger_counts(pg_databases, finished_run) -> Counter[str]:
    engine = sa.create_engine(f"postgresql+psycopg2://{pg_databases['crm']}")
    try:
        with engine.connect() as conn:
            query = sa.text(
                "SELECT outcome, count(*) FROM altcraft_outcomes WHERE run_id = :run GROUP BY outcome"
            )
            return Counter(dict(conn.execute(query, {"run": finished_run["dag_run_id"]}).all()))
    finally:
        engine.dispose()


def login(browser, airflow, username: str = "admin", password: str | None = None):
    """A browser context logged in through Airflow's own login form."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{airflow.api_url}/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password or airflow.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/" not in url, timeout=30_000)
    return context, page


@pytest.fixture(scope="module")
def admin(browser, local_airflow, finished_run):
    context, page = login(browser, local_airflow)
    yield page
    context.close()


def altcraft_frame(page):
    """The Altcraft page as Airflow shows it: inside the iframe of its nav entry."""
    page.wait_for_selector("iframe[title=Altcraft]")
    return page.frame_locator("iframe[title=Altcraft]")


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


# ------------------------------------------------------------------------------------------- tests


def test_the_nav_entry_opens_the_pipelines_page_with_the_ledger_counts(admin, local_airflow, ledger_counts):
    assert ledger_counts["launched"] > 0 and ledger_counts["rejected"] > 0 and ledger_counts["failed"] > 0
    admin.goto(f"{local_airflow.api_url}/")
    admin.get_by_role("link", name="Altcraft").first.click()
    frame = altcraft_frame(admin)
    scope = frame.locator(f"section.scope[data-scenario='{SCENARIO}']")
    scope.wait_for()
    for period in ("24h", "30d"):
        row = scope.locator(f"tr[data-period='{period}']")
        for outcome in ("launched", "rejected", "failed"):
            assert row.locator(f"td.outcome-{outcome}").inner_text() == str(ledger_counts[outcome])
    last = scope.locator(f"tr[data-dag='{DAG_ID}']")
    assert last.locator(".badge:not([data-attention])").inner_text() == "success"
    # ...and its failed contacts beside it, so a successful run with failed contacts does not look clean
    assert last.locator("[data-attention=failed]").inner_text() == f"{ledger_counts['failed']} failed"
    assert last.locator("td.outcome-launched").inner_text() == str(ledger_counts["launched"])
    assert scope.locator("[data-open=failed]").inner_text().startswith(f"{ledger_counts['failed']} failed")
    assert scope.locator("svg.trend rect").count() > 0
    shot(admin, "ui-pipelines")


def test_the_run_page_filters_pages_and_exports(admin, local_airflow, finished_run, ledger_counts, contacts):
    run_id = finished_run["dag_run_id"]
    admin.goto(f"{local_airflow.api_url}/plugin/altcraft")
    frame = altcraft_frame(admin)
    frame.locator(f"tr[data-dag='{DAG_ID}'] a.run-link").click()
    totals = frame.locator("#run-totals")
    totals.wait_for()
    # the deep link reaches Airflow's URL (the page tells Airflow's router, which updates it after a moment)
    deep_link = f"/plugin/altcraft/altcraft/run?dag_id={DAG_ID}"
    admin.wait_for_url(lambda url: deep_link in url, wait_until="commit", timeout=15_000)
    for outcome, count in ledger_counts.items():
        assert totals.locator(f"td.outcome-{outcome}").inner_text() == str(count)
    shot(admin, "ui-run")

    frame.locator("nav.filter a[data-outcome=rejected]").click()
    frame.locator("nav.filter a.active[data-outcome=rejected]").wait_for()
    rows = frame.locator("#outcomes tbody tr")
    assert rows.count() == ledger_counts["rejected"]
    broken = {str(c.id) for c in contacts if c.problem}
    assert {rows.nth(i).locator("td").nth(3).inner_text() for i in range(rows.count())} == broken
    assert all(rows.nth(i).get_attribute("data-outcome") == "rejected" for i in range(rows.count()))

    with admin.expect_download() as download:
        frame.get_by_role("link", name="Export CSV").click()
    lines = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("task_id,try_number,outcome")
    assert len(lines) == 1 + ledger_counts["rejected"]
    everything = requests.get(
        f"{local_airflow.api_url}/altcraft/run.csv",
        params={"dag_id": DAG_ID, "run_id": run_id},
        cookies={c["name"]: c["value"] for c in admin.context.cookies()},
        timeout=30,
    )
    assert everything.status_code == 200
    assert len(everything.text.splitlines()) == 1 + sum(ledger_counts.values())
    assert not any(c.email and c.email in everything.text for c in contacts if c.email)  # masked by default


def test_a_search_finds_the_contact_in_its_scenario(admin, local_airflow, contacts):
    person = next(c for c in contacts if c.problem is None)
    admin.goto(f"{local_airflow.api_url}/plugin/altcraft")
    frame = altcraft_frame(admin)
    search = frame.get_by_label("Find a contact")
    search.fill(f"  {person.email.upper()} ")
    search.press("Enter")
    record = frame.locator(f".contact-record[data-scenario='{SCENARIO}']")
    record.wait_for()
    assert record.locator("[data-status]").inner_text() in ("launched", "failed")
    assert record.locator("tbody tr").count() == 1
    assert person.email not in record.inner_text()  # the key is masked
    assert person.email.split("@")[0] not in admin.url  # searched by POST: no email in the address
    shot(admin, "ui-contact")


def test_the_task_instance_links_to_the_run_page(admin, local_airflow, finished_run):
    run_id = finished_run["dag_run_id"]
    (ti,) = local_airflow.api.task_instances(DAG_ID, run_id, LAUNCH)
    path = f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{LAUNCH}/links"
    links = local_airflow.api.get(path, map_index=ti["map_index"])["extra_links"]
    href = links["Altcraft run"]
    assert href.startswith("/plugin/altcraft/altcraft/run?")
    admin.goto(f"{local_airflow.api_url}{href}")
    altcraft_frame(admin).locator("#run-totals").wait_for()


def run_query(run: dict[str, Any]) -> str:
    """The run page's query string (run ids hold ``+`` and ``:``, so they must be encoded)."""
    return urlencode({"dag_id": DAG_ID, "run_id": run["dag_run_id"]})


def start_action(page, frame, action: str) -> tuple[str, str]:
    """Click an action's button, confirm; (the confirmation text, the id of the run Airflow started)."""
    frame.locator(f"button[data-action={action}]").first.click()
    dialog = frame.locator("dialog#confirm")
    dialog.wait_for()
    message = dialog.locator(".message").inner_text()
    dialog.get_by_role("button", name="Start the run").click()
    started = frame.locator(".result a.new-run")
    started.wait_for()
    return message, started.inner_text()


def wait_for_run(airflow, run_id: str, timeout: float = 180) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        run = airflow.api.get(f"dags/{DAG_ID}/dagRuns/{run_id}")
        return run if run["state"] in FINISHED else None

    return wait_for(f"run {run_id}", finished, timeout, interval=2, check=airflow.stack.check_alive)


def test_relaunching_selected_contacts_launches_only_them(
    admin, local_airflow, finished_run, e2e_emulator, pg_databases
):
    e2e_emulator.clear_faults()
    journal = Counter(entry["key"] for entry in e2e_emulator.journal(SCENARIO))
    run_q = run_query(finished_run)
    admin.goto(f"{local_airflow.api_url}/plugin/altcraft/altcraft/run?{run_q}&outcome=launched")
    frame = altcraft_frame(admin)
    boxes = frame.locator("#outcomes input.pick")
    picked = [boxes.nth(n).get_attribute("value") for n in (0, 1)]
    boxes.nth(0).check()
    boxes.nth(1).check()
    assert frame.locator(".actions .selection").inner_text() == "2 selected"
    message, new_run = start_action(admin, frame, "relaunch_selected")
    assert "2 people will get the scenario's messages again" in message
    run = wait_for_run(local_airflow, new_run)
    assert run["state"] == "success"
    assert run["conf"] == {"relaunch": True, "contact_hashes": sorted(picked)}
    engine = sa.create_engine(f"postgresql+psycopg2://{pg_databases['crm']}")
    try:
        with engine.connect() as conn:
            query = "SELECT contact_key FROM altcraft_contacts WHERE contact_hash IN :picked"
            statement = sa.text(query).bindparams(sa.bindparam("picked", expanding=True))
            emails = {key.removeprefix("email:") for (key,) in conn.execute(statement, {"picked": picked})}
    finally:
        engine.dispose()
    after = Counter(entry["key"] for entry in e2e_emulator.journal(SCENARIO))
    assert after - journal == Counter(dict.fromkeys(emails, 1))  # the two, once more; nobody else


def test_actions_start_dag_runs_through_airflow(admin, local_airflow, finished_run):
    run_q = run_query(finished_run)
    admin.goto(f"{local_airflow.api_url}/plugin/altcraft/altcraft/run?{run_q}")
    frame = altcraft_frame(admin)
    started = {}
    for action, conf in (("dry_run", {"dry_run": True}), ("reconcile", {"reconcile": True})):
        message, run_id = start_action(admin, frame, action)
        # a dry run sends nothing; a reconciliation run delivers its window, and says whom it may reach
        assert (
            "Nothing is sent" in message
            if action == "dry_run"
            else "may get the scenario's messages" in message
        )
        if action == "dry_run":
            shot(admin, "ui-action")
        started[run_id] = conf
    runs = {run["dag_run_id"]: run for run in local_airflow.api.runs(DAG_ID)}
    for run_id, conf in started.items():
        assert runs[run_id]["conf"] == conf
        assert runs[run_id]["data_interval_start"] == finished_run["data_interval_start"]
        assert runs[run_id]["data_interval_end"] == finished_run["data_interval_end"]
        assert runs[run_id]["note"].startswith("Altcraft UI: ")


def test_an_anonymous_browser_is_refused_everywhere(browser, local_airflow, finished_run):
    context = browser.new_context()
    page = context.new_page()
    query = f"?dag_id={DAG_ID}&run_id={finished_run['dag_run_id']}"
    for path in ("/", f"/run{query}", f"/run.csv{query}", "/contact", f"/plan{query}&action=dry_run",
                 "/static/altcraft.css"):  # fmt: skip
        answer = page.request.get(f"{local_airflow.api_url}/altcraft{path}")
        assert answer.status == 401, path
        assert (
            page.request.post(f"{local_airflow.api_url}/altcraft/contact", form={"q": "a@b.org"}).status
            == 401
        )
    response = page.goto(f"{local_airflow.api_url}/altcraft/")
    assert response.status == 401
    forged = page.request.get(
        f"{local_airflow.api_url}/altcraft/", headers={"Authorization": "Bearer forged"}
    )
    assert forged.status in (401, 403)
    context.close()


def test_a_viewer_reads_the_pages_but_cannot_start_runs(browser, local_airflow, finished_run):
    passwords = json.loads((local_airflow.home / "passwords.json").read_text())
    context, page = login(browser, local_airflow, VIEWER, passwords[VIEWER])
    run_q = run_query(finished_run)
    assert page.request.get(f"{local_airflow.api_url}/altcraft/run?{run_q}").status == 200
    assert page.request.get(f"{local_airflow.api_url}/altcraft/plan?{run_q}&action=dry_run").status == 403
    html = page.request.get(f"{local_airflow.api_url}/altcraft/run?{run_q}").text()
    assert 'id="run-totals"' in html and 'class="pick"' in html  # the run itself is shown...
    assert "data-action" not in html  # ...without its actions
    context.close()


def test_no_page_leaks_a_token(admin, local_airflow, finished_run):
    cookies = {c["name"]: c["value"] for c in admin.context.cookies()}
    run_q = run_query(finished_run)
    for path in ("/", f"/run?{run_q}", f"/run.csv?{run_q}", f"/plan?{run_q}&action=resend_uncertain"):
        text = requests.get(f"{local_airflow.api_url}/altcraft{path}", cookies=cookies, timeout=30).text
        assert DEFAULT_TOKEN not in text and cookies["_token"] not in text, path
