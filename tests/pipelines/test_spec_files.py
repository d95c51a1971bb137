"""Every file of the pipelines folder that looks like a spec is a DAG or is named in the import error.

Parsed by Airflow's own DagBag over a DAG folder like the shipped one (loader, checker, ``pipelines/``):
a spec its author wrote must never end with no DAG and no error.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag
from airflow.exceptions import AirflowClusterPolicyViolation
from airflow.policies import hookimpl

from altcraft.pipelines import load_pipelines
from tests.pipelines.conftest import CHECKER, make_bundle
from tests.pipelines.test_import_errors import _parse_and_store, _stored_errors
from tests.pipelines.test_spec import MINIMAL

NOBODY = 65534


def spec_text(dag_id: str) -> str:
    return yaml.safe_dump({**MINIMAL, "id": dag_id}, sort_keys=False)


def write(folder: Path, name: str | bytes, text: str | bytes) -> Path:
    """``text`` at ``folder/name`` (``name`` may hold sub-folders, or be bytes that are not UTF-8)."""
    path = folder / (os.fsdecode(name) if isinstance(name, bytes) else name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def parse(root: Path) -> tuple[set[str], str]:
    """The DAG ids Airflow's DagBag finds in ``root``, and the checker's import error ("" if none); no
    other file may have one."""
    bag = DagBag(dag_folder=root)
    checker = str(root / CHECKER.name)
    assert set(bag.import_errors) <= {checker}, bag.import_errors
    return set(bag.dags), bag.import_errors.get(checker, "")


def section(error: str, name: str) -> str:
    """The part of the checker's import error about the spec ``name``."""
    assert f"Pipeline spec {name} is invalid:\n" in error, error
    return error.split(f"Pipeline spec {name} is invalid:\n", 1)[1].split("\n\n")[0].rstrip("\n")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_bundle(tmp_path / "bundle", [])


def test_specs_in_sub_folders_are_dags_whatever_their_suffix_or_file_name(root: Path):
    specs = root / "pipelines"
    write(specs, "sales/welcome.yaml", spec_text("sales_welcome"))
    write(specs, "marketing/eu/Spring Promo-v2.YML", spec_text("spring_promo"))
    hello = json.dumps({**MINIMAL, "id": "support_hello", "max_rejected_ratio": 0.5}, indent="\t")
    write(specs, "support/приветствие.json", hello.replace("0.5", "5e-2"))  # tabs and 5e-2: JSON, not YAML
    write(specs, b"legacy/caf\xe9.yaml", spec_text("legacy_cafe"))  # a Latin-1 name from an old share
    write(specs, "top.yaml", spec_text("top"))
    write(specs, "sales/README.md", "# not a spec: other suffixes are not read\n")
    write(specs, "sales/welcome.yaml.off", "{")  # parked: not a spec suffix

    dags, error = parse(root)

    assert dags == {"sales_welcome", "spring_promo", "support_hello", "legacy_cafe", "top"}
    assert error == ""
    loaded = load_pipelines(specs).dags
    assert "spec `marketing/eu/Spring Promo-v2.YML`" in loaded["spring_promo"].doc_md
    assert "max rejected 5%" in loaded["support_hello"].doc_md
    assert "spec `legacy/caf\\udce9.yaml`" in loaded["legacy_cafe"].doc_md


def test_two_specs_with_one_id_are_both_errors_naming_each_other(root: Path):
    specs = root / "pipelines"
    write(specs, "sales/welcome.yaml", spec_text("welcome"))
    write(specs, "support/welcome.yaml", spec_text("welcome"))
    write(specs, "welcome.yml", spec_text("welcome"))
    write(specs, "other.yaml", spec_text("other"))

    dags, error = parse(root)

    assert dags == {"other"}  # neither shadows the other, whatever their order
    assert "3 pipeline specs are broken" in error
    names = ["sales/welcome.yaml", "support/welcome.yaml", "welcome.yml"]
    for name in names:
        others = ", ".join(other for other in names if other != name)
        assert section(error, name) == (
            f"  line 1, id: 'welcome' is also the id of {others}; a DAG id belongs to one spec, so none of "
            "them is loaded until the ids differ"
        )


