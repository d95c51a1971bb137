"""One throughput job: rows of the bench table → a client → the emulator, measured in this process.

Clients:

* ``ours``: the pipeline's extract (`SqlTableSource` over the window) and the operator's delivery in
  batch mode (`Delivery` with the ledger on PostgreSQL, `AltcraftHook`).
* ``naive``: what a hand-written DAG does: rows by ``PostgresHook.get_records``, then one
  ``workflows/import_and_start`` per contact through ``HttpHook.run`` (a new session per call).
* ``floor``: the least any correct client must do: the same query (psycopg, server-side cursor), email
  and phone validated (email-validator, phonenumbers), one ``json.dumps`` per request, the same batch
  requests posted with a bare ``requests.Session``. No ledger, no mapping framework. Run with the
  garbage collector and requests set as ours runs (`altcraft.heap.frozen_heap`; the environment not
  re-read at each request, ``trust_env`` off), so the comparison is of the work per contact: without
  them the floor spent ~3.6 us per contact in 4 full collections over the imported modules (measured
  with ``gc.callbacks``, 2026-12-06) and ~0.2 ms per request re-reading the proxy variables.
* ``floor_cached``: the floor with the same verdicts for less: email and phone through
  ``altcraft.validation`` (known domains and ``+digits`` phones skip re-parsing, phone validity runs on
  patterns compiled once per country code, possibility is asked once per country code and length; proven
  equal to the plain libraries by tests/test_validation_fast_path.py).

``python -m bench.throughput ours|naive|floor|floor_cached --schema S --n N --scenario ID`` (connections in
the environment, see `bench.common.connection_env`) prints the result as one JSON line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import phonenumbers
import psycopg
import requests
from email_validator import validate_email

from altcraft.heap import frozen_heap
from bench.common import (
    ALTCRAFT_CONN_ID,
    DB_ID,
    HTTP_CONN_ID,
    MAPPING,
    PG_CONN_ID,
    PG_DSN,
    TABLE,
    Meter,
    emit,
    select_sql,
    window,
)

BATCH_ENDPOINT = "api/v1.1/workflows/import_and_start_batch"
SINGLE_ENDPOINT = "api/v1.1/workflows/import_and_start"


def ours(schema: str, n: int, scenario_id: int, batch_size: int, profile: Path | None) -> dict[str, Any]:
    from altcraft.delivery import Delivery
    from altcraft.hooks.altcraft import AltcraftHook
    from altcraft.ledger import Ledger, RunRef
    from altcraft.mapping import ProfileMapping
    from altcraft.sources.base import Window
    from altcraft.sources.sql import SqlTableSource

    start, end = window(n)
    source = SqlTableSource(PG_CONN_ID, TABLE, schema=schema, key_column="id", created_at_column="created_at")
    mapping = ProfileMapping.model_validate(MAPPING)
    hook = AltcraftHook(ALTCRAFT_CONN_ID)
    hook.get_conn()
    ledger = Ledger.from_conn_id(PG_CONN_ID)
    ledger.ensure_schema()
    delivery = Delivery.create(
        hook,
        ledger,
        RunRef.create("bench", "import_and_launch", f"bench_{scenario_id}", 1, (start, end)),
        scenario_id=scenario_id,
        mapping=mapping,
        key_column=source.key_column,
        db_id=DB_ID,
        batch_size=batch_size,
    )
    meter = Meter()
    with meter.measure(), _profiled(profile):
        summary = delivery.process(source.batches(Window(start, end), batch_size))
    return meter.result(n, requests=hook.requests_made, launched=summary.launched, found=summary.found)


def naive(schema: str, n: int, scenario_id: int, batch_size: int, profile: Path | None) -> dict[str, Any]:
    from airflow.providers.http.hooks.http import HttpHook
    from airflow.providers.postgres.hooks.postgres import PostgresHook
    from airflow.sdk import BaseHook

    token = BaseHook.get_connection(ALTCRAFT_CONN_ID).password
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    meter, launched = Meter(), 0
    with meter.measure(), _profiled(profile):
        rows = PostgresHook(postgres_conn_id=PG_CONN_ID).get_records(
            select_sql(schema) + " LIMIT %s", parameters=(*window(n), n)
        )
        http = HttpHook(method="POST", http_conn_id=HTTP_CONN_ID)
        for key, email, first_name, phone, loyalty, _created in rows:
            body = {
                "token": token,
                "workflow_id": scenario_id,
                "matching": "email",
                "db_id": DB_ID,
                "email": email,
                "data": {"_fname": first_name, "CRM_ID": str(key), "LOYALTY": loyalty, "phones": [phone]},
            }
            answer = http.run(SINGLE_ENDPOINT, data=json.dumps(body), headers=headers).json()
            launched += not answer.get("error")
    return meter.result(len(rows), requests=len(rows), launched=launched, found=len(rows))


def floor(schema: str, n: int, scenario_id: int, batch_size: int, profile: Path | None) -> dict[str, Any]:
    return _floor(schema, n, scenario_id, batch_size, profile, _floor_item)


def floor_cached(
    schema: str, n: int, scenario_id: int, batch_size: int, profile: Path | None
) -> dict[str, Any]:
    return _floor(schema, n, scenario_id, batch_size, profile, _floor_item_cached)


def _floor(
    schema: str,
    n: int,
    scenario_id: int,
    batch_size: int,
    profile: Path | None,
    item: Callable[[tuple[Any, ...]], dict[str, Any]],
) -> dict[str, Any]:
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(ALTCRAFT_CONN_ID)
    token, url = conn.password, f"{conn.host}/{BATCH_ENDPOINT}"
    meter = Meter()
    with meter.measure(), _profiled(profile), frozen_heap():
        found, launched, sent = _floor_loop(schema, n, scenario_id, batch_size, item, token, url)
    return meter.result(found, requests=sent, launched=launched, found=found)


def _floor_loop(
    schema: str,
    n: int,
    scenario_id: int,
    batch_size: int,
    item: Callable[[tuple[Any, ...]], dict[str, Any]],
    token: str,
    url: str,
) -> tuple[int, int, int]:
    """The floor's timed part: (contacts found, launched, requests sent)."""
    found, launched, sent = 0, 0, 0
    session = requests.Session()
    session.trust_env = False  # loopback, no proxy: the variables need not be read at every request
    session.headers.update(
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json; charset=utf-8"}
    )
    with psycopg.connect(PG_DSN) as db, db.cursor(name="floor") as cursor:
        cursor.execute(select_sql(schema), window(n))
        while rows := cursor.fetchmany(batch_size):
            found += len(rows)
            body = {
                "workflow_id": scenario_id,
                "matching": "email",
                "db_id": DB_ID,
                "token": token,
                "data": [item(row) for row in rows],
            }
            encoded = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            response = session.post(url, data=encoded, timeout=60)
            response.raise_for_status()
            sent += 1
            launched += sum(not item.get("error") for item in response.json()["result"])
    return found, launched, sent


