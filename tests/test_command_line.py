"""The command-line tools refuse an empty path (a shell variable that is not set, a ``$(command)`` that
failed) as a usage error naming the argument. ``python -m altcraft.emulator --seed ""`` said
``--seed .: Is a directory`` and ``python -m altcraft.pipelines.docs ""`` ended in an IsADirectoryError
traceback; the probe and ``pipelines init`` are tested with their modules."""

from __future__ import annotations

import pytest

from altcraft.emulator.__main__ import parser
from altcraft.pipelines.docs import main as docs_main


@pytest.mark.parametrize(
    ("parse", "argument"),
    [
        (lambda: parser().parse_args(["--seed", ""]), "--seed"),
        (lambda: parser().parse_args(["--replay", " "]), "--replay"),
        (lambda: docs_main([""]), "path"),
    ],
    ids=["emulator --seed", "emulator --replay", "pipelines.docs"],
)
def test_an_empty_path_is_a_usage_error_naming_its_argument(parse, argument, capsys):
    with pytest.raises(SystemExit) as usage_error:
        parse()

    assert usage_error.value.code == 2
    assert f"argument {argument}: empty: a shell variable that is not set" in capsys.readouterr().err


def test_mark_canonical_keys_names_itself_in_its_errors(monkeypatch, capsys):
    """An error of ``mark-canonical-keys`` (here its connection is no SQL database) began ``probe:``."""
    from altcraft.__main__ import main

    monkeypatch.setenv("AIRFLOW_CONN_NOT_SQL", "http://user:s3cret-pw@example.org")

    assert main(["mark-canonical-keys", "--conn-id", "not_sql"]) == 2
    said = capsys.readouterr().err
    assert "mark-canonical-keys: ledger_conn_id 'not_sql': not a SQL database" in said
    assert "probe" not in said and "s3cret-pw" not in said
