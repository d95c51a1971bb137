"""The UI's read-only ledger queries, on ledgers written by the real Ledger (PostgreSQL, MariaDB, SQLite)."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from altcraft.ledger import (
    Ledger,
    Outcome,
    RelaunchPolicy,
    Resolution,
    RunRef,
    Scope,
    Settlement,
    outcomes_table,
)
from altcraft.ledger.rules import STALE_AFTER
from altcraft.mapping import Mapper, ProfileMapping
from altcraft.ui import queries
from altcraft.ui.actions import SELECTED_CONF_KEY, Action, plan
from altcraft.ui.keys import candidate_keys
from tests.conftest import as_upgraded_from_an_earlier_version

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
MARIA = "mysql+pymysql://root@127.0.0.1:3306"
NOW = datetime(2030, 1, 31, 12, 0, tzinfo=UTC)
ONCE = RelaunchPolicy.parse("once")


def _admin(server: str, statement: str) -> None:
    engine = sa.create_engine(
        f"{server}/{'postgres' if server == PG else 'test'}", isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        conn.exec_driver_sql(statement)
    engine.dispose()


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def ledger(request, tmp_path):
    """A fresh ledger database of its own, so `pipelines()` sees only this test's scopes."""
    name = f"altcraft_ui_test_{uuid.uuid4().hex[:10]}"
    server = {"postgresql": PG, "mariadb": MARIA, "sqlite": None}[request.param]
    if server is None:
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    else:
        _admin(server, f"CREATE DATABASE {name}" + ("" if server == PG else " CHARACTER SET utf8mb4"))
        engine = sa.create_engine(f"{server}/{name}")
    ledger = Ledger(engine)
    ledger.ensure_schema()
    yield ledger
    engine.dispose()
    if server is not None:
        _admin(server, f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if server == PG else ""))


SCOPE = Scope("https://acme.altcraft.test", 42)
OTHER = Scope("https://acme.altcraft.test", 43)


def ref(dag_id: str, run_id: str, task_id: str = "import_and_launch", try_number: int = 1) -> RunRef:
    return RunRef.create(dag_id, task_id, run_id, try_number)


def deliver(ledger: Ledger, scope: Scope, run: RunRef, answers: dict[str, Outcome], at: datetime) -> None:
    """Claim these emails and settle each with its outcome, at ``at``."""
    items = [(f"email:{email}", f"row-{email.split('@')[0]}") for email in answers]
    claim = ledger.claim(scope, run, items, ONCE, now=at)
    settled = {f"email:{email}": Settlement(outcome, text="no answer") for email, outcome in answers.items()}
    ledger.settle(scope, run, claim, {key: settled[key] for key in claim.to_send}, now=at)


@pytest.fixture
def history(ledger):
    """Yesterday's and today's run of pipeline ``welcome``, and one run of ``other`` in another scenario."""
    yesterday, today = ref("welcome", "scheduled__d1"), ref("welcome", "scheduled__d2")
    deliver(
        ledger,
        SCOPE,
        yesterday,
        {"a@x.org": Outcome.LAUNCHED, "b@x.org": Outcome.LAUNCHED},
        NOW - timedelta(days=3),
    )
    ledger.record(
        SCOPE,
        today,
        Outcome.REJECTED,
        [(None, "row-bad", None, "email: invalid")],
        now=NOW - timedelta(hours=2),
    )
    answers = {"a@x.org": Outcome.LAUNCHED, "c@x.org": Outcome.LAUNCHED, "d@x.org": Outcome.FAILED}
    deliver(ledger, SCOPE, today, {**answers, "e@x.org": Outcome.UNCERTAIN}, NOW - timedelta(hours=2))
    deliver(ledger, OTHER, ref("other", "manual__1"), {"a@x.org": Outcome.LAUNCHED}, NOW - timedelta(days=40))
    return ledger


