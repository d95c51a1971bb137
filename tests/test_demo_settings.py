"""The demos' environment settings: `DEMO_API_PORT=abc` ended `make demo` in a Python traceback, and
`DEMO_KEEP_RUNNING=false` kept the demo running (only `0` stopped it). Each value is now checked before
anything starts, and one that does not fit is a usage error naming its variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from demo.airflow_env import REPO
from demo.run import demo_settings, last_line
from demo.settings import SettingError


def run_module(module: str, tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DEMO_", "CELERY_DEMO_"))}
    return subprocess.run(
        [sys.executable, "-m", module],
        cwd=REPO,
        env={**environment, "DEMO_HOME": str(tmp_path / "state"), **variables},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("DEMO_API_PORT", "abc", "DEMO_API_PORT must be a whole number from 1 to 65,535, got 'abc'"),
        ("DEMO_EMULATOR_PORT", "70000", "DEMO_EMULATOR_PORT must be a whole number from 1 to 65,535"),
        ("DEMO_KEEP_RUNNING", "maybe", "DEMO_KEEP_RUNNING must be true or false (1/0, yes/no), got 'maybe'"),
        ("DEMO_DAGS_FOLDER", "/nonexistent/dags", "DEMO_DAGS_FOLDER names /nonexistent/dags, which does not"),
    ],
)
def test_a_demo_setting_that_does_not_fit_is_a_usage_error_naming_it(tmp_path, variable, value, said):
    done = run_module("demo.run", tmp_path, **{variable: value})

    assert done.returncode == 2, done.stderr
    assert said in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "state").exists()  # nothing was started or written


def test_a_celery_demo_setting_that_does_not_fit_is_a_usage_error_naming_it(tmp_path):
    done = run_module("demo.celery_demo", tmp_path, CELERY_DEMO_WORKERS="5")

    assert done.returncode == 2, done.stderr
    assert "CELERY_DEMO_WORKERS must be a whole number from 1 to 2, got '5'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("value", "keep_running"),
    [
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("1", True),
        ("TRUE", True),
        ("yes", True),
    ],
)
def test_keep_running_takes_the_usual_spellings(value, keep_running):
    assert demo_settings({"DEMO_KEEP_RUNNING": value}).keep_running is keep_running


def test_unset_or_empty_settings_take_the_defaults():
    for environ in ({}, {"DEMO_KEEP_RUNNING": "", "DEMO_API_PORT": " ", "DEMO_HOME": ""}):
        settings = demo_settings(environ)
        assert (settings.api_port, settings.emulator_port, settings.keep_running) == (8080, 8765, True)
        assert settings.home == (REPO / ".airflow").resolve()


def test_the_two_ports_must_differ():
    with pytest.raises(SettingError, match="DEMO_API_PORT and DEMO_EMULATOR_PORT are both 9000"):
        demo_settings({"DEMO_API_PORT": "9000", "DEMO_EMULATOR_PORT": "9000"})


def test_a_demo_that_exits_after_the_summary_says_its_addresses_are_gone():
    """With DEMO_KEEP_RUNNING=0 the demo printed the UI's address and login as its last words and exited,
    stopping the UI: a newcomer opening that address found nothing listening (2026-12-07)."""
    stopped = last_line(keep_running=False, pid=4321)

    assert "has stopped" in stopped and "kill" not in stopped
    assert last_line(keep_running=True, pid=4321) == (
        "Everything keeps running; press Ctrl-C (or kill 4321) to stop."
    )
