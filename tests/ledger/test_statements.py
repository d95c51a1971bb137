"""altcraft.ledger.statements: PostgreSQL array text, fast paths against the element-by-element rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from altcraft.ledger.statements import _array_literal


def reference(values: list) -> str:
    """Array input text as PostgreSQL documents it: every element double-quoted, ``\\`` and ``"`` escaped."""
    quoted = [
        "NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values
    ]
    return "{" + ",".join(quoted) + "}"


@given(st.lists(st.one_of(st.none(), st.integers(), st.text(), st.sampled_from(['"', "\\", "NULL", ","]))))
def test_array_text_is_the_documented_quoting_of_every_element(values):
    assert _array_literal(values) == reference(values)


@given(st.lists(st.text(alphabet=st.characters(blacklist_characters='"\\'))))
def test_plain_text_arrays_take_the_fast_path_and_agree(values):
    assert _array_literal(iter(values)) == reference(values)


@given(st.lists(st.none(), min_size=1))
def test_all_null_arrays_take_the_fast_path_and_agree(values):
    assert _array_literal(values) == reference(values)


@given(st.lists(st.one_of(st.none(), st.integers()), min_size=1))
def test_arrays_of_numbers_and_nulls_agree(values):
    assert _array_literal(tuple(values)) == reference(values)