def test_pipelines_count_outcomes_per_period_and_day(history):
    with history.engine.connect() as conn:
        (scope,) = [s for s in queries.pipelines(conn, NOW) if s.key == (SCOPE.platform, 42)]
    assert scope.dag_ids == {"welcome"}
    # a@x.org was launched by the first run, so today's claim skipped it
    assert dict(scope.last_24h) == {"launched": 1, "skipped": 1, "rejected": 1, "failed": 1, "uncertain": 1}
    assert dict(scope.last_30d) == {"launched": 3, "skipped": 1, "rejected": 1, "failed": 1, "uncertain": 1}
    trend = dict(scope.trend(30, NOW.date()))
    assert len(trend) == 30
    assert trend[(NOW - timedelta(days=3)).date()] == {"launched": 2}
    assert sum(trend[NOW.date()].values()) == 5
    assert scope.open_contacts == {"failed": 1, "uncertain": 1}
    assert scope.last_recorded_at == NOW - timedelta(hours=2)


def test_pipelines_leave_out_old_scopes_and_dags_the_user_cannot_read(history):
    with history.engine.connect() as conn:
        assert (OTHER.platform, 43) not in {s.key for s in queries.pipelines(conn, NOW)}  # 40 days old
        assert queries.pipelines(conn, NOW, dag_ids={"other"}) == []
        assert queries.pipelines(conn, NOW, dag_ids=set()) == []


def test_pipelines_show_open_contacts_however_old_to_who_may_read_their_claim(history):
    deliver(
        history, OTHER, ref("other", "manual__2"), {"z@x.org": Outcome.UNCERTAIN}, NOW - timedelta(days=40)
    )
    with history.engine.connect() as conn:
        (scope,) = [s for s in queries.pipelines(conn, NOW) if s.key == (OTHER.platform, 43)]
        assert scope.open_contacts == {"uncertain": 1} and scope.dag_ids == {"other"}
        assert (OTHER.platform, 43) not in {s.key for s in queries.pipelines(conn, NOW, dag_ids={"welcome"})}
        (mine,) = queries.pipelines(conn, NOW, dag_ids={"welcome"})
        assert mine.open_contacts == {"failed": 1, "uncertain": 1}


def test_run_counts_per_partition_and_try_and_the_run_total(ledger):
    first = ref("welcome", "r1", "import_and_launch[0]", 1)
    deliver(ledger, SCOPE, first, {"a@x.org": Outcome.LAUNCHED, "b@x.org": Outcome.UNCERTAIN}, NOW)
    retry = ref("welcome", "r1", "import_and_launch[0]", 2)
    deliver(ledger, SCOPE, retry, {"a@x.org": Outcome.LAUNCHED, "b@x.org": Outcome.LAUNCHED}, NOW)
    deliver(ledger, SCOPE, ref("welcome", "r1", "import_and_launch[1]"), {"z@x.org": Outcome.FAILED}, NOW)
    with ledger.engine.connect() as conn:
        tries = queries.run_counts(conn, "welcome", "r1")
        assert [(t.task_id, t.try_number, t.counts) for t in tries] == [
            ("import_and_launch[0]", 1, {"launched": 1, "uncertain": 1}),
            # a was launched before; b is still uncertain: never resent, and reported as uncertain again
            ("import_and_launch[0]", 2, {"skipped": 1, "uncertain": 1}),
            ("import_and_launch[1]", 1, {"failed": 1}),
        ]
        assert queries.latest_counts(tries) == {"skipped": 1, "uncertain": 1, "failed": 1}
        assert queries.run_totals(conn, [("welcome", "r1")]) == {
            ("welcome", "r1"): {"skipped": 1, "uncertain": 1, "failed": 1}
        }


