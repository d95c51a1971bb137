"""The sync ledger on live PostgreSQL (psycopg2 and psycopg 3), MariaDB and SQLite.

Each server gets a database created for this test session (dropped at the end); each test uses its own
Scope, so tests share the tables but never rows.
"""

from __future__ import annotations

import io
import logging
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Generator, Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from demo.airflow_api import wait_for
from sqlalchemy.engine.interfaces import CacheStats

from altcraft.ledger import (
    Claim,
    ContactStatus,
    IdentityChanged,
    Ledger,
    Outcome,
    PositionLocked,
    RelaunchPolicy,
    Resolution,
    RunRef,
    Scope,
    Settlement,
    activity_table,
    contacts_table,
    identities_table,
    metadata,
    outcomes_table,
    tasks_table,
)
from altcraft.ledger.rules import ContactState, former_keys
from altcraft.ledger.schema import CANONICAL_KEYS, LedgerSchemaError, meta_table
from altcraft.ledger.statements import (
    begin_tally,
    contact_states,
    drop_tally,
    insert_outcomes,
    is_transient,
    shard,
    tally,
)
from altcraft.modes import DeliveryMode
from altcraft.reconciliation import DEFAULT_GRACE as GRACE
from altcraft.reconciliation import judge
from tests.clock import set_clock_off
from tests.conftest import as_upgraded_from_an_earlier_version

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
MARIA = "mysql+pymysql://root@127.0.0.1:3306"
BACKENDS = {
    "postgresql": PG,
    "postgresql-psycopg3": "postgresql+psycopg://postgres@127.0.0.1:5432",
    "mariadb": MARIA,
    "sqlite": None,
}
ONCE = RelaunchPolicy.parse("once")
EVERY_RUN = RelaunchPolicy.parse("every_run")
T0 = datetime(2030, 1, 1, tzinfo=UTC)
LAUNCHED = Settlement(Outcome.LAUNCHED, profile_id="p1")
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)


# --- databases --------------------------------------------------------------------------------------


def _admin(server: str, statement: str) -> None:
    """Run a CREATE/DROP DATABASE statement on a server, outside any transaction."""
    engine = sa.create_engine(
        f"{server}/{'postgres' if server == PG else 'test'}", isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.exec_driver_sql(statement)
    engine.dispose()


def _create_database(server: str, name: str) -> None:
    _admin(server, f"CREATE DATABASE {name}" + ("" if server == PG else " CHARACTER SET utf8mb4"))


def _drop_database(server: str, name: str) -> None:
    _admin(server, f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if server == PG else ""))


@pytest.fixture(scope="session")
def database_name():
    """One database on PostgreSQL and one on MariaDB, for this session only."""
    name = f"altcraft_ledger_test_{uuid.uuid4().hex[:10]}"
    for server in (PG, MARIA):
        _create_database(server, name)
    yield name
    for server in (PG, MARIA):
        _drop_database(server, name)


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})


@pytest.fixture(scope="session", params=list(BACKENDS))
def engine(request, database_name, tmp_path_factory):
    server = BACKENDS[request.param]
    if server is None:
        url = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}"
    else:
        url = f"{server}/{database_name}"
    engine = _engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def fresh_engine(request, engine, tmp_path):
    """An engine on a database of its own, still without the ledger tables."""
    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        engine = _engine(f"sqlite:///{tmp_path / 'fresh.db'}")
        yield engine
        engine.dispose()
        return
    server = PG if backend == "postgresql" else MARIA
    name = f"altcraft_ledger_fresh_{uuid.uuid4().hex[:10]}"
    _create_database(server, name)
    fresh = _engine(engine.url.set(database=name).render_as_string(hide_password=False))
    yield fresh
    fresh.dispose()
    _drop_database(server, name)


@pytest.fixture
def ledger(engine) -> Ledger:
    return Ledger(engine)


@pytest.fixture
def scope() -> Scope:
    return Scope(f"https://{uuid.uuid4().hex[:12]}.altcraft.test", 7)


# --- helpers ---------------------------------------------------------------------------------------


def run(run_id: str = "r1", try_number: int = 1, window: str | None = None) -> RunRef:
    return RunRef("dag", "send", run_id, try_number, f"dag/send/{window or run_id}")


def items(*keys: str) -> list[tuple[str, str]]:
    return [(key, f"src-{key}") for key in keys]


def launch(ledger: Ledger, scope: Scope, ref: RunRef, keys, policy=ONCE, *, now=T0, **flags) -> Claim:
    claim = ledger.claim(scope, ref, items(*keys), policy, now=now, **flags)
    ledger.settle(scope, ref, claim, dict.fromkeys(claim.to_send, LAUNCHED), now=now)
    return claim


def row(engine: sa.Engine, scope: Scope, key: str) -> dict:
    """The contact row, read through a brand-new engine (so certainly another connection)."""
    other = sa.create_engine(engine.url)
    try:
        with other.connect() as conn:
            query = sa.select(contacts_table).where(contacts_table.c.contact_hash == scope.contact_hash(key))
            found = conn.execute(query).mappings().first()
            return {} if found is None else dict(found)
    finally:
        other.dispose()


def days_and_rows(engine: sa.Engine, scope: Scope) -> tuple[tuple[dict, dict], tuple[dict, dict]]:
    """The scope's ``altcraft_outcome_days`` next to ``COUNT(*) … GROUP BY`` of its outcome rows: each as
    (dag_id, UTC day, outcome, shard of the task) -> count, and (dag_id, UTC day) -> latest recorded_at."""
    day = "date(recorded_at)" if engine.dialect.name == "sqlite" else "CAST(recorded_at AS DATE)"
    raw = f"""
        SELECT dag_id, {day}, outcome, task_id, COUNT(*), MAX(recorded_at) FROM altcraft_outcomes
        WHERE platform = :platform AND scenario_id = :scenario GROUP BY dag_id, {day}, outcome, task_id"""
    kept = """
        SELECT dag_id, day, outcome, shard, outcome_count, last_recorded_at FROM altcraft_outcome_days
        WHERE platform = :platform AND scenario_id = :scenario"""
    params = {"platform": scope.platform, "scenario": scope.scenario_id}
    found = []
    with engine.connect() as conn:
        for query, by_task in ((raw, True), (kept, False)):
            counts: Counter = Counter()
            latest: dict = {}
            for dag_id, on, outcome, part, count, last in conn.execute(sa.text(query), params):
                on, last = str(on)[:10], str(last)[:26]  # drivers differ: date/str, datetime/str
                assert count >= 0, f"negative count {count} for {dag_id} {on} {outcome}"
                counts[dag_id, on, outcome, shard(part) if by_task else part] += count
                latest[dag_id, on] = max(last, latest.get((dag_id, on), last))
            found.append(({key: n for key, n in counts.items() if n}, latest))
    return found[0], found[1]


def assert_days_are_the_rows(engine: sa.Engine, scope: Scope) -> dict:
    """``altcraft_outcome_days`` equals counting the outcome rows, row by row (and their latest time per
    day); returns the counts per (dag_id, day, outcome)."""
    rows, days = days_and_rows(engine, scope)
    assert days == rows
    total: Counter = Counter()
    for (dag_id, on, outcome, _), count in rows[0].items():
        total[dag_id, on, outcome] += count
    return dict(total)


# --- value objects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "cooldown", "canonical"),
    [
        ("once", "once", None, "once"),
        (" Every_Run ", "every_run", None, "every_run"),
        ("cooldown:30d", "cooldown", timedelta(days=30), "cooldown:30d"),
        ("cooldown:12h", "cooldown", timedelta(hours=12), "cooldown:12h"),
        ("cooldown:48h", "cooldown", timedelta(days=2), "cooldown:2d"),
        ("cooldown:90m", "cooldown", timedelta(minutes=90), "cooldown:90m"),
    ],
)
def test_policy_parse_and_round_trip(text, kind, cooldown, canonical):
    policy = RelaunchPolicy.parse(text)
    assert (policy.kind, policy.cooldown, str(policy)) == (kind, cooldown, canonical)
    assert RelaunchPolicy.parse(str(policy)) == policy


@pytest.mark.parametrize(
    "text", ["", "twice", "cooldown", "cooldown:", "cooldown:0d", "cooldown:5s", "once:1d"]
)
def test_policy_parse_refuses(text):
    with pytest.raises(ValueError, match=r"relaunch policy|positive"):
        RelaunchPolicy.parse(text)


def test_policy_refuses_inconsistent_fields():
    with pytest.raises(ValueError):
        RelaunchPolicy("cooldown")
    with pytest.raises(ValueError):
        RelaunchPolicy("once", timedelta(days=1))
    with pytest.raises(ValueError):
        RelaunchPolicy("cooldown", timedelta(seconds=90))


def test_scope_normalises_platform():
    assert Scope("HTTPS://Example.Altcraft.COM/api/ ", 5).platform == "https://example.altcraft.com/api"
    assert Scope("https://example.altcraft.com", 5) == Scope("https://EXAMPLE.altcraft.com/", 5)
    for bad in ("https://user:secret@x.test", "https://x.test/?token=secret", "ftp://x.test", "x.test"):
        with pytest.raises(ValueError) as error:
            Scope(bad, 5)
        assert "secret" not in str(error.value)
    with pytest.raises(ValueError):
        Scope("https://x.test", -1)


def test_run_ref_keys():
    ref = RunRef.create(
        "d",
        "t",
        "manual__1",
        2,
        (datetime(2030, 1, 1, 3, tzinfo=timezone(timedelta(hours=3))), T0 + timedelta(1)),
    )
    assert ref.run_key == "d/t/manual__1"
    assert ref.window_key == "d/t/2030-01-01T00:00:00+00:00/2030-01-02T00:00:00+00:00"
    assert RunRef.create("d", "t", "manual__1", 1).window_key == "d/t/manual__1"
    with pytest.raises(ValueError):
        RunRef("d" * 251, "t", "r", 1, "w")


def test_settlement_outcomes_are_restricted():
    with pytest.raises(ValueError):
        Settlement(Outcome.SKIPPED)


# --- claim: new contacts, write-ahead, duplicates ---------------------------------------------------


def test_new_contacts_are_claimed_and_written_ahead(engine, ledger, scope):
    claim = ledger.claim(scope, run(), items("email:a@x.test", "email:b@x.test"), ONCE, now=T0)
    assert claim.to_send == ["email:a@x.test", "email:b@x.test"]
    assert claim.skipped == {}
    assert claim.source_keys == {
        "email:a@x.test": "src-email:a@x.test",
        "email:b@x.test": "src-email:b@x.test",
    }
    written = row(engine, scope, "email:a@x.test")
    assert written["status"] == ContactStatus.SENDING
    assert (written["batch_id"], written["claim_run_key"], written["claimed_at"]) == (
        claim.batch_id,
        "dag/send/r1",
        T0,
    )
    assert (written["contact_key"], written["platform"], written["launch_count"]) == (
        "email:a@x.test",
        scope.platform,
        0,
    )


def test_duplicates_in_one_claim(ledger, scope):
    claim = ledger.claim(scope, run(), [("k:a", "1"), ("k:b", "2"), ("k:a", "3")], ONCE, now=T0)
    assert claim.to_send == ["k:a", "k:b"]
    assert claim.source_keys["k:a"] == "1"
    outcomes = ledger.history("k:a", scope).outcomes
    assert [(o["outcome"], o["source_key"], o["reason"]) for o in outcomes] == [
        ("skipped", "3", "duplicate in this run")
    ]


def test_keys_are_exact_on_every_backend(ledger, scope):
    """Identity is a hash computed in Python: no collation folds case or trailing spaces."""
    claim = ledger.claim(scope, run(), items("ext:Anna", "ext:anna", "ext:anna "), ONCE, now=T0)
    assert len(claim.to_send) == 3


def test_timestamps_are_stored_as_utc(engine, ledger, scope):
    moscow = datetime(2030, 1, 1, 3, 0, tzinfo=timezone(timedelta(hours=3)))
    ledger.claim(scope, run(), items("k:a"), ONCE, now=moscow)
    with engine.connect() as conn:
        raw = conn.execute(
            sa.text("SELECT claimed_at FROM altcraft_contacts WHERE contact_hash = :h"),
            {"h": scope.contact_hash("k:a")},
        ).scalar_one()
    assert str(raw).startswith("2030-01-01 00:00:00")
    with pytest.raises(ValueError, match="timezone-aware"):
        ledger.claim(scope, run(), items("k:b"), ONCE, now=datetime(2030, 1, 1))


def test_timestamps_read_back_aware_in_utc_to_the_microsecond(engine, ledger, scope):
    """What a claim reads of a row (`statements.contact_states`) and what the ledger's tables give back
    (`UtcDateTime`): the instant written, aware, in UTC."""
    at = datetime(2030, 1, 1, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=3, minutes=30)))
    launch(ledger, scope, run("r1"), ["k:a"], now=at)
    with engine.connect() as conn:
        (found, *columns), *_ = contact_states(conn, [scope.contact_hash("k:a")], lock=False)
    assert found == scope.contact_hash("k:a")
    state = ContactState(*columns)
    history = ledger.history("k:a", scope)
    times = [state.claimed_at, state.last_launched_at, history.contact["created_at"]]
    times += [outcome["recorded_at"] for outcome in history.outcomes]
    assert times == [at] * 4 and {moment.tzinfo for moment in times} == {UTC}


# --- policies -------------------------------------------------------------------------------------


def test_once_never_relaunches(ledger, scope):
    launch(ledger, scope, run("r1"), ["k:a"])
    ref = run("r2")
    claim = ledger.claim(scope, ref, items("k:a", "k:b"), ONCE, now=T0 + timedelta(days=400))
    assert claim.to_send == ["k:b"]
    assert claim.skipped["k:a"].startswith("already launched at 2030-01-01T00:00:00+00:00 by dag/send/r1")
    assert ledger.counts(scope, ref)[Outcome.SKIPPED] == 1


def test_cooldown(ledger, scope):
    policy = RelaunchPolicy.parse("cooldown:30d")
    launch(ledger, scope, run("r1"), ["k:a"], policy)
    early = ledger.claim(scope, run("r2"), items("k:a"), policy, now=T0 + timedelta(days=10))
    assert early.to_send == []
    assert "within cooldown:30d" in early.skipped["k:a"]
    later = launch(ledger, scope, run("r3"), ["k:a"], policy, now=T0 + timedelta(days=31))
    assert later.to_send == ["k:a"]
    # a backfill of r3's window, long after the cooldown: the window was served, no relaunch
    again = ledger.claim(
        scope, run("backfill", window="r3"), items("k:a"), policy, now=T0 + timedelta(days=90)
    )
    assert again.to_send == []
    assert "already launched for this window" in again.skipped["k:a"]


def test_every_run_relaunches_but_never_in_a_served_window(ledger, scope):
    launch(ledger, scope, run("r1", window="w1"), ["k:a"], EVERY_RUN)
    assert launch(ledger, scope, run("r2", window="w2"), ["k:a"], EVERY_RUN).to_send == ["k:a"]
    # a backfill of w1 after w2 launched the contact again: w1 is still recognised
    backfill = ledger.claim(scope, run("backfill", window="w1"), items("k:a", "k:b"), EVERY_RUN, now=T0)
    assert backfill.to_send == ["k:b"]
    assert backfill.skipped["k:a"] == (
        "already launched for this window at 2030-01-01T00:00:00+00:00 by run r1"
    )
    # clear-and-rerun of r2 (same run, next try)
    assert ledger.claim(scope, run("r2", 2, window="w2"), items("k:a"), EVERY_RUN, now=T0).to_send == []
    assert row(ledger.engine, scope, "k:a")["launch_count"] == 2


