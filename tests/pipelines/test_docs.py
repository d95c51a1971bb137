"""docs/pipelines.md: its field reference is rendered from the spec models and must match them."""

from __future__ import annotations

from altcraft.pipelines.docs import NOTES, main, meaning, render, spec_models
from tests.pipelines.conftest import REPO

DOC = REPO / "docs" / "pipelines.md"


def test_committed_reference_matches_the_models():
    current = DOC.read_text(encoding="utf-8")

    assert render(current) == current, "run: python -m altcraft.pipelines.docs docs/pipelines.md"


def test_every_field_has_a_meaning():
    missing = [
        f"{model.__name__}.{name}"
        for model in spec_models()
        for name in model.model_fields
        if not meaning(model, name)
    ]

    assert missing == []


def test_every_note_is_still_needed():
    fields = {
        (model.__name__, field.alias or name): field
        for model in spec_models()
        for name, field in model.model_fields.items()
    }

    assert [key for key in NOTES if key not in fields] == []
    assert [key for key in NOTES if fields[key].description] == []


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "pipelines.md"
    stale.write_text(DOC.read_text(encoding="utf-8").replace("| `pool_slots` |", "| `pool_slot` |"))

    assert main([str(stale), "--check"]) == 1
    assert main([str(stale)]) == 0
    assert main([str(stale), "--check"]) == 0
    assert stale.read_text(encoding="utf-8") == DOC.read_text(encoding="utf-8")
