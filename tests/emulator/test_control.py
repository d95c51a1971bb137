"""The ``/_emulator/`` control API and the pytest plugin's fixtures."""

from __future__ import annotations

import json
import os
import time

import pytest
import requests

from .helpers import ok


def test_fixture_sets_the_airflow_connection(altcraft_emulator):
    connection = json.loads(os.environ["AIRFLOW_CONN_ALTCRAFT_DEFAULT"])
    assert connection == {
        "conn_type": "altcraft",
        "host": altcraft_emulator.url,
        "password": altcraft_emulator.token,
        "extra": {},
    }
    assert json.loads(altcraft_emulator.connection_json(timeout=5))["extra"] == {"timeout": 5}


def test_state_describes_the_demo_seed(altcraft_emulator):
    state = altcraft_emulator.state()
    [db] = state["databases"]
    assert (db["id"], db["name"], db["profiles"]) == (1, "Customers", 0)
    assert {"CRM_ID", "LOYALTY", "email", "phones"} <= {f["name"] for f in db["fields"]}
    assert {(s["id"], s["is_active"], s["mode"]) for s in state["scenarios"]} == {
        (12, True, "restart"),
        (13, False, "skip"),
    }
    assert state["config"] == {
        "error_http_status": "mirror",
        "total_key": None,
        "task_success_status": "completed",
        "task_result": "per_profile",
        "strict": False,
        "task_delay_seconds": 0.2,
        "tasks_held": False,
        "max_batch_profiles": 10000,
        "max_body_bytes": 10485760,
        "latency_ms": 0,
    }
    assert (state["profiles"], state["launches"], state["tasks"], state["faults"]) == (0, 0, [], [])


def test_reset_returns_to_the_initial_seed(altcraft_emulator):
    altcraft_emulator.seed(scenarios=[{"id": 40, "db_id": 1}], databases=[{"id": 2}])
    altcraft_emulator.config(total_key="total_count", latency_ms=1)
    altcraft_emulator.add_faults({"kind": "latency", "latency_ms": 1})
    ok(altcraft_emulator.post("workflows/deactivate", {"id": 12}))
    ok(altcraft_emulator.post("workflows/import_and_start", {"workflow_id": 40, "email": "a@example.org"}))
    altcraft_emulator.reset()
    state = altcraft_emulator.state()
    assert [s["id"] for s in state["scenarios"]] == [12, 13] and state["scenarios"][0]["is_active"] is True
    assert [d["id"] for d in state["databases"]] == [1]
    assert (state["profiles"], state["launches"], state["faults"]) == (0, 0, [])
    assert state["config"]["total_key"] is None and state["config"]["latency_ms"] == 0
    first_id = ok(
        altcraft_emulator.post("profiles/import", {"db_id": 1, "email": "a@example.org", "data": {}})
    )
    assert first_id["profile_id"] == "65a0c0ff0000000000000001"


def test_a_request_delayed_across_a_reset_is_not_processed_after_it(altcraft_emulator):
    """A client that gave up on a slow request, then a reset (the next test): the request must not land
    in the fresh state when its delay ends."""
    altcraft_emulator.add_faults(
        {"endpoint": "workflows/import_and_start", "kind": "latency", "latency_ms": 800}
    )
    with pytest.raises(requests.Timeout):
        altcraft_emulator.post(
            "workflows/import_and_start", {"workflow_id": 12, "email": "slow@example.org"}, timeout=0.2
        )
    altcraft_emulator.reset()
    time.sleep(1.2)
    assert (altcraft_emulator.profiles(), altcraft_emulator.journal()) == ([], [])
    # a request made after the reset is processed as usual
    ok(altcraft_emulator.post("workflows/import_and_start", {"workflow_id": 12, "email": "new@example.org"}))
    assert [p["fields"]["email"] for p in altcraft_emulator.profiles()] == ["new@example.org"]


