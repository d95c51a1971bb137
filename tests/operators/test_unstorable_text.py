"""Text no database stores (NUL, lone surrogates, bytes that are not UTF-8), from a contact or from an
Altcraft answer, through the real operator (``dag.test()``) and the emulator, on a PostgreSQL, a MariaDB
and a SQLite ledger: a contact holding it is rejected naming its field while the others are delivered, and
Altcraft's text is stored with it replaced (`altcraft.storable`), never failing the run."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
import sqlalchemy as sa

from altcraft.ledger.schema import contacts_table, outcomes_table
from tests.airflow_helpers import install_dag, run_dag, task_states, xcom_values

from .conftest import EMAIL_MAPPING, LEDGER_URLS, contacts, launch_counts

DAG_FILE = Path(__file__).parent / "dag_files" / "welcome_contacts.py"
DAY = pendulum.datetime(2026, 3, 1, tz="UTC")
BATCH = "workflows/import_and_start_batch"
#: Airflow connection URIs of the ledgers: the operator reaches them through Airflow's hooks, as deployed
AIRFLOW_URIS = {
    "postgresql": "postgresql://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql://root@127.0.0.1:3306/test",
}


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def ledger_url(request, monkeypatch, tmp_path) -> str:
    """The SQLAlchemy URL of the run's ledger, which the DAG reaches as the connection ``text_ledger``."""
    sqlite = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("AIRFLOW_CONN_TEXT_LEDGER", AIRFLOW_URIS.get(request.param, sqlite))
    return LEDGER_URLS.get(request.param, sqlite)


def _run(
    records: list[dict[str, Any]], scenario_id: int, *, source: dict[str, Any] | None = None, **operator: Any
) -> tuple[Any, dict[str, Any] | None]:
    """Run the operator over ``records`` or a ``source`` (``{"sql_source": ...}`` or ``{"file_source":
    ...}``, see the DAG file), every rejection and refusal tolerated; its run and summary (None if none)."""
    config = {
        "dag_id": "welcome_unstorable",
        "contacts": records,
        "key_column": "id",
        **(source or {}),
        "operator": {
            "scenario_id": scenario_id,
            "mapping": EMAIL_MAPPING,
            "ledger_conn_id": "text_ledger",
            "max_rejected_ratio": 1.0,
            "max_failed_ratio": 1.0,
            **operator,
        },
    }
    dag = install_dag(DAG_FILE, config, Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]))
    dag_run = run_dag(dag, DAY)
    return dag_run, xcom_values(dag.dag_id, dag_run.run_id).get(("import_and_launch", -1))


def _ledger(url: str, scenario_id: int) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    """The scenario's outcome rows as (source key, outcome, reason, profile id), and its contacts counted by
    status."""
    engine = sa.create_engine(url)
    o, c = outcomes_table.c, contacts_table.c
    with engine.connect() as conn:
        outcomes = sa.select(o.source_key, o.outcome, o.reason, o.profile_id).where(
            o.scenario_id == scenario_id
        )
        rows = [tuple(row) for row in conn.execute(outcomes)]
        statuses = conn.execute(
            sa.select(c.status, sa.func.count()).where(c.scenario_id == scenario_id).group_by(c.status)
        )
        counts = dict(statuses.all())
    engine.dispose()
    return rows, counts


#: (record, the field its rejection names, what its reason says)
HOSTILE = [
    ({"id": 100, "email": "nul\x00@example.org"}, "email", "U+0000"),
    ({"id": 101, "email": "nul-in-name@example.org", "first_name": "An\x00na"}, "_fname", "U+0000"),
    ({"id": 102, "email": "surrogate@example.org", "first_name": "An\ud800na"}, "_fname", "lone surrogate"),
    ({"id": 103, "email": "control@example.org", "first_name": "An\x1bna"}, "_fname", "U+001B"),
    ({"id": "key\x00", "email": "nul-key@example.org"}, "id", "U+0000"),
    ({"id": "key\udcff", "email": "surrogate-key@example.org"}, "id", "lone surrogate"),
]


#: A column named like the sources' error field holding text no database stores, and contact data
ERROR_COLUMN = "x\x00\ud800 anna.petrova@example.org"


