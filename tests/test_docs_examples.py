"""README.md and docs/*.md: every example, setting, flag and make target they name works as written.

Code blocks are found by their fences. An HTML comment on the line just before a fence marks a block that
is not complete on its own (see README.md, "Development"):

* ``<!-- example: fragment -->`` on a ``yaml`` block: a part of a pipeline spec; it is laid over a complete
  spec (a CRM source, whose mapping preset it may override) and validated;
* ``<!-- example: illustrative -->`` on a ``python`` block: a sketch with placeholders; it is only compiled.

Every other ``yaml`` block is a whole pipeline spec, loaded by the DAG-folder loader; every other ``python``
block is run inside a DAG (and the README's operator example is run with ``dag.test()``); ``ini`` blocks
may name only options the provider declares; the webhook's ``bash`` recipe is run against the endpoint.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import subprocess
import textwrap
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from fastapi import FastAPI

from altcraft.hooks.connection import AltcraftConnectionSettings
from altcraft.pipelines import PipelineSpec, load_pipelines
from altcraft.provider_info import get_provider_info
from altcraft.webhooks.app import WebhookConfig, create_app
from altcraft.webhooks.plugin import URL_PREFIX
from altcraft.webhooks.store import WebhookStore
from tests.airflow_helpers import import_dag
from tests.conftest import REPO
from tests.fake_crms.server import serving_app

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKERS = {"fragment": "yaml", "illustrative": "python"}
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
MARKER = re.compile(r"<!-- example: (\S+) -->")
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    marker: str | None
    text: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, each with the marker of the line before its fence."""
    text = path.read_text(encoding="utf-8")
    found = []
    for fence in FENCE.finditer(text):
        before = text[: fence.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.fullmatch(before.strip())
        found.append(
            Block(
                path=path,
                line=text.count("\n", 0, fence.start()) + 1,
                lang=fence["lang"],
                marker=marker[1] if marker else None,
                text=textwrap.dedent(fence["body"]),
            )
        )
    return found


BLOCKS = [block for path in DOCS for block in code_blocks(path)]


def blocks(lang: str, marker: str | None) -> list[Any]:
    return [pytest.param(b, id=str(b)) for b in BLOCKS if b.lang == lang and b.marker == marker]


def test_blocks_are_found_and_markers_are_known():
    assert len([b for b in BLOCKS if b.lang == "yaml"]) >= 8
    assert len([b for b in BLOCKS if b.lang == "python"]) >= 3
    misplaced = [b for b in BLOCKS if b.marker and MARKERS.get(b.marker) != b.lang]
    assert [f"{b}: {b.marker} on {b.lang}" for b in misplaced] == []


# --------------------------------------------------------------------------------------------- YAML


@pytest.mark.parametrize("block", blocks("yaml", None))
def test_a_pipeline_spec_loads_into_a_dag(block: Block, tmp_path: Path):
    spec = yaml.safe_load(block.text)
    (tmp_path / "example.yaml").write_text(block.text, encoding="utf-8")

    loaded = load_pipelines(tmp_path)

    assert [str(error) for error in loaded.errors] == []
    assert list(loaded.dags) == [spec["id"]]


FRAGMENT_BASE = {
    "id": "fragment_example",
    "timezone": "UTC",
    "start_date": "2025-01-01",
    "schedule": "@daily",
    "source": {"type": "amocrm", "conn_id": "crm_amocrm"},
    "scenario": {"id": 12, "db_id": 1},
}


@pytest.mark.parametrize("block", blocks("yaml", "fragment"))
def test_a_spec_fragment_is_valid_in_a_spec(block: Block):
    fragment = yaml.safe_load(block.text)

    spec = PipelineSpec.model_validate({**FRAGMENT_BASE, **fragment})

    assert set(fragment) <= set(spec.model_fields_set)


# ------------------------------------------------------------------------------------------- Python

SNIPPET_DAG = """\
import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable

with DAG(
    "{dag_id}",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 3, 1, tz="UTC"),
) as dag:
{snippet}
"""


def import_dag_file(text: str, name: str, folder: Path) -> Any:
    """Write ``text`` as the only DAG file of ``folder`` and import its ``dag``."""
    for old in folder.glob("*.py"):
        old.unlink()
    target = folder / f"{name}.py"
    target.write_text(text, encoding="utf-8")
    return import_dag(target, name)


def snippet_dag(block: Block, folder: Path) -> Any:
    dag_id = f"docs_{uuid.uuid4().hex[:10]}"
    text = SNIPPET_DAG.format(dag_id=dag_id, snippet=textwrap.indent(block.text, "    "))
    return import_dag_file(text, dag_id, folder)


@pytest.mark.parametrize("block", blocks("python", None))
def test_a_python_example_builds_its_tasks(block: Block, tmp_path: Path):
    dag = snippet_dag(block, tmp_path)

    assert dag.tasks


@pytest.mark.parametrize("block", blocks("python", "illustrative"))
def test_an_illustrative_python_sketch_compiles(block: Block):
    compile(block.text, str(block), "exec")


@pytest.fixture
def crm_postgres(monkeypatch):
    """A fresh PostgreSQL database as ``crm_postgres`` with the README's ``contacts`` table; dropped after."""
    database = f"altcraft_docs_{uuid.uuid4().hex[:10]}"
    server = sa.create_engine(f"{PG}/test", isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {database}"))
    engine = sa.create_engine(f"{PG}/{database}")
    monkeypatch.setenv("AIRFLOW_CONN_CRM_POSTGRES", f"postgresql://postgres@127.0.0.1:5432/{database}")
    yield engine
    engine.dispose()
    with server.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE {database} WITH (FORCE)"))
    server.dispose()


def test_the_readme_operator_example_launches_the_contacts_of_its_window(
    airflow_db, altcraft_emulator, crm_postgres
):
    [block] = [b for b in BLOCKS if b.path.name == "README.md" and b.lang == "python"]
    day = datetime(2026, 3, 1, tzinfo=UTC)
    created = {n: day + timedelta(hours=n) for n in (1, 2, 3, 30)}  # 30 hours: outside the run's window
    rows = [
        {"id": n, "email": f"reader{n}@example.org", "first_name": f"R{n}", "created_at": at}
        for n, at in created.items()
    ]
    with crm_postgres.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE contacts (id int, email text, first_name text, created_at timestamptz)")
        )
        conn.execute(sa.text("INSERT INTO contacts VALUES (:id, :email, :first_name, :created_at)"), rows)
    dag = snippet_dag(block, Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]))

    run = dag.test(logical_date=day + timedelta(days=1))

    assert run.state == "success"
    profiles = {p["id"]: p["fields"] for p in altcraft_emulator.profiles(db_id=1)}
    launched = [profiles[entry["profile_id"]] for entry in altcraft_emulator.journal(scenario_id=12)]
    assert sorted((p["email"], p["_fname"], p["CRM_ID"]) for p in launched) == [
        (f"reader{n}@example.org", f"R{n}", str(n)) for n in (1, 2, 3)
    ]


