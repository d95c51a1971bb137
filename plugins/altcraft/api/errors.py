"""Typed errors of the Altcraft API.

Every error says whether retrying can help (:attr:`AltcraftError.retryable`). Launching calls add one
more distinction: :class:`AltcraftDeliveryUncertain` means the request may have been processed, so it
must be recorded, never blindly resent. No error message ever contains the API token.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Body/HTTP codes for which a retry cannot help: the request itself is wrong or not allowed.
NON_RETRYABLE_CODES = frozenset({400, 401, 402, 403, 404, 409, 413})
#: Codes with which a server refuses a request before acting on it: bad request, no or a wrong token,
#: forbidden (the API-interaction page's table), a resource that does not exist, an ambiguous match (the
#: Quick profile import page's HTTP codes), a body too large to be read. 402 (tariff limit) is not one: a
#: batch may reach the limit part way. Any other code proves nothing about what was done.
REFUSAL_CODES = frozenset({400, 401, 403, 404, 409, 413})


class AltcraftError(Exception):
    """Base class of every error raised by the Altcraft hooks."""

    retryable: bool = False


class AltcraftApiError(AltcraftError):
    """Altcraft answered with an error: HTTP status not 2xx, or a non-zero ``error`` code.

    ``per_profile``: the answer also carried per-profile output (a ``result`` list, a ``profile_id``), so
    something may have been done for some profiles whatever its code says. ``coded``: the answer itself
    carried the error code (an Altcraft answer: "error — error code; error_text — error description",
    developer-guide/api-interaction); False when ``code`` is only the HTTP status of a body without one (a
    proxy's or router's page).
    """

    def __init__(
        self,
        code: int,
        text: str,
        *,
        http_status: int | None = None,
        endpoint: str = "",
        per_profile: bool = False,
        coded: bool = True,
    ):
        self.code = code
        self.coded = coded
        self.text = text
        self.http_status = http_status
        self.endpoint = endpoint
        self.per_profile = per_profile
        statuses = {c for c in (code, http_status) if c and not 200 <= c < 300}
        self.retryable = not statuses & NON_RETRYABLE_CODES and any(c == 429 or c >= 500 for c in statuses)
        where = f" from {endpoint}" if endpoint else ""
        http = f" (HTTP {http_status})" if http_status and http_status != code else ""
        super().__init__(f"Altcraft error {code}{http}{where}: {text}")

    @property
    def server_side(self) -> bool:
        """A 5xx-class failure: the server (or a proxy in front of it) broke while handling the request."""
        return any(c >= 500 for c in (self.code, self.http_status or 0))

    @property
    def token_refused(self) -> bool:
        """Whether Altcraft's answer (`coded`: not a proxy's page) refuses the request's API token: 401 (no
        or a wrong token) or 403 (one without access), reporting on no profile."""
        return self.coded and bool({self.code, self.http_status} & {401, 403}) and not self.per_profile

    @property
    def refused(self) -> bool:
        """Whether the answer says the request was refused as a whole, so nothing of it was processed:
        every code it carries is one of `REFUSAL_CODES`, and it has no per-profile output."""
        codes = {c for c in (self.code, self.http_status) if c and not 200 <= c < 300}
        return bool(codes) and codes <= REFUSAL_CODES and not self.per_profile


class AltcraftRateLimited(AltcraftApiError):
    """HTTP 429 (or `error` 429) reporting on no profile. The request was not processed; safe to retry after
    :attr:`retry_after` seconds."""

    def __init__(self, text: str, *, retry_after: float | None, endpoint: str = ""):
        super().__init__(429, text, http_status=429, endpoint=endpoint)
        self.retry_after = retry_after
        self.retryable = True


class AltcraftTransportError(AltcraftError):
    """The HTTP exchange failed: connection refused, reset, timeout, or an unreadable response body.

    ``sent`` is False only when the request certainly never left this process (the connection could not
    be opened); then even a launching call may be retried.
    """

    retryable = True

    def __init__(self, message: str, *, sent: bool, endpoint: str = ""):
        self.sent = sent
        self.endpoint = endpoint
        super().__init__(f"{message} ({endpoint})" if endpoint else message)


class AltcraftUnexpectedAnswer(AltcraftTransportError):
    """A 2xx answer that is not what the API documents for the endpoint (wrong JSON shape or types).

    The request reached Altcraft and may have been processed; a launching call raises it as
    :class:`AltcraftDeliveryUncertain`. The message names the places that did not parse, not their values.
    """

    def __init__(self, problem: str, *, endpoint: str = ""):
        super().__init__(f"unexpected answer: {problem}", sent=True, endpoint=endpoint)


class AltcraftAnswerTooLarge(AltcraftUnexpectedAnswer):
    """The answer's body is larger than the connection's ``max_answer_bytes``; it was not read further.

    Not retryable: asking again would get the same answer. After a launch it is delivery-uncertain, like
    any answer that came back unread.
    """

    retryable = False

    def __init__(self, limit: int, *, endpoint: str = ""):
        super().__init__(f"the body is larger than {limit:,} bytes (max_answer_bytes)", endpoint=endpoint)


class AltcraftRedirected(AltcraftTransportError):
    """Altcraft (or something in front of it) answered with a redirect, which API calls never follow.

    Following one would re-send the body -- token included -- to wherever ``Location`` points, or turn
    the call into a GET whose answer proves nothing. Not retryable: the connection's URL is wrong.
    The request reached a server, so a launching call becomes :class:`AltcraftDeliveryUncertain`
    (a 301/302/303 is how a server says "done, look there"; see docs/security.md).
    """

    retryable = False

    def __init__(self, http_status: int, location: str, *, endpoint: str = ""):
        self.http_status = http_status
        super().__init__(
            f"HTTP {http_status} redirect to {location or 'nowhere'} not followed: "
            "set the connection's Platform URL to the address the API really answers on",
            sent=True,
            endpoint=endpoint,
        )


class AltcraftDeliveryUncertain(AltcraftError):
    """A launching request may have reached Altcraft, but no reliable answer came back.

    The profiles in :attr:`keys` may or may not have been launched. Record them as uncertain; resending
    them could send a second message to a real person.
    """

    retryable = False

    def __init__(self, endpoint: str, keys: Sequence[str], cause: BaseException):
        self.endpoint = endpoint
        self.keys = list(keys)
        self.cause = cause
        super().__init__(
            f"Delivery uncertain for {len(self.keys) or 'the'} profile(s) sent to {endpoint}: {cause}. "
            "They may have been launched; they are not resent automatically."
        )