def test_contacts_holding_text_no_database_stores_are_rejected_and_the_others_delivered(
    emulator, airflow_db, scenario_id, ledger_url, capfd
):
    """A column ``__error__`` holding NUL and a lone surrogate was taken for the source's reason, which failed
    the rejection's ledger write (PostgreSQL, MariaDB) or the summary's XCom (SQLite), so the run failed
    without delivering anyone: it is data, its contact (which does not map it) delivered."""
    fine = [*contacts(3), {"id": 106, "email": "error-column@example.org", "__error__": ERROR_COLUMN}]
    dag_run, summary = _run([*fine, *(record for record, _, _ in HOSTILE)], scenario_id)
    assert task_states(dag_run) == {"import_and_launch": "success"}
    assert (summary["found"], summary["launched"], summary["rejected"]) == (4 + len(HOSTILE), 4, len(HOSTILE))
    assert sorted(launch_counts(emulator, scenario_id).values()) == [1, 1, 1, 1]
    rows, statuses = _ledger(ledger_url, scenario_id)
    assert statuses == {"launched": 4}
    rejected = sorted((key, reason) for key, outcome, reason, _ in rows if outcome == "rejected")
    expected = [
        (str(record["id"]) if isinstance(record["id"], int) else "<invalid>", field, says)
        for record, field, says in HOSTILE
    ]
    assert len(rejected) == len(expected)
    for key, field, says in expected:
        assert any(k == key and r.startswith(f"{field}: ") and says in r for k, r in rejected), (key, field)
    assert "anna.petrova" not in json.dumps(rows) + json.dumps(summary) + capfd.readouterr().out


#: Altcraft's text for a refused profile: escaped NUL and lone surrogate, bytes that are not UTF-8, an email
ODD_TEXT = b"bad \\u0000 \\ud800 \xff\xfe anna.petrova@example.org"
_PLACEHOLDER = "ODD-TEXT"


def _with_odd_text(answer: dict[str, Any]) -> bytes:
    """``answer`` as JSON with `ODD_TEXT` in place of the placeholder."""
    return json.dumps(answer).encode().replace(_PLACEHOLDER.encode(), ODD_TEXT)


def _refuse_first(results: list[dict[str, Any]]) -> None:
    """The first profile refused with the odd text, the second launched under an odd profile id."""
    results[0].update(error=400, error_text=_PLACEHOLDER)
    results[1].update(profile_id="id-\u0000-\ud800")


def _batch(body: dict[str, Any], answer: dict[str, Any], status: int) -> tuple[int, bytes]:
    _refuse_first(answer["result"])
    return status, _with_odd_text(answer)


def _task(body: dict[str, Any], answer: dict[str, Any], status: int) -> tuple[int, dict[str, Any] | bytes]:
    result = answer["data"].get("result")
    if not result:  # not finished yet
        return status, answer
    _refuse_first(result["result"])
    return status, _with_odd_text(answer)


def _single(body: dict[str, Any], answer: dict[str, Any], status: int) -> tuple[int, dict[str, Any] | bytes]:
    if "user0@" not in json.dumps(body):
        return status, answer
    return status, _with_odd_text({"error": 400, "error_text": _PLACEHOLDER})


@pytest.mark.parametrize(
    ("delivery", "rewrites"),
    [
        ("batch", {BATCH: _batch}),
        ("async", {"tasks/status": _task}),
        ("single", {"workflows/import_and_start": _single}),
    ],
)
def test_altcraft_text_no_database_stores_is_stored_replaced_and_never_fails_the_run(
    emulator, airflow_db, proxy, scenario_id, ledger_url, delivery, rewrites, capfd
):
    """The bytes that are not UTF-8 made the whole answer unreadable: every contact of the request uncertain
    and the run stopped; NUL and a lone surrogate (escaped in the JSON) are replaced by U+FFFD."""
    proxy.rewrite.update(rewrites)
    dag_run, summary = _run(contacts(4), scenario_id, delivery=delivery, poll_interval=0.1, deferrable=False)
    assert task_states(dag_run) == {"import_and_launch": "success"}
    assert (summary["launched"], summary["failed"], summary["uncertain"]) == (3, 1, 0)
    rows, statuses = _ledger(ledger_url, scenario_id)
    assert statuses == {"launched": 3, "failed": 1}
    [reason] = [reason for _, outcome, reason, _ in rows if outcome == "failed"]
    assert reason.endswith("bad \ufffd \ufffd \ufffd\ufffd a***@e***.org")  # single: after the error's name
    if delivery != "single":  # a batch result's profile id, NUL and lone surrogate replaced
        assert "id-\ufffd-\ufffd" in {
            profile_id for _, outcome, _, profile_id in rows if outcome == "launched"
        }
    assert "anna.petrova" not in json.dumps(summary) + capfd.readouterr().out