def test_failed_contacts_are_sent_again(ledger, scope):
    ref = run("r1")
    claim = ledger.claim(scope, ref, items("k:a"), ONCE, now=T0)
    ledger.settle(scope, ref, claim, {"k:a": Settlement(Outcome.FAILED, 400, "invalid profile")}, now=T0)
    failed = row(ledger.engine, scope, "k:a")
    assert (failed["status"], failed["error_code"], failed["error_text"]) == (
        "failed",
        400,
        "invalid profile",
    )
    assert ledger.claim(scope, run("r1", 2), items("k:a"), ONCE, now=T0).to_send == ["k:a"]
    assert row(ledger.engine, scope, "k:a")["error_code"] is None


def test_a_failed_relaunch_does_not_make_once_relaunch(ledger, scope):
    launch(ledger, scope, run("r1"), ["k:a"])
    ref = run("relaunch")
    claim = ledger.claim(scope, ref, items("k:a"), ONCE, relaunch=True, now=T0)
    ledger.settle(scope, ref, claim, {"k:a": Settlement(Outcome.FAILED, 500, "boom")}, now=T0)
    assert ledger.claim(scope, run("r3"), items("k:a"), ONCE, now=T0).to_send == []


def test_relaunch_sends_once_per_run(ledger, scope):
    launch(ledger, scope, run("r1"), ["k:a", "k:b"])
    ref = run("relaunch")
    claim = ledger.claim(scope, ref, items("k:a", "k:b"), ONCE, relaunch=True, now=T0)
    assert claim.to_send == ["k:a", "k:b"]
    ledger.settle(scope, ref, claim, {"k:a": LAUNCHED, "k:b": Settlement(Outcome.FAILED, 500, "x")}, now=T0)
    retry = ledger.claim(scope, run("relaunch", 2), items("k:a", "k:b"), ONCE, relaunch=True, now=T0)
    assert retry.to_send == ["k:b"]
    assert retry.skipped["k:a"].startswith("already launched by this run")
    assert row(ledger.engine, scope, "k:a")["launch_count"] == 2


# --- uncertain and in-flight contacts ------------------------------------------------------------


def test_uncertain_contacts_need_resend_uncertain_from_another_run(ledger, scope):
    ref = run("r1")
    claim = ledger.claim(scope, ref, items("k:a"), ONCE, now=T0)
    ledger.settle(scope, ref, claim, {"k:a": Settlement(Outcome.UNCERTAIN, text="timeout")}, now=T0)
    plain = ledger.claim(scope, run("r2"), items("k:a"), ONCE, now=T0)
    assert plain.to_send == []
    assert "resend with resend_uncertain=True" in plain.uncertain["k:a"] and not plain.skipped
    same_run = ledger.claim(scope, run("r1", 2), items("k:a"), ONCE, resend_uncertain=True, now=T0)
    assert same_run.to_send == []
    assert "this run never resends its own" in same_run.uncertain["k:a"]
    early = ledger.claim(scope, run("r3"), items("k:a"), ONCE, resend_uncertain=True, now=T0 + 9 * MINUTE)
    assert early.to_send == [], "Altcraft may still be processing its request"
    assert "within the reconciliation grace" in early.uncertain["k:a"]
    assert "resend from 2030-01-01T00:10:00+00:00" in early.uncertain["k:a"]
    after = ledger.claim(scope, run("r3"), items("k:a"), ONCE, resend_uncertain=True, now=T0 + GRACE)
    assert after.to_send == ["k:a"]


def test_times_are_the_databases_whatever_the_workers_clock(ledger, scope, monkeypatch):
    """A worker whose clock is an hour behind claims a contact and loses its answer; another, an hour
    ahead, resends it at once. The rows took each worker's clock: the answer looked lost two hours ago,
    past the grace, and was resent while Altcraft might still be processing it. Now every time the ledger
    writes and compares is its database's (the servers here keep the real clock)."""
    before = datetime.now(UTC) - timedelta(seconds=1)  # SQLite's clock reads milliseconds
    set_clock_off(monkeypatch, -timedelta(hours=1))
    ref = run("r1")
    claim = ledger.claim(scope, ref, items("k:a"), ONCE, delivery_mode="batch", marker="AF_SYNC=abc")
    ledger.settle(scope, ref, claim, {"k:a": Settlement(Outcome.UNCERTAIN, text="timeout")})
    [contact] = ledger.uncertain_contacts(scope)
    assert before <= contact.claimed_at <= contact.uncertain_since <= datetime.now(UTC)

    set_clock_off(monkeypatch, timedelta(hours=1))
    resend = ledger.claim(scope, run("r2"), items("k:a"), ONCE, resend_uncertain=True)
    assert resend.to_send == []
    assert "within the reconciliation grace" in resend.uncertain["k:a"]


def test_an_uncertain_contact_resolved_by_hand_is_not_resent(engine, ledger, scope):
    """docs/ledger.md tells support to set status 'launched' after checking Altcraft; that must hold."""
    ref = run("r1")
    claim = ledger.claim(scope, ref, items("k:a"), ONCE, now=T0)
    ledger.settle(scope, ref, claim, {}, now=T0)
    with engine.begin() as conn:
        conn.execute(
            sa.update(contacts_table)
            .where(contacts_table.c.contact_hash == scope.contact_hash("k:a"))
            .values(status="launched")
        )
    resend = ledger.claim(scope, run("r2"), items("k:a"), ONCE, resend_uncertain=True, now=T0)
    assert resend.to_send == []
    assert resend.skipped["k:a"].startswith("already launched at")


def test_in_flight_and_stale_claims(engine, scope):
    ledger = Ledger(engine, stale_after=timedelta(hours=6))
    ledger.claim(scope, run("r1"), items("k:a", "k:b"), ONCE, now=T0)
    busy = ledger.claim(scope, run("r2"), items("k:a"), ONCE, now=T0 + timedelta(hours=1))
    assert busy.skipped["k:a"] == "in flight in run dag/send/r1 since 2030-01-01T00:00:00+00:00"
    assert row(engine, scope, "k:a")["status"] == ContactStatus.SENDING
    stale = ledger.claim(scope, run("r2"), items("k:a"), ONCE, now=T0 + timedelta(hours=6))
    assert stale.to_send == []
    assert row(engine, scope, "k:a")["status"] == ContactStatus.UNCERTAIN
    assert "was never settled" in row(engine, scope, "k:a")["error_text"]
    quick = Ledger(engine, stale_after=timedelta(minutes=5))
    found = quick.claim(scope, run("r3"), items("k:b"), ONCE, resend_uncertain=True, now=T0 + 6 * MINUTE)
    assert found.to_send == [], "uncertain from now: its request may still be in flight at Altcraft"
    resent = quick.claim(
        scope, run("r3"), items("k:b"), ONCE, resend_uncertain=True, now=T0 + 6 * MINUTE + GRACE
    )
    assert resent.to_send == ["k:b"]


def test_dead_claims_a_run_meets_become_uncertain_before_its_claim_to_be_reconciled(engine, scope):
    """``to_reconcile`` gives a run about to claim ``keys`` their uncertain contacts and those whose claim
    is dead (stale, or an earlier try of this run), made uncertain now, as its claim would make them: so
    their evidence is read before that claim, not by a later run. A claim in flight elsewhere, and a dead
    claim of another key, stay ``sending``; the claim then decides as before."""
    ledger = Ledger(engine, stale_after=6 * HOUR)
    ledger.claim(scope, run("r1"), items("k:stale", "k:other"), ONCE, now=T0)
    ledger.claim(scope, run("r2"), items("k:dead"), ONCE, now=T0 + 5 * HOUR)  # try 1 of r2 dies
    ledger.claim(scope, run("r3"), items("k:live"), ONCE, now=T0 + 5 * HOUR)
    lost = ledger.claim(scope, run("r4"), items("k:lost"), ONCE, now=T0)
    ledger.settle(scope, run("r4"), lost, {}, now=T0 + MINUTE)  # no answer: uncertain
    retry, at = run("r2", 2), T0 + 6 * HOUR
    keys = ["k:stale", "k:dead", "k:live", "k:lost", "k:new"]

    found = {c.contact_key: c for c in ledger.to_reconcile(scope, retry, keys, now=at)}

    assert sorted(found) == ["k:dead", "k:lost", "k:stale"]
    assert {key: c.uncertain_since for key, c in found.items()} == {
        "k:dead": at,
        "k:lost": T0 + MINUTE,
        "k:stale": at,
    }, "a dead claim found now became uncertain now: the grace of a resend counts from here"
    assert (
        "claim by run dag/send/r1 at 2030-01-01T00:00:00+00:00 was never settled"
        in row(engine, scope, "k:stale")["error_text"]
    )
    assert row(engine, scope, "k:dead")["error_text"].startswith("try 1 of this run claimed it at")
    assert [row(engine, scope, key)["status"] for key in ("k:live", "k:other")] == ["sending"] * 2
    assert ledger.counts(scope, retry)[Outcome.UNCERTAIN] == 0, "the claim records this try's outcomes"
    claim = ledger.claim(scope, retry, items(*keys), ONCE, now=at)
    assert (claim.to_send, sorted(claim.uncertain), list(claim.skipped)) == (
        ["k:new"],
        ["k:dead", "k:lost", "k:stale"],
        ["k:live"],
    )
    assert ledger.to_reconcile(scope, run("r5"), ["k:new"], now=at) == [], "in flight, not stale"


def test_a_whole_scenario_reconciliation_meets_the_dead_claims_no_claim_meets(engine, scope):
    """A run reconciling the whole scenario (``keys`` None) makes uncertain every dead claim of it, as a
    claim meeting them would, though none does (a try killed mid-send, its retries used up; a window never
    read again): they were read only when ``uncertain``, so stayed ``sending``, unreconciled, and counted in
    no standing. The standing counts the stale ones (``stale_sending``) until then; a claim in flight
    stays."""
    ledger = Ledger(engine, stale_after=6 * HOUR)
    ledger.claim(scope, run("r1"), items("k:stale"), ONCE, now=T0)
    ledger.claim(scope, run("r2"), items("k:dead"), ONCE, now=T0 + 5 * HOUR)  # try 1 of r2 dies
    ledger.claim(scope, run("r3"), items("k:live"), ONCE, now=T0 + 5 * HOUR)
    lost = ledger.claim(scope, run("r4"), items("k:lost"), ONCE, now=T0)
    ledger.settle(scope, run("r4"), lost, {}, now=T0 + MINUTE)  # no answer: uncertain
    at = T0 + 6 * HOUR

    assert ledger.standing(scope, now=at - MINUTE) == {"uncertain": 1, "failed": 0, "stale_sending": 0}
    assert ledger.standing(scope, now=at) == {"uncertain": 1, "failed": 0, "stale_sending": 1}
    early = ledger.to_reconcile(scope, run("r5"), now=at - MINUTE)
    assert [c.contact_key for c in early] == ["k:lost"], "nothing stale yet, nor of this run"
    found = {c.contact_key: c.uncertain_since for c in ledger.to_reconcile(scope, run("r2", 2), now=at)}

    assert found == {"k:stale": at, "k:dead": at, "k:lost": T0 + MINUTE}, "oldest first, dead ones now"
    assert "claim by run dag/send/r1 at" in row(engine, scope, "k:stale")["error_text"]
    assert row(engine, scope, "k:dead")["error_text"].startswith("try 1 of this run claimed it at")
    assert row(engine, scope, "k:live")["status"] == "sending", "in flight, not stale"
    assert ledger.standing(scope, now=at) == {"uncertain": 3, "failed": 0, "stale_sending": 0}
    assert ledger.standing(scope, now=T0 + 11 * HOUR)["stale_sending"] == 1, "k:live, once stale"


def test_same_run_parallel_batch_is_in_flight(ledger, scope):
    ledger.claim(scope, run("r1"), items("k:a"), ONCE, now=T0)
    other_batch = ledger.claim(scope, run("r1"), items("k:a"), ONCE, now=T0)
    assert other_batch.skipped["k:a"].startswith("in flight in this run (another batch)")


def test_recover_after_a_crash(engine, scope):
    keys = ["k:a", "k:b", "k:c"]
    crashed = Ledger(engine)
    crashed.claim(scope, run("r1"), items(*keys), ONCE, now=T0)
    crashed.claim(scope, run("other"), items("k:z"), ONCE, now=T0)
    del crashed  # the worker died between claim and settle

    ledger = Ledger(engine)
    retry = run("r1", 2)
    assert ledger.recover(scope, run("r1", 1)) == []  # the same try's claims are in flight, not lost
    assert ledger.recover(scope, retry, now=T0) == keys
    assert {row(engine, scope, key)["status"] for key in keys} == {ContactStatus.UNCERTAIN}
    assert row(engine, scope, "k:z")["status"] == ContactStatus.SENDING
    assert ledger.counts(scope, run("r1", 1))[Outcome.UNCERTAIN] == 3, "recorded for the try that sent them"
    assert ledger.counts(scope, retry)[Outcome.UNCERTAIN] == 0
    assert ledger.recover(scope, retry) == []
    again = ledger.claim(scope, retry, items(*keys), ONCE, now=T0)
    assert again.to_send == [] and sorted(again.uncertain) == keys
    assert ledger.counts(scope, retry) == {**dict.fromkeys(Outcome, 0), Outcome.UNCERTAIN: 3}
    resend = ledger.claim(scope, run("r2"), items(*keys), ONCE, resend_uncertain=True, now=T0 + GRACE)
    assert resend.to_send == keys


def test_claim_of_a_retry_without_recover_treats_dead_claims_as_uncertain(ledger, scope):
    ledger.claim(scope, run("r1"), items("k:a"), ONCE, now=T0)
    retry = ledger.claim(scope, run("r1", 2), items("k:a"), ONCE, now=T0)
    assert retry.to_send == []
    assert row(ledger.engine, scope, "k:a")["error_text"].startswith("try 1 of this run claimed it at")


# --- settle -----------------------------------------------------------------------------------------


def test_settle_records_every_contact(engine, ledger, scope):
    ref = run("r1")
    claim = ledger.claim(scope, ref, items("k:a", "k:b", "k:c", "k:d"), ONCE, now=T0)
    later = T0 + timedelta(minutes=1)
    ledger.settle(
        scope,
        ref,
        claim,
        {
            "k:a": LAUNCHED,
            "k:b": Settlement(Outcome.FAILED, 400, "bad"),
            "k:c": Settlement(Outcome.FAILED, 404, "no"),
        },
        now=later,
    )
    statuses = {key: row(engine, scope, key)["status"] for key in claim.to_send}
    assert statuses == {"k:a": "launched", "k:b": "failed", "k:c": "failed", "k:d": "uncertain"}
    launched = row(engine, scope, "k:a")
    assert (launched["launch_count"], launched["first_launched_at"], launched["last_launched_at"]) == (
        1,
        later,
        later,
    )
    assert (launched["last_run_key"], launched["last_window_key"]) == ("dag/send/r1", "dag/send/r1")
    assert (row(engine, scope, "k:c")["error_code"], row(engine, scope, "k:c")["error_text"]) == (404, "no")
    assert row(engine, scope, "k:d")["error_text"] == "no result was reported for this contact"
    assert ledger.counts(scope, ref) == {
        Outcome.LAUNCHED: 1,
        Outcome.SKIPPED: 0,
        Outcome.REJECTED: 0,
        Outcome.FAILED: 2,
        Outcome.UNCERTAIN: 1,
    }
    history = ledger.history("k:a", scope)
    assert history.contact["status"] == "launched"
    assert [(o["outcome"], o["profile_id"], o["source_key"]) for o in history.outcomes] == [
        ("launched", "p1", "src-k:a")
    ]
    with pytest.raises(ValueError, match="already settled"):
        ledger.settle(scope, ref, claim, {})