def test_seed_adds_and_replaces_objects(altcraft_emulator):
    altcraft_emulator.seed(
        databases=[{"id": 2, "name": "Partners", "fields": [{"name": "SCORE", "type": "float"}]}],
        scenarios=[{"id": 12, "name": "Renamed", "list_id": 2, "mode": "skip"}],
        profiles=[
            {
                "id": "bbbbbbbbbbbbbbbbbbbbbb01",
                "db_id": 2,
                "fields": {"SCORE": "1.5", "email": "p@example.org"},
            }
        ],
        tokens=[{"token": "partner", "databases": [2], "scenarios": "*"}],
    )
    assert altcraft_emulator.profiles(2) == [
        {
            "id": "bbbbbbbbbbbbbbbbbbbbbb01",
            "db_id": 2,
            "fields": {"SCORE": 1.5, "email": "p@example.org"},
            "subscriptions": [],
        }
    ]
    answer = ok(
        altcraft_emulator.post("workflows/start", {"id": 12, "email": "p@example.org"}, token="partner")
    )
    assert answer["profile_id"] == "bbbbbbbbbbbbbbbbbbbbbb01"
    scenario = next(s for s in altcraft_emulator.state()["scenarios"] if s["id"] == 12)
    assert (scenario["name"], scenario["list_id"]) == ("Renamed", 2)
    altcraft_emulator.seed(
        databases=[{"id": 2, "name": "Partners v2", "fields": [{"name": "SCORE", "type": "float"}]}]
    )
    assert len(altcraft_emulator.profiles(2)) == 1


@pytest.mark.parametrize(
    "seed",
    [
        {"databases": [{"id": 3, "fields": [{"name": "X", "type": "blob"}]}]},
        {"scenarios": [{"id": 50}]},
        {"profiles": [{"db_id": 1, "fields": {"NOPE": 1}}]},
        {"profiles": [{"db_id": 77, "fields": {}}]},
        {"databases": ["not an object"]},
        {"tokens": [{"token": "t", "databases": 5}]},
        {"scenarios": [{"id": 51, "db_id": 1}], "profiles": [{"db_id": 1, "fields": {"LOYALTY": "x"}}]},
        {"scenarios": [{"id": 52, "db_id": 77}]},
        {"triggers": [{"id": 9, "db_id": 77}]},
    ],
)
def test_invalid_seed_is_refused_and_changes_nothing(altcraft_emulator, seed):
    before = altcraft_emulator.state()
    with pytest.raises(RuntimeError, match="400"):
        altcraft_emulator.seed(**seed)
    assert altcraft_emulator.state() == before


def test_config_refuses_unknown_keys_and_bad_values(altcraft_emulator):
    for change in (
        {"colour": "red"},
        {"total_key": "sum"},
        {"total_key": ["total"]},
        {"max_batch_profiles": 0},
        {"task_delay_seconds": "x"},
        {"strict": 1},
        {"strict": "true"},
        {"tasks_held": 1},
        {"latency_ms": None},
    ):
        with pytest.raises(RuntimeError, match="400"):
            altcraft_emulator.config(**change)
    assert altcraft_emulator.config(task_delay_seconds=0.05)["task_delay_seconds"] == 0.05


def test_profiles_and_journal_filters(altcraft_emulator):
    altcraft_emulator.seed(databases=[{"id": 2}], scenarios=[{"id": 60, "db_id": 2}])
    ok(altcraft_emulator.post("workflows/import_and_start", {"workflow_id": 12, "email": "a@example.org"}))
    ok(altcraft_emulator.post("workflows/import_and_start", {"workflow_id": 60, "email": "b@example.org"}))
    assert [p["fields"]["email"] for p in altcraft_emulator.profiles(2)] == ["b@example.org"]
    assert len(altcraft_emulator.profiles()) == 2
    assert [e["scenario_id"] for e in altcraft_emulator.journal()] == [12, 60]
    assert [e["db_id"] for e in altcraft_emulator.journal(60)] == [2]


