"""The package is a real Airflow provider: discovered by ProvidersManager, with its connection form."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from altcraft.hooks.connection import AltcraftConnectionSettings


@pytest.fixture(scope="module")
def providers():
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


def test_provider_is_discovered(providers):
    import altcraft

    assert providers.providers["airflow-provider-altcraft"].version == altcraft.__version__


def test_connection_type_and_form(providers):
    behaviour = providers.field_behaviours["altcraft"]
    assert set(behaviour["hidden_fields"]) == {"schema", "login", "port"}
    assert behaviour["relabeling"] == {"host": "Platform URL", "password": "API token"}
    prefix = "extra__altcraft__"
    widgets = {k.removeprefix(prefix) for k in providers.connection_form_widgets if k.startswith(prefix)}
    assert widgets == {
        "timeout",
        "max_retries",
        "backoff_max",
        "token_in_body",
        "max_answer_bytes",
        "batch_item_layout",
        "scenario_url",
    }
    assert widgets <= set(AltcraftConnectionSettings.model_fields), "every form field is a setting"


def test_the_connection_form_shows_each_settings_default(providers):
    # The form used to show "send token in body" off while the hook's default is on.
    for key, widget in providers.connection_form_widgets.items():
        if key.startswith("extra__altcraft__"):
            default = AltcraftConnectionSettings.model_fields[widget.field_name].default
            assert widget.field["value"] == default, widget.field_name


def test_the_connection_form_takes_only_numbers_the_hook_takes(providers):
    """The form's number fields had no maximum: a value past the hook's bound (Retries 1000) was saved, and
    every task then failed on it. The UI bounds its number inputs by the schema's minimum and maximum."""
    numbers = 0
    for key, widget in providers.connection_form_widgets.items():
        schema = widget.field["schema"]
        if key.startswith("extra__altcraft__") and {"number", "integer"} & set(schema["type"]):
            numbers += 1
            rules = AltcraftConnectionSettings.model_fields[widget.field_name].metadata
            bound = {type(rule).__name__: rule for rule in rules}  # annotated_types' Gt, Ge, Le
            assert schema.get("maximum") == bound["Le"].le, widget.field_name
            assert (
                schema["minimum"] == bound["Ge"].ge if "Ge" in bound else schema["minimum"] > bound["Gt"].gt
            )
    assert numbers == 4


def test_hook_and_link_are_registered(providers):
    link = "altcraft.operators.import_and_launch.AltcraftScenarioLink"
    assert link in providers.extra_links_class_names
    assert providers.hooks["altcraft"].hook_class_name == "altcraft.hooks.altcraft.AltcraftHook"


def test_airflow_cli_lists_the_provider():
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list"], capture_output=True, text=True, check=True
    ).stdout
    assert "airflow-provider-altcraft" in out


def test_the_celery_extra_installs_a_celery_executor_that_imports():
    """The versions the `celery` extra allows work together (docs/scaling.md): celery 5.7.0 dropped a name
    apache-airflow-providers-celery 3.26.0 imports, and the scheduler then exits at start. In a fresh
    interpreter, as a scheduler loads it (the end-to-end Celery tests are not part of `make test`)."""
    statement = "import airflow.providers.celery.executors.celery_executor_utils"
    done = subprocess.run([sys.executable, "-c", statement], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_build_asks_for_a_setuptools_that_reads_the_license():
    """pyproject.toml's ``license`` is an SPDX expression (PEP 639), which setuptools reads from 77.0 on:
    76.1.0 refuses the file ("`project.license` must be valid exactly by one definition"), and the build
    requirement allowed anything from 69."""
    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8"))
    [setuptools] = [
        Requirement(text) for text in pyproject["build-system"]["requires"] if text.startswith("setuptools")
    ]

    assert isinstance(pyproject["project"]["license"], str)
    assert not setuptools.specifier.contains("76.1.0")
    assert setuptools.specifier.contains("77.0.0")


#: What Airflow's components do with the installed providers: the API server's connection form and
#: ``airflow providers`` commands (ProvidersManager), a worker's hooks (ProvidersManagerTaskRuntime), the
#: plugins, and every component listing DAG bundles with the example DAGs on (DagBundlesManager), which
#: imports each provider's module to look for its example DAGs. Prints every warning or error logged.
LOAD_EVERYTHING = """
import json
import logging

import airflow  # configures logging first

kept = []


class Keep(logging.Handler):
    def emit(self, record):
        kept.append(self.format(record))


keep = Keep(logging.WARNING)
keep.setFormatter(logging.Formatter())
logging.getLogger().addHandler(keep)

from airflow import plugins_manager
from airflow.dag_processing.bundles.manager import DagBundlesManager
from airflow.providers_manager import ProvidersManager
from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

manager = ProvidersManager()
list(manager.iter_connection_type_hook_ui_metadata())
for facet in ("connection_form_widgets", "field_behaviours", "extra_links_class_names", "plugins", "trigger",
              "notification", "provider_configs", "dialects"):
    getattr(manager, facet)
hook = ProvidersManagerTaskRuntime().hooks["altcraft"]
plugins_manager.get_plugin_info()
bundles = DagBundlesManager()
print(json.dumps({
    "hook": hook.hook_class_name,
    "form": sorted(key for key in manager.connection_form_widgets if key.startswith("extra__altcraft__")),
    "bundles": sorted(name for name, _ in bundles._bundle_config.items()),
    "plugin_errors": plugins_manager.get_import_errors(),
    "logged": kept,
}))
"""


def test_airflow_loads_the_provider_without_a_warning(tmp_path):
    """With the example DAGs on (true in a new AIRFLOW_HOME), every component listing DAG bundles logged
    "Could not load provider module airflow_provider_altcraft for example DAG discovery" with a traceback:
    Airflow imports each provider's module, guessed from its distribution name."""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "True"}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_EVERYTHING], capture_output=True, text=True, env=env, timeout=240
    )

    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["hook"] == "altcraft.hooks.altcraft.AltcraftHook"
    assert len(loaded["form"]) == 7 and "example_dags" in loaded["bundles"]
    assert [error for error in loaded["plugin_errors"].values() if "altcraft" in error] == []
    assert [line for line in loaded["logged"] if "altcraft" in line.lower()] == []