def test_interleaved_answers_each_reach_their_own_row(engine, ledger, scope):
    """Answers repeating out of order (the same failure for every third contact, launches between them):
    each row gets its own answer's status, code and text, and each outcome row its answer and source key,
    however the rows are grouped into statements."""
    ref = run("interleaved")
    keys = [f"k:{i}" for i in range(12)]
    claim = ledger.claim(scope, ref, items(*keys), ONCE, now=T0)
    answers = [
        LAUNCHED,
        Settlement(Outcome.FAILED, 400, "bad"),
        Settlement(Outcome.FAILED, 404, "gone"),
        Settlement(Outcome.UNCERTAIN, None, "timeout"),
        Settlement(Outcome.FAILED, 400, "bad"),
        Settlement(Outcome.FAILED, 400, "other"),
    ]
    ledger.settle(scope, ref, claim, {key: answers[i % 6] for i, key in enumerate(keys)}, now=T0)
    for i, key in enumerate(keys):
        found = row(engine, scope, key)
        answer = answers[i % 6]
        assert (found["status"], found["error_code"], found["error_text"]) == (
            answer.outcome.value,
            answer.code,
            answer.text,
        ), key
        [outcome] = ledger.history(key, scope).outcomes
        assert (
            outcome["outcome"],
            outcome["code"],
            outcome["reason"],
            outcome["profile_id"],
            outcome["source_key"],
            outcome["contact_key"],
        ) == (answer.outcome.value, answer.code, answer.text, answer.profile_id, f"src-{key}", key), key


def test_settle_refuses_keys_outside_the_claim(ledger, scope):
    ref = run()
    claim = ledger.claim(scope, ref, items("k:a"), ONCE, now=T0)
    with pytest.raises(ValueError, match="not in claim"):
        ledger.settle(scope, ref, claim, {"k:a": LAUNCHED, "k:x": LAUNCHED})
    assert row(ledger.engine, scope, "k:a")["status"] == ContactStatus.SENDING


def test_late_settlement_of_a_recovered_claim_wins(ledger, scope):
    ref = run("r1")
    claim = ledger.claim(scope, ref, items("k:a"), ONCE, now=T0)
    assert ledger.recover(scope, run("r1", 2), now=T0) == ["k:a"]
    ledger.settle(scope, ref, claim, {"k:a": LAUNCHED}, now=T0)  # the first try was alive after all
    assert row(ledger.engine, scope, "k:a")["status"] == ContactStatus.LAUNCHED


def test_settlement_after_a_takeover_leaves_the_new_claim_alone(ledger, scope):
    zombie_run = run("r1")
    zombie = ledger.claim(scope, zombie_run, items("k:a"), ONCE, now=T0)
    stale = ledger.claim(scope, run("r2"), items("k:a"), ONCE, resend_uncertain=True, now=T0 + 7 * HOUR)
    assert stale.to_send == [], "found dead now: uncertain, not resent within the grace"
    taken = ledger.claim(
        scope, run("r2"), items("k:a"), ONCE, resend_uncertain=True, now=T0 + 7 * HOUR + GRACE
    )
    assert taken.to_send == ["k:a"]
    ledger.settle(scope, zombie_run, zombie, {"k:a": LAUNCHED}, now=T0 + timedelta(hours=8))
    current = row(ledger.engine, scope, "k:a")
    assert (current["status"], current["batch_id"]) == (ContactStatus.SENDING, taken.batch_id)
    assert ledger.counts(scope, zombie_run)[Outcome.LAUNCHED] == 1


# --- record and counts ----------------------------------------------------------------------------


def test_record_and_counts_per_try(ledger, scope):
    first, second = run("r1"), run("r1", 2)
    ledger.record(
        scope, first, Outcome.REJECTED, [(None, "row-7", None, "email: invalid"), ("k:a", "row-8", 400, "x")]
    )
    ledger.record(scope, second, Outcome.SKIPPED, [("k:b", "row-9", None, "filtered")])
    ledger.record(scope, second, Outcome.REJECTED, [])
    assert ledger.counts(scope, first)[Outcome.REJECTED] == 2
    assert ledger.counts(scope, second) == {**dict.fromkeys(Outcome, 0), Outcome.SKIPPED: 1}
    assert ledger.counts(Scope(scope.platform, 8), first)[Outcome.REJECTED] == 0
    with pytest.raises(ValueError, match="settle"):
        ledger.record(scope, first, Outcome.LAUNCHED, [("k:a", "row-8", None, "")])


# --- schema, concurrency, volume -------------------------------------------------------------------


def test_ensure_schema_is_idempotent_and_race_safe(fresh_engine):
    """Workers' first tasks on a new database create the tables at once: none fails, and the one that
    created the contacts table marked its keys canonical, once."""
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def create() -> None:
        try:
            barrier.wait()
            Ledger(fresh_engine).ensure_schema()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    Ledger(fresh_engine).ensure_schema()
    tables = {
        "altcraft_contacts",
        "altcraft_outcomes",
        "altcraft_outcome_days",
        "altcraft_aliases",
        "altcraft_identities",
        "altcraft_tasks",
        "altcraft_ledger_meta",
    }
    assert tables == set(sa.inspect(fresh_engine).get_table_names())
    with fresh_engine.connect() as conn:  # by the worker that created the contacts table
        assert conn.execute(sa.select(meta_table)).all() == [CANONICAL_KEYS], "marked once"
    index_names = {index["name"] for index in sa.inspect(fresh_engine).get_indexes("altcraft_outcomes")}
    assert {"ix_altcraft_outcomes_run", "ix_altcraft_outcomes_by_contact"} <= index_names


def test_a_new_mysql_ledger_keys_contacts_by_an_increasing_id_the_hash_unique(fresh_engine, scope):
    """InnoDB keeps a table in its primary key's order: new contacts go to its end, not to a random page."""
    Ledger(fresh_engine).ensure_schema()
    inspector = sa.inspect(fresh_engine)
    key = inspector.get_pk_constraint("altcraft_contacts")["constrained_columns"]
    indexes = inspector.get_indexes("altcraft_contacts")
    unique = [index["column_names"] for index in indexes if index["unique"]]
    if fresh_engine.dialect.name != "mysql":
        assert key == ["contact_hash"]  # heaps: the key does not place the rows
        return
    assert key == ["id"] and ["contact_hash"] in unique
    ledger = Ledger(fresh_engine)
    launch(ledger, scope, run("r1"), ["email:a@x.test", "email:b@x.test"])
    row_a = row(fresh_engine, scope, "email:a@x.test")
    with pytest.raises(sa.exc.IntegrityError), fresh_engine.begin() as conn:  # the database keeps it unique
        conn.execute(sa.insert(contacts_table).values(row_a))
    again = ledger.claim(scope, run("r2"), items("email:a@x.test", "email:c@x.test"), ONCE)
    assert again.to_send == ["email:c@x.test"] and list(again.skipped) == ["email:a@x.test"]


def test_a_ledger_keyed_by_the_hash_as_before_still_works(fresh_engine, scope):
    """A MySQL/MariaDB ledger created before the increasing id keeps the hash as its primary key."""
    with fresh_engine.begin() as conn:
        conn.execute(sa.schema.CreateTable(contacts_table))  # without the after-create step
        for index in contacts_table.indexes:
            conn.execute(sa.schema.CreateIndex(index))
    ledger = Ledger(fresh_engine)
    ledger.ensure_schema()
    key = sa.inspect(fresh_engine).get_pk_constraint("altcraft_contacts")["constrained_columns"]
    assert key == ["contact_hash"]
    launch(ledger, scope, run("r1"), ["email:a@x.test"])
    again = ledger.claim(scope, run("r2"), items("email:a@x.test", "email:b@x.test"), ONCE)
    assert again.to_send == ["email:b@x.test"] and list(again.skipped) == ["email:a@x.test"]


def test_concurrent_claims_never_send_a_contact_twice(engine, scope):
    """Four pipelines claim overlapping contacts at the same moment, six rounds.

    In even rounds the contacts exist already (failed, so claimable): their rows must be locked. In odd
    rounds they are new: the concurrent inserts must collide on the primary key.
    """
    for round_ in range(6):
        keys = [f"email:c{round_}-{i}@x.test" for i in range(300)]
        if round_ % 2 == 0:
            setup, setup_run = Ledger(engine), run(f"setup-{round_}")
            existing = setup.claim(scope, setup_run, items(*keys), ONCE)
            setup.settle(scope, setup_run, existing, dict.fromkeys(keys, Settlement(Outcome.FAILED, 500)))
        shares = [keys[start : start + 150] for start in (0, 50, 100, 150)]
        for share in shares:
            random.shuffle(share)
        barrier = threading.Barrier(len(shares))
        claims: list[Claim] = []
        errors: list[BaseException] = []

        def pipeline(number: int, share: list[str], round_: int = round_) -> None:
            try:
                ledger = Ledger(engine)
                barrier.wait()
                claims.append(ledger.claim(scope, run(f"p{number}-{round_}"), items(*share), ONCE))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=pipeline, args=(n, share)) for n, share in enumerate(shares)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        sent = Counter(key for claim in claims for key in claim.to_send)
        assert sent == Counter(keys), "every contact is sent by exactly one pipeline"
        assert all(reason.startswith("in flight in run") for c in claims for reason in c.skipped.values())
        for claim, share in zip(claims, shares, strict=False):
            decided = len(claim.to_send) + len(claim.skipped) + len(claim.uncertain) + claim.duplicates
            assert decided == len(share), "each claim decides every one of its items exactly once"
    assert_days_are_the_rows(engine, scope)  # concurrent writers of the same day's counts


@pytest.mark.parametrize("driver", ["pymysql", "mysqldb", "mysqlconnector"])
def test_lock_conflicts_are_retried_on_every_mysql_driver(database_name, driver, scope, caplog):
    """The Airflow MySQL connection may use mysqlclient or mysql-connector-python (extra ``client``), whose
    errors carry a generic SQLSTATE (23000, HY000) besides MySQL's code: a claim that waits past
    ``innodb_lock_wait_timeout`` for another claim's locks is retried, then leaves the contact to that
    claim, and a concurrent insert of the same contact (duplicate key) is a conflict, as on every driver."""
    url = f"mysql+{driver}://root@127.0.0.1:3306/{database_name}"
    first = Ledger(sa.create_engine(MARIA + f"/{database_name}"))
    second = Ledger(sa.create_engine(url, connect_args={"init_command": "SET innodb_lock_wait_timeout = 1"}))
    earlier = first.claim(scope, run("r0"), items("k:a"), EVERY_RUN)  # failed: claimable, its row locked
    first.settle(scope, run("r0"), earlier, {"k:a": Settlement(Outcome.FAILED, 400, "bad")})
    found: list[Claim | BaseException] = []

    def claim() -> None:
        try:
            found.append(second.claim(scope, run("r2"), items("k:a"), EVERY_RUN))
        except BaseException as exc:
            found.append(exc)

    try:
        second.ensure_schema()
        opened = first.open_claim(scope, run("r1"), items("k:a"), EVERY_RUN)
        caplog.set_level(logging.INFO, logger="altcraft.ledger")
        caplog.clear()
        waiting = threading.Thread(target=claim)
        waiting.start()
        wait_for("the waiting claim's first attempt to time out", lambda: retried(caplog), 60, interval=0.05)
        opened.commit()
        waiting.join(30)
        [outcome] = found
        assert isinstance(outcome, Claim), f"not retried: {outcome!r}"
        assert outcome.to_send == [] and list(outcome.skipped) == ["k:a"], "left to the first claim"
        with pytest.raises(sa.exc.IntegrityError) as duplicate, second.engine.begin() as conn:
            conn.execute(sa.insert(contacts_table).values(row(first.engine, scope, "k:a")))
        assert is_transient(duplicate.value)
    finally:
        first.close()
        second.close()


def retried(caplog: pytest.LogCaptureFixture) -> bool:
    """Whether the ledger logged a transaction conflict it is retrying."""
    return any("conflict" in r.getMessage() and "retrying" in r.getMessage() for r in caplog.records)


def test_a_sqlite_transaction_rolled_back_by_sqlite_raises_its_own_error(tmp_path, scope):
    """SQLite rolls a transaction back itself on some errors (a full disk): the task log shows that error, not
    a failed ROLLBACK of no transaction, and the ledger is usable again once there is room."""
    engine = _engine(f"sqlite:///{tmp_path / 'full.db'}")
    ledger = Ledger(engine)
    ledger.ensure_schema()
    with engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
    room = {"pages": pages + 3}

    @sa.event.listens_for(engine, "connect")
    def cap(dbapi_connection, _) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {room['pages']}")

    engine.dispose()
    many = [(f"k:{n}-" + "x" * 100, "s" * 200) for n in range(3000)]
    try:
        with pytest.raises(sa.exc.OperationalError, match="database or disk is full"):
            ledger.claim(scope, run(), many, ONCE)
        assert row(engine, scope, many[0][0]) == {}, "nothing of it was written"
        room["pages"] = 1_000_000
        engine.dispose()
        assert ledger.claim(scope, run(), many[:2], ONCE).to_send == sorted(key for key, _ in many[:2])
    finally:
        engine.dispose()


def test_ten_thousand_contacts(engine, ledger, scope):
    keys = [f"email:user{i}@x.test" for i in range(10_000)]
    answers = {
        key: Settlement(Outcome.FAILED, 400, f"error {i}") if i % 10 == 0 else LAUNCHED
        for i, key in enumerate(keys)
    }
    started = time.perf_counter()
    first = ledger.claim(scope, run("r1", window="w1"), items(*keys), EVERY_RUN, now=T0)
    claimed = time.perf_counter()
    ledger.settle(scope, run("r1", window="w1"), first, answers, now=T0)
    settled = time.perf_counter()
    second = ledger.claim(scope, run("r2", window="w2"), items(*keys), EVERY_RUN, now=T0)
    reclaimed = time.perf_counter()
    ledger.settle(scope, run("r2", window="w2"), second, dict.fromkeys(keys, LAUNCHED), now=T0)
    done = time.perf_counter()
    print(
        f"\n{engine.url.get_backend_name()}+{engine.url.get_driver_name()}: 10,000 contacts "
        f"claim {claimed - started:.2f}s, settle {settled - claimed:.2f}s, "
        f"re-claim {reclaimed - settled:.2f}s, settle {done - reclaimed:.2f}s"
    )
    assert len(first.to_send) == len(second.to_send) == 10_000
    assert ledger.counts(scope, run("r1", window="w1"))[Outcome.FAILED] == 1_000
    assert row(engine, scope, keys[0])["launch_count"] == 1
    assert row(engine, scope, keys[1])["launch_count"] == 2
    rerun = ledger.claim(scope, run("r3", window="w1"), items(*keys), EVERY_RUN, now=T0)
    assert rerun.to_send == keys[::10]  # w1 was served except for its failures


# --- values and statements ------------------------------------------------------------------------

AWKWARD = [
    'k:"quoted"',
    "k:back\\slash",
    "k:{brace},comma",
    "NULL",
    "k: spaced ",
    "k:line\nbreak",
    "k:ё€😀",
    "",
]