def test_the_webhook_recipe_is_accepted_by_the_endpoint(tmp_path, monkeypatch):
    """docs/pipelines.md's "Test it by hand", run by bash with openssl and curl as written, against the
    endpoint mounted as the plugin mounts it, for the documented webhook spec (its `auth`)."""
    [recipe] = [b for b in BLOCKS if b.lang == "bash" and "/altcraft-webhooks/welcome_webhook" in b.text]
    [spec] = [
        yaml.safe_load(b.text) for b in BLOCKS if b.lang == "yaml" and "id: welcome_webhook\n" in b.text
    ]
    secret = uuid.uuid4().hex
    monkeypatch.setenv("AIRFLOW_CONN_DOCS_WEBHOOK_LEDGER", f"sqlite:///{tmp_path / 'ledger.db'}")
    config = WebhookConfig(spec["id"], spec["trigger"]["auth"], secret, "docs_webhook_ledger")
    server = FastAPI()
    server.mount(URL_PREFIX, create_app({spec["id"]: config}.get))

    with serving_app(server) as url:
        script = recipe.text.replace("http://localhost:8080", url)
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", f"{script.rstrip()} --fail-with-body --silent --show-error"],
            env={**os.environ, "SECRET": secret},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert done.returncode == 0, done.stderr + done.stdout
    assert json.loads(done.stdout) == {"status": "accepted", "records": 1}
    [(_, records)] = WebhookStore.from_conn_id("docs_webhook_ledger").read(spec["id"], None)
    assert records == [{"email": "ann@example.com", "first_name": "Ann"}]


# ------------------------------------------------------------------------------- settings and names