def _floor_item(row: tuple[Any, ...]) -> dict[str, Any]:
    """One batch item, validated the way any correct client must: email syntax, E.164 phone."""
    key, email, first_name, phone, loyalty, _created = row
    number = phonenumbers.parse(phone, None)
    if not phonenumbers.is_valid_number(number):
        raise ValueError("the bench table holds only valid phone numbers")
    return {
        "email": validate_email(email, check_deliverability=False).normalized,
        "data": {
            "_fname": first_name,
            "CRM_ID": str(key),
            "LOYALTY": loyalty,
            "phones": [phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)],
        },
    }


def _floor_item_cached(row: tuple[Any, ...]) -> dict[str, Any]:
    """`_floor_item` with `altcraft.validation`'s fast paths: the same values, verdicts and output."""
    from altcraft.validation import normalize_email, normalize_phone

    key, email, first_name, phone, loyalty, _created = row
    return {
        "email": normalize_email(email),
        "data": {
            "_fname": first_name,
            "CRM_ID": str(key),
            "LOYALTY": loyalty,
            "phones": [normalize_phone(phone)],
        },
    }


@contextmanager
def _profiled(path: Path | None) -> Generator[None]:
    """Profile the block with pyinstrument into ``path`` (text), or do nothing."""
    if path is None:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    with profiler:
        yield
    path.write_text(profiler.output_text(unicode=True, show_all=False), encoding="utf-8")


CLIENTS = {"ours": ours, "naive": naive, "floor": floor, "floor_cached": floor_cached}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__)
    parser.add_argument("client", choices=sorted(CLIENTS))
    parser.add_argument("--schema", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--scenario", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--profile", type=Path, help="write a pyinstrument profile (text) here")
    args = parser.parse_args(argv)
    emit(CLIENTS[args.client](args.schema, args.n, args.scenario, args.batch_size, args.profile))


if __name__ == "__main__":
    main()