@pytest.mark.parametrize(
    "values",
    [AWKWARD, [v for v in AWKWARD if '"' not in v and "\\" not in v]],
    ids=["escaped", "nothing-to-escape"],
)
def test_awkward_values_round_trip_exactly(ledger, scope, values):
    """Keys, source keys, reasons and texts travel in arrays on PostgreSQL: quotes, backslashes, braces,
    commas, white space, the word NULL and non-ASCII must come back byte for byte (arrays with nothing to
    escape are written by a faster path)."""
    keys = [f"{value}-key" if value == "" else value for value in values]
    ref = run("r1")
    claim = ledger.claim(
        scope, ref, [(key, f"src {key}") for key in keys] + [(keys[0], "NULL")], ONCE, now=T0
    )
    assert claim.to_send == keys
    assert claim.skipped == {}
    texts = dict(zip(keys, values, strict=True))
    ledger.settle(
        scope,
        ref,
        claim,
        {key: Settlement(Outcome.FAILED, 400 + i, texts[key]) for i, key in enumerate(keys[:-1])},
        now=T0,
    )
    ledger.record(scope, ref, Outcome.REJECTED, [(None, value, None, value) for value in values])
    for i, key in enumerate(keys):
        history = ledger.history(key, scope)
        assert history.contact["contact_key"] == key
        assert history.contact["source_key"] == f"src {key}"
        settled = history.outcomes[-1]
        if key == keys[-1]:
            assert (history.contact["status"], settled["outcome"], settled["code"]) == (
                "uncertain",
                "uncertain",
                None,
            )
        else:
            assert (history.contact["error_code"], history.contact["error_text"]) == (400 + i, texts[key])
            assert (settled["code"], settled["reason"], settled["source_key"]) == (
                400 + i,
                texts[key],
                f"src {key}",
            )
    duplicate = ledger.history(keys[0], scope).outcomes[0]
    assert (duplicate["outcome"], duplicate["source_key"], duplicate["profile_id"]) == (
        "skipped",
        "NULL",
        None,
    )
    with ledger.engine.connect() as conn:
        rejected = conn.execute(
            sa.select(outcomes_table.c.source_key, outcomes_table.c.reason, outcomes_table.c.contact_hash)
            .where(outcomes_table.c.platform == scope.platform, outcomes_table.c.outcome == "rejected")
            .order_by(outcomes_table.c.id)
        ).all()
    assert [tuple(r) for r in rejected] == [(value, value, None) for value in values]


def test_statements_do_not_grow_with_the_batch_on_postgresql(engine, scope):
    """PostgreSQL gets key lists as one array: the same statements, each with a handful of parameters,
    for 10 keys and for 2,000. Elsewhere statements are chunked below SQLite's historical limit of 999."""
    executed: list[tuple[str, int, bool]] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        rows = parameters if executemany else [parameters]
        executed.append((statement, max((len(r) for r in rows), default=0), executemany))

    def claim_and_settle(ref: RunRef, keys: list[str]) -> list[tuple[str, int, bool]]:
        ledger = Ledger(engine)
        ledger.ensure_schema()
        executed.clear()
        claim = ledger.claim(scope, ref, items(*keys, keys[0]), EVERY_RUN, now=T0)
        answers = {
            key: LAUNCHED if i % 3 else Settlement(Outcome.FAILED, 500, f"e{i}") for i, key in enumerate(keys)
        }
        ledger.settle(scope, ref, claim, answers, now=T0)
        return list(executed)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        small = claim_and_settle(run("small"), [f"k:s{i}" for i in range(10)])
        large = claim_and_settle(run("large"), [f"k:l{i}" for i in range(2_000)])
        # the same contacts again: rows exist, are locked, updated and looked up in the outcomes
        again = claim_and_settle(run("again", window="other"), [f"k:l{i}" for i in range(2_000)])
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    if engine.dialect.name == "postgresql":
        assert [statement for statement, _, _ in large] == [statement for statement, _, _ in small]
        assert max(n for _, n, _ in large + again) <= 24  # a fixed few (settle's outcome insert: 21)
        assert not any(many for _, _, many in large + again)
    else:
        assert max(n for _, n, _ in large + again) < 999
        assert len(large) > len(small)


def test_a_claim_and_settle_of_new_contacts_compile_no_statement_again(engine, scope):
    """The second chunk of a run finds every statement of its claim and settle in SQLAlchemy's compiled
    cache: compiling one costs more CPU than a contact's own work (the per-day counts' upsert of one row
    was compiled on every settle: a multi-row VALUES has no cache key)."""
    missed: list[str] = []

    def check(conn, cursor, statement, parameters, context, executemany):
        if context.compiled is not None and context.cache_hit is not CacheStats.CACHE_HIT:
            missed.append(statement)

    ledger = Ledger(engine)
    launch(ledger, scope, run("first"), [f"k:a{i}" for i in range(5)])
    sa.event.listen(engine, "after_cursor_execute", check)
    try:
        launch(ledger, scope, run("second"), [f"k:b{i}" for i in range(5)])
    finally:
        sa.event.remove(engine, "after_cursor_execute", check)
    assert missed == []


def test_a_claim_and_settle_on_postgresql_render_no_statement_at_execution(engine, scope):
    """On PostgreSQL every statement of a claim and settle of new contacts is executed as compiled: an
    expanding ``IN`` list (the settleable statuses were one) is rendered anew on every execution, which
    cost about 0.15 ms of every settle."""
    if engine.dialect.name != "postgresql":
        pytest.skip("elsewhere the contact hashes are an expanding IN list")
    rendered: list[str] = []

    def check(conn, cursor, statement, parameters, context, executemany):
        if context.compiled is not None and statement != context.compiled.string:
            rendered.append(statement)

    ledger = Ledger(engine)
    launch(ledger, scope, run("first"), [f"k:a{i}" for i in range(5)])
    sa.event.listen(engine, "after_cursor_execute", check)
    try:
        launch(ledger, scope, run("second"), [f"k:b{i}" for i in range(5)])
    finally:
        sa.event.remove(engine, "after_cursor_execute", check)
    assert rendered == []


def test_a_claim_and_settle_on_the_databases_clock_take_one_connection_each(engine, scope):
    """A claim or settle without ``now`` reads the database's clock in its own transaction: on a connection of
    its own (checked out, a transaction begun and rolled back) a read cost 113 us of CPU on PostgreSQL, twice
    per chunk; on the write's, 35 us. The times are still the database's."""
    ledger = Ledger(engine)
    launch(ledger, scope, run("first"), ["k:a"], now=None)
    checkouts: list[object] = []

    def checkout(*args: object) -> None:
        checkouts.append(args)

    sa.event.listen(engine, "checkout", checkout)
    try:
        before = ledger.now()
        claim = ledger.claim(scope, run("second"), items("k:b", "k:c"), ONCE)
        claimed = len(checkouts)
        ledger.settle(scope, run("second"), claim, dict.fromkeys(claim.to_send, LAUNCHED))
    finally:
        sa.event.remove(engine, "checkout", checkout)
    assert (claimed, len(checkouts)) == (2, 3)  # ledger.now(), then one connection each
    written = row(engine, scope, "k:b")
    assert before <= written["claimed_at"] <= written["updated_at"] <= ledger.now()


def test_the_clocks_query_is_built_once(engine):
    """Every read of the database's clock executes the one query built for its dialect: building it (and
    walking it for SQLAlchemy's cache key) on every read cost 25 of its 60 us of CPU."""
    clocks: list[sa.Select] = []

    def seen(conn, clauseelement, multiparams, params, execution_options):
        if isinstance(clauseelement, sa.Select) and not clauseelement.get_final_froms():
            clocks.append(clauseelement)

    ledger = Ledger(engine)
    sa.event.listen(engine, "before_execute", seen)
    try:
        first, second = ledger.now(), ledger.now()
    finally:
        sa.event.remove(engine, "before_execute", seen)
    assert first <= second
    assert len(clocks) == 2 and clocks[0] is clocks[1]


def test_a_settle_of_new_contacts_builds_no_update_again(engine, scope):
    """The second chunk's settle executes the very UPDATE of contact rows the first one built: building one
    (and walking it for SQLAlchemy's cache key) on every settle cost about 0.3 us a contact."""
    updates: list[sa.Update] = []

    def seen(conn, clauseelement, multiparams, params, execution_options):
        if isinstance(clauseelement, sa.Update) and clauseelement.table is contacts_table:
            updates.append(clauseelement)

    ledger = Ledger(engine)
    sa.event.listen(engine, "before_execute", seen)
    try:
        launch(ledger, scope, run("first"), [f"k:a{i}" for i in range(5)])
        first = list(updates)
        updates.clear()
        launch(ledger, scope, run("second"), [f"k:b{i}" for i in range(5)])
    finally:
        sa.event.remove(engine, "before_execute", seen)
    assert first
    assert [id(update) for update in updates] == [id(update) for update in first]


def test_over_long_values_are_refused_not_truncated_on_postgresql(engine, ledger, scope):
    if engine.dialect.name != "postgresql":
        pytest.skip("only PostgreSQL enforces VARCHAR lengths here (SQLite never does, MariaDB by sql_mode)")
    ref = run("r1")
    claim = ledger.claim(scope, ref, items("k:a"), ONCE, now=T0)
    with pytest.raises(sa.exc.DBAPIError, match="too long"):
        ledger.settle(scope, ref, claim, {"k:a": Settlement(Outcome.LAUNCHED, profile_id="p" * 256)}, now=T0)
    assert row(engine, scope, "k:a")["status"] == ContactStatus.SENDING
    assert ledger.counts(scope, ref)[Outcome.LAUNCHED] == 0


# --- Airflow connections --------------------------------------------------------------------------