@pytest.fixture
def sql_ascii_crm(monkeypatch) -> Iterator[str]:
    """A PostgreSQL database in SQL_ASCII (which stores any bytes) holding contacts 1-3, the second's name a
    byte that is not ASCII; its connection id. Read with psycopg2: SQLAlchemy cannot connect to a SQL_ASCII
    database with psycopg 3 (its server version comes as bytes)."""
    name = f"altcraft_sql_ascii_{uuid.uuid4().hex[:10]}"
    server = "postgresql+psycopg2://postgres@127.0.0.1:5432"
    admin = sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LOCALE 'C' TEMPLATE template0")
    crm = sa.create_engine(f"{server}/{name}")
    with crm.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE contacts (id int, email text, first_name text)")
        conn.exec_driver_sql(
            "INSERT INTO contacts VALUES (1, 'user1@example.org', 'One'), "
            "(2, 'user2@example.org', convert_from('\\x416eff'::bytea, 'SQL_ASCII')), "
            "(3, 'user3@example.org', 'Three')"
        )
    crm.dispose()
    uri = f"postgresql://postgres@127.0.0.1:5432/{name}?sqlalchemy_scheme=postgresql%2Bpsycopg2"
    monkeypatch.setenv("AIRFLOW_CONN_SQL_ASCII_CRM", uri)
    yield "sql_ascii_crm"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_a_source_row_the_driver_cannot_decode_stops_the_run_naming_the_source_and_why(
    emulator, airflow_db, scenario_id, ledger_url, sql_ascii_crm, capfd
):
    """psycopg2 decodes a whole fetch at once, so the row cannot be rejected alone: the run fails with an
    error naming the source and the cause (it was a bare UnicodeDecodeError: "'ascii' codec can't decode
    byte 0xff"), leaving nobody `sending`."""
    sql = {"conn_id": sql_ascii_crm, "sql": "SELECT id, email, first_name FROM contacts ORDER BY id"}
    dag_run, _ = _run([], scenario_id, source={"sql_source": sql})
    assert task_states(dag_run) == {"import_and_launch": "failed"}
    assert "sending" not in _ledger(ledger_url, scenario_id)[1]
    log = capfd.readouterr().out
    assert "sql_query on connection 'sql_ascii_crm'" in log
    assert "a row holds text that is not valid ascii, the encoding the database sends its text in" in log


def _line(template: bytes, contact_id: int, email: bytes, name: bytes) -> bytes:
    """One contact created inside the run's window, as a ``template`` line (a CSV row or a JSON object)."""
    return template % (contact_id, email, name, b"2026-02-28T10:00:00Z")


_CSV, _JSON = b"%d,%s,%s,%s\n", b'{"id": %d, "email": "%s", "first_name": "%s", "created_at": "%s"}\n'
#: A CSV and a JSON Lines file, two fine contacts in each; in the CSV one with a byte that is not UTF-8 and
#: one with NUL, in the JSON one with a byte that is not UTF-8, an escaped lone surrogate and an escaped NUL
FILES = {
    "contacts.csv": b"id,email,first_name,created_at\n"
    + _line(_CSV, 1, b"user1@example.org", b"One")
    + _line(_CSV, 2, b"user2@example.org", b"Tw\xffo")
    + _line(_CSV, 3, b"user3@example.org", b"Th\x00ree")
    + _line(_CSV, 4, b"user4@example.org", b"Four"),
    "contacts.jsonl": _line(_JSON, 11, b"user11@example.org", b"One")
    + _line(_JSON, 12, b"user12@example.org", b"Tw\xffo")
    + _line(_JSON, 13, b"user13@example.org", b"Th\\ud800ree")
    + _line(_JSON, 14, b"user14\\u0000@example.org", b"Four")
    + _line(_JSON, 15, b"user15@example.org", b"Five"),
}
FILES["caf\udce9.csv"] = FILES["contacts.csv"]  # a local name with a byte that is not UTF-8 (0xE9)
#: per file: source key -> its rejection's reason, naming the line (bytes that are not UTF-8) or the field
FILE_REJECTIONS = {
    "contacts.csv": {
        "contacts.csv:3": "__error__: bytes that are not valid utf-8",
        "3": "_fname: contains a control or invisible character (U+0000)",
    },
    "caf\udce9.csv": {  # the name's byte as U+FFFD: storable, and the key names the line
        "caf\ufffd.csv:3": "__error__: bytes that are not valid utf-8",
        "3": "_fname: contains a control or invisible character (U+0000)",
    },
    "contacts.jsonl": {
        "contacts.jsonl:2": "__error__: bytes that are not valid utf-8",
        "13": "_fname: contains a lone surrogate (invalid unicode)",
        "14": "email: contains a control or invisible character (U+0000)",
    },
}


