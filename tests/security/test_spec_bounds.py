"""Defect 4: parsing any spec is bounded in time and memory; a bomb is an import error naming its file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REST_SPEC = REPO / "dags" / "pipelines" / "welcome_rest_crm.yaml"


def _bomb(indent: str, levels: int = 9) -> str:
    """Nine nested anchors of nine aliases each: 9**9 (387 million) leaves once expanded."""
    lines = [f'{indent}l0: &l0 ["boom", "boom", "boom", "boom", "boom", "boom", "boom", "boom", "boom"]']
    for level in range(1, levels):
        aliases = ", ".join([f"*l{level - 1}"] * 9)
        lines.append(f"{indent}l{level}: &l{level} [{aliases}]")
    return "\n".join(lines)


def _rest_spec_with(name: str, extra: str) -> str:
    text = REST_SPEC.read_text().replace("id: welcome_rest_crm", f"id: {name}")
    return text.replace("  record_path: items\n", f"  record_path: items\n{extra}\n")


BOMBS = {
    "rest_params_bomb": lambda: _rest_spec_with("rest_params_bomb", "  params:\n" + _bomb("    ")),
    "notifier_kwargs_bomb": lambda: (
        REST_SPEC.read_text()
        .replace("id: welcome_rest_crm", "id: notifier_kwargs_bomb")
        .replace("    to: crm-alerts@example.org\n", "    extra:\n" + _bomb("      ") + "\n")
    ),
    "recursive_alias": lambda: _rest_spec_with("recursive_alias", "  params: &p {self: *p}"),
    "huge_file": lambda: _rest_spec_with("huge_file", "  params: {pad: '" + "x" * 300_000 + "'}"),
}


def _load_in_a_subprocess(folder: Path, seconds: float) -> dict:
    """load_pipelines(folder) in a child process, so a hang fails the test instead of freezing it."""
    code = textwrap.dedent(
        f"""
        import json
        from altcraft.pipelines.factory import load_pipelines
        found = load_pipelines({str(folder)!r})
        errors = {{e.path.name: str(e) for e in found.errors}}
        print(json.dumps({{"dags": sorted(found.dags), "errors": errors}}))
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=seconds, check=True
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading the specs took more than {seconds}s")
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_yaml_alias_bomb_in_a_spec_is_an_import_error_naming_the_file(tmp_path):
    for name, make in BOMBS.items():
        (tmp_path / f"{name}.yaml").write_text(make())
    (tmp_path / "good.yaml").write_text(REST_SPEC.read_text().replace("id: welcome_rest_crm", "id: good"))

    found = _load_in_a_subprocess(tmp_path, seconds=120)

    assert found["dags"] == ["good"], "a bomb costs its own DAG only"
    assert sorted(found["errors"]) == sorted(f"{name}.yaml" for name in BOMBS)
    for name, message in found["errors"].items():
        assert message.startswith(f"Pipeline spec {name} is invalid:"), message
    assert "alias" in found["errors"]["rest_params_bomb.yaml"]
    assert "recursive" in found["errors"]["recursive_alias.yaml"]
    assert "larger than" in found["errors"]["huge_file.yaml"]


def test_a_pipe_folder_or_device_named_like_a_spec_is_an_error_of_that_name(tmp_path):
    os.mkfifo(tmp_path / "pipe.yaml")  # opening it for reading used to wait for a writer: forever
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "device.yaml").symlink_to("/dev/zero")
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    (tmp_path / "good.yaml").write_text(REST_SPEC.read_text().replace("id: welcome_rest_crm", "id: good"))

    found = _load_in_a_subprocess(tmp_path, seconds=60)

    assert found["dags"] == ["good"]
    refused = "is invalid:\n  not a regular file (a folder, a pipe or a device): remove it"
    for name in ("pipe.yaml", "folder.yaml", "device.yaml"):
        assert found["errors"][name] == f"Pipeline spec {name} {refused}"
    assert "Too many levels of symbolic links" in found["errors"]["loop.yaml"]


def _many(count: int, item: str) -> str:
    return ", ".join(item.format(index) for index in range(count))


MANY_ERRORS = {  # each just under the size limit (256 KiB), one error per key or item
    "unknown_keys.yaml": "{" + _many(25_000, "k{:x}: 0") + "}",
    "unknown_keys.json": "{" + _many(21_000, '"k{:x}": 0') + "}",
    "bad_tags.yaml": "{id: bad_tags, tags: [" + _many(38_000, "{}") + "]}",
}


def test_a_spec_with_tens_of_thousands_of_errors_is_read_quickly_and_lists_the_first(tmp_path):
    """Each error's line was found by a scan of its mapping, and a JSON object's repeated keys by a count
    of its keys: a spec of 25,000 unknown keys took a minute (Airflow's DAG file import timeout is 30s, and
    timing out drops every pipeline), and its import error ran to 25,000 lines."""
    for name, text in MANY_ERRORS.items():
        assert len(text) < 256 * 1024
        (tmp_path / name).write_text(text)
    (tmp_path / "good.yaml").write_text(REST_SPEC.read_text().replace("id: welcome_rest_crm", "id: good"))

    found = _load_in_a_subprocess(tmp_path, seconds=25)

    assert found["dags"] == ["good"]
    for name in MANY_ERRORS:
        message = found["errors"][name]
        assert len(message.splitlines()) <= 30, message[:2000]
        assert message.splitlines()[-1].startswith("  ... and "), message[-500:]
    assert "  line 1, k0: unknown field" in found["errors"]["unknown_keys.yaml"]
    assert "  line 1, tags.0: Input should be a valid string" in found["errors"]["bad_tags.yaml"]


def _aliased_params(name: str, leaf: str, width: int) -> str:
    """REST params whose aliases expand to ``width`` * 6,561 ``leaf`` values (under the bound of 1 Mi nodes
    and characters: a spec may be this large)."""
    lines = [f"    l0: &l0 [{', '.join([leaf] * width)}]"]
    lines += [f"    l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]" for level in range(1, 5)]
    return _rest_spec_with(name, "  params:\n" + "\n".join(lines))


def test_the_checks_of_a_value_cost_what_its_distinct_values_do_not_its_expansion(tmp_path):
    """The checks for credentials and JSON data walk each distinct value once: walking every path of the
    expansion took seconds a spec (and three walks, three times that)."""
    (tmp_path / "aliased.yaml").write_text(_aliased_params("aliased", "a", width=49))
    (tmp_path / "secret.yaml").write_text(_aliased_params("secret", "{api_key: s3cretpass}", width=6))

    found = _load_in_a_subprocess(tmp_path, seconds=15)

    assert found["dags"] == ["aliased"]
    error = found["errors"]["secret.yaml"]
    assert "source.params: 'l0[0].api_key', " in error, error
    assert "'l0[4].api_key' (and 1 more) would carry a credential" in error, error
    assert "s3cretpass" not in error