def test_from_conn_id_none_uses_a_sqlite_file_in_airflow_home(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    ledger = Ledger.from_conn_id(None)
    scope = Scope("https://x.altcraft.test", 1)
    assert ledger.claim(scope, run(), items("k:a"), ONCE).to_send == ["k:a"]
    assert [path.name for path in tmp_path.rglob("*.db")] == ["altcraft_ledger.db"]
    assert (tmp_path / "home" / "altcraft_ledger.db").is_file()
    ledger.engine.dispose()


@pytest.mark.parametrize(
    ("conn_id", "uri", "driver"),
    [
        ("my_pg", "postgresql://postgres@127.0.0.1:5432/{db}", "postgresql"),
        ("my_maria", "mysql://root@127.0.0.1:3306/{db}", "mysql"),
    ],
)
def test_from_conn_id_uses_the_airflow_connection(monkeypatch, database_name, scope, conn_id, uri, driver):
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", uri.format(db=database_name))
    ledger = Ledger.from_conn_id(conn_id)
    assert ledger.engine.dialect.name == driver
    assert launch(ledger, scope, run(), ["k:a", "k:b"]).to_send == ["k:a", "k:b"]
    assert ledger.counts(scope, run())[Outcome.LAUNCHED] == 2
    ledger.engine.dispose()


# --- reconciliation and standing --------------------------------------------------------------------


def test_reconciliation_verdicts_update_the_contact_and_the_sending_tries_outcome(engine, ledger, scope):
    ref = run("r1", window="w1")
    claim = ledger.claim(scope, ref, items("k:a", "k:b", "k:c"), EVERY_RUN, marker="AF_SYNC=abc", now=T0)
    lost = T0 + timedelta(minutes=5)
    ledger.settle(scope, ref, claim, {}, now=lost)  # no answer: all three uncertain
    met = ledger.claim(scope, run("r1", 2, window="w1"), items("k:a"), EVERY_RUN, now=lost + timedelta(1))
    assert met.uncertain and not met.skipped, "a later try meets it uncertain and says so"

    contacts = ledger.uncertain_contacts(scope)
    assert sorted(c.contact_key for c in contacts) == ["k:a", "k:b", "k:c"]
    assert {(c.claimed_at, c.uncertain_since) for c in contacts} == {(T0, lost)}, "the grace counts from here"
    assert {c.launch_marker for c in contacts} == {"AF_SYNC=abc"}
    assert [c.contact_key for c in ledger.uncertain_contacts(scope, ["k:b", "k:x"])] == ["k:b"]
    later = T0 + timedelta(hours=1)
    applied = ledger.resolve(
        scope,
        contacts,
        {
            "k:a": Resolution(Outcome.LAUNCHED, "reconciled: marker", "p-a"),
            "k:b": Resolution(Outcome.FAILED, "not processed: no profile"),
            "k:c": Resolution(Outcome.UNCERTAIN, "still uncertain: no marker"),
        },
        now=later,
    )
    assert applied == {Outcome.LAUNCHED: 1, Outcome.FAILED: 1, Outcome.UNCERTAIN: 1}
    a, b, c = (row(engine, scope, key) for key in ("k:a", "k:b", "k:c"))
    assert (a["status"], a["launch_count"], a["last_launched_at"]) == ("launched", 1, T0)
    assert (b["status"], c["status"], c["error_text"]) == (
        "failed",
        "uncertain",
        "still uncertain: no marker",
    )
    assert ledger.counts(scope, ref) == {
        **dict.fromkeys(Outcome, 0),
        Outcome.LAUNCHED: 1,
        Outcome.FAILED: 1,
        Outcome.UNCERTAIN: 1,
    }, "the try that sent them now tells what happened, one outcome each"
    assert ledger.counts(scope, run("r1", 2))[Outcome.UNCERTAIN] == 1, "what try 2 saw stays as it was"
    [still] = ledger.uncertain_contacts(scope)
    assert still.uncertain_since == lost, "evidence noted on a contact left uncertain restarts no grace"
    assert ledger.resolve(scope, contacts, {"k:a": Resolution(Outcome.FAILED, "late")}) == {}
    rerun = ledger.claim(scope, run("r2", window="w1"), items("k:a", "k:b"), EVERY_RUN, now=later)
    assert rerun.to_send == ["k:b"], "reconciled launch counts for its window; not processed is sent"
    assert ledger.standing(scope) == {"uncertain": 1, "failed": 0, "stale_sending": 0}


def test_a_verdict_is_recorded_for_the_try_that_sent_the_contact_not_one_that_met_it(engine, ledger, scope):
    """Run A claims k:a (window wA) and dies without a retry; run B (window wB) finds the claim stale, and
    its own `uncertain` outcome says so, then run A's second try meets it uncertain too. The verdict is run
    A try 1's: a launch for wA (a backfill of wA skips it, a run of wB sends it under every_run), and
    neither B nor A's try 2 reports a launch it did not make. With no outcome of the sending try to
    rewrite, the verdict is recorded as one."""
    sender, other, retry = run("rA", window="wA"), run("rB", window="wB"), run("rA", 2, window="wA")
    ledger.claim(scope, sender, items("k:a", "k:z"), EVERY_RUN, marker="AF_SYNC=a", now=T0)
    ledger.record(scope, sender, Outcome.REJECTED, [(None, "row-9", None, "email: invalid")])
    stale = T0 + ledger.stale_after
    assert ledger.claim(scope, other, items("k:a", "k:z"), EVERY_RUN, now=stale).uncertain.keys() == {
        "k:a",
        "k:z",
    }
    assert ledger.claim(scope, retry, items("k:a"), EVERY_RUN, now=stale + timedelta(1)).uncertain
    contacts = {c.contact_key: c for c in ledger.uncertain_contacts(scope)}
    assert {c.claim_try_number for c in contacts.values()} == {1}
    later = stale + timedelta(days=2)
    applied = ledger.resolve(
        scope,
        list(contacts.values()),
        {
            "k:a": Resolution(Outcome.LAUNCHED, "reconciled: marker", "p-a"),
            "k:z": Resolution(Outcome.FAILED, "not processed: no profile"),
        },
        now=later,
    )

    assert applied == {Outcome.LAUNCHED: 1, Outcome.FAILED: 1}
    assert row(engine, scope, "k:a")["last_window_key"] == "dag/send/wA"
    assert ledger.counts(scope, sender) == {
        **dict.fromkeys(Outcome, 0),
        Outcome.LAUNCHED: 1,
        Outcome.FAILED: 1,
        Outcome.REJECTED: 1,
    }, "the sending try tells what happened to what it sent"
    assert ledger.counts(scope, other)[Outcome.UNCERTAIN] == 2, "what run B saw stays as it was"
    assert ledger.counts(scope, retry)[Outcome.UNCERTAIN] == 1, "so does what A's try 2 saw"
    verdicts = [o for o in ledger.history("k:a", scope).outcomes if o["outcome"] == "launched"]
    assert [(o["run_id"], o["try_number"], o["reason"]) for o in verdicts] == [
        ("rA", 1, "reconciled: marker")
    ]
    backfill = ledger.claim(scope, run("rA3", window="wA"), items("k:a"), EVERY_RUN, now=later)
    assert backfill.skipped["k:a"].startswith("already launched for this window")
    assert ledger.claim(scope, run("rB2", window="wB"), items("k:a"), EVERY_RUN, now=later).to_send == ["k:a"]
    assert_days_are_the_rows(engine, scope)


def test_the_altcraft_task_of_a_claim_is_kept_with_the_keys_it_was_sent_in_order(ledger, scope):
    """An async claim's Altcraft task (its id, and its 10,000 keys in request order, over 1 MB of JSON: more
    than MySQL/MariaDB's TEXT holds) is read back by batch id, in its scope only; a claim without one has
    none."""
    keys = [f"email:адресат-{n:05d}-{'x' * 100}@example.org" for n in range(10_000)]
    claim = ledger.claim(scope, run(), items(*keys), ONCE, delivery_mode="async", now=T0)
    untasked = ledger.claim(scope, run("r2"), items("k:z"), ONCE, delivery_mode="async", now=T0)
    ledger.record_task(scope, claim.batch_id, "task_0d9c6a52-7a5b", claim.to_send, now=T0)

    found = ledger.sent_tasks(scope, [claim.batch_id, untasked.batch_id, "unknown"])
    assert list(found) == [claim.batch_id] and found[claim.batch_id].task_id == "task_0d9c6a52-7a5b"
    assert found[claim.batch_id].keys == tuple(claim.to_send)
    assert ledger.sent_tasks(Scope(scope.platform, 8), [claim.batch_id]) == {}, "another scenario's"
    with pytest.raises(sa.exc.IntegrityError):  # one task per claim
        ledger.record_task(scope, claim.batch_id, "task_other", claim.to_send, now=T0)


def test_a_task_id_recorded_for_two_claims_proves_nothing_even_in_a_tasks_table_made_without_its_index(
    fresh_engine, scope
):
    """``altcraft_tasks`` as the version that added it made it (no index on ``task_id``) gets the index from
    ``ensure_schema``; a task id recorded for two claims of the platform (Altcraft answered it for two
    requests) is read as shared for both, in whichever scenario; another is not."""
    metadata.create_all(fresh_engine)
    [index] = tasks_table.indexes
    with fresh_engine.begin() as conn:
        index.drop(conn)
    ledger = Ledger(fresh_engine)
    ledger.ensure_schema()
    assert index.name in {i["name"] for i in sa.inspect(fresh_engine).get_indexes(tasks_table.name)}

    ledger.record_task(scope, "b1", "task_reused", ["k:a"], now=T0)
    ledger.record_task(Scope(scope.platform, 8), "b2", "task_reused", ["k:b"], now=T0)
    ledger.record_task(scope, "b3", "task_own", ["k:c"], now=T0)
    ledger.record_task(Scope("https://other.example.com", 7), "b4", "task_own", ["k:d"], now=T0)
    found = ledger.sent_tasks(scope, ["b1", "b3"])
    assert {batch: task.shared for batch, task in found.items()} == {"b1": True, "b3": False}
    ledger.close()


CONTACTS, OUTCOMES = "altcraft_contacts", "altcraft_outcomes"
#: Tables added by later versions.
ADDED_TABLES = ("altcraft_outcome_days", "altcraft_identities", "altcraft_tasks", "altcraft_ledger_meta")
#: Columns added by later versions, by table, oldest first.
ADDED_COLUMNS = {
    CONTACTS: ("launch_marker", "delivery_mode", "created_at", "checked_at"),
    OUTCOMES: ("contact_created_at",),
}


def create_older_ledger(
    engine: sa.Engine, without: Mapping[str, tuple[str, ...]] = ADDED_COLUMNS
) -> sa.MetaData:
    """The tables and indexes as an earlier version made them: no per-day counts, identities or tasks,
    tables ``without`` those columns, identifiers in the database's collation, the indexes since replaced."""
    old = sa.MetaData()
    for table in metadata.tables.values():
        if table.name in ADDED_TABLES:
            continue
        columns = [c.copy() for c in table.columns if c.name not in without.get(table.name, ())]
        for column in columns:  # in the database's collation, as before identifiers compared bytewise
            if type(column.type) is sa.String:
                column.type = sa.String(column.type.length)
        sa.Table(table.name, old, *columns)
    former = old.tables["altcraft_outcomes"].c
    contacts = old.tables["altcraft_contacts"].c
    sa.Index("ix_altcraft_contacts_status", contacts.status, contacts.scenario_id)
    sa.Index("ix_altcraft_outcomes_recorded_at", former.recorded_at)
    sa.Index("ix_altcraft_outcomes_contact", former.contact_hash, former.outcome)
    sa.Index("ix_altcraft_outcomes_contact_hash", former.contact_hash, postgresql_using="hash")
    old.create_all(engine)
    return old


def test_each_claim_records_how_its_request_is_sent(engine, ledger, scope):
    """The delivery mode of a contact's latest claim stays with its row, whichever way the claim was made
    (in one transaction, or opened ahead and committed), until a claim sends it again: recovery, a claim
    meeting it uncertain and a verdict leave it, so reconciliation judges by how it was really sent."""
    with pytest.raises(ValueError, match="'fast' is not a valid DeliveryMode"):
        ledger.claim(scope, run("r1"), items("k:x"), ONCE, delivery_mode="fast", now=T0)
    assert row(engine, scope, "k:x") == {}, "a mode no version knows is refused before anything is written"
    ledger.claim(
        scope, run("r1"), items("k:a", "k:b"), ONCE, marker="AF_SYNC=1", delivery_mode="async", now=T0
    )
    ledger.open_claim(
        scope, run("r1"), items("k:c"), ONCE, delivery_mode=DeliveryMode.SINGLE, now=T0
    ).commit()
    ledger.claim(scope, run("r1"), items("k:d"), ONCE, now=T0)  # a caller that does not say: unknown
    recorded = {"k:a": "async", "k:b": "async", "k:c": "single", "k:d": None}
    assert {key: row(engine, scope, key)["delivery_mode"] for key in recorded} == recorded

    retry = run("r1", 2)  # the worker died before settling: the retry recovers, meets and judges them
    assert ledger.recover(scope, retry, now=T0) == sorted(recorded)
    met = ledger.claim(scope, retry, items(*recorded), ONCE, delivery_mode="batch", now=T0)
    assert met.to_send == [] and sorted(met.uncertain) == sorted(recorded)
    contacts = ledger.uncertain_contacts(scope)
    assert {c.contact_key: c.delivery_mode for c in contacts} == recorded
    ledger.resolve(scope, contacts, {"k:a": Resolution(Outcome.UNCERTAIN, "no marker yet")})
    assert row(engine, scope, "k:a")["delivery_mode"] == "async"

    again = ledger.claim(
        scope, run("r2"), items("k:b"), ONCE, resend_uncertain=True, delivery_mode="batch", now=T0 + GRACE
    )
    assert again.to_send == ["k:b"] and row(engine, scope, "k:b")["delivery_mode"] == "batch"


def test_an_older_ledger_gets_the_new_columns_and_indexes(fresh_engine, scope):
    old = create_older_ledger(fresh_engine)
    written = [  # outcome rows an earlier version wrote (it kept no per-day counts)
        {"platform": scope.platform, "scenario_id": 7, "dag_id": dag_id, "task_id": "send", "run_id": "r",
         "window_key": "w", "try_number": 1, "source_key": f"s{n}", "outcome": outcome,
         "recorded_at": T0 + timedelta(hours=n * 7)}
        for n, (dag_id, outcome) in enumerate([("a", "launched"), ("a", "failed"), ("b", "launched")] * 3)
    ]  # fmt: skip
    with fresh_engine.begin() as conn:
        conn.execute(old.tables["altcraft_outcomes"].insert(), written)
    ledger = Ledger(fresh_engine)
    ledger.ensure_schema()
    assert sum(assert_days_are_the_rows(fresh_engine, scope).values()) == 9, "filled once from the rows"
    Ledger(fresh_engine).ensure_schema()  # idempotent
    found = sa.inspect(fresh_engine).get_indexes("altcraft_outcomes")
    indexes = {index["name"]: index["column_names"] for index in found}
    assert indexes == {
        "ix_altcraft_outcomes_run": ["dag_id", "run_id", "task_id"],
        "ix_altcraft_outcomes_by_contact": ["contact_created_at", "contact_hash"],
        "ix_altcraft_outcomes_activity": ["recorded_at", "platform", "scenario_id", "dag_id", "outcome"],
    }, "the UI's covering index replaces the old recorded_at index, the contact index the older two"
    on_contacts = sa.inspect(fresh_engine).get_indexes("altcraft_contacts")
    assert {index["name"]: index["column_names"] for index in on_contacts} == {
        "ix_altcraft_contacts_open": ["status", "scenario_id"]
    }, "the index of contacts not launched replaces the one of every status"
    claim = ledger.claim(scope, run(), items("k:a"), ONCE, marker="AF_SYNC=1", delivery_mode="async", now=T0)
    assert {k: v for k, v in row(fresh_engine, scope, "k:a").items() if k in ADDED_COLUMNS[CONTACTS]} == {
        "launch_marker": "AF_SYNC=1",
        "delivery_mode": "async",
        "created_at": T0,
        "checked_at": None,
    }
    assert claim.to_send == ["k:a"]
    assert set(ADDED_TABLES) <= set(sa.inspect(fresh_engine).get_table_names())
    ledger.record_task(scope, claim.batch_id, "task_1", claim.to_send, now=T0)
    assert ledger.sent_tasks(scope, [claim.batch_id])[claim.batch_id].keys == ("k:a",)
    ledger.settle(scope, run(), claim, {"k:a": LAUNCHED}, now=T0)
    assert sum(assert_days_are_the_rows(fresh_engine, scope).values()) == 10, "kept from then on"
    assert ledger.recount_days() > 0 and sum(assert_days_are_the_rows(fresh_engine, scope).values()) == 10


@contextmanager
def user_who_may_only_write_rows(engine: sa.Engine) -> Generator[sa.Engine]:
    """An engine on ``engine``'s database as a new user with SELECT, INSERT and UPDATE on its tables and
    no right to create or alter them (PostgreSQL: not their owner, no CREATE on the schema)."""
    name, database = f"ledger_writer_{uuid.uuid4().hex[:8]}", engine.url.database
    if engine.dialect.name == "postgresql":
        grants = [f"CREATE ROLE {name} LOGIN", "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                  f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {name}",
                  f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {name}"]  # fmt: skip
        drop, url = f"DROP OWNED BY {name}; DROP ROLE {name}", f"{PG}/{database}"
    else:
        grants = [
            f"CREATE USER '{name}'@'%'",
            f"GRANT SELECT, INSERT, UPDATE ON {database}.* TO '{name}'@'%'",
        ]
        drop, url = f"DROP USER '{name}'@'%'", f"{MARIA}/{database}"
    with engine.begin() as conn:
        for statement in grants:
            conn.execute(sa.text(statement))
    writer = sa.create_engine(url.replace("postgres@", f"{name}@").replace("root@", f"{name}@"))
    try:
        yield writer
    finally:
        writer.dispose()
        with engine.begin() as conn:
            for statement in drop.split("; "):
                conn.execute(sa.text(statement))


ACTIVITY = "ix_altcraft_outcomes_activity"


@pytest.mark.parametrize("url", [f"{PG}/test", f"{MARIA}/test"], ids=["postgresql", "mariadb"])
def test_a_database_that_cannot_be_reached_is_not_reported_as_a_schema_error(url):
    """No statement ran: the database's own connection error, not advice on rights to create tables."""
    unreachable = sa.create_engine(sa.make_url(url).set(port=9))
    with pytest.raises(sa.exc.OperationalError) as raised:
        Ledger(unreachable).ensure_schema()
    assert not isinstance(raised.value, LedgerSchemaError)
    unreachable.dispose()


@pytest.fixture
def latin1_database() -> Iterator[str]:
    """A PostgreSQL database of its own in LATIN1 (dropped afterwards); its SQLAlchemy URL."""
    name = f"altcraft_latin1_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} ENCODING 'LATIN1' LOCALE 'C' TEMPLATE template0")
    yield f"{PG}/{name}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


@pytest.mark.parametrize("store", ["ledger", "webhook_store"])
def test_a_postgresql_database_not_in_utf8_is_refused_before_anything_is_written(latin1_database, store):
    """A LATIN1 database took the tables; the first claim holding a key it cannot hold (``email:анна@…``)
    then failed with a bare UnicodeEncodeError, the chunk's other contacts with it, and so did every retry
    (a webhook delivery holding such text alike). Now the database is refused before anything is created,
    saying why and what to do."""
    from altcraft.webhooks.store import WebhookStore

    engine = sa.create_engine(latin1_database)
    try:
        made = Ledger(engine) if store == "ledger" else WebhookStore(engine)
        with pytest.raises(LedgerSchemaError, match=r"encoding is LATIN1.*ENCODING 'UTF8'"):
            made.ensure_schema()
        assert sa.inspect(engine).get_table_names() == [], "no table created"
    finally:
        engine.dispose()


def test_a_mysql_ledger_table_not_in_utf8mb4_is_refused_naming_it(scope):
    """A ledger table a DBA made or converted in utf8mb3 took claims until the first key holding a character
    of 4 bytes (an emoji), which failed with 1366 "Incorrect string value" quoting the contact's bytes, the
    chunk's other contacts with it, and every retry after it. Now the ledger is refused, naming the table."""
    name = f"altcraft_ledger_mb3_{uuid.uuid4().hex[:10]}"
    _create_database(MARIA, name)
    engine = _engine(f"{MARIA}/{name}")
    try:
        Ledger(engine).ensure_schema()
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "ALTER TABLE altcraft_outcomes CONVERT TO CHARACTER SET utf8mb3 COLLATE utf8mb3_bin"
            )
        with pytest.raises(LedgerSchemaError, match=r"altcraft_outcomes\.\w+ is in utf8mb3.*utf8mb4"):
            launch(Ledger(engine), scope, run("r1"), ["email:anna\U0001f600@example.org"])
    finally:
        engine.dispose()
        _drop_database(MARIA, name)


def test_an_upgrade_the_database_user_may_not_make_says_what_to_do(fresh_engine, scope):
    """A user who may write the ledger's rows but not alter its tables uses an up-to-date ledger as it is;
    an older one it cannot upgrade stops the task with an error naming the statement that failed and what
    to do, not the database's bare refusal, and writes nothing."""
    if fresh_engine.dialect.name == "sqlite":
        pytest.skip("SQLite has no users: whoever may write the file may alter its tables")
    Ledger(fresh_engine).ensure_schema()
    with user_who_may_only_write_rows(fresh_engine) as writer:
        assert launch(Ledger(writer), scope, run("r1"), ["k:a"]).to_send == ["k:a"], "up to date: it works"
        with fresh_engine.begin() as conn:  # as an earlier version left it: a column and an index missing
            conn.exec_driver_sql("ALTER TABLE altcraft_contacts DROP COLUMN delivery_mode")
            conn.execute(sa.schema.DropIndex(*(i for i in outcomes_table.indexes if i.name == ACTIVITY)))
        for step in (
            "ALTER TABLE altcraft_contacts ADD COLUMN delivery_mode",
            "CREATE INDEX ix_altcraft_outcomes_",
        ):
            with pytest.raises(LedgerSchemaError) as refused:
                Ledger(writer).claim(scope, run("r2"), items("k:b"), ONCE, delivery_mode="batch")
            message = str(refused.value)
            assert (
                step in message and "docs/ledger.md" in message and "Upgrading an existing ledger" in message
            )
            assert "owner" in message or "denied" in message, "the database's own reason"
            if step.startswith("ALTER"):  # the DBA adds the column: the index is what is left
                with fresh_engine.begin() as conn:
                    conn.exec_driver_sql(step + " VARCHAR(16)")
        assert row(fresh_engine, scope, "k:b") == {}, "nothing written"
        Ledger(fresh_engine).ensure_schema()  # the DBA (the tables' owner) upgrades it
        assert launch(Ledger(writer), scope, run("r2"), ["k:b"]).to_send == ["k:b"]