def webhook_spec_text(dag_id: str, auth: str, secret_conn_id: str) -> str:
    source = {"type": "webhook", "key_column": "email"} if auth in ("hmac", "secret") else {"type": auth}
    trigger = {"type": "webhook", "auth": auth, "secret_conn_id": secret_conn_id}
    spec = {**MINIMAL, "id": dag_id, "source": source, "trigger": trigger}
    if auth in ("hmac", "secret"):
        spec["mapping"] = MINIMAL["mapping"]
    else:
        spec.pop("mapping")
        spec["source"] = {**source, "conn_id": f"{dag_id}_crm"}
    return yaml.safe_dump(spec, sort_keys=False)


def test_webhook_pipelines_sharing_a_secret_their_proof_does_not_tie_to_the_url_are_errors(root: Path):
    """A delivery signed for one could be posted to the other's URL: each needs its own secret. HubSpot's
    signature covers the URL, so HubSpot pipelines may share one; a pipeline with its own secret loads."""
    specs = root / "pipelines"
    write(specs, "sales/welcome.yaml", webhook_spec_text("sales_welcome", "hmac", "crm_hook"))
    write(specs, "support/hello.yaml", webhook_spec_text("support_hello", "secret", "crm_hook"))
    write(specs, "amo.yaml", webhook_spec_text("amo_a", "amocrm", "amo_hook"))
    write(specs, "amo_copy.yaml", webhook_spec_text("amo_b", "amocrm", "amo_hook"))
    write(specs, "hubspot.yaml", webhook_spec_text("hubspot_a", "hubspot", "hubspot_hook"))
    write(specs, "hubspot_copy.yaml", webhook_spec_text("hubspot_b", "hubspot", "hubspot_hook"))
    write(specs, "own.yaml", webhook_spec_text("own", "hmac", "own_hook"))
    write(specs, "polled.yaml", spec_text("polled"))

    dags, error = parse(root)

    assert dags == {"hubspot_a", "hubspot_b", "own", "polled"}
    assert "4 pipeline specs are broken" in error
    pairs = [
        ("sales/welcome.yaml", "support/hello.yaml", "crm_hook"),
        ("amo.yaml", "amo_copy.yaml", "amo_hook"),
    ]
    for first, second, secret in pairs:
        for name, other in ((first, second), (second, first)):
            lines = (specs / name).read_text().splitlines()
            line = next(n for n, text in enumerate(lines, 1) if "secret_conn_id:" in text)
            assert section(error, name) == (
                f"  line {line}, trigger.secret_conn_id: {secret!r} is also the webhook "
                f"secret of {other}; the proofs of auth secret, hmac, amocrm, bitrix24 do not cover the URL, "
                "so a delivery to one of them could be posted to another and be taken there. Give each "
                "pipeline a secret connection of its own; none of them is loaded until then"
            )