def test_run_outcomes_filter_page_and_export(history):
    with history.engine.connect() as conn:
        everything = queries.run_outcomes(conn, "welcome", "scheduled__d2", limit=100)
        assert [row["outcome"] for row in everything] == [
            "rejected",
            "skipped",
            "launched",
            "failed",
            "uncertain",
        ]
        assert everything[0]["contact_key"] is None and everything[0]["reason"] == "email: invalid"
        pages = [queries.run_outcomes(conn, "welcome", "scheduled__d2", offset=n, limit=2) for n in (0, 2, 4)]
        assert [row["id"] for page in pages for row in page] == [row["id"] for row in everything]
        failed = queries.run_outcomes(conn, "welcome", "scheduled__d2", outcome="failed")
        assert [(row["contact_key"], row["source_key"]) for row in failed] == [("email:d@x.org", "row-d")]
        statements: list[str] = []
        sa.event.listen(conn, "before_cursor_execute", lambda *args: statements.append(args[2]))
        exported = list(queries.iter_run_outcomes(conn, "welcome", "scheduled__d2", chunk=2))
        assert [row["id"] for row in exported] == [row["id"] for row in everything]
        assert len(statements) == 1, "the export reads the run once, however many chunks it streams"


def test_a_typed_contact_is_found_in_every_scenario_as_the_ledger_keys_it(history):
    keys = candidate_keys("  A@X.ORG ")
    statements: list[str] = []

    def record(conn, cursor, statement, *rest) -> None:
        statements.append(statement)

    with history.engine.connect() as conn:
        sa.event.listen(conn, "before_cursor_execute", record)
        scopes = queries.scopes(conn)
        sa.event.remove(conn, "before_cursor_execute", record)
        assert set(scopes) == {(SCOPE.platform, 42), (OTHER.platform, 43)}
        assert not re.search(r"\baltcraft_outcomes\b", statements[0]), "day counts, not every outcome row"
        found = queries.contact_history(conn, keys, scopes, None)
        assert [(r.scenario_id, r.contact_key, r.row["status"]) for r in found] == [
            (42, "email:a@x.org", "launched"),
            (43, "email:a@x.org", "launched"),
        ]
        assert [o["outcome"] for o in found[0].outcomes] == ["launched", "skipped"]
        assert {o["run_id"] for o in found[0].outcomes} == {"scheduled__d1", "scheduled__d2"}
        only_welcome = queries.contact_history(conn, keys, scopes, {"welcome"})
        assert [r.scenario_id for r in only_welcome] == [42]
        by_hash = queries.contact_by_hash(conn, SCOPE.contact_hash("email:a@x.org"), None)
        assert [(r.scenario_id, len(r.outcomes)) for r in by_hash] == [(42, 2)]
        assert queries.contact_history(conn, candidate_keys("nobody@x.org"), scopes, None) == []


def test_a_contact_is_found_in_a_ledger_no_task_of_this_version_has_upgraded_yet(history):
    """The page read every column of the contacts table: before a task of a new version added its new column
    (``checked_at``) to the ledger, each contact search failed (503: the column does not exist)."""
    with history.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE altcraft_contacts DROP COLUMN checked_at")
    with history.engine.connect() as conn:
        found = queries.contact_history(conn, candidate_keys("a@x.org"), queries.scopes(conn), None)
        assert [(r.scenario_id, r.row["status"]) for r in found] == [(42, "launched"), (43, "launched")]
        by_hash = queries.contact_by_hash(conn, SCOPE.contact_hash("email:a@x.org"), None)
        assert [(r.scenario_id, r.row["launch_count"]) for r in by_hash] == [(42, 1)]


