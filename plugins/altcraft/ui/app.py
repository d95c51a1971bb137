"""FastAPI routes of the Altcraft page, mounted by Airflow's API server at ``/altcraft``.

Plugin apps are not protected by Airflow, so every route here depends on Airflow's own auth manager:
the app requires a logged-in user (``GetUserDep``: Bearer token or the ``_token`` cookie the Airflow UI
sets) with access to the website, run pages require read access to the DAG's runs, and action plans
require permission to trigger the DAG. Rows of DAGs the user may not read are left out everywhere.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from airflow.api_fastapi.auth.managers.models.resource_details import AccessView, DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag, requires_access_view
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from altcraft.ledger.rules import DEFAULT_GRACE, STALE_AFTER, grace_left
from altcraft.ledger.statements import database_now
from altcraft.mapping import mask_key
from altcraft.masking import scrub
from altcraft.pipelines.spec import duration_text
from altcraft.ui import airflow_runs, queries
from altcraft.ui.actions import KEEPS_POSITION, NO_WINDOW, Action, plan
from altcraft.ui.keys import candidate_keys

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
PAGE_SIZE = 50
#: The last page number a run page accepts: its row offset fits any database's 64-bit integer.
MAX_PAGE = 10**9
TREND_DAYS = 30
STATIC = {"altcraft.css": "text/css", "altcraft.js": "text/javascript", "icon.svg": "image/svg+xml"}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    keep_trailing_newline=True,
)


def no_nul_in_query(request: Request) -> None:
    """Refuse a query parameter holding NUL (PostgreSQL text cannot hold it: the query would fail)."""
    if any("\x00" in value for _, value in request.query_params.multi_items()):
        raise HTTPException(400, "query parameters must not contain NUL characters")


app = FastAPI(
    title="Altcraft",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
    dependencies=[Depends(requires_access_view(AccessView.WEBSITE)), Depends(no_nul_in_query)],
)
#: Sent with every answer. The page loads only its own files (no inline script or style), so an escaping
#: bug in a template cannot run script; only Airflow's own pages may frame it (clicks on its actions
#: cannot be stolen by a page framing it); a CSV or JSON answer is never sniffed into HTML.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'self'; base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@app.middleware("http")
async def security_headers(request: Request, call_next: Any) -> Response:
    response = await call_next(request)
    response.headers.update(SECURITY_HEADERS)
    return response


ReadRuns = Depends(requires_access_dag("GET", DagAccessEntity.RUN))
TriggerRuns = Depends(requires_access_dag("POST", DagAccessEntity.RUN))


# ------------------------------------------------------------------------------------------ settings


def show_contact_keys() -> bool:
    """``[altcraft] ui_show_contact_keys``: contact keys in clear on the pages (default: masked)."""
    from airflow.configuration import conf

    return conf.getboolean("altcraft", "ui_show_contact_keys", fallback=False)


@cache
def ledger_engine() -> Engine:
    """The ledger's engine, from ``[altcraft] ledger_conn_id`` as the operator finds it."""
    from altcraft.engines import ledger_engine as engine_of

    return engine_of(None)


def prepare() -> None:
    """What the first request would do once: compile the templates, create the ledger's engine and open
    one pooled connection. Reads no ledger data."""
    for name in templates.list_templates():
        templates.get_template(name)
    with ledger_engine().connect() as conn:
        conn.exec_driver_sql("SELECT 1")


#: How long a page's query waits for a lock (an upgrade's ALTER TABLE) and runs at most (PostgreSQL).
LOCK_TIMEOUT, STATEMENT_TIMEOUT = "5s", "60s"


def read_only() -> Iterator[Connection]:
    """A connection that only reads, rolled back at the end. On PostgreSQL a read-only REPEATABLE READ
    transaction: a page's queries (e.g. 24-hour and per-day counts) see one snapshot of the ledger."""
    engine = ledger_engine()
    postgres = engine.dialect.name == "postgresql"
    options = {"postgresql_readonly": True, "isolation_level": "REPEATABLE READ"} if postgres else {}
    with engine.connect().execution_options(**options) as conn:
        try:
            if postgres:  # report queries: aggregate in memory, no JIT compilation for one-off plans
                conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
                conn.exec_driver_sql("SET LOCAL jit = off")
                # a page answers (503, saying why) rather than hang behind a schema upgrade's lock
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
            yield conn
        finally:
            conn.rollback()


