"""bench/celery.py keeps its section of docs/benchmarks.md, whatever bench/run.py wrote around it."""

from __future__ import annotations

from bench.celery import METHOD, SECTION, write_section


def test_the_section_goes_before_how_it_is_measured(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text(f"# Benchmarks\n\n## 4. Parse\n\nfour\n\n{METHOD}\n\nmethod\n")
    write_section(path, f"{SECTION}\n\nfirst\n")
    text = path.read_text()
    assert text.index("four") < text.index(SECTION) < text.index("first") < text.index(METHOD)


def test_a_second_run_replaces_the_section_and_keeps_the_rest(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text(f"# Benchmarks\n\n{SECTION}\n\nold\n\n{METHOD}\n\nmethod\n")
    write_section(path, f"{SECTION}\n\nnew\n")
    text = path.read_text()
    assert "old" not in text
    assert text.count(SECTION) == 1 and text.index("new") < text.index(METHOD) and "method" in text


def test_without_other_sections_it_is_appended(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n")
    write_section(path, f"{SECTION}\n\nonly\n")
    assert path.read_text() == f"# Benchmarks\n\n{SECTION}\n\nonly\n"
