"""`python -m altcraft probe` against the emulator: read-only checks, a test contact, a recording."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from altcraft.__main__ import main

PIPELINE = Path(__file__).parents[2] / "dags" / "pipelines" / "demo_sqlite_welcome.yaml"


def _rows(text: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in text.splitlines()[2:]:
        check, result, detail = (part.strip() for part in line.split("|", 2))
        rows[check] = (result, detail)
    return rows


def test_read_only_probe_checks_token_scenario_database_fields_and_matching(altcraft_emulator, capsys):
    before = altcraft_emulator.state()
    assert main(["probe", "--pipeline", str(PIPELINE)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows["token (header)"] == (
        "ok",
        "accepted in the Authorization: Bearer header; 1 database(s) visible",
    )
    assert rows["token (body)"] == ("ok", "accepted in the body 'token'; 1 database(s) visible")
    assert rows["scenario 12"] == ("ok", "active")
    assert rows["database"] == ("ok", "scenario works on database 1")
    assert rows["matching"][0] == "ok" and rows["fields"] == ("ok", "3 mapped field(s) exist in database 1")
    after = altcraft_emulator.state()
    assert (after["profiles"], after["launches"]) == (before["profiles"], before["launches"]) == (0, 0)


def test_read_only_probe_fails_on_inactive_scenario_wrong_database_and_missing_field(
    altcraft_emulator, capsys
):
    altcraft_emulator.seed(databases=[{"id": 1, "name": "Customers", "fields": [{"name": "CRM_ID"}]}])
    assert main(["probe", "--pipeline", str(PIPELINE), "--scenario", "13", "--db", "2"]) == 1
    rows = _rows(capsys.readouterr().out)
    assert rows["scenario 13"] == ("FAIL", "NOT active")
    assert rows["database"] == ("FAIL", "scenario works on database 1, not 2")
    assert rows["fields"] == ("FAIL", "missing in database 2: LOYALTY") or rows["fields"][0] in (
        "FAIL",
        "skip",
    )


def test_a_refused_token_names_the_field_to_fix(altcraft_emulator, monkeypatch, capsys):
    """The token rows (and so the connection form's Test button) of a token Altcraft refuses say where the
    token goes; they said only "HTTP 403, error 403: Invalid API token"."""
    connection = json.loads(os.environ["AIRFLOW_CONN_ALTCRAFT_DEFAULT"])
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALTCRAFT_DEFAULT", json.dumps({**connection, "password": "not-the-token"})
    )

    assert main(["probe", "--scenario", "12"]) == 1
    rows = _rows(capsys.readouterr().out)
    for check in ("token (header)", "token (body)"):
        assert "Invalid API token: check the API token (password field)" in rows[check][1], rows[check]


def test_probe_with_a_test_contact_launches_it_every_way_and_records(altcraft_emulator, tmp_path):
    record = tmp_path / "probe.json"
    env = {**os.environ, "AIRFLOW_CONN_ALTCRAFT_DEFAULT": altcraft_emulator.connection_json()}
    command = [sys.executable, "-m", "altcraft", "probe", "--scenario", "12", "--task-timeout", "20"]
    done = subprocess.run(
        [*command, "--test-contact", "probe.person@example.org", "--record", str(record)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = _rows(done.stdout.rsplit("\nrecorded", 1)[0])
    for check in ("single", "batch (hedged)", "batch (nested)", "batch (data)", "batch (flat)", "async"):
        assert rows[check][0] == "accepted", (check, rows[check])
    assert "status 'completed'" in rows["async"][1]
    for check in ("result order (import)", "result order (batch)"):
        assert (
            rows[check] == ("ok", rows[check][1])
            and "each carries error, error_text, profile_id" in rows[check][1]
        )
    # one profile, launched seven times (single, four batch layouts, async, the result-order batch)
    [profile] = altcraft_emulator.profiles(1)
    assert profile["fields"]["email"] == "probe.person@example.org"
    assert len(altcraft_emulator.journal(12)) == 7
    text = record.read_text("utf-8")
    assert altcraft_emulator.token not in text and "probe.person@example.org" not in text
    recording = json.loads(text)
    endpoints = {e["endpoint"] for e in recording["exchanges"]}
    assert {"workflows/import_and_start_batch_task", "tasks/status", "databases/list"} <= endpoints
    assert all(e["request"].get("token") in (None, "***") for e in recording["exchanges"])


def test_recording_scrubs_the_token_and_masks_contacts_unless_kept():
    from altcraft.probe import Exchanger

    body = {"token": "sekret-token", "email": "anna.k@example.org", "note": "sekret-token for +79001234567"}
    masked = Exchanger("http://x", "sekret-token")._recorded(body)
    assert masked["token"] == "***" and "sekret-token" not in json.dumps(masked)
    assert "anna.k@example.org" not in json.dumps(masked) and "+79001234567" not in json.dumps(masked)
    kept = Exchanger("http://x", "sekret-token", keep_contact=True)._recorded(body)
    assert kept["email"] == "anna.k@example.org" and kept["note"] == "*** for +79001234567"


def test_probe_checks_the_launch_marker_field(altcraft_emulator, capsys):
    altcraft_emulator.seed(
        databases=[
            {
                "id": 1,
                "name": "Customers",
                "fields": [
                    {"name": "CRM_ID", "type": "string"},
                    {"name": "LOYALTY", "type": "int"},
                    {"name": "AF_SYNC", "type": "string"},
                    {"name": "AGE", "type": "int"},
                ],
            }
        ]
    )
    assert main(["probe", "--pipeline", str(PIPELINE), "--marker-field", "AF_SYNC"]) == 0
    assert _rows(capsys.readouterr().out)["launch marker"] == (
        "ok",
        "custom string field 'AF_SYNC' can carry the marker",
    )
    assert main(["probe", "--pipeline", str(PIPELINE), "--marker-field", "AGE"]) == 1
    assert _rows(capsys.readouterr().out)["launch marker"] == (
        "FAIL",
        "launch marker field 'AGE' must be a custom string field (it is int)",
    )
    assert main(["probe", "--scenario", "12", "--marker-field", "AF_MISSING"]) == 1
    result, detail = _rows(capsys.readouterr().out)["launch marker"]
    assert result == "FAIL" and "'AF_MISSING' does not exist" in detail


@pytest.mark.parametrize(
    ("endpoint", "check"),
    [
        ("profiles/import_batch", "result order (import)"),
        ("workflows/import_and_start_batch", "result order (batch)"),
    ],
)
def test_probe_fails_when_batch_results_come_in_another_order(altcraft_emulator, capsys, endpoint, check):
    """The answer to the result-order batch is rotated: the probe says so and fails; nobody but the test
    contact is launched (the items without a matching key are refused, in any order)."""
    before = len(altcraft_emulator.journal(12))
    altcraft_emulator.add_faults({"endpoint": endpoint, "kind": "reorder_results", "every": 1})
    args = ["probe", "--scenario", "12", "--task-timeout", "20", "--test-contact", "probe.person@example.org"]
    assert main(args) == 1
    rows = _rows(capsys.readouterr().out)
    assert rows[check] == ("FAIL", "results are NOT in request order: deliver with mode single")
    assert {e["key"] for e in altcraft_emulator.journal(12)[before:]} == {"probe.person@example.org"}


def test_a_connection_that_does_not_exist_is_named_without_a_traceback(capsys):
    """`--conn-id` naming no connection (a typo, another AIRFLOW_HOME) ended in AirflowNotFoundException's
    traceback."""
    assert main(["probe", "--conn-id", "no_such_altcraft", "--scenario", "12"]) == 2

    error = capsys.readouterr().err
    assert error.startswith("probe: The conn_id `no_such_altcraft` isn't defined: add it"), error


def test_probe_reads_a_connection_made_with_airflow_connections_add(altcraft_emulator, airflow_db):
    """The README's path: `airflow connections add` stores the connection in the metadata database, and
    `python -m altcraft probe --conn-id` must find it there (not only in AIRFLOW_CONN_* variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    add = [sys.executable, "-m", "airflow", "connections", "add", "probe_metastore", "--conn-type"]
    added = subprocess.run(
        [*add, "altcraft", "--conn-host", altcraft_emulator.url, "--conn-password", altcraft_emulator.token],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert added.returncode == 0 or "already exists" in added.stdout + added.stderr, added.stderr
    done = subprocess.run(
        [sys.executable, "-m", "altcraft", "probe", "--conn-id", "probe_metastore", "--scenario", "12"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert _rows(done.stdout)["scenario 12"] == ("ok", "active")


@pytest.mark.parametrize(
    ("document", "accepted"),
    [
        (
            {"error": 0, "result": [{"error": 0, "error_text": "Successful operation", "profile_id": "p1"}]},
            True,
        ),
        ({"error": "0", "result": [{"error": "0", "error_text": "", "profile_id": "p1"}]}, True),
        # each entry has its own `error` (profiles/2195496): one without it says nothing of the profile
        ({"error": 0, "result": [{"error_text": "Successful operation", "profile_id": "p1"}]}, False),
        ({"error": 0, "result": [{"error": None, "profile_id": "p1"}]}, False),
        ({"error": 0, "result": [{"error": 400, "error_text": "bad"}]}, False),
        ({"error": "invalid token"}, False),
    ],
)
def test_probe_reads_answers_as_the_hooks_do(document, accepted):
    """A layout is reported accepted only when the delivery would read the contact launched."""
    from altcraft.probe import Answer, _item_ok

    assert _item_ok(Answer(200, document)) is accepted


def test_probe_order_check_does_not_read_a_result_without_an_error_code_as_launched():
    from altcraft.probe import NOBODY, Answer, _order_row

    contact = {"email": "probe.person@example.org", "data": {"email": "probe.person@example.org"}}
    results = [{"error": 400, "error_text": "no key"}, {"error_text": "", "profile_id": "p1"}]
    row = _order_row(
        "result order (batch)", [Answer(200, {"error": 0, "result": results})], [[NOBODY, contact]]
    )
    assert (row.result, row.detail) == ("FAIL", "result 2 has no error code the delivery can read")


def test_a_record_file_that_cannot_be_written_stops_the_probe_before_it_sends(altcraft_emulator, capsys):
    """`--record` into a folder that does not exist ended in a FileNotFoundError traceback after the probe
    had launched its test contact: the answers were lost, and probing again launched the contact again."""
    assert (
        main(
            [
                "probe",
                "--scenario",
                "12",
                "--test-contact",
                "probe.person@example.org",
                "--record",
                "/nonexistent/folder/answers.json",
            ]
        )
        == 2
    )

    assert "cannot write --record /nonexistent/folder/answers.json" in capsys.readouterr().err
    assert altcraft_emulator.state()["launches"] == 0


@pytest.mark.parametrize("flag", ["--pipeline", "--record"])
def test_an_empty_path_is_a_usage_error(altcraft_emulator, capsys, flag):
    """`--pipeline "$SPEC"` with SPEC unset probed without the pipeline's checks, `--record ""` recorded
    nothing, both without a word."""
    with pytest.raises(SystemExit) as usage_error:
        main(["probe", "--scenario", "12", flag, ""])

    assert usage_error.value.code == 2
    assert f"argument {flag}: empty" in capsys.readouterr().err