def test_a_custom_contact_keyed_by_an_earlier_version_is_found_by_its_number_and_its_hash(ledger):
    """A row an earlier version keyed ``custom:1.00`` and one sent again under its new key (``custom:7``
    into the row of ``custom:7.0``, whose hash it keeps): typing ``1`` or ``7.0`` finds them, and so does the
    link by hash, which looked the row up by the hash of the key it carries and found nothing."""
    as_upgraded_from_an_earlier_version(ledger)
    run = ref("welcome", "scheduled__d1")
    for key, outcome in (("custom:1.00", Outcome.LAUNCHED), ("custom:7.0", Outcome.FAILED)):
        claim = ledger.claim(SCOPE, run, [(key, "row")], ONCE, now=NOW)
        ledger.settle(SCOPE, run, claim, {key: Settlement(outcome, text="x")}, now=NOW)
    again = ledger.claim(SCOPE, ref("welcome", "scheduled__d2"), [("custom:7", "row")], ONCE, now=NOW)
    ledger.settle(
        SCOPE, ref("welcome", "scheduled__d2"), again, {"custom:7": Settlement(Outcome.LAUNCHED)}, now=NOW
    )
    with ledger.engine.connect() as conn:
        for typed, row_key in {
            "1": "custom:1.00",
            "1.0": "custom:1.00",
            "7": "custom:7",
            "7.0": "custom:7",
        }.items():
            found = queries.contact_history(conn, candidate_keys(typed), [(SCOPE.platform, 42)], None)
            assert [record.row["contact_key"] for record in found] == [row_key], typed
        (record,) = queries.contact_by_hash(conn, SCOPE.contact_hash("custom:7.0"), None)
        assert (record.row["contact_key"], [o["outcome"] for o in record.outcomes]) == (
            "custom:7",
            ["failed", "launched"],
        )


def test_who_a_resend_or_relaunch_would_reach(history):
    with history.engine.connect() as conn:
        assert queries.open_in_run(conn, "welcome", "scheduled__d2") == {"uncertain": 1, "failed": 1}
        assert queries.open_in_run(conn, "welcome", "scheduled__d1") == {}
        assert queries.open_in_run(conn, "welcome", "scheduled__d2", {"welcome"}) == {
            "uncertain": 1,
            "failed": 1,
        }
        assert queries.open_in_run(conn, "welcome", "scheduled__d2", {"other"}) == {}, "welcome's claims"
        picked = {SCOPE.contact_hash(f"email:{e}@x.org") for e in ("c", "e")}
        statuses = queries.selected_contacts(conn, "welcome", "scheduled__d2", picked | {"f" * 64})
        assert sorted(statuses.values()) == ["launched", "uncertain"]
        uncertain_at = NOW - timedelta(hours=2)  # when e@x.org became uncertain
        assert queries.last_uncertain_at(conn, "welcome", "scheduled__d2") == uncertain_at
        assert queries.last_uncertain_at(conn, "welcome", "scheduled__d2", picked) == uncertain_at
        assert (
            queries.last_uncertain_at(conn, "welcome", "scheduled__d2", {SCOPE.contact_hash("email:d@x.org")})
            is None
        )
        assert queries.last_uncertain_at(conn, "welcome", "scheduled__d1") is None


def test_contacts_a_run_left_sending_are_found_by_their_claim(ledger):
    """A try that died leaves its claimed contacts `sending`, without an outcome row in the run."""
    for dag_id, run_id in (("wel_come", "r%1"), ("welXcome", "r%1"), ("wel_come", "rX1")):
        ledger.claim(
            SCOPE, ref(dag_id, run_id, "import_and_launch[0]"), [(f"email:{run_id}@{dag_id}.org", "s")], ONCE
        )
    with ledger.engine.connect() as conn:
        in_flight = {"sending": 1, "stale_sending": 0}
        assert queries.sending_in_run(conn, "wel_come", "r%1") == in_flight  # `_` and `%` are no wildcards
        assert queries.sending_in_run(conn, "wel_come", "r") == {"sending": 0, "stale_sending": 0}
        assert queries.open_in_run(conn, "wel_come", "r%1") == {}, "no outcome row in the run"


def test_contacts_left_sending_by_a_dag_or_run_named_alike_but_for_case_are_not_the_runs(ledger):
    """Airflow's ids are case-sensitive: ``Welcome`` is another DAG than ``welcome``, which a user may read
    alone. SQLite's ``LIKE`` ignores case: the run page of ``welcome`` counted ``Welcome``'s contacts."""
    for dag_id, run_id in (("welcome", "r1"), ("Welcome", "r1"), ("WELCOME", "r1"), ("welcome", "R1")):
        ledger.claim(SCOPE, ref(dag_id, run_id), [(f"email:{run_id}@{dag_id}.org", "s")], ONCE)
    with ledger.engine.connect() as conn:
        assert queries.sending_in_run(conn, "welcome", "r1") == {"sending": 1, "stale_sending": 0}
        assert queries.sending_in_run(conn, "Welcome", "R1") == {"sending": 0, "stale_sending": 0}


