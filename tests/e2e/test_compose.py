"""docker-compose.yaml stays in step with demo/airflow_env.py, which `make demo` and the e2e test run.

No Docker engine is needed: the file is read as YAML (with Compose's ``${VAR:-default}`` defaults applied),
and validated by ``docker compose config`` / ``docker-compose config`` when one of them is installed.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from demo.airflow_env import COMMON_SETTINGS, COMPONENTS, DB_MIGRATE, EMULATOR, REPO

from altcraft.hooks.connection import base_url

COMPOSE_FILE = REPO / "docker-compose.yaml"
#: Compose service of each component, named as in Airflow's official docker-compose.yaml.
SERVICES = {
    "scheduler": "airflow-scheduler",
    "dag-processor": "airflow-dag-processor",
    "triggerer": "airflow-triggerer",
    "api-server": "airflow-apiserver",
}
_DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def with_defaults(value: Any) -> Any:
    """``${VAR:-default}`` replaced by its default (as Compose does with VAR unset), recursively."""
    if isinstance(value, str):
        return _DEFAULT.sub(lambda m: m.group(2), value)
    if isinstance(value, dict):
        return {key: with_defaults(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_defaults(item) for item in value]
    return value


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return with_defaults(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))["services"]


def command(service: dict[str, Any]) -> list[str]:
    value = service["command"]
    return shlex.split(value) if isinstance(value, str) else list(value)


def airflow_services(services: dict[str, dict[str, Any]]) -> list[str]:
    return [
        name
        for name, service in services.items()
        if service.get("image") == services[SERVICES["scheduler"]]["image"]
    ]


def test_each_component_runs_the_command_of_the_shared_table(services):
    for component, args in COMPONENTS.items():
        assert command(services[SERVICES[component]]) == list(args), component


def test_airflow_init_migrates_the_database_last(services):
    init = services["airflow-init"]
    script = command(init)[-1].strip().splitlines()
    assert shlex.split(script[-1]) == ["exec", "/entrypoint", "airflow", *DB_MIGRATE]
    for component in SERVICES.values():
        assert services[component]["depends_on"]["airflow-init"] == {
            "condition": "service_completed_successfully"
        }


def test_the_emulator_runs_like_in_the_demo(services):
    emulator = command(services["altcraft-emulator"])
    assert emulator[: 1 + len(EMULATOR)] == ["python", *EMULATOR]
    port = emulator[emulator.index("--port") + 1]
    assert services["altcraft-emulator"]["ports"] == [f"{port}:{port}"]
    assert services["airflow-scheduler"]["depends_on"]["altcraft-emulator"] == {
        "condition": "service_healthy"
    }


def test_every_airflow_service_shares_the_common_settings(services):
    names = airflow_services(services)
    assert set(SERVICES.values()) <= set(names)
    for name in names:
        environment = services[name]["environment"]
        assert {key: environment.get(key) for key in COMMON_SETTINGS} == COMMON_SETTINGS, name


def test_dags_are_mounted_and_plugins_are_not_loaded_as_airflow_plugins(services):
    for name in airflow_services(services):
        targets = {volume.split(":")[1]: volume.split(":")[0] for volume in services[name]["volumes"]}
        assert targets["/opt/airflow/dags"] == "./dags", name
        assert "/opt/airflow/plugins" not in targets, name  # Airflow would import every module in it
        assert targets["/opt/altcraft/plugins/altcraft"] == "./plugins/altcraft", name


def test_the_image_installs_the_provider_from_what_the_build_copies(services):
    build = services["airflow-scheduler"]["build"]
    dockerfile = (REPO / build["context"] / build["dockerfile"]).read_text(encoding="utf-8")
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            sources = [part for part in line.split()[1:-1] if not part.startswith("--")]
            assert all((REPO / source).exists() for source in sources), line
    assert '-e "/opt/altcraft[postgres]"' in dockerfile


def test_the_altcraft_connection_comes_from_the_environment_and_defaults_to_the_emulator(services):
    from airflow.models.connection import Connection

    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    value = raw["x-airflow-common"]["environment"]["AIRFLOW_CONN_ALTCRAFT_DEFAULT"]
    assert value.startswith("${AIRFLOW_CONN_ALTCRAFT_DEFAULT:-")
    conn = Connection(conn_id="altcraft_default", uri=with_defaults(value))
    assert conn.conn_type == "altcraft"
    port = command(services["altcraft-emulator"])[-1]
    assert base_url(conn.host, conn.schema, conn.port) == f"http://altcraft-emulator:{port}"


def test_the_demo_crm_is_seeded_where_the_demo_pipeline_reads(services):
    from airflow.models.connection import Connection

    spec = yaml.safe_load((REPO / "dags" / "pipelines" / "demo_sqlite_welcome.yaml").read_text())
    conn_id = spec["source"]["conn_id"]
    conn = Connection(
        conn_id=conn_id, uri=services["airflow-scheduler"]["environment"][f"AIRFLOW_CONN_{conn_id.upper()}"]
    )
    seed = command(services["crm-seed"])
    seed_url = seed[seed.index("--url") + 1]
    assert (conn.host, conn.schema) == ("crm-postgres", "crm")
    assert f"@{conn.host}/{conn.schema}" in seed_url
    assert services["airflow-scheduler"]["depends_on"]["crm-seed"] == {
        "condition": "service_completed_successfully"
    }


def test_celery_is_one_profile_away(services):
    assert services["airflow-worker"]["profiles"] == ["celery"]
    assert command(services["airflow-worker"]) == ["celery", "worker"]
    assert services["redis"]["profiles"] == ["celery"]
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert (
        raw["x-airflow-common"]["environment"]["AIRFLOW__CORE__EXECUTOR"]
        == "${AIRFLOW_EXECUTOR:-LocalExecutor}"
    )


def test_every_dependency_is_a_service(services):
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name


def compose_cli() -> list[str] | None:
    """``docker compose`` (plugin) or ``docker-compose`` (standalone), whichever works here."""
    for candidate in (["docker", "compose"], ["docker-compose"]):
        if (
            shutil.which(candidate[0])
            and subprocess.run([*candidate, "version"], capture_output=True, check=False).returncode == 0
        ):
            return candidate
    return None


@pytest.mark.skipif(
    compose_cli() is None, reason="neither `docker compose` nor `docker-compose` is installed"
)
@pytest.mark.parametrize("profile", [[], ["--profile", "celery"]], ids=["local", "celery"])
def test_compose_validates_the_file(profile, tmp_path: Path):
    result = subprocess.run(
        [*compose_cli(), "--project-directory", str(REPO), "-f", str(COMPOSE_FILE), *profile, "config", "-q"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
