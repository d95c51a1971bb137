"""Text every database of the project can store: the one definition of what none of them takes.

PostgreSQL refuses NUL in text (psycopg2: "A string literal cannot contain NUL", psycopg 3 alike), and no
driver encodes a lone surrogate (``UnicodeEncodeError``; nor does JSON for XCom or the task log). Every
other code point is valid UTF-8 and so valid utf8mb4 for MySQL/MariaDB and text for SQLite.

Two kinds of text reach a database, and each has its rule:

* a contact's own values (keys, fields) are never altered: `altcraft.validation.check_text` refuses a
  value holding these characters (and the other controls), so the contact is rejected naming its field;
* free text the project only reports (Altcraft's answers, a source's reason for an unreadable row, a
  local file's name) is made storable with `storable` (or `replace_unstorable`) before it is logged or
  stored: the characters become U+FFFD;
* JSON the project keeps to read back (the webhook store's deliveries) has them escaped by
  `storable_json`, so a contact comes back as it was sent and is rejected by the mapping.

A leaf module: it imports nothing of the provider.
"""

from __future__ import annotations

import re

UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")
"""NUL and lone surrogates: the characters no database of the project stores."""
MAX_STORED_CHARS = 1000
"""Longest free text stored (MySQL's TEXT holds 64 KiB; a text of megabytes would be repeated in every log
line, exception and ledger row it goes to)."""
REPLACEMENT = "\ufffd"


def replace_unstorable(text: str) -> str:
    """``text`` with each NUL and lone surrogate replaced by U+FFFD (no copy when there is none)."""
    return UNSTORABLE.sub(REPLACEMENT, text)


def storable(text: str, limit: int = MAX_STORED_CHARS, *, more: bool = False) -> str:
    """Free text as it is logged and stored: `replace_unstorable`, at most ``limit`` characters and "…"
    where it was cut (``more``: ``text`` is already the start of a longer one)."""
    cleaned = replace_unstorable(text)
    return cleaned[:limit] + ("…" if more or len(cleaned) > limit else "")


def storable_json(text: str) -> str:
    """JSON text with each NUL and lone surrogate written as its ``\\u`` escape: storable, and read back
    (``json.loads``) as the very same values. ``json.dumps`` escapes NUL itself, but with
    ``ensure_ascii=False`` writes a lone surrogate as it is."""
    return UNSTORABLE.sub(lambda char: f"\\u{ord(char.group()):04x}", text)