def test_the_upgrade_a_dba_runs_from_the_docs_leaves_nothing_for_the_ledger_to_alter(fresh_engine, scope):
    """docs/ledger.md's statements for a DBA, run on a ledger of the earliest version (PostgreSQL), bring it
    up to date: a user who may only write rows then uses it, and the launches made before still count."""
    if fresh_engine.dialect.name != "postgresql":
        pytest.skip("the statements are written for PostgreSQL (with notes for MySQL/MariaDB)")
    old = create_older_ledger(fresh_engine)
    with fresh_engine.begin() as conn:
        old.tables["altcraft_aliases"].drop(conn)  # the earliest version had none, and this index already
        conn.execute(sa.schema.CreateIndex(*(i for i in outcomes_table.indexes if i.name.endswith("_run"))))
        launched = {
            "platform": scope.platform, "scenario_id": 7, "dag_id": "dag", "task_id": "send", "run_id": "r0",
            "window_key": "dag/send/w", "try_number": 1, "contact_key": "k:a", "source_key": "src-k:a",
            "contact_hash": scope.contact_hash("k:a"), "outcome": "launched", "recorded_at": T0,
        }  # fmt: skip
        conn.execute(old.tables[OUTCOMES].insert(), [launched])
        conn.execute(old.tables[CONTACTS].insert(), [{
            "contact_hash": scope.contact_hash("k:a"), "platform": scope.platform, "scenario_id": 7,
            "contact_key": "k:a", "status": "launched", "source_key": "src-k:a", "launch_count": 1,
            "first_launched_at": T0, "last_launched_at": T0, "last_run_key": "dag/send/r0",
            "last_window_key": "dag/send/w", "claim_run_key": "dag/send/r0", "claim_try_number": 1,
            "batch_id": "b0", "claimed_at": T0, "updated_at": T0}])  # fmt: skip
    docs = (Path(__file__).parents[2] / "docs" / "ledger.md").read_text(encoding="utf-8")
    statements = docs.split("To do it as the DBA instead:\n\n```sql\n", 1)[1].split("```", 1)[0]
    dba = fresh_engine.raw_connection()
    try:
        dba.autocommit = True
        dba.cursor().execute(statements)
    finally:
        dba.close()
    with user_who_may_only_write_rows(fresh_engine) as writer:
        ledger = Ledger(writer)
        rerun = ledger.claim(scope, run("r1", window="w"), items("k:a", "k:b"), EVERY_RUN, now=T0)
        assert rerun.to_send == ["k:b"] and list(rerun.skipped) == ["k:a"]
    days = activity_table.c
    total = sa.select(sa.func.sum(days.outcome_count)).where(days.platform == scope.platform)
    with fresh_engine.connect() as conn:
        assert conn.execute(total).scalar_one() == 2, "counted by the DBA's INSERT, then by the claim"


def test_an_older_ledgers_launches_still_count_after_the_upgrade(fresh_engine, scope):
    """Contacts and outcomes an earlier version wrote have no ``created_at``: their outcomes are found by
    the contact index's NULL part, so the window and run checks still see their launches, and a contact
    made before keeps writing outcomes there (its row never gets a creation time)."""
    old = create_older_ledger(fresh_engine)
    launched = {
        "contact_hash": scope.contact_hash("k:a"), "platform": scope.platform, "scenario_id": 7,
        "contact_key": "k:a", "status": "launched", "source_key": "src-k:a", "launch_count": 1,
        "first_launched_at": T0, "last_launched_at": T0, "last_run_key": "dag/send/r0",
        "last_window_key": "dag/send/w1", "claim_run_key": "dag/send/r0", "claim_try_number": 1,
        "batch_id": "b0", "claimed_at": T0, "updated_at": T0,
    }  # fmt: skip
    outcome = {
        "platform": scope.platform, "scenario_id": 7, "dag_id": "dag", "task_id": "send", "run_id": "r0",
        "window_key": "dag/send/w1", "try_number": 1, "contact_key": "k:a",
        "contact_hash": scope.contact_hash("k:a"), "source_key": "src-k:a", "outcome": "launched",
        "recorded_at": T0,
    }  # fmt: skip
    with fresh_engine.begin() as conn:
        conn.execute(old.tables[CONTACTS].insert(), [launched])
        conn.execute(old.tables[OUTCOMES].insert(), [outcome])
    ledger = Ledger(fresh_engine)
    ledger.ensure_schema()
    later = T0 + timedelta(days=1)

    rerun = ledger.claim(scope, run("r2", window="w1"), items("k:a"), EVERY_RUN, now=later)
    assert rerun.to_send == [] and "already launched for this window" in rerun.skipped["k:a"]
    next_window = launch(ledger, scope, run("r3", window="w2"), ["k:a"], EVERY_RUN, now=later)
    assert next_window.to_send == ["k:a"]
    again = ledger.claim(scope, run("r4", window="w2"), items("k:a"), EVERY_RUN, now=later)
    assert again.to_send == [], "the launch written after the upgrade counts too"
    history = ledger.history("k:a", scope)
    assert history.contact["created_at"] is None
    assert [(o["run_id"], o["outcome"], o["contact_created_at"]) for o in history.outcomes] == [
        ("r0", "launched", None),
        ("r2", "skipped", None),
        ("r3", "launched", None),
        ("r4", "skipped", None),
    ]


def test_a_contacts_outcomes_carry_its_rows_creation_time(engine, ledger, scope):
    """Outcome rows are indexed by the contact row's ``created_at`` (then its hash), so a new contact's go to
    the index's newest end. Each carries it once the row exists; those written before (a rejected row) or
    without it (a claim that does not know it) carry NULL, and every lookup by contact finds both."""
    later, last = T0 + timedelta(days=1), T0 + timedelta(days=2)
    ledger.record(scope, run("r0"), Outcome.REJECTED, [("k:a", "src-k:a", None, "phone: invalid")], now=T0)
    launch(ledger, scope, run("r1", window="w1"), ["k:a"], EVERY_RUN, now=T0)
    skipped = ledger.claim(scope, run("r2", window="w1"), items("k:a"), EVERY_RUN, now=later)
    assert skipped.to_send == []
    assert row(engine, scope, "k:a")["created_at"] == T0

    # a claim that lost its origins (settled from elsewhere) writes NULL; the window check still finds it
    claim = ledger.claim(scope, run("r3", window="w2"), items("k:a", "k:b"), EVERY_RUN, now=later)
    assert claim.origins == {"k:a": T0, "k:b": later}
    forgetful = replace(claim, origins={"k:b": later})  # one known, one not: a mixed column
    ledger.settle(scope, run("r3", window="w2"), forgetful, dict.fromkeys(claim.to_send, LAUNCHED), now=later)
    rerun = ledger.claim(scope, run("r4", window="w2"), items("k:a", "k:b"), EVERY_RUN, now=last)
    assert rerun.to_send == [] and set(rerun.skipped) == {"k:a", "k:b"}

    def written(key: str) -> list[tuple[str, str, datetime | None]]:
        outcomes = ledger.history(key, scope).outcomes
        return [(o["run_id"], o["outcome"], o["contact_created_at"]) for o in outcomes]

    assert written("k:a") == [
        ("r0", "rejected", None),
        ("r1", "launched", T0),
        ("r2", "skipped", T0),
        ("r3", "launched", None),
        ("r4", "skipped", T0),
    ]
    assert written("k:b") == [("r3", "launched", later), ("r4", "skipped", later)]


def test_an_older_ledgers_uncertain_contacts_are_read_as_possibly_queued(fresh_engine, scope):
    """A contact an earlier version left uncertain has no delivery mode after the upgrade (NULL): it may
    have been sent as an Altcraft task still queued, so only its launch marker decides it; no profile, or
    one without the marker, leaves it uncertain instead of "not processed" (which would send it again)."""
    before_delivery_mode = {**ADDED_COLUMNS, CONTACTS: ("delivery_mode", "created_at", "checked_at")}
    old = create_older_ledger(fresh_engine, without=before_delivery_mode)
    claimed = {
        "contact_hash": scope.contact_hash("k:a"), "platform": scope.platform, "scenario_id": 7,
        "contact_key": "k:a", "status": "uncertain", "source_key": "src-k:a", "launch_count": 0,
        "claim_run_key": "dag/send/r0", "claim_try_number": 1, "batch_id": "b0", "claimed_at": T0,
        "updated_at": T0, "launch_marker": "AF_SYNC=abc", "error_text": "no result was reported",
    }  # fmt: skip
    with fresh_engine.begin() as conn:
        conn.execute(old.tables["altcraft_contacts"].insert(), [claimed])
    ledger = Ledger(fresh_engine)
    ledger.ensure_schema()

    assert "delivery_mode" in {c["name"] for c in sa.inspect(fresh_engine).get_columns("altcraft_contacts")}
    [contact] = ledger.uncertain_contacts(scope)
    assert (contact.launch_marker, contact.delivery_mode) == ("AF_SYNC=abc", None)
    verdicts = {
        "no profile": judge(contact, None, T0),
        "no marker": judge(contact, {"id": "p1"}, T0),
        "the marker": judge(contact, {"id": "p1", "AF_SYNC": "abc"}, T0),
    }
    assert {name: v.outcome for name, v in verdicts.items()} == {
        "no profile": Outcome.UNCERTAIN,
        "no marker": Outcome.UNCERTAIN,
        "the marker": Outcome.LAUNCHED,
    }
    assert "no delivery mode for the request" in verdicts["no profile"].reason
    assert ledger.resolve(scope, [contact], {"k:a": verdicts["no profile"]}) == {Outcome.UNCERTAIN: 1}
    assert row(fresh_engine, scope, "k:a")["status"] == "uncertain"
    again = ledger.claim(scope, run("r1"), items("k:a"), ONCE, now=T0, delivery_mode="batch")
    assert again.to_send == [] and "k:a" in again.uncertain, "not sent again blindly"


def test_identifiers_compare_byte_by_byte_on_postgresql(fresh_engine):
    """Hashes, keys, ids and statuses are compared byte by byte, as on MySQL/MariaDB (``utf8mb4_bin``) and
    SQLite (``BINARY``): on PostgreSQL ``COLLATE "C"``, not the database's collation, which would make
    every B-tree comparison a ``strcoll``. Free text keeps the database's collation."""
    if fresh_engine.dialect.name != "postgresql":
        pytest.skip("MySQL/MariaDB tables are utf8mb4_bin, SQLite compares with BINARY")
    Ledger(fresh_engine).ensure_schema()
    query = sa.text(
        "SELECT table_name, column_name, collation_name FROM information_schema.columns "
        "WHERE table_name LIKE 'altcraft_%' AND data_type = 'character varying'"
    )
    with fresh_engine.connect() as conn:
        collations = {(table, column): collation for table, column, collation in conn.execute(query)}
    assert {key for key, collation in collations.items() if collation != "C"} == {
        ("altcraft_contacts", "launch_marker"),
        ("altcraft_outcomes", "profile_id"),
    }
    assert collations["altcraft_contacts", "contact_hash"] == "C"
    assert collations["altcraft_contacts", "delivery_mode"] == "C"
    assert len(collations) == 30  # 28 identifiers and the two free texts


def test_every_query_on_contacts_not_launched_can_use_the_index_of_those_contacts(tmp_path, scope):
    """``ix_altcraft_contacts_open`` holds only contacts not launched (PostgreSQL, SQLite), so a query can
    use it only by stating that condition itself, whatever its bound parameters (on PostgreSQL a generic
    plan). SQLite, which never reads the parameters for this, shows it: each such query of the ledger and
    of the Altcraft page searches that index."""
    from altcraft.ui import queries

    engine = _engine(f"sqlite:///{tmp_path / 'plans.db'}")
    ledger = Ledger(engine)
    launch(ledger, scope, run("r1"), ["k:a"])
    seen: list[tuple[str, tuple]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        where = statement.partition("WHERE")[2].partition("ORDER BY")[0]
        if "altcraft_contacts.status" in where and "contact_hash" not in where and "JOIN" not in statement:
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    ledger.recover(scope, run("r1", 2))
    ledger.claim_of(scope, "batch")
    ledger.uncertain_contacts(scope)
    ledger.standing(scope)
    ledger.to_reconcile(scope, run("r2"))
    with engine.connect() as conn:
        queries.pipelines(conn, T0)
        queries.open_in_run(conn, "dag", "r1")
    sa.event.remove(engine, "before_cursor_execute", capture)

    assert len(seen) == 7, "those not found by contact (hash, or a join on it)"
    with engine.connect() as conn:
        for statement, parameters in seen:
            plan = " ".join(
                row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            )
            assert "ix_altcraft_contacts_open" in plan, (statement, plan)
    engine.dispose()


def test_every_lookup_of_a_contacts_outcomes_searches_the_contact_index(tmp_path, scope):
    """A contact's outcomes are found by ``(contact_created_at, contact_hash)`` in
    ``ix_altcraft_outcomes_by_contact``, never by reading the table: the window check, a contact's history
    (ledger and Altcraft page) and reconciliation, for contacts made at different times and for their
    undated rows. SQLite shows it (it would scan the table for a list of pairs, so it gets one condition per
    creation time)."""
    from altcraft.ui import queries

    engine = _engine(f"sqlite:///{tmp_path / 'plans.db'}")
    ledger = Ledger(engine)
    keys = ["k:a", "k:b", "k:c"]
    for n, key in enumerate(keys):  # made by three claims: three creation times
        launch(ledger, scope, run(f"r{n}", window="w1"), [key], EVERY_RUN, now=T0 + timedelta(minutes=n))
    ledger.claim(scope, run("r9", window="w2"), items(*keys), EVERY_RUN, now=T0 + timedelta(hours=1))
    ledger.recover(scope, run("r9", 2), now=T0 + timedelta(hours=2))
    seen: list[tuple[str, tuple]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "FROM altcraft_outcomes" in statement and "contact_created_at" in statement.partition("WHERE")[2]:
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    rerun = ledger.claim(scope, run("r8", window="w1"), items(*keys), EVERY_RUN, now=T0 + timedelta(hours=3))
    ledger.history("k:a", scope)
    contacts = ledger.uncertain_contacts(scope)
    ledger.resolve(scope, contacts, {c.contact_key: Resolution(Outcome.FAILED, "absent") for c in contacts})
    with engine.connect() as conn:
        queries.contact_history(conn, keys, [(scope.platform, scope.scenario_id)], None)
    sa.event.remove(engine, "before_cursor_execute", capture)

    assert rerun.to_send == [] and len(contacts) == 3
    assert len(seen) == 12, "window check, history, 3 reconciled contacts, the page: undated and dated each"
    with engine.connect() as conn:
        for statement, parameters in seen:
            plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)]
            assert all("ix_altcraft_outcomes_by_contact" in step for step in plan if "outcomes" in step), plan
    engine.dispose()


