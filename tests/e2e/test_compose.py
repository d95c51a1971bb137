"""docker-compose.yaml stays in step with demo/airflow_env.py, which `make demo` and the e2e test run.

No Docker engine is needed: the file is read as YAML (with Compose's ``${VAR:-default}`` defaults applied),
and validated by ``docker compose config`` / ``docker-compose config`` when one of them is installed.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import tomllib
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


def init_script(services: dict[str, dict[str, Any]]) -> list[list[str]]:
    """The airflow-init job's shell script, one split command per line (continuations joined)."""
    text = command(services["airflow-init"])[-1].replace("\\\n", " ")
    return [shlex.split(line) for line in text.strip().splitlines()]


def test_airflow_init_writes_every_file_then_hands_them_to_the_airflow_user(services):
    # As Airflow's official 3.x compose file: `airflow config list` (airflow.cfg, mode 0600, with the
    # fernet key and JWT secret) and the rest run as root first; one chown -R to AIRFLOW_UID comes last.
    # A chown before them left airflow.cfg unreadable to the components, each inventing its own secret.
    init = services["airflow-init"]
    script = init_script(services)
    assert init["user"] == "0:0"
    writes = {
        "config": ["/entrypoint", "airflow", "config", "list"],
        "migrate": ["/entrypoint", "airflow", *DB_MIGRATE],
    }
    position = {
        name: next(i for i, line in enumerate(script) if _contains(line, args))
        for name, args in writes.items()
    }
    passwords = next(i for i, line in enumerate(script) if "/opt/airflow/config/passwords.json" in line)
    chown = script[-1]
    assert chown[:2] == ["chown", "-R"] and set(chown[3:]) == {"/opt/airflow/config", "/opt/airflow/logs"}
    assert max(*position.values(), passwords) < len(script) - 1
    assert [i for i, line in enumerate(script) if "chown" in line] == [len(script) - 1]
    uid = chown[2]
    for name in airflow_services(services):
        if name != "airflow-init":
            assert services[name]["user"] == uid, name  # the owner chown gives the files
    for component in SERVICES.values():
        assert services[component]["depends_on"]["airflow-init"] == {
            "condition": "service_completed_successfully"
        }


def _contains(words: list[str], part: list[str]) -> bool:
    return any(words[i : i + len(part)] == part for i in range(len(words)))


def test_every_component_reads_the_one_airflow_cfg_airflow_init_writes(services):
    for name in airflow_services(services):
        environment = services[name]["environment"]
        assert environment["AIRFLOW_CONFIG"] == "/opt/airflow/config/airflow.cfg", name
        assert "airflow-config:/opt/airflow/config" in services[name]["volumes"], name
        # no component overrides the shared secrets with its own
        assert not {"AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY"} & set(environment), name


def sent_to_the_build(path: str) -> bool:
    """Whether ``.dockerignore`` lets ``path`` (relative to the repository) into the build context."""
    rules = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    included = True
    for rule in rules:
        pattern = rule.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            included = rule.startswith("!")
    return included


def copied_into_the_image() -> list[str]:
    """The sources of demo/Dockerfile's ``COPY`` lines."""
    dockerfile = (REPO / "demo" / "Dockerfile").read_text(encoding="utf-8")
    return [
        part
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for part in line.split()[1:-1]
        if not part.startswith("--")
    ]


def test_the_build_context_holds_only_what_the_image_copies():
    copied = copied_into_the_image()
    assert copied and all(sent_to_the_build(path) for path in copied), copied
    for path in (".venv/bin/python", ".airflow/airflow.db", ".git/HEAD", "tests/conftest.py", "dags/x.py"):
        assert not sent_to_the_build(path), path


def test_the_image_installs_every_module_the_package_ships():
    """pyproject.toml's top-level modules (``airflow_provider_altcraft``, which Airflow imports by the
    distribution's name) reach the image: the build context and the COPY lines once let only the
    ``altcraft`` package through, and the image's install left the module out without an error."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    root = setuptools["package-dir"][""]
    shipped = [f"{root}/{module}.py" for module in setuptools["py-modules"]] + [f"{root}/altcraft"]
    copied = copied_into_the_image()

    assert shipped and all((REPO / path).exists() for path in shipped), shipped
    assert [path for path in shipped if not sent_to_the_build(path)] == []
    assert [path for path in shipped if not any(path == c or path.startswith(f"{c}/") for c in copied)] == []


def test_the_emulator_runs_like_in_the_demo(services):
    emulator = command(services["altcraft-emulator"])
    assert emulator[: 1 + len(EMULATOR)] == ["python", *EMULATOR]
    port = emulator[emulator.index("--port") + 1]
    # the control API has no authentication: published on the host's loopback only
    assert services["altcraft-emulator"]["ports"] == [f"127.0.0.1:{port}:{port}"]
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

    from altcraft.hooks.connection import connection_settings

    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    value = raw["x-airflow-common"]["environment"]["AIRFLOW_CONN_ALTCRAFT_DEFAULT"]
    assert value.startswith("${AIRFLOW_CONN_ALTCRAFT_DEFAULT:-")
    conn = Connection(conn_id="altcraft_default", uri=with_defaults(value))
    assert conn.conn_type == "altcraft"
    port = command(services["altcraft-emulator"])[-1]
    base = base_url(conn.host, conn.schema, conn.port)
    assert base == f"http://altcraft-emulator:{port}"
    # The scenario link is opened by a browser on the host, where only the published port answers.
    link = connection_settings(conn.extra_dejson).scenario_url.format(base_url=base, scenario_id=12)
    assert link == f"http://localhost:{port}/workflows/12"
    assert f"127.0.0.1:{port}:{port}" in services["altcraft-emulator"]["ports"]


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