def test_the_default_scenario_link_opens_a_scenario_page(altcraft_emulator):
    import requests

    from altcraft.hooks.connection import AltcraftConnectionSettings

    pattern = AltcraftConnectionSettings().scenario_url
    page = requests.get(pattern.format(base_url=altcraft_emulator.url, scenario_id=12), timeout=10)
    missing = requests.get(pattern.format(base_url=altcraft_emulator.url, scenario_id=999), timeout=10)

    assert page.status_code == 200 and "Scenario 12: Welcome chain" in page.text
    assert missing.status_code == 404


def test_the_fault_example_in_the_docs_is_accepted(altcraft_emulator):
    import re
    from pathlib import Path

    import requests

    docs = (Path(__file__).parents[2] / "docs" / "emulator.md").read_text(encoding="utf-8")
    [body] = re.findall(r"-d '(\{\"rules\": .*\})'", docs)

    answer = requests.post(f"{altcraft_emulator.url}/_emulator/faults", json=json.loads(body), timeout=10)

    assert answer.status_code == 200, answer.text
    assert [rule["kind"] for rule in answer.json()["faults"]] == ["status"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-body-bytes", "-1"], "max_body_bytes"),
        (["--max-batch-profiles", "0"], "max_batch_profiles"),
        (["--seed", "/nonexistent/seed.json"], "--seed"),
        (["--seed", "{bad_seed}"], "--seed"),
        (["--replay", "{bad_seed}"], "--replay"),
        (["--port", "99999"], "--port"),  # was served on port 34463 (99999 - 65536)
        (["--log-level", "verbose"], "--log-level"),  # was a KeyError traceback, exit status 1
        (["--token", ""], "--token"),  # was a server answering every request 401
    ],
)
def test_bad_command_line_values_stop_the_emulator_with_a_usage_error(tmp_path, flags, message):
    """Not a server that answers every request 413, nor a traceback."""
    import subprocess
    import sys

    bad_seed = tmp_path / "seed.json"
    bad_seed.write_text('{"databases": [{"id": "x"}]}', encoding="utf-8")
    command = [sys.executable, "-m", "altcraft.emulator", "--port", "0"]
    command += [flag.format(bad_seed=bad_seed) for flag in flags]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_startup_never_takes_another_server_on_its_port_for_its_own(altcraft_emulator_server):
    """`emulator_process` picks a free port, then starts the server on it: when another emulator took the
    port in between, that one's answer must not pass for ours (a test would reset a stranger's state)."""
    import subprocess
    import sys

    from altcraft.testing import _wait_ready

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not _wait_ready(stranger, altcraft_emulator_server, timeout=1)
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize("token", [None, "my-secret-emulator-token"])
def test_the_emulator_says_where_it_listens_at_its_default_log_level(token):
    """`make emulator` printed nothing at all: uvicorn names its address at ``--log-level info`` only."""
    import re
    import select
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "altcraft.emulator",
        "--port",
        "0",
        *(["--token", token] if token else []),
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert select.select([server.stdout], [], [], 60)[0], "nothing printed within 60 s"
        line = server.stdout.readline()
        listening = re.fullmatch(
            r"Altcraft API emulator listening on (http://127\.0\.0\.1:\d+) \(API /api/v1\.1/, control API "
            r"/_emulator/, no auth\); API token: (.+)\. Ctrl-C stops it\.\n",
            line,
        )
        assert listening, line
        assert requests.get(f"{listening[1]}/_emulator/state", timeout=10).json()["pid"] == server.pid
        assert listening[2] == ("--token" if token else "the default token (docs/emulator.md)")
    finally:
        server.terminate()
        output = server.communicate(timeout=30)
    assert "emulator-token" not in line + "".join(output)
    assert token is None or token not in line + "".join(output)


def test_a_port_in_use_stops_the_emulator_without_a_listening_line():
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        command = [sys.executable, "-m", "altcraft.emulator", "--port", str(busy.getsockname()[1])]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 3, done.stderr
    assert "address already in use" in done.stderr.lower() and "listening" not in done.stdout