def test_a_young_postgresql_ledger_looks_up_returning_contacts_outcomes_in_the_index(fresh_engine, scope):
    """On a table not analysed yet (a new ledger's first big run, before autovacuum comes by) PostgreSQL
    guesses its filters' rows, and planned the window check of returning contacts as a join reading every
    launched outcome of the ledger for each chunk, or once per contact of the chunk (bench/ledger_growth.py:
    8,000,000 rows compared for 1,000 contacts after 8,000 launches, a second per chunk and growing with
    each). Each contact must be one search of ``ix_altcraft_outcomes_by_contact``, whatever the statistics
    say."""
    if fresh_engine.dialect.name != "postgresql":
        pytest.skip("the planner of PostgreSQL; SQLite's plans are checked above")
    ledger = Ledger(fresh_engine)
    ledger.ensure_schema()
    with fresh_engine.begin() as conn:  # the statistics stay those of a table never analysed
        conn.exec_driver_sql("ALTER TABLE altcraft_outcomes SET (autovacuum_enabled = false)")
    keys = [f"k:{n}" for n in range(3000)]
    for start in range(0, len(keys), 1000):  # three claims: three creation times
        at = T0 + timedelta(minutes=start)
        launch(ledger, scope, run(f"r{start}", window="w1"), keys[start : start + 1000], EVERY_RUN, now=at)
    launch(ledger, scope, run("r8", window="w2"), keys[:1000], EVERY_RUN, now=T0 + timedelta(days=1))
    seen: list[tuple[str, dict]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "FROM altcraft_outcomes" in statement and "contact_created_at" in statement:
            seen.append((statement, parameters))

    sa.event.listen(fresh_engine, "before_cursor_execute", capture)
    again = ledger.claim(
        scope, run("r9", window="w2"), items(*keys[1000:2000]), EVERY_RUN, now=T0 + timedelta(days=2)
    )
    sa.event.remove(fresh_engine, "before_cursor_execute", capture)

    assert len(again.to_send) == 1000 and len(seen) == 2, "launched again; the undated and dated lookups"
    with fresh_engine.connect() as conn:
        explained = [
            conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters).scalar_one()[0]
            for statement, parameters in seen
        ]
    for plan in (entry["Plan"] for entry in explained):
        nodes = list(_plan_nodes(plan))
        outcomes = [node for node in nodes if node.get("Relation Name") == "altcraft_outcomes"]
        assert outcomes and all(
            node.get("Index Name") == "ix_altcraft_outcomes_by_contact"
            and "contact_hash" in node.get("Index Cond", "")
            for node in outcomes
        ), plan
        assert not any("Join Filter" in node for node in nodes), plan
        assert sum(node.get("Rows Removed by Filter", 0) for node in nodes) <= 1000, plan


def _plan_nodes(plan: dict) -> Iterator[dict]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


def test_combined_mode_identity_any_component_matches(engine, ledger, scope):
    def keys_of(*keys):
        return {
            key: [f"email:{e}" for e in [key.split(":")[1].split("|")[0]] if e]
            + [f"phone:{p}" for p in [key.split("|")[1]] if p]
            for key in keys
        }

    email, both, phone = "ep:a@x|", "ep:a@x|+7900", "ep:|+7900"
    first = ledger.claim(scope, run("r1"), items(email), ONCE, aliases=keys_of(email), now=T0)
    ledger.settle(scope, run("r1"), first, {email: LAUNCHED}, now=T0)
    for n, key in enumerate((both, phone), start=2):
        again = ledger.claim(scope, run(f"r{n}"), items(key), ONCE, aliases=keys_of(key), now=T0)
        assert again.to_send == [] and "already launched" in again.skipped[key], key
    same_batch = ledger.claim(
        scope,
        run("r5"),
        items("ep:b@x|", "ep:b@x|+7911", "ep:|+7911"),
        ONCE,
        aliases=keys_of("ep:b@x|", "ep:b@x|+7911", "ep:|+7911"),
        now=T0,
    )
    assert same_batch.to_send == ["ep:b@x|"] and same_batch.duplicates == 2, "one person, sent once"
    ledger.settle(scope, run("r5"), same_batch, {"ep:b@x|": LAUNCHED}, now=T0)
    two_people = ledger.claim(scope, run("r6"), items("ep:a@x|+7911"), ONCE, aliases=keys_of("ep:a@x|+7911"))
    assert two_people.to_send == [] and "2 different earlier contacts" in two_people.skipped["ep:a@x|+7911"]
    assert len(ledger.contact_states(scope)) == 2
    unsure = ledger.claim(scope, run("r7"), items("ep:c@x|"), ONCE, aliases=keys_of("ep:c@x|"), now=T0)
    ledger.settle(scope, run("r7"), unsure, {}, now=T0)  # no answer: uncertain
    asked = ["ep:c@x|+7922", "ep:|+7922"]
    assert ledger.uncertain_contacts(scope, asked) == []
    found = ledger.uncertain_contacts(scope, asked, aliases=keys_of(*asked))
    assert [c.contact_key for c in found] == ["ep:c@x|"], "met under another key, looked up by its email"


@pytest.mark.parametrize(
    ("earlier", "later", "aliases"),
    [
        ("ep:a@x|", "ep:a@x|+7900", {"ep:a@x|": ["email:a@x"], "ep:a@x|+7900": ["email:a@x", "phone:+7900"]}),
        ("custom:1.00", "custom:1", None),  # a custom key an earlier version wrote otherwise
    ],
)
def test_a_claim_read_back_settles_the_row_its_key_was_claimed_for(
    fresh_engine, scope, earlier, later, aliases
):
    """`claim_of` (an Altcraft task settled after a restart) gave no row hashes: a contact claimed under a key
    other than its row's (a combined-mode key meeting an earlier contact by a component, a custom key found
    under its former form, in a ledger upgraded from the version that wrote it) was settled under its key's
    own hash, which no row has: the row stayed ``sending`` (later recovered as uncertain)."""
    ledger = as_upgraded_from_an_earlier_version(Ledger(fresh_engine))
    first = ledger.claim(scope, run("r1"), items(earlier), ONCE, aliases=aliases, now=T0)
    ledger.settle(scope, run("r1"), first, {earlier: Settlement(Outcome.FAILED, 400, "bad")}, now=T0)
    again = ledger.claim(scope, run("r2"), items(later), ONCE, aliases=aliases, now=T0)
    assert again.to_send == [later]
    ledger.settle(scope, run("r2"), ledger.claim_of(scope, again.batch_id), {later: LAUNCHED}, now=T0)
    assert ledger.contact_states(scope) == {later: "launched"}, "one row, under the key it was sent by"


# --- per-day counts ---------------------------------------------------------------------------------


def test_per_day_counts_are_the_outcome_rows_through_every_kind_of_write(engine, ledger, scope):
    """Real deliveries over four days, with retries, recovery, relaunch, resend and reconciliation
    rewriting an earlier day's outcomes: ``altcraft_outcome_days`` equals ``COUNT(*) … GROUP BY`` after
    each step."""
    day = [T0 + timedelta(days=n, hours=23, minutes=30) for n in range(4)]  # late: the next day is close
    r1 = run("d1")
    first = ledger.claim(scope, r1, items("k:a", "k:b", "k:c", "k:d", "k:e", "k:a"), ONCE, now=day[0])
    answers = {"k:a": LAUNCHED, "k:b": Settlement(Outcome.FAILED, 500, "x")}  # c, d, e: no answer
    ledger.settle(scope, r1, first, answers, now=day[0])
    ledger.record(scope, r1, Outcome.REJECTED, [(None, "src-bad", None, "email: invalid")], now=day[0])
    assert assert_days_are_the_rows(engine, scope) == {
        ("dag", "2030-01-01", "launched"): 1,
        ("dag", "2030-01-01", "failed"): 1,
        ("dag", "2030-01-01", "uncertain"): 3,
        ("dag", "2030-01-01", "skipped"): 1,  # the duplicate item
        ("dag", "2030-01-01", "rejected"): 1,
    }
    r2 = RunRef("dag", "send[1]", "d2", 1, "dag/send/d2")  # another partition: its counts, another shard
    assert shard("send[1]") != shard("send") != shard("send[2]")
    again = ledger.claim(scope, r2, items("k:a", "k:b", "k:c", "k:f", "k:g"), ONCE, now=day[1])
    assert again.to_send == ["k:b", "k:f", "k:g"] and list(again.uncertain) == ["k:c"]
    ledger.settle(scope, r2, again, {"k:b": LAUNCHED, "k:f": LAUNCHED}, now=day[1])  # g: uncertain
    crash = RunRef("dag", "send[2]", "d2-crash", 1, "dag/send/d2-crash")
    crashed = ledger.claim(scope, crash, items("k:h"), ONCE, now=day[1])
    assert crashed.to_send == ["k:h"]
    assert ledger.recover(scope, replace(crash, try_number=2), now=day[2]) == ["k:h"]  # try 1 died
    assert_days_are_the_rows(engine, scope)

    contacts = ledger.uncertain_contacts(scope)
    assert sorted(c.contact_key for c in contacts) == ["k:c", "k:d", "k:e", "k:g", "k:h"]
    verdicts = {
        "k:c": Resolution(Outcome.LAUNCHED, "reconciled: marker", "p-c"),  # day 1's outcome rewritten
        "k:d": Resolution(Outcome.FAILED, "not processed"),
        "k:g": Resolution(Outcome.LAUNCHED, "reconciled: marker"),  # day 2's
        "k:h": Resolution(Outcome.LAUNCHED, "reconciled: marker"),  # day 3's (recorded by recovery)
        "k:e": Resolution(Outcome.UNCERTAIN, "still uncertain"),
    }
    before = assert_days_are_the_rows(engine, scope)
    ledger.resolve(scope, contacts, verdicts, now=day[2])
    after = assert_days_are_the_rows(engine, scope)
    assert after["dag", "2030-01-01", "uncertain"] == before["dag", "2030-01-01", "uncertain"] - 2
    assert after["dag", "2030-01-01", "launched"] == before["dag", "2030-01-01", "launched"] + 1
    assert ledger.resolve(scope, contacts, {"k:c": Resolution(Outcome.FAILED, "late")}, now=day[3]) == {}
    assert assert_days_are_the_rows(engine, scope) == after, "a verdict on a changed row changes nothing"

    r4, r5 = run("d4-relaunch"), run("d4-resend")
    relaunch = ledger.claim(scope, r4, items("k:a", "k:c"), ONCE, relaunch=True, now=day[3])
    ledger.settle(scope, r4, relaunch, dict.fromkeys(relaunch.to_send, LAUNCHED), now=day[3])
    resend = ledger.claim(scope, r5, items("k:e", "k:d"), ONCE, resend_uncertain=True, now=day[3])
    assert sorted(resend.to_send) == ["k:d", "k:e"]
    ledger.settle(scope, r5, resend, {"k:e": LAUNCHED}, now=day[3])  # d: no answer
    final = assert_days_are_the_rows(engine, scope)
    assert {on for _, on, _ in final} == {"2030-01-01", "2030-01-02", "2030-01-03", "2030-01-04"}


def test_a_recount_waits_for_the_outcome_writes_in_flight(engine, scope):
    """``recount_days`` (the upgrade's fill) while a transaction has written outcome rows and their
    per-day counts but not committed: the recount waits for it, so the count is neither lost nor doubled."""
    ledger = Ledger(engine)
    launch(ledger, scope, run("before"), ["k:a"])
    entries = [(f"k:{n}", scope.contact_hash(f"k:{n}"), f"src-{n}", None, None, None, None) for n in "bcd"]
    recounted: list[int] = []
    with engine.connect() as conn, conn.begin():  # what a ledger write does, held open before COMMIT
        begin_tally(conn)
        insert_outcomes(conn, scope, run("in-flight"), Outcome.LAUNCHED, T0, entries)
        tally(conn).apply(conn)
        drop_tally(conn)
        counter = threading.Thread(target=lambda: recounted.append(Ledger(engine).recount_days()))
        counter.start()
        counter.join(timeout=1.5)
        assert counter.is_alive(), "the recount waits for the writer"
    counter.join()
    assert recounted and assert_days_are_the_rows(engine, scope) == {("dag", "2030-01-01", "launched"): 4}


