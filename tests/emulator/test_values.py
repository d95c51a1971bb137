"""The emulator's value helpers that every batch item goes through, against their plain definitions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from altcraft.emulator.state import _rfc3339_millisecond, norm_phone, now_rfc3339

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PHONES = [
    "+7 (900) 000-00-01",
    "  +79000000001\t",
    "8-900-000 00 01",
    "(((---)))",
    "",
    " ",
    "+7\u00a0900\u2009000",  # no-break and thin spaces are not separators
    "٠١٢ (٣)",
    "+7 900\n000",
    "\x00-\ud800",
]


@pytest.mark.parametrize("raw", PHONES)
def test_norm_phone_strips_the_ends_and_drops_spaces_dashes_and_parentheses(raw):
    assert norm_phone(raw) == "".join(ch for ch in raw.strip() if ch not in " -()")


@pytest.mark.parametrize(
    "millisecond", [0, 1, 999, 1000, 1_709_164_800_123, 1_796_601_599_999, 253_402_300_799_999]
)
def test_a_millisecond_is_formatted_as_datetime_formats_it(millisecond):
    moment = EPOCH + timedelta(milliseconds=millisecond)
    assert _rfc3339_millisecond(millisecond) == moment.isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


def test_now_is_the_current_millisecond():
    before = datetime.now(UTC)
    now = datetime.fromisoformat(now_rfc3339())
    after = datetime.now(UTC)
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= now <= after
