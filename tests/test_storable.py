"""altcraft.storable: the one definition of the text no database of the project stores."""

from __future__ import annotations

import json

import pytest

from altcraft.storable import MAX_STORED_CHARS, UNSTORABLE, replace_unstorable, storable, storable_json

ODD = ["", "plain", "nul\x00inside", "\ud800", "a\udfffb\x00", "\U0001f600 ok", "tab\tand\x1b escape"]


@pytest.mark.parametrize("text", ODD)
def test_replaced_text_holds_nothing_unstorable_and_encodes(text):
    replaced = replace_unstorable(text)
    assert not UNSTORABLE.search(replaced) and len(replaced) == len(text)
    replaced.encode("utf-8")  # no lone surrogate left
    assert replaced == text or "\ufffd" in replaced


def test_storable_cuts_long_text_with_an_ellipsis():
    assert storable("x" * (MAX_STORED_CHARS + 1)) == "x" * MAX_STORED_CHARS + "…"
    assert storable("x" * MAX_STORED_CHARS) == "x" * MAX_STORED_CHARS
    assert storable("a\x00b", 10, more=True) == "a\ufffdb…"


@pytest.mark.parametrize("text", ODD)
def test_storable_json_reads_back_the_very_same_values(text):
    records = [{text: text, "nested": [text, {"k": text}]}]
    stored = storable_json(json.dumps(records, ensure_ascii=False))
    stored.encode("utf-8")
    assert "\x00" not in stored and json.loads(stored) == records