@pytest.mark.parametrize("conn_id", [None, "my_pg"])
def test_ledger_errors_never_carry_the_values_of_the_statement(monkeypatch, tmp_path, database_name, conn_id):
    """A failed statement's message (it reaches the task log) leaves out its bound values: contact keys."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRFLOW_CONN_MY_PG", f"postgresql://postgres@127.0.0.1:5432/{database_name}")
    engine = Ledger.from_conn_id(conn_id).engine
    with pytest.raises(sa.exc.DBAPIError) as failed, engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM no_such_table WHERE key = :key"), {"key": "email:anna@x.org"})
    assert "anna@x.org" not in str(failed.value) and "hidden" in str(failed.value)
    engine.dispose()


def test_every_component_finds_the_configured_ledger_without_a_conn_id(monkeypatch, database_name, tmp_path):
    """``[altcraft] ledger_conn_id``: the operator's ledger and the Altcraft page use that database, not a
    SQLite file (a webhook pipeline records it in its DAG: tests/webhooks/test_ledger_drift.py)."""
    from altcraft.engines import ledger_engine

    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv(
        "AIRFLOW_CONN_CONFIGURED_LEDGER", f"postgresql://postgres@127.0.0.1:5432/{database_name}"
    )
    monkeypatch.setenv("AIRFLOW__ALTCRAFT__LEDGER_CONN_ID", "configured_ledger")
    engines = [Ledger.from_conn_id(None).engine, ledger_engine(None)]
    assert {(engine.dialect.name, engine.url.database) for engine in engines} == {
        ("postgresql", database_name)
    }
    assert not list(tmp_path.rglob("*.db"))
    for engine in engines:
        engine.dispose()


# --- how each pipeline keys a scope's contacts ---------------------------------------------------------


def test_a_pipeline_keeps_the_identity_its_first_task_keyed_contacts_by(ledger, scope):
    """A ledger key names its matching (``email:…``): a task matching otherwise knew none of the contacts
    its pipeline launched before and launched them again. A pipeline's (``dag_id/task_id``, any partition)
    first task records its identity in the scope; a later task of another identity is refused, naming the
    field, the pipeline, the identity kept and the run that set it, and a dry run (which writes nothing)
    is refused alike but records nothing in a new scope. Another pipeline of the scope may key otherwise."""
    other = Scope(scope.platform, scope.scenario_id + 1)
    ledger.identify(other, run("dry"), "phone", dry_run=True)
    ledger.identify(scope, run("r1"), "email")
    ledger.identify(scope, run("r2"), "email")  # the same identity: any run, any try
    ledger.identify(other, run("r3"), "email")  # the dry run recorded nothing there
    app = RunRef("app", "send", "r1", 1, "app/send/r1")
    ledger.identify(scope, app, "phone")  # another pipeline of the scope, keyed otherwise
    ledger.identify(scope, RunRef("app", "send[2]", "r2", 1, "app/send[2]/r2"), "phone")  # a partition

    refusals = [
        (run("r4", 2), "custom:CRM_ID", False, "dag/send", "'email' (since run dag/send/r1)"),
        (run("r5"), "custom:CRM_ID", True, "dag/send", "'email' (since run dag/send/r1)"),
        (RunRef("app", "send[1]", "r3", 1, "app/send[1]/r3"), "email", False, "app/send", "'phone'"),
    ]
    for attempt, identity, dry_run, pipeline, kept in refusals:
        with pytest.raises(IdentityChanged) as refused:
            ledger.identify(scope, attempt, identity, dry_run=dry_run)
        text = str(refused.value)
        assert text.startswith(f"mapping.matching: pipeline {pipeline} launched into scenario 7 on ")
        assert f"matching {kept}" in text and f"this task matches {identity!r}" in text
    table = identities_table
    query = sa.select(table.c.pipeline, table.c.identity, table.c.scenario_id, table.c.run_key)
    with ledger.engine.connect() as conn:
        rows = conn.execute(query.where(table.c.platform == scope.platform)).all()
    assert sorted(rows) == [
        ("app/send", "phone", 7, "app/send/r1"),
        ("dag/send", "email", 7, "dag/send/r1"),
        ("dag/send", "email", 8, "dag/send/r3"),
    ]


def test_concurrent_first_tasks_of_one_pipeline_of_two_identities_leave_one_identity(engine, scope):
    """Two tasks of one pipeline into a new scope, of two identities, at once: one records its identity,
    the other is refused (the second insert of the pipeline's row is a duplicate key, read again)."""
    results: dict[str, BaseException | None] = {}

    def first_task(identity: str) -> None:
        try:
            Ledger(engine).identify(scope, run(identity), identity)
            results[identity] = None
        except IdentityChanged as error:
            results[identity] = error

    threads = [threading.Thread(target=first_task, args=(i,)) for i in ("email", "phone")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(error is None for error in results.values()) == [False, True]
    table = identities_table
    with engine.connect() as conn:
        kept = conn.execute(sa.select(table.c.identity).where(table.c.platform == scope.platform)).all()
    assert kept == [(next(identity for identity, error in results.items() if error is None),)]


# --- the forms an earlier version wrote a custom key in --------------------------------------------------

NUMBERS = [f"custom:{n}" for n in range(1, 101)]


@contextmanager
def statements_run(engine: sa.Engine) -> Generator[list[str]]:
    """Each statement the engine runs meanwhile, with its bound values, as text."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(f"{statement} {parameters!r}")

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def former_probes(statements: list[str], scope: Scope, keys: list[str]) -> int:
    """How many hashes of ``keys``' former forms (`former_keys`) the statements looked up."""
    hashes = {scope.contact_hash(form) for key in keys for form in former_keys(key)}
    return sum(text.count(contact_hash) for text in statements for contact_hash in hashes)


def lookups(ledger: Ledger, scope: Scope, keys: list[str]) -> list[str]:
    """The statements of a claim of ``keys`` and of every other look-up of contacts by their keys."""
    with statements_run(ledger.engine) as seen:
        claim = ledger.claim(scope, run("r1"), items(*keys), ONCE, now=T0)
        ledger.settle(scope, run("r1"), claim, {}, now=T0)  # no answer: uncertain
        ledger.to_reconcile(scope, run("r2"), keys[:10])
        ledger.uncertain_contacts(scope, keys[:10])
        ledger.contact_rows(scope, keys[:10])
        ledger.history(keys[0], scope)
    return seen


def test_a_ledger_created_now_looks_up_no_key_under_a_form_an_earlier_version_wrote(fresh_engine, scope):
    """Each claim of a custom key of a number looked its contact up under 6 or 7 more keys (an earlier
    version's forms), in a ledger no earlier version ever wrote too. One this version creates is marked
    when its contacts table is: none of those keys is looked up there, by any look-up."""
    ledger = Ledger(fresh_engine)
    ledger.ensure_schema()
    with fresh_engine.connect() as conn:
        assert conn.execute(sa.select(meta_table)).all() == [CANONICAL_KEYS]
    seen = lookups(ledger, scope, NUMBERS)
    assert former_probes(seen, scope, NUMBERS) == 0
    assert ledger.contact_states(scope) == dict.fromkeys(NUMBERS, "uncertain")
    upgraded = as_upgraded_from_an_earlier_version(Ledger(fresh_engine))
    assert former_probes(
        lookups(upgraded, Scope(scope.platform, 8), NUMBERS), Scope(scope.platform, 8), NUMBERS
    )


def test_a_ledger_an_earlier_version_created_still_finds_its_keys_former_forms(fresh_engine, scope):
    """The ledger's meta table, added to a ledger of an earlier version, bears no mark: its rows may be
    keyed ``custom:1.0``, and a claim of ``custom:1`` finds that contact launched (6 forms of each key
    looked up)."""
    old = create_older_ledger(fresh_engine)
    with fresh_engine.begin() as conn:
        conn.execute(old.tables[CONTACTS].insert(), [{
            "contact_hash": scope.contact_hash("custom:1.0"), "platform": scope.platform, "scenario_id": 7,
            "contact_key": "custom:1.0", "status": "launched", "source_key": "s1", "launch_count": 1,
            "first_launched_at": T0, "last_launched_at": T0, "claim_run_key": "dag/send/r0",
            "claim_try_number": 1, "batch_id": "b0", "claimed_at": T0, "updated_at": T0}])  # fmt: skip
    ledger = Ledger(fresh_engine)
    ledger.ensure_schema()
    with fresh_engine.connect() as conn:
        assert conn.execute(sa.select(meta_table)).all() == [], "no mark: rows of the earlier version exist"
    with statements_run(fresh_engine) as seen:
        claim = ledger.claim(scope, run("r1"), items(*NUMBERS[:10]), ONCE, now=T0)
    assert list(claim.skipped) == ["custom:1"] and claim.to_send == NUMBERS[1:10]
    assert former_probes(seen, scope, NUMBERS[:10]) >= 10 * 6


def dba_ddl(dialect: str) -> list[str]:
    """The statements docs/ledger.md's script prints for ``dialect``, as a DBA runs them."""
    docs = (Path(__file__).parents[2] / "docs" / "ledger.md").read_text(encoding="utf-8")
    script = docs.split("the DDL for your database and run it as the DBA", 1)[1]
    script = script.split("python - <<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    printed = io.StringIO()
    with redirect_stdout(printed):
        exec(script.replace('"postgresql://"', f'"{dialect}://"'), {})
    return [statement.strip() for statement in printed.getvalue().split(";\n") if statement.strip()]


def test_a_ledger_a_dba_creates_from_the_docs_is_marked_unless_the_mark_is_left_out(fresh_engine, scope):
    """docs/ledger.md's DDL for a new ledger ends with the mark: a ledger so created looks up no former
    forms. Left out (as the docs say to where the tables will take an earlier ledger's rows), they are."""
    statements = dba_ddl(fresh_engine.dialect.name)
    assert statements[-1].startswith("INSERT INTO altcraft_ledger_meta")
    for count, expected in ((len(statements), 0), (len(statements) - 1, None)):
        with fresh_engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                table.drop(conn, checkfirst=True)
            for statement in statements[:count]:
                conn.exec_driver_sql(statement)
        scenario = Scope(scope.platform, count)
        probes = former_probes(lookups(Ledger(fresh_engine), scenario, NUMBERS[:10]), scenario, NUMBERS[:10])
        assert probes == 0 if expected == 0 else probes > 0


def old_row(key: str, status: str, scope: Scope) -> dict:
    """A contact row as an earlier version wrote it."""
    return {
        "contact_hash": scope.contact_hash(key), "platform": scope.platform, "scenario_id": scope.scenario_id,
        "contact_key": key, "status": status, "source_key": "s", "launch_count": 0,
        "claim_run_key": "dag/send/r0", "claim_try_number": 1, "batch_id": "b0", "claimed_at": T0,
        "updated_at": T0,
    }  # fmt: skip


def test_an_earlier_versions_ledger_is_marked_once_no_row_is_keyed_in_a_former_form(fresh_engine, scope):
    """`Ledger.mark_keys_canonical`: refused while a row is keyed ``custom:1.0`` (a claim of ``custom:1``
    still finds it); once that contact was sent again under its one form, the ledger is marked, and no key
    is looked up under a former form any more. Keys of other shapes never keep it unmarked."""
    old = create_older_ledger(fresh_engine)
    others = ["custom:1.5", "custom:10", "custom:abc.0", "custom_sub:7", "email:a.0@x.org", "custom:eve"]
    with fresh_engine.begin() as conn:
        rows = [old_row("custom:1.0", "failed", scope), *(old_row(key, "launched", scope) for key in others)]
        conn.execute(old.tables[CONTACTS].insert(), rows)
    ledger = Ledger(fresh_engine)
    assert ledger.mark_keys_canonical() == 1
    with fresh_engine.connect() as conn:
        assert conn.execute(sa.select(meta_table)).all() == [], "not marked"
    launch(ledger, scope, run("r1"), ["custom:1"])  # found as custom:1.0's row, sent again: rekeyed
    assert ledger.contact_states(scope)["custom:1"] == "launched"
    assert ledger.mark_keys_canonical() == 0
    assert ledger.mark_keys_canonical() == 0, "marked once"
    with fresh_engine.connect() as conn:
        assert conn.execute(sa.select(meta_table)).all() == [CANONICAL_KEYS]
    scenario = Scope(scope.platform, 8)
    assert former_probes(lookups(Ledger(fresh_engine), scenario, NUMBERS), scenario, NUMBERS) == 0


def test_the_command_line_creates_no_ledger_where_there_is_none(fresh_engine, monkeypatch, capsys):
    """``mark-canonical-keys`` on a database with no ledger (a wrong ``--conn-id``, or no ``[altcraft]
    ledger_conn_id`` in this shell's AIRFLOW_HOME) created a whole ledger there and said "marked", while
    the real one stayed unmarked. Now it exits 2 naming where it looked (no password), creating nothing."""
    if fresh_engine.dialect.name != "postgresql":
        pytest.skip("the command is the same on every database; the check is tested on each")
    from altcraft.__main__ import main

    url = f"postgresql://postgres:s3cret@127.0.0.1:5432/{fresh_engine.url.database}"
    monkeypatch.setenv("AIRFLOW_CONN_NOT_THE_LEDGER", url)

    assert main(["mark-canonical-keys", "--conn-id", "not_the_ledger"]) == 2
    said = capsys.readouterr()
    assert said.out == "" and "mark-canonical-keys: no ledger in" in said.err
    assert fresh_engine.url.database in said.err and "s3cret" not in said.err
    assert sa.inspect(fresh_engine).get_table_names() == [], "no table created"


@pytest.mark.parametrize("created", [False, True])
def test_a_ledger_tells_whether_it_exists_without_creating_itself(fresh_engine, created):
    ledger = Ledger(fresh_engine)
    if created:
        ledger.ensure_schema()
    assert Ledger(fresh_engine).exists() is created
    assert bool(sa.inspect(fresh_engine).get_table_names()) is created


def test_the_command_line_marks_a_ledger_or_says_why_not(fresh_engine, scope, monkeypatch, capsys):
    """``python -m altcraft mark-canonical-keys --conn-id …``: exit 1 naming how many rows keep the ledger
    unmarked (no key, no value), exit 0 once marked."""
    if fresh_engine.dialect.name != "postgresql":
        pytest.skip("the command is the same on every database; the method is tested on each")
    from altcraft.__main__ import main

    monkeypatch.setenv(
        "AIRFLOW_CONN_OLD_LEDGER", f"postgresql://postgres@127.0.0.1:5432/{fresh_engine.url.database}"
    )
    old = create_older_ledger(fresh_engine)
    with fresh_engine.begin() as conn:
        conn.execute(old.tables[CONTACTS].insert(), [old_row("custom:1e+16", "launched", scope)])
    assert main(["mark-canonical-keys", "--conn-id", "old_ledger"]) == 1
    said = capsys.readouterr().err
    assert "1 contact row(s) are keyed in a form an earlier version wrote" in said and "1e+16" not in said
    with fresh_engine.begin() as conn:
        conn.execute(old.tables[CONTACTS].delete())
    assert main(["mark-canonical-keys", "--conn-id", "old_ledger"]) == 0
    assert "marked" in capsys.readouterr().out
    with fresh_engine.connect() as conn:
        assert conn.execute(sa.select(meta_table)).all() == [CANONICAL_KEYS]


def test_the_command_line_names_the_ledger_connection_it_cannot_reach(monkeypatch, capsys):
    """A ledger database that is not running is exit 2 naming the connection and what to check, not a
    traceback of the driver's OperationalError."""
    from altcraft.__main__ import main

    monkeypatch.setenv("AIRFLOW_CONN_LEDGER_DOWN", "postgresql://postgres@127.0.0.1:1/test")

    assert main(["mark-canonical-keys", "--conn-id", "ledger_down"]) == 2
    said = capsys.readouterr().err
    assert said.startswith(
        "mark-canonical-keys: the ledger's database (connection 'ledger_down') cannot be used"
    )
    assert "refused" in said and "host, port and user" in said


# --- the lock of a stored position ----------------------------------------------------------------------


@contextmanager
def held_lock(ledger: Ledger, name: str) -> Generator[threading.Event]:
    """``name``'s position lock held by another thread until the block ends; yields the event that the
    thread set once it held it."""
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with ledger.position_lock(name):
            holding.set()
            assert done.wait(60), "never let go"

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(30), "the lock was never taken"
        yield holding
    finally:
        done.set()
        thread.join(60)


def test_a_position_lock_waits_at_most_its_wait_then_names_the_position(ledger):
    """Another run holds the pipeline's lock (stuck in its commit): a commit waits ``wait`` seconds, then
    fails naming the position, and takes the lock once it is free."""
    name = f"altcraft_pipeline_{uuid.uuid4().hex[:8]}_source"
    with held_lock(ledger, name):
        started = time.monotonic()
        with pytest.raises(PositionLocked) as caught, Ledger(ledger.engine).position_lock(name, wait=1):
            pass
        assert 1 <= time.monotonic() - started < 10
    assert f"the stored position of {name} within 1s" in str(caught.value)
    with ledger.position_lock(name, wait=1):
        pass


def test_the_position_locks_of_two_pipelines_do_not_wait_on_each_other(ledger):
    """One pipeline's commit holds its lock: another pipeline's is taken at once (PostgreSQL, MariaDB: a
    row of its own). SQLite locks whole databases, so there it waits for the first commit, and no longer."""
    first, second = (f"altcraft_pipeline_{uuid.uuid4().hex[:8]}_source" for _ in range(2))
    sqlite = ledger.engine.dialect.name == "sqlite"
    with held_lock(ledger, first):
        if sqlite:
            with pytest.raises(PositionLocked), ledger.position_lock(second, wait=0.5):
                pass
        else:
            with ledger.position_lock(second, wait=1):  # waiting for the first, it would fail after 1 s
                pass
    with ledger.position_lock(second, wait=1):
        pass


def test_a_position_lock_is_released_when_the_commit_raises(ledger):
    """A commit that fails (the state store unreachable) lets go of the lock, its error unchanged: the
    pipeline's next commit does not wait for it."""

    class Unreachable(Exception):
        pass

    name = f"altcraft_pipeline_{uuid.uuid4().hex[:8]}_source"
    with pytest.raises(Unreachable), ledger.position_lock(name):
        raise Unreachable
    other = Ledger(ledger.engine)
    started = time.monotonic()
    with other.position_lock(name, wait=1):
        assert time.monotonic() - started < 1


def test_position_locks_serialize_two_commits_of_one_pipeline(ledger):
    """Two commits, each a read-compare-set under the lock: the one that comes second waits until the
    first has set, then reads the first's value and keeps the higher (without the lock it read before the
    first set, and set the lower last)."""
    from altcraft.sources.base import MemoryStateStore

    name = f"altcraft_pipeline_{uuid.uuid4().hex[:8]}_source"
    store = MemoryStateStore()
    read_low = threading.Event()

    def commit(value: int, after_read: threading.Event | None) -> None:
        with Ledger(ledger.engine).position_lock(name, wait=30):
            stored = store.get("position")
            if after_read is not None:
                after_read.set()
                time.sleep(0.5)  # the other commit comes now
            if stored is None or value > stored:
                store.set("position", value)

    low = threading.Thread(target=commit, args=(5, read_low))
    low.start()
    assert read_low.wait(30)
    commit(8, None)
    low.join(30)
    assert store.get("position") == 8
