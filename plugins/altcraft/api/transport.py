"""How far a failed HTTP exchange with Altcraft got: one classification for both hooks.

Each hook has a small adapter that reads its HTTP library's exception (``requests`` for
:class:`~altcraft.hooks.altcraft.AltcraftHook`, ``aiohttp`` for
:class:`~altcraft.hooks.altcraft_async.AltcraftAsyncHook`) into two library-neutral facts, an
:class:`Observed`; :func:`classify` gives its :class:`Fate` and :func:`transport_error` the typed error that
the retry policy (:mod:`altcraft.api.retry`) and the delivery act on. Transport-free and pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from altcraft.api.errors import AltcraftTransportError


class Fate(StrEnum):
    """What a failed exchange may have done at Altcraft."""

    #: no connection could be opened (name lookup, connection refused, connect timeout): the request never
    #: left, so even a launch may be retried
    NEVER_SENT = "never sent"
    #: a connection was open when the exchange failed (reset, timeout, incomplete answer): Altcraft may have
    #: processed the request, so a launch becomes uncertain
    MAYBE_PROCESSED = "maybe processed"
    #: the HTTP library refused to build the request (an invalid URL or header): nothing was sent, and
    #: sending again cannot help
    REFUSED = "refused"


@dataclass(frozen=True)
class Observed:
    """What a transport adapter saw of a failed exchange."""

    built: bool  # the HTTP library accepted the request (URL, headers)
    connected: bool  # a connection to the server was opened
    timed_out: bool  # the call's deadline (connect + send + the whole answer) passed
    kind: str  # the library's exception class name, for the message
    why: str | None = None  # what it says the user should change (`altcraft.unanswered.explained`)


def classify(observed: Observed) -> Fate:
    """The fate of a failed exchange: refused before sending, never sent, or maybe processed."""
    if not observed.built:
        return Fate.REFUSED
    return Fate.MAYBE_PROCESSED if observed.connected else Fate.NEVER_SENT


class AltcraftRequestRefused(AltcraftTransportError):
    """The HTTP library could not build the request (the connection's URL or a header is invalid).

    Nothing was sent; not retryable: the connection must be fixed.
    """

    retryable = False


def transport_error(observed: Observed, *, endpoint: str, timeout: float) -> AltcraftTransportError:
    """The typed error of a failed exchange; never any part of the request (no URL, no token).

    The hooks raise it outside their ``except`` block, so the HTTP library's exception is neither its cause
    nor its context: that exception's text may quote what the server sent (a chunk-size or status line
    echoing the token or an email), and a traceback would print it.
    """
    fate = classify(observed)
    what = f"no complete answer within {timeout:g}s" if observed.timed_out else observed.kind
    message = f"{what} talking to Altcraft" + (f": {observed.why}" if observed.why else "")
    if fate is Fate.REFUSED:
        return AltcraftRequestRefused(
            f"{message}: the request could not be built", sent=False, endpoint=endpoint
        )
    return AltcraftTransportError(message, sent=fate is Fate.MAYBE_PROCESSED, endpoint=endpoint)