def test_contacts_a_stale_claim_left_sending_are_counted_apart_from_those_in_flight(ledger):
    """A claim older than the ledger's ``stale_after`` was never settled: its try died, and only a
    reconciling run settles it. The Pipelines card and the run page counted it as "sending now" with a
    claim in flight; now apart, as the scenario's standing does (``stale_sending``), by the ledger's clock."""
    run, now = ref("welcome", "r1", "import_and_launch[0]"), datetime.now(UTC)
    ledger.claim(SCOPE, run, [("email:live@x.org", "a")], ONCE)
    dead = [("email:dead1@x.org", "b"), ("email:dead2@x.org", "c")]
    ledger.claim(SCOPE, run, dead, ONCE, now=now - STALE_AFTER - timedelta(minutes=5))
    counts = {"sending": 1, "stale_sending": 2}
    with ledger.engine.connect() as conn:
        assert queries.sending_in_run(conn, "welcome", "r1") == counts
        (scope,) = queries.pipelines(conn, now)
        assert scope.open_contacts == counts
    assert ledger.standing(SCOPE)["stale_sending"] == 2


def test_candidate_keys_normalise_like_the_mapper():
    assert candidate_keys("Anna@Example.ORG")[:3] == [
        "email:anna@example.org",
        "email_profile:anna@example.org",
        "email_sub:anna@example.org",
    ]
    assert "phone:+79001234567" in candidate_keys("+7 (900) 123-45-67")
    assert "phone:+79001234567" in candidate_keys("89001234567", "RU")
    assert "email_phone:a@b.org|+79001234567" in candidate_keys("A@b.org|+79001234567")
    assert candidate_keys("email:Anna@Example.org") == ["email:anna@example.org"]
    assert candidate_keys("crm-17") == ["custom:crm-17", "custom_sub:crm-17", "profile_id:crm-17"]
    assert candidate_keys("   ") == []


@pytest.mark.parametrize(
    ("matching", "typed"),
    [
        ("email", "anna@xn--e1afmkfd.xn--p1ai"),  # the ledger knows an IDN in Unicode: the search missed it
        ("email", "Anna@XN--E1AFMKFD.XN--P1AI"),
        ("email_sub", "Анна@Пример.РФ"),
        ("email", " ANNA@Example.org "),
        ("phone", "+7 (900) 123-45-67"),
    ],
)
def test_candidate_keys_hold_the_ledger_key_the_mapper_gives(matching, typed):
    key = "email" if "email" in matching else "phone"
    mapper = Mapper(ProfileMapping(matching=matching, key={key: "v"}), source_key_column="id")
    assert mapper.map({"id": 1, "v": typed}).ledger_key in candidate_keys(typed)


BOTH = {"email": "e", "phone": "p"}


@pytest.mark.parametrize(
    ("matching", "key", "row", "typed"),
    [
        ("email", {"email": "e"}, {"e": "a|b@example.org"}, "a|b@example.org"),
        ("email_phone", BOTH, {"e": "a|b@example.org", "p": "+79001234567"}, "a|b@example.org|+79001234567"),
        ("email_phone", BOTH, {"e": "a|b@example.org", "p": None}, "a|b@example.org|"),
    ],
)
def test_an_email_holding_a_bar_is_found_alone_and_with_its_phone(matching, key, row, typed):
    """The mapper splits ``email|phone`` at the last bar (a phone never holds one); the search split at the
    first, so it found no contact whose email's local part holds ``|``."""
    mapper = Mapper(ProfileMapping(matching=matching, key=key), source_key_column="id")
    assert mapper.map({"id": 1, **row}).ledger_key in candidate_keys(typed)


