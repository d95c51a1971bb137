"""The one retry policy of both hooks: what may be retried, how long to wait, when to give up.

Reads and status polls retry any retryable error. A *launching* call (it puts people into a scenario)
is retried only when Altcraft certainly did not process it: HTTP 429, or a connection that could not be
opened. An answer that refuses the request as a whole (`AltcraftApiError.refused`) is final; everything
else that may have reached Altcraft becomes :class:`AltcraftDeliveryUncertain`.
HTTP 429 answers are budgeted apart from other failures (by count and by total wait), so a stream of
``Retry-After: 0`` answers neither spins forever nor eats the retries meant for real failures.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import tenacity

from altcraft.api.errors import (
    AltcraftApiError,
    AltcraftDeliveryUncertain,
    AltcraftError,
    AltcraftRateLimited,
    AltcraftTransportError,
)

log = logging.getLogger(__name__)


def certainly_not_processed(exc: BaseException) -> bool:
    """True when the request cannot have been processed by Altcraft."""
    return isinstance(exc, AltcraftRateLimited) or (isinstance(exc, AltcraftTransportError) and not exc.sent)


def is_retryable(exc: BaseException, *, launching: bool) -> bool:
    """The retry predicate shared by the sync and async hooks."""
    if not isinstance(exc, AltcraftError) or not exc.retryable:
        return False
    return certainly_not_processed(exc) if launching else True


def as_uncertain(exc: BaseException, endpoint: str, keys: Sequence[str]) -> BaseException:
    """The error a launching call raises once retrying is over: uncertain unless surely unprocessed --
    never sent, rate-limited, or refused as a whole (`AltcraftApiError.refused`). An error code that is
    not a refusal (402, 5xx, one no page documents) or an error answer that also reports on profiles
    does not say that nothing was done."""
    if certainly_not_processed(exc) or isinstance(exc, AltcraftDeliveryUncertain):
        return exc
    if isinstance(exc, AltcraftApiError) and exc.refused:
        return exc
    if isinstance(exc, AltcraftError):
        return AltcraftDeliveryUncertain(endpoint, keys, exc)
    return exc


@dataclass(frozen=True)
class RetryPolicy:
    """Retry limits, configurable per connection (see :mod:`altcraft.hooks.connection`)."""

    max_retries: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    rate_limit_retries: int = 50
    rate_limit_max_wait: float = 300.0

    def retrying(self, *, launching: bool) -> tenacity.Retrying:
        return tenacity.Retrying(**self._arguments(launching))

    def async_retrying(self, *, launching: bool) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(**self._arguments(launching))

    def _arguments(self, launching: bool) -> dict:
        budget = _Budget(self)
        return {
            "retry": tenacity.retry_if_exception(lambda exc: is_retryable(exc, launching=launching)),
            "stop": budget.stop,
            "wait": budget.wait,
            "before_sleep": _log_retry,
            "reraise": True,
        }


class _Budget:
    """Per-call counters: failures and 429s are counted apart."""

    def __init__(self, policy: RetryPolicy):
        self.policy = policy
        self.failures = 0
        self.rate_limited = 0
        self.rate_limit_wait = 0.0
        self._backoff = tenacity.wait_random_exponential(
            multiplier=policy.backoff_initial, max=policy.backoff_max
        )

    def wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, AltcraftRateLimited) and exc.retry_after is not None:
            return min(exc.retry_after, self.policy.rate_limit_max_wait)
        return self._backoff(state)

    def stop(self, state: tenacity.RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, AltcraftRateLimited):
            self.rate_limited += 1
            self.rate_limit_wait += exc.retry_after if exc.retry_after is not None else 0.0
            policy = self.policy
            if self.rate_limit_wait > policy.rate_limit_max_wait:
                log.warning(
                    "Altcraft asked to wait %.0f s in all (Retry-After), more than the connection's "
                    "rate_limit_max_wait of %.0f s: giving up",
                    self.rate_limit_wait,
                    policy.rate_limit_max_wait,
                )
                return True
            if self.rate_limited > policy.rate_limit_retries:
                log.warning(
                    "Altcraft answered 429 %d times, more than the connection's rate_limit_retries allow",
                    self.rate_limited,
                )
                return True
            return False
        self.failures += 1
        return self.failures > self.policy.max_retries


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning("Altcraft call failed (%s); retry %d in %.2fs", exc, state.attempt_number, wait)
