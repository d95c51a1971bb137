"""The README's "Install into an existing Airflow" commands, run as written in a fresh virtualenv.

The virtualenv holds only Airflow (the version installed here) and a migrated SQLite metadata database:
the user's existing Airflow. Then the README's code blocks of that section run in bash, from a copy of
the checkout, with ``ALTCRAFT_URL`` / ``ALTCRAFT_TOKEN`` pointing at an emulator and ``my_pipeline.yaml``
reading a small SQLite CRM. ``pip`` is uv's (same requirements, same resolver inputs, a shared cache:
about a minute instead of several).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from demo.airflow_env import REPO
from demo.seed_crm import sample_contacts, write_contacts

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

UV = REPO / ".venv" / "bin" / "uv"
#: `airflow dags test my_pipeline 2026-03-01` reads the day before it (a manual run's last complete interval).
DAY_AFTER = datetime(2026, 3, 1, tzinfo=UTC)


def readme_commands(section: str) -> str:
    """The ```bash blocks of one README section, as one script."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```bash\n(.*?)```", body, flags=re.DOTALL))


def checkout_copy(root: Path) -> Path:
    """The files git tracks, as a fresh clone would have them."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, target)
    return root


def my_pipeline(crm_conn_id: str) -> dict:
    return {
        "id": "my_pipeline",
        "schedule": "1d",
        "timezone": "UTC",
        "start_date": "2026-01-01",
        "retries": 0,
        "source": {
            "type": "sql_table",
            "conn_id": crm_conn_id,
            "table": "contacts",
            "key_column": "id",
            "created_at_column": "created_at",
        },
        "mapping": {"matching": "email", "key": {"email": "email"}, "fields": {"_fname": "first_name"}},
        "scenario": {"id": 12, "db_id": 1},
        "max_rejected_ratio": 0.5,
    }


def test_the_readme_install_commands_work_in_a_fresh_airflow(tmp_path, e2e_emulator):
    import airflow

    script = readme_commands("Install into an existing Airflow")
    assert 'pip install ".[sqlite]"' in script and "airflow dags test my_pipeline" in script
    venv, home, shims = tmp_path / "venv", tmp_path / "airflow-home", tmp_path / "shims"
    checkout = checkout_copy(tmp_path / "checkout")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "VIRTUAL_ENV"))}
    env |= {
        "PATH": f"{shims}:{venv / 'bin'}:{env['PATH']}",
        "VIRTUAL_ENV": str(venv),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "ALTCRAFT_URL": e2e_emulator.url,
        "ALTCRAFT_TOKEN": e2e_emulator.token,
        "AIRFLOW_CONN_CRM": f'{{"conn_type": "sqlite", "host": "{tmp_path / "crm.db"}"}}',
    }
    shims.mkdir()
    (shims / "pip").write_text(f'#!/bin/sh\nexec "{UV}" pip "$@"\n')
    (shims / "pip").chmod(0o755)

    def run(command: str, timeout: float = 900) -> None:
        started = time.monotonic()
        log = tmp_path / f"step-{started:.0f}.log"
        with log.open("wb") as output:
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=checkout,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        text = log.read_text(errors="replace")
        assert done.returncode == 0, f"{command}\n{text[-6000:]}"
        print(f"{time.monotonic() - started:6.1f} s  {command.splitlines()[0]}")

    # The user's existing Airflow: only Airflow, and its metadata database.
    subprocess.run([UV, "venv", "-q", "--python", "3.11", str(venv)], check=True, env=env)
    run(f'pip install -q "apache-airflow=={airflow.__version__}"')
    run("airflow db migrate")
    contacts = sample_contacts(end=DAY_AFTER, days=1, per_day=20, broken_every=7)
    write_contacts(f"sqlite:///{tmp_path / 'crm.db'}", contacts)
    (checkout / "my_pipeline.yaml").write_text(yaml.safe_dump(my_pipeline("crm"), sort_keys=False))

    run(script.replace("pip install", "pip install -q"))

    dags = home / "dags"
    assert sorted(p.name for p in dags.iterdir()) == [
        "altcraft_pipelines.py",
        "altcraft_pipelines_check.py",
        "pipelines",
    ]
    valid = {c.email for c in contacts if c.problem is None and c.email}
    launched = {entry["key"] for entry in e2e_emulator.journal(12)}
    assert valid and launched == valid
