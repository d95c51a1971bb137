"""The one classification of failed exchanges (altcraft.api.transport), table by table."""

from __future__ import annotations

import pytest

from altcraft.api.transport import AltcraftRequestRefused, Fate, Observed, classify, transport_error


@pytest.mark.parametrize(
    ("built", "connected", "fate"),
    [
        (False, False, Fate.REFUSED),
        (True, False, Fate.NEVER_SENT),
        (True, True, Fate.MAYBE_PROCESSED),
    ],
    ids=["the library refused the request", "no connection opened", "a connection was open"],
)
def test_how_far_a_failed_exchange_got(built, connected, fate):
    assert classify(Observed(built=built, connected=connected, timed_out=False, kind="X")) is fate


@pytest.mark.parametrize(
    ("observed", "kind", "sent", "retryable", "message"),
    [
        (
            Observed(built=False, connected=False, timed_out=False, kind="InvalidURL"),
            AltcraftRequestRefused,
            False,
            False,
            "InvalidURL talking to Altcraft: the request could not be built (tasks/status)",
        ),
        (
            Observed(built=True, connected=False, timed_out=False, kind="ConnectTimeout"),
            AltcraftRequestRefused.__base__,
            False,
            True,
            "ConnectTimeout talking to Altcraft (tasks/status)",
        ),
        (
            Observed(built=True, connected=True, timed_out=True, kind="ReadTimeout"),
            AltcraftRequestRefused.__base__,
            True,
            True,
            "no complete answer within 2.5s talking to Altcraft (tasks/status)",
        ),
    ],
    ids=["refused", "never sent", "maybe processed, deadline passed"],
)
def test_the_typed_error_of_each_fate(observed, kind, sent, retryable, message):
    error = transport_error(observed, endpoint="tasks/status", timeout=2.5)
    assert type(error) is kind
    assert (error.sent, error.retryable, str(error)) == (sent, retryable, message)