def test_action_plans_name_the_window_params_and_people():
    interval = (NOW - timedelta(days=1), NOW)
    resend = plan(
        Action.RESEND_UNCERTAIN, dag_id="welcome", run_id="r1", interval=interval, people=3, now=NOW
    )
    assert resend.body == {
        "logical_date": NOW.isoformat(),
        "data_interval_start": interval[0].isoformat(),
        "data_interval_end": NOW.isoformat(),
        "conf": {"resend_uncertain": True},
        "note": "Altcraft UI: resend uncertain for run r1",
    }
    assert "3 people" in resend.message
    relaunch = plan(
        Action.RELAUNCH_SELECTED,
        dag_id="welcome",
        run_id="r1",
        interval=interval,
        people=1,
        selected={"h2", "h1"},
    )
    assert relaunch.body["conf"] == {"relaunch": True, SELECTED_CONF_KEY: ["h1", "h2"]}
    assert "1 person will get" in relaunch.message
    reconcile = plan(Action.RECONCILE, dag_id="d", run_id="r", interval=interval, people=2)
    assert reconcile.body["conf"] == {"reconcile": True}
    assert "up to 2 people of this run" in reconcile.message and "new to the window" in reconcile.message
    assert "No messages" not in reconcile.message, "a reconciliation run delivers its window"
    for action in Action:  # a new run would get the interval Airflow infers for now: another window
        with pytest.raises(ValueError, match="no data interval"):
            plan(action, dag_id="d", run_id="r", interval=(None, None), people=0, selected={"h1"})
    with pytest.raises(ValueError, match="select the contacts"):
        plan(Action.RELAUNCH_SELECTED, dag_id="d", run_id="r", interval=interval, people=0)


def test_a_past_day_rewritten_by_reconciliation_shows_at_once(history):
    """Reconciliation turns an earlier day's uncertain outcome into launched: the next view counts it."""
    old = ref("welcome", "scheduled__d0")
    three_days_ago = NOW - timedelta(days=3, hours=1)
    deliver(history, SCOPE, old, {"u@x.org": Outcome.UNCERTAIN}, three_days_ago)
    with history.engine.connect() as conn:
        (before,) = [s for s in queries.pipelines(conn, NOW) if s.key == (SCOPE.platform, 42)]
    contacts = history.uncertain_contacts(SCOPE, ["email:u@x.org"])
    verdict = {"email:u@x.org": Resolution(Outcome.LAUNCHED, "reconciled: marker")}
    assert history.resolve(SCOPE, contacts, verdict, now=NOW) == {Outcome.LAUNCHED: 1}
    with history.engine.connect() as conn:
        (after,) = [s for s in queries.pipelines(conn, NOW) if s.key == (SCOPE.platform, 42)]
    day = three_days_ago.date()
    assert after.per_day[day]["launched"] == before.per_day[day]["launched"] + 1
    assert after.per_day[day]["uncertain"] == before.per_day[day]["uncertain"] - 1
    assert after.last_30d["uncertain"] == before.last_30d["uncertain"] - 1
    assert after.last_24h == before.last_24h, "the row keeps its day: older than 24 hours"
    assert after.open_contacts == {"failed": 1, "uncertain": 1}


def test_the_pages_counts_are_the_outcome_rows(history):
    """Per day, last 30 days and last 24 hours, as counting every outcome row of the scope would."""
    rows = sa.select(outcomes_table.c.outcome, outcomes_table.c.recorded_at).where(
        outcomes_table.c.scenario_id == 42
    )
    with history.engine.connect() as conn:
        (scope,) = [s for s in queries.pipelines(conn, NOW) if s.key == (SCOPE.platform, 42)]
        recorded = conn.execute(rows).all()
    since = NOW - timedelta(hours=24)
    per_day: dict = {}
    for outcome, at in recorded:
        per_day.setdefault(at.date(), Counter())[outcome] += 1
    assert {day: dict(counts) for day, counts in scope.per_day.items()} == {
        d: dict(c) for d, c in per_day.items()
    }
    assert dict(scope.last_30d) == dict(Counter(outcome for outcome, _ in recorded))
    assert dict(scope.last_24h) == dict(Counter(outcome for outcome, at in recorded if at >= since))