SPEC_WITH_LATIN1 = spec_text("latin1").encode() + "description: café\n".encode("latin-1")
LATIN1_LINE = SPEC_WITH_LATIN1.count(b"\n")
VANISHING: dict[str, tuple[Callable[[Path], object], str]] = {
    # name in the error: (how the file is made in pipelines/, what the error says)
    "empty.yaml": (lambda specs: write(specs, "empty.yaml", ""), "the file holds no spec: it is empty"),
    "comments.yml": (lambda specs: write(specs, "comments.yml", "# id: draft\n"), "the file holds no spec"),
    "team/latin1.yaml": (
        lambda specs: write(specs, "team/latin1.yaml", SPEC_WITH_LATIN1),
        f"line {LATIN1_LINE}: not UTF-8 text (byte 0xe9); save the file as UTF-8",
    ),
    "team/utf16.json": (
        lambda specs: write(specs, "team/utf16.json", json.dumps(MINIMAL).encode("utf-16")),
        "line 1: not UTF-8 text (byte 0xff)",
    ),
    "team/broken.json": (
        lambda specs: write(specs, "team/broken.json", '{"id": "broken",\n}'),
        "line 2, column 1: invalid JSON: Expecting property name enclosed in double quotes",
    ),
    "team/twice.json": (
        lambda specs: write(specs, "team/twice.json", json.dumps(MINIMAL)[:-1] + ', "id": "again"}'),
        "invalid JSON: 'id' is given twice in one object",
    ),
    "team/mounted.yaml": (
        lambda specs: (specs / "team/mounted.yaml").mkdir(parents=True),  # what `docker -v` makes of a
        "not a regular file (a folder, a pipe or a device): remove it",  # missing file
    ),
    "team/gone.yaml": (
        lambda specs: (specs / "team/gone.yaml").symlink_to(specs / "nowhere.yaml"),
        "cannot read the file: No such file or directory",
    ),
    "shared": (
        lambda specs: (specs / "shared").symlink_to("/nonexistent/mount/of/specs"),
        "cannot read it (a link to /nonexistent/mount/of/specs): No such file or directory",
    ),
    "team/.airflowignore": (
        lambda specs: write(specs, "team/.airflowignore", "drafts/\n"),
        ".airflowignore is not honoured in the pipelines folder: every spec file in it is loaded",
    ),
}


def test_every_file_that_would_vanish_is_named_in_the_import_error_and_the_rest_load(root: Path):
    specs = root / "pipelines"
    write(specs, "team/good.yaml", spec_text("good"))
    for make, _ in VANISHING.values():
        make(specs)
    write(specs, ".draft.yaml", "{")  # hidden: an editor's or the user's own, never read
    write(specs, ".git/config.yaml", "{")

    dags, error = parse(root)

    assert dags == {"good"}
    assert f"{len(VANISHING)} pipeline specs are broken" in error
    for name, (_, words) in VANISHING.items():
        assert words in section(error, name), name


def test_a_link_loop_is_reported_and_the_dag_folders_airflowignore_hides_no_spec(root: Path):
    """Airflow refuses a link loop anywhere in its DAG folder (RuntimeError listing it) unless the DAG
    folder's ``.airflowignore`` keeps it out of Airflow's walk; that file does not apply to specs."""
    specs = root / "pipelines"
    write(root, ".airflowignore", "pipelines/\n")
    write(specs, "team/good.yaml", spec_text("good"))
    (specs / "team/loop").symlink_to(specs)
    (specs / "twice").symlink_to(specs / "team")

    dags, error = parse(root)

    assert dags == {"good"}
    assert "2 pipeline specs are broken" in error
    for name in ("team/loop", "twice"):
        assert (
            section(error, name)
            == "  a link to a folder already read (a loop?): not read again; remove the link"
        )


def test_an_error_stays_in_the_import_errors_until_the_file_is_fixed(root: Path):
    broken = write(root / "pipelines", "team/welcome.yaml", "")

    for _ in range(2):  # a later parse: still there
        dags, error = parse(root)
        assert dags == set() and "Pipeline spec team/welcome.yaml is invalid" in error
    broken.write_text(spec_text("welcome"))

    assert parse(root) == ({"welcome"}, "")


