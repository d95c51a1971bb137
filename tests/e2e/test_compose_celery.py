"""docker-compose.yaml's ``celery`` profile runs with the settings of `make celery-demo` and its e2e test.

No Docker engine is needed: the file is read as YAML, as in test_compose.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from demo.airflow_env import CELERY_SETTINGS
from demo.celery_demo import REDIS_DB

from .test_compose import COMPOSE_FILE, airflow_services, with_defaults

EXECUTOR = "AIRFLOW__CORE__EXECUTOR"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return with_defaults(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))["services"]


def test_every_airflow_service_has_the_celery_settings_of_the_e2e_test(services):
    expected = {key: value for key, value in CELERY_SETTINGS.items() if key != EXECUTOR}
    for name in airflow_services(services):
        environment = services[name]["environment"]
        assert {key: environment.get(key) for key in expected} == expected, name
        assert environment["AIRFLOW__CELERY__BROKER_URL"].endswith(f":6379/{REDIS_DB}"), name
        assert environment["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://"), name


def test_the_compose_file_says_how_to_switch_to_the_e2e_tests_executor():
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert f"AIRFLOW_EXECUTOR={CELERY_SETTINGS[EXECUTOR]} docker compose --profile celery up" in text
    assert "--scale airflow-worker=2" in text