@pytest.mark.parametrize("name", list(FILES))
def test_file_lines_no_database_stores_are_rejected_and_the_others_delivered(
    emulator, airflow_db, scenario_id, ledger_url, tmp_path, name
):
    """A file named with a byte that is not UTF-8 failed the whole source (its state key hashed the name's
    text as UTF-8); its lines are read and its unreadable ones rejected like any file's."""
    (tmp_path / name).write_bytes(FILES[name])  # a lone surrogate of the name is written as its byte
    file_source = {"path": str(tmp_path), "format": name.rpartition(".")[2], "timestamp_column": "created_at"}
    mapping = {**EMAIL_MAPPING, "fields": {"_fname": "first_name"}, "subscriptions": []}  # the files' columns
    dag_run, summary = _run([], scenario_id, source={"file_source": file_source}, mapping=mapping)
    assert task_states(dag_run) == {"import_and_launch": "success"}
    assert (summary["launched"], summary["rejected"]) == (2, len(FILE_REJECTIONS[name]))
    rows, statuses = _ledger(ledger_url, scenario_id)
    rejected = {key.rpartition("/")[2]: reason for key, outcome, reason, _ in rows if outcome == "rejected"}
    assert rejected == FILE_REJECTIONS[name]
    assert statuses == {"launched": 2}


#: An Airflow MySQL connection whose character set is MySQL's ``utf8`` (utf8mb3: at most 3 bytes a character),
#: as many are defined; the test database, its server and the ledger's tables are utf8mb4.
UTF8MB3_URI = "mysql://root@127.0.0.1:3306/test?charset=utf8"


def _astral(tag: str) -> list[dict[str, Any]]:
    """Contacts whose key and email hold characters of 4 bytes in UTF-8 (emoji), unique to ``tag``."""
    return [
        {"id": f"{tag}-\U0001f600", "email": f"emoji-{tag}-\U0001f600@example.org"},
        {"id": f"{tag}-\U00020000", "email": f"cjk-{tag}-\U00020000@example.org"},
    ]


def _sent_emails(emulator) -> set[str]:
    return {str(value) for profile in emulator.profiles(1) for value in profile["fields"].values()}


@pytest.mark.parametrize("ledger_url", ["mariadb"], indirect=True)
def test_a_utf8mb3_ledger_connection_stores_four_byte_characters_and_delivers_everyone(
    emulator, airflow_db, scenario_id, ledger_url, monkeypatch, capfd
):
    """The claim's write of a key or email with an emoji failed on a connection in MySQL's utf8 (1366
    "Incorrect string value: '\\xF0\\x9F\\x98\\x80-a...'", quoting the contact's bytes): the whole chunk was
    refused, the run failed and so did every retry, nobody delivered."""
    monkeypatch.setenv("AIRFLOW_CONN_TEXT_LEDGER", UTF8MB3_URI)
    tag = uuid.uuid4().hex[:8]
    dag_run, summary = _run([*contacts(2), *_astral(tag)], scenario_id)
    assert task_states(dag_run) == {"import_and_launch": "success"}
    assert (summary["launched"], summary["rejected"]) == (4, 0)
    rows, statuses = _ledger(ledger_url, scenario_id)
    assert statuses == {"launched": 4}
    assert {key for key, _, _, _ in rows} >= {record["id"] for record in _astral(tag)}
    assert {record["email"] for record in _astral(tag)} <= _sent_emails(emulator)
    assert "Incorrect string value" not in capfd.readouterr().out


@pytest.fixture
def utf8mb4_crm(monkeypatch) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A utf8mb4 MariaDB table holding contacts with 4-byte characters, and its connection id, whose
    connection is in MySQL's utf8 (utf8mb3); the table name and contacts."""
    tag = uuid.uuid4().hex[:8]
    table = f"crm_{tag}"
    records = _astral(tag)
    crm = sa.create_engine(LEDGER_URLS["mariadb"])
    with crm.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {table} (id varchar(64), email text) CHARSET utf8mb4")
        conn.execute(sa.text(f"INSERT INTO {table} VALUES (:id, :email)"), records)
    monkeypatch.setenv("AIRFLOW_CONN_UTF8MB3_CRM", UTF8MB3_URI)
    yield table, records
    with crm.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    crm.dispose()


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_a_utf8mb3_source_connection_reads_four_byte_characters_as_they_are(
    emulator, airflow_db, scenario_id, ledger_url, utf8mb4_crm
):
    """MariaDB sent each 4-byte character as ``?`` on a connection in MySQL's utf8: ``emoji-…-?@example.org``
    is a valid address, so another contact than the source's was launched, without a word."""
    table, records = utf8mb4_crm
    columns = "id, email, NULL AS first_name, NULL AS loyalty, NULL AS phone"  # the mapping's columns
    sql = {"conn_id": "utf8mb3_crm", "sql": f"SELECT {columns} FROM {table} ORDER BY id"}
    dag_run, summary = _run([], scenario_id, source={"sql_source": sql})
    assert task_states(dag_run) == {"import_and_launch": "success"}
    assert summary["launched"] == 2
    sent = _sent_emails(emulator)
    assert {record["email"] for record in records} <= sent
    assert not any("?@example.org" in email for email in sent)