def test_ini_examples_name_only_declared_options():
    declared = get_provider_info()["config"]
    named = []
    for block in (b for b in BLOCKS if b.lang == "ini"):
        parser = configparser.ConfigParser()
        parser.read_string(block.text)
        named += [(str(block), s, o) for s in parser.sections() if s in declared for o in parser[s]]
        assert named, f"{block}: no provider option"
    assert [(where, s, o) for where, s, o in named if o not in declared[s]["options"]] == []


def markdown_table(text: str, header: str) -> dict[str, list[str]]:
    """The rows of the table whose header row starts with ``| header |``, by their first cell's code."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def documented_default(cell: str) -> Any:
    """``60`` → 60, ``true`` → True, ``none`` → None, ``{base_url}/...`` → the text."""
    value = re.match(r"`([^`]*)`|none", cell)
    assert value, f"no default in {cell!r}"
    if value[1] is None:
        return None
    try:
        return json.loads(value[1])
    except ValueError:
        return value[1]


def test_the_readme_lists_every_connection_extra_with_its_default():
    table = markdown_table((REPO / "README.md").read_text(encoding="utf-8"), "extra")
    fields = AltcraftConnectionSettings.model_fields

    assert sorted(table) == sorted(fields)
    assert {name: documented_default(cells[0]) for name, cells in table.items()} == {
        name: field.default for name, field in fields.items()
    }


def test_the_readme_marks_the_extras_of_the_connection_form():
    [connection] = get_provider_info()["connection-types"]
    table = markdown_table((REPO / "README.md").read_text(encoding="utf-8"), "extra")

    in_the_form = sorted(name for name, cells in table.items() if cells[1] == "form")
    assert in_the_form == sorted(connection["conn-fields"])


def test_every_altcraft_option_read_is_declared_and_documented():
    code = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "plugins" / "altcraft").rglob("*.py"))
    read = set(re.findall(r"conf\.get\w*\(\s*\"altcraft\",\s*\"(\w+)\"", code))
    options = get_provider_info()["config"]["altcraft"]["options"]
    table = markdown_table((REPO / "README.md").read_text(encoding="utf-8"), "option")

    assert read == set(options)
    assert {name: "" if cells[0] == "empty" else cells[0].strip("`") for name, cells in table.items()} == {
        f"[altcraft] {name}": option["default"] for name, option in options.items()
    }


def test_every_make_target_named_exists():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    named = {
        (path.name, target)
        for path in DOCS
        for target in re.findall(r"(?:^|`)make ([a-z][\w-]*)", path.read_text(encoding="utf-8"), re.M)
    }

    assert {(name, target) for name, target in named if target not in targets} == set()


def test_make_help_lists_every_target():
    """``make`` alone prints the help: a newcomer's list of what to type. ``make install`` (what the others
    run first, a .venv with the project) was missing from it."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, re.M)[1].split())
    helped = set(re.findall(r'^\t@echo "make ([\w-]+) ', makefile, re.M))

    assert phony - helped == {"help", "system-deps"}


def test_the_emulator_usage_lists_every_flag():
    from altcraft.emulator.__main__ import parser

    [usage] = [
        b.text for b in BLOCKS if "-m altcraft.emulator --host" in b.text and b.path.name == "emulator.md"
    ]
    flags = {flag for action in parser()._actions for flag in action.option_strings}

    assert set(re.findall(r"--[\w-]+", usage)) == flags - {"-h", "--help"}


def probe_command_lines() -> list[str]:
    """Every ``python -m altcraft probe`` line of a bash block of the docs, continuation lines joined."""
    return [
        line
        for b in BLOCKS
        if b.lang == "bash"
        for line in b.text.replace("\\\n", " ").splitlines()
        if "-m altcraft probe" in line
    ]


def test_the_probe_command_lines_show_every_flag():
    """A newcomer meets the probe's flags in the docs: --db and --task-timeout were in its --help only."""
    from altcraft.__main__ import parser

    [commands] = [action for action in parser()._actions if action.dest == "command"]
    flags = {flag for action in commands.choices["probe"]._actions for flag in action.option_strings}
    shown = {flag for line in probe_command_lines() for flag in re.findall(r"(?<!\S)--[\w-]+", line)}

    assert flags - {"-h", "--help"} - shown == set()


def test_documented_probe_command_lines_parse():
    from altcraft.__main__ import parse_args

    lines = probe_command_lines()

    assert lines
    for line in lines:
        words = shlex.split(line.split("#")[0])
        assert parse_args(words[words.index("altcraft") + 1 :]).command == "probe", line