Ledger = Annotated[Connection, Depends(read_only)]


def ledger_error(error: DBAPIError) -> str:
    """What the page says when the ledger cannot be read: the database's own first line, scrubbed (no SQL,
    no parameters: they may hold contact hashes or keys); where no statement ran (it could not connect),
    the error's own, which names the ledger's connection (`altcraft.engines.named`)."""
    said = error.orig if error.statement is not None else error
    first = (str(said).strip().splitlines() or [type(error.orig).__name__])[0]
    return (
        "The sync ledger cannot be read: its database is unreachable or did not answer in time, or its "
        "tables are missing or of an older version (the first pipeline run of this version creates and "
        "upgrades them). "
        f"The database said: {scrub(first)[:300]}"
    )


@app.exception_handler(DBAPIError)
def ledger_unavailable(request: Request, error: DBAPIError) -> Response:
    """503 with the reason, on the page or as the JSON ``detail`` of an endpoint: never a bare 500."""
    message = ledger_error(error)
    log.error("Altcraft page %s: %s", request.url.path, message)
    if request.url.path.endswith("/plan"):
        return JSONResponse({"detail": message}, status_code=503, headers={"Cache-Control": "no-store"})
    response = render(request, "unavailable.html", message=message)
    response.status_code = 503
    return response


# ------------------------------------------------------------------------------------------ rendering


def contact_label(key: str | None) -> str:
    if key is None:
        return ""
    return key if show_contact_keys() else mask_key(key)


def render(request: Request, name: str, **context: Any) -> HTMLResponse:
    html = templates.get_template(name).render(base=request.scope.get("root_path", "").rstrip("/"), **context)
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def bars(days: list[tuple[Any, dict[str, int]]], height: float = 30) -> list[dict[str, Any]]:
    """Stacked bars of a per-day trend (6 units per day, ``height`` for the busiest day)."""
    peak = max((sum(counts.values()) for _, counts in days), default=0) or 1
    found = []
    for index, (day, counts) in enumerate(days):
        top = height + 2
        for outcome in queries.ordered_outcomes(counts.keys()):
            size = counts[outcome] / peak * height
            top -= size
            found.append(
                {"x": index * 6, "y": f"{top:.2f}", "height": f"{size:.2f}", "outcome": outcome,
                 "day": day, "count": counts[outcome]}
            )  # fmt: skip
    return found


