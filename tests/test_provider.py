"""The package is a real Airflow provider: discovered by ProvidersManager, with its connection form."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
