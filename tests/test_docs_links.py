"""Every relative link of README.md and docs/*.md names a file of the repository, and every ``#anchor`` a
heading (GitHub's slugs) of its Markdown file: a newcomer following the docs never lands on a 404. So does
every ``docs/x.md#anchor`` written as plain text: in the docs, and in what we ship (error messages, DAG
files, the demo, docker-compose.yaml)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCED = re.compile(r"^ *```.*?^ *```", re.M | re.S)
INLINE_CODE = re.compile(r"`+[^`\n]*`+")
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
#: ``docs/pipelines.md#triggers``, ``ledger.md#tables``: a reference to a heading written as text
TEXT_ANCHOR = re.compile(r"(?<![\w/.-])((?:docs/)?[\w-]+\.md)#([\w-]+)")
SHIPPED = [
    *(REPO / "plugins" / "altcraft").rglob("*.py"),
    *(REPO / "dags").rglob("*.py"),
    *(REPO / "demo").rglob("*.py"),
    REPO / "docker-compose.yaml",
    REPO / "Makefile",
]


def prose(path: Path) -> str:
    """The Markdown without its code blocks and code spans (a link there is an example, not a link)."""
    return INLINE_CODE.sub("", FENCED.sub("", path.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markup and punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCED.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    found.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", path.read_text(encoding="utf-8")))
    return found


def relative_links(path: Path) -> list[str]:
    return [link for link in LINK.findall(prose(path)) if not re.match(r"^[a-z][a-z0-9+.-]*:", link)]


def test_the_slugs_follow_github():
    assert slug("Triggers: launch within seconds") == "triggers-launch-within-seconds"
    assert slug("6. Ledger growth") == "6-ledger-growth"
    assert slug("What is documented, what is invented") == "what-is-documented-what-is-invented"
    assert slug("`make demo`") == "make-demo"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc: Path):
    assert relative_links(REPO / "README.md"), "no link found: the pattern is broken"
    broken = []
    for link in relative_links(doc):
        target, _, anchor = link.partition("#")
        file = (doc.parent / target).resolve() if target else doc
        if not file.exists() or REPO not in file.parents:
            broken.append(f"{link}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{link}: no heading #{anchor} in {file.relative_to(REPO)}")
    assert not broken, "\n".join(broken)


def text_anchors(path: Path) -> list[str]:
    """The ``x.md#anchor`` references of a file (code blocks and plain text too) that name no heading."""
    broken = []
    for match in TEXT_ANCHOR.finditer(path.read_text(encoding="utf-8")):
        name, anchor = match.groups()
        target = REPO / name if "/" in name or name == "README.md" else REPO / "docs" / name
        if not target.exists() or anchor not in anchors(target):
            broken.append(f"{path.relative_to(REPO)}: {match[0]}")
    return broken


def test_text_anchor_references_are_checked():
    assert TEXT_ANCHOR.findall("see docs/pipelines.md#what-a-run-does.") == [
        ("docs/pipelines.md", "what-a-run-does")
    ]
    assert TEXT_ANCHOR.findall("(ledger.md#tables)") == [("ledger.md", "tables")]


@pytest.mark.parametrize("path", DOCS + SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_anchor_named_in_text_exists(path: Path):
    """A plain ``docs/pipelines.md#partitions`` (an error message, a comment) is as much a promise to the
    reader as a link: it pointed at headings that did not exist (or no longer did)."""
    assert text_anchors(path) == []