def _fmt_time(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


templates.globals.update(
    airflow=airflow_runs,
    contact_label=contact_label,
    scrub=scrub,
    outcome_names=queries.ordered_outcomes,
    fmt_time=_fmt_time,
    bars=bars,
    no_window=NO_WINDOW,
    keeps_position=KEEPS_POSITION,
    stale_after=duration_text(STALE_AFTER),
)

# ---------------------------------------------------------------------------------------------- pages


@app.get("/", response_class=HTMLResponse)
def pipelines_page(request: Request, user: GetUserDep, conn: Ledger) -> HTMLResponse:
    now = datetime.now(UTC)
    readable = airflow_runs.readable_dag_ids(user)
    scopes = queries.pipelines(conn, now, readable, TREND_DAYS)
    last = airflow_runs.last_runs({dag_id for scope in scopes for dag_id in scope.dag_ids})
    totals = queries.run_totals(conn, [(run.dag_id, run.run_id) for run in last.values()])
    return render(
        request,
        "pipelines.html",
        scopes=scopes,
        readable=bool(readable),
        last_runs=last,
        totals=totals,
        today=now.date(),
        trend_days=TREND_DAYS,
    )


@app.get("/run", response_class=HTMLResponse, dependencies=[ReadRuns])
def run_page(
    request: Request,
    user: GetUserDep,
    conn: Ledger,
    dag_id: str,
    run_id: str,
    outcome: str = "",
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
) -> HTMLResponse:
    tries = queries.run_counts(conn, dag_id, run_id)
    filtered = sum(t.counts.get(outcome, 0) for t in tries) if outcome else sum(t.total for t in tries)
    rows = queries.run_outcomes(
        conn, dag_id, run_id, outcome=outcome or None, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    names = queries.ordered_outcomes({name for t in tries for name in t.counts})
    return render(
        request,
        "run.html",
        dag_id=dag_id,
        run_id=run_id,
        run=airflow_runs.run_info(dag_id, run_id),
        tries=tries,
        totals=queries.latest_counts(tries),
        names=names,
        rows=rows,
        outcome=outcome,
        page=page,
        pages=max(1, math.ceil(filtered / PAGE_SIZE)),
        filtered=filtered,
        open_now={
            **queries.open_in_run(conn, dag_id, run_id, airflow_runs.readable_dag_ids(user)),
            **queries.sending_in_run(conn, dag_id, run_id),
        },
        can_trigger=airflow_runs.may_trigger(user, dag_id),
        marker=airflow_runs.dag_marker(dag_id),
    )


CSV_COLUMNS = ("task_id", "try_number", "outcome", "code", "reason", "source_key", "contact", "recorded_at")
#: Where a spreadsheet may start a cell that it reads as a formula (OWASP "CSV injection"): at the text's
#: start, and after a ``;`` or a line break, where Excel starts a new cell when its list separator is ``;``
#: (its Russian locale, among others: it reads a CSV split there, a quote opening a cell only at its start),
#: then at ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, quoted or not. A ``'`` goes before each.
_FORMULA_CELL = re.compile(r'(?:^|(?<=[;\r\n]))(?="*[=+\-@\t\r])')


def csv_text(value: str) -> str:
    """A text cell of the CSV export that spreadsheets show as text, never run as a formula."""
    return _FORMULA_CELL.sub("'", value)


@app.get("/run.csv", dependencies=[ReadRuns])
def run_csv(conn: Ledger, dag_id: str, run_id: str, outcome: str = "") -> StreamingResponse:
    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        for row in queries.iter_run_outcomes(conn, dag_id, run_id, outcome=outcome or None):
            writer.writerow(
                (
                    csv_text(row["task_id"]),
                    row["try_number"],
                    csv_text(row["outcome"]),
                    row["code"] if row["code"] is not None else "",
                    csv_text(scrub(row["reason"] or "")),
                    csv_text(scrub(row["source_key"])),
                    csv_text(contact_label(row["contact_key"])),
                    row["recorded_at"].isoformat() if row["recorded_at"] else "",
                )
            )
            if buffer.tell() > 64_000:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    name = re.sub(
        r"[^A-Za-z0-9._-]", "_", f"altcraft-{dag_id}-{run_id}{'-' + outcome if outcome else ''}.csv"
    )
    chunks = lines()
    first = next(chunks)  # the first query runs before the answer starts: a ledger error is still a 503
    return StreamingResponse(
        itertools.chain([first], chunks),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


@app.get("/contact", response_class=HTMLResponse)
def contact_page(request: Request, user: GetUserDep, conn: Ledger, h: str = "") -> HTMLResponse:
    """The search form, or the contact with this ledger hash (links carry hashes, never keys in clear)."""
    records = queries.contact_by_hash(conn, h, airflow_runs.readable_dag_ids(user)) if h else []
    return render(request, "contact.html", q="", region="", records=records, searched=bool(h))


#: The largest search form read (a contact typed in, and its region): a larger body is refused unread.
MAX_FORM_BYTES = 16_384


async def _small_body(request: Request) -> bytes:
    """The request's body, refused with 413 once it passes `MAX_FORM_BYTES`."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, f"a search form is at most {MAX_FORM_BYTES:,} bytes")
    return bytes(body)


@app.post("/contact", response_class=HTMLResponse)
async def contact_search(request: Request, user: GetUserDep, conn: Ledger) -> HTMLResponse:
    """Look a contact up by what was typed; posted, so emails and phones stay out of URLs and access logs."""
    form = parse_qs((await _small_body(request)).decode("utf-8", "replace"))
    q = form.get("q", [""])[0][:1000]
    region = form.get("region", [""])[0][:2]
    keys = candidate_keys(q, region.upper() or None)
    records = (
        queries.contact_history(conn, keys, queries.scopes(conn), airflow_runs.readable_dag_ids(user))
        if keys
        else []
    )
    return render(request, "contact.html", q=q, region=region, records=records, searched=bool(keys))


# -------------------------------------------------------------------------------------------- actions


def refuse_resend_within_grace(
    last_uncertain: datetime | None, grace: timedelta | None, now: datetime
) -> None:
    """409 while a contact to resend became uncertain less than the pipeline's reconciliation ``grace`` ago
    (None: `DEFAULT_GRACE`) at ``now``, the ledger database's time, the clock its rows were written by:
    Altcraft may still be processing its request (an answer lost to a timeout, a queued task), and a resend
    now could launch it twice. The rule of reconciliation and of the run's ``resend_uncertain`` too
    (:func:`~altcraft.ledger.rules.grace_left`)."""
    if last_uncertain is None:
        return
    grace = DEFAULT_GRACE if grace is None else grace
    if grace_left(last_uncertain, now, grace) is not None:
        ready = last_uncertain + grace
        raise HTTPException(
            409,
            f"An uncertain contact to resend became uncertain less than {duration_text(grace)} ago (the "
            "pipeline's reconciliation grace): Altcraft may still be processing its request, and resending "
            f"it now may launch it twice. Resend after {ready.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, or "
            "reconcile.",
        )


@app.get("/plan", dependencies=[ReadRuns, TriggerRuns])
def action_plan(
    conn: Ledger,
    dag_id: str,
    run_id: str,
    action: Action,
    selected: Annotated[list[str], Query()] = [],  # ruff: ignore[mutable-argument-default] (FastAPI copies defaults)
) -> JSONResponse:
    """What an action will do: the confirmation text, how many people may get messages, the run body.

    The pipeline's marker (`altcraft.ui.marker`) says whether its source reads this run's window again
    and how long its reconciliation grace is."""
    run = airflow_runs.run_info(dag_id, run_id)
    if run is None:
        raise HTTPException(404, f"DAG run {run_id!r} of {dag_id!r} not found")
    marker = airflow_runs.dag_marker(dag_id)
    chosen = set(selected)
    statuses: dict[str, str] = {}
    if chosen:
        statuses = queries.selected_contacts(conn, dag_id, run_id, chosen)
        if set(statuses) != chosen:
            raise HTTPException(400, f"{len(chosen - set(statuses))} selected contact(s) are not in this run")
    if action is Action.DRY_RUN or marker.keeps_position:  # the latter reads none of the run's contacts
        people = 0
    elif chosen:  # the run sends only these: their failed and uncertain ones, or all when relaunched
        people = sum(
            action is Action.RELAUNCH_SELECTED or status in queries.RESENDABLE for status in statuses.values()
        )
    else:  # the run delivers its whole window: these of the run, and new contacts the ledger cannot count
        people = sum(queries.open_in_run(conn, dag_id, run_id).values())
    try:
        planned = plan(
            action,
            dag_id=dag_id,
            run_id=run_id,
            interval=(run.data_interval_start, run.data_interval_end),
            people=people,
            selected=chosen,
            keeps_position=marker.keeps_position,
        )
    except ValueError as error:
        raise HTTPException(400, str(error)) from None
    if action is Action.RESEND_UNCERTAIN:
        last = queries.last_uncertain_at(conn, dag_id, run_id, chosen or None)
        refuse_resend_within_grace(last, marker.grace, database_now(conn))
    return JSONResponse(
        {
            "people": planned.people,
            "message": planned.message,
            "trigger_url": f"{airflow_runs.ui_root()}/api/v2/dags/{dag_id}/dagRuns",
            "body": planned.body,
        }
    )


@app.get("/static/{name}")
def static(name: str) -> Response:
    if name not in STATIC:
        return PlainTextResponse("not found", status_code=404)
    return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name])