def test_a_broken_spec_whose_name_is_not_utf8_is_stored_as_an_import_error(tmp_path: Path, airflow_db):
    import uuid

    from airflow.models.dagbundle import DagBundleModel
    from airflow.utils.session import create_session

    root = make_bundle(tmp_path / "bundle", [])
    write(root / "pipelines", b"caf\xe9.yaml", "id: [")
    bundle_name = f"spec-files-{uuid.uuid4().hex[:8]}"
    with create_session() as session:
        session.merge(DagBundleModel(name=bundle_name))

    _parse_and_store(root, bundle_name, [CHECKER.name])

    stored = _stored_errors(bundle_name)[CHECKER.name]
    assert "Pipeline spec caf\\udce9.yaml is invalid:\n  line 2, column 1: invalid YAML" in stored


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A DAG folder another user can read (pytest's ``tmp_path`` is root's alone)."""
    with tempfile.TemporaryDirectory() as folder:
        Path(folder).chmod(0o755)
        yield make_bundle(Path(folder) / "bundle", [])


def as_nobody(function: Callable[[], object]) -> object:
    """``function()`` in a forked child running as the ``nobody`` user; its result through a pipe (as JSON).

    Root reads every file whatever its permissions; as another user, Airflow meets them as a DAG
    processor running as ``airflow`` would.
    """
    function()  # the modules it imports, imported while root can read them
    readable, writable = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.close(readable)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(writable, json.dumps(function()).encode())
        finally:
            os._exit(0)
    os.close(writable)
    with os.fdopen(readable) as pipe:
        answer = pipe.read()
    os.waitpid(child, 0)
    assert answer, "the child running as nobody gave no answer"
    return json.loads(answer)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the DagBag as another user")
def test_a_spec_or_folder_the_dag_processor_cannot_read_is_named_in_the_import_error(shared_root: Path):
    specs = shared_root / "pipelines"
    write(specs, "good.yaml", spec_text("good")).chmod(0o644)
    write(specs, "secret.yaml", spec_text("secret")).chmod(0o600)
    write(specs, "locked/welcome.yaml", spec_text("locked")).chmod(0o644)
    (specs / "locked").chmod(0o700)

    dags, error = as_nobody(
        lambda: [sorted(dag) if isinstance(dag, set) else dag for dag in parse(shared_root)]
    )

    assert dags == ["good"]
    assert "cannot read the file: Permission denied" in section(error, "secret.yaml")
    assert "cannot list the folder: Permission denied; its specs are not loaded" in section(error, "locked")


class OwnedTasksPolicy:
    """A cluster policy as Airflow's docs suggest: every task has an owner other than the default."""

    @staticmethod
    @hookimpl
    def task_policy(task) -> None:
        if task.owner == "airflow":
            raise AirflowClusterPolicyViolation(f"task {task.task_id} needs an owner other than airflow")


@pytest.fixture
def owned_tasks_policy() -> Iterator[None]:
    """``OwnedTasksPolicy`` installed as an ``airflow.policy`` plugin (how Airflow loads local settings)."""
    from airflow.settings import get_policy_plugin_manager

    manager = get_policy_plugin_manager()
    manager.register(OwnedTasksPolicy)
    yield
    manager.unregister(OwnedTasksPolicy)


def test_a_spec_a_cluster_policy_refuses_is_named_under_the_checker_and_the_others_load(
    root: Path, owned_tasks_policy: None
):
    """Airflow applies the policies as it bags each DAG of the loader file: a refused pipeline was an
    import error of altcraft_pipelines.py, naming no spec and flagging every pipeline of that file."""
    write(root / "pipelines", "owned.yaml", spec_text("owned") + "owner: crm-team\n")
    write(root / "pipelines", "unowned.yaml", spec_text("unowned"))

    dags, error = parse(root)

    assert dags == {"owned"}
    assert section(error, "unowned.yaml") == (
        "  refused by a cluster policy of this Airflow: AirflowClusterPolicyViolation: "
        "task plan needs an owner other than airflow"
    )


@pytest.mark.parametrize("kind", ["link to nothing", "file"])
def test_a_pipelines_folder_that_is_no_folder_is_an_import_error(root: Path, kind: str):
    """A pipelines folder linked to a volume that is not mounted (or replaced by a file) loaded no pipeline
    and said nothing: every pipeline DAG left Airflow without an import error. (No folder at all is no
    error: a DAG folder may hold the DAG files before any spec.)"""
    specs = root / "pipelines"
    specs.rmdir()
    if kind == "file":
        specs.write_text("")
    else:
        specs.symlink_to(root / "unmounted" / "pipelines")

    dags, error = parse(root)

    assert dags == set()
    assert section(error, "pipelines/").startswith("  not a folder"), error
