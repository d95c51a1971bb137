"""Fault rules of the emulator: which request (or batch item) gets which injected failure.

A rule names an ``endpoint`` (an API method such as ``workflows/import_and_start_batch``, or ``*``), a
``kind`` and a selection: ``every`` (every n-th matching request), ``probability`` (0..1, drawn from a
seedable :class:`random.Random`) or neither (always), capped by ``count`` firings (``None`` = unbounded).
``profile_error`` rules select batch *items* instead of requests: their counters advance per item.
``reorder_results`` rules act on a batch answer (or a finished task's results): they rotate its per-profile
``result`` list by one, so each result sits at the position of another item -- what a server answering in
another order than the request's would do.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

#: Kinds acted on by the ASGI fault layer, before or around the request.
REQUEST_KINDS = frozenset({"status", "latency", "malformed", "html", "drop_before", "drop_after"})
#: Kind acted on inside batch processing, per item.
ITEM_KIND = "profile_error"
#: Kind acted on a batch's per-profile results, once per answer (or finished task).
RESULTS_KIND = "reorder_results"

_RULE_KEYS = frozenset(
    {
        "endpoint",
        "kind",
        "status",
        "retry_after",
        "latency_ms",
        "code",
        "text",
        "probability",
        "every",
        "count",
    }
)
_DEFAULT_STATUS = {"status": 500, "html": 502}


@dataclass(slots=True)
class FaultRule:
    """One injected fault and its counters (``seen``: matching requests/items, ``hits``: firings)."""

    kind: str
    endpoint: str = "*"
    status: int = 500
    retry_after: float | None = None
    latency_ms: float = 0
    code: int = 500
    text: str = ""
    probability: float | None = None
    every: int | None = None
    count: int | None = None
    seen: int = 0
    hits: int = 0

    @classmethod
    def parse(cls, raw: Any, endpoints: Collection[str], batch_endpoints: Collection[str]) -> FaultRule:
        """Validate a rule given as JSON; ``ValueError`` names the field that is wrong.

        ``endpoints``: the API methods there are; ``batch_endpoints``: those answering per-profile results,
        the only ones a ``profile_error`` or ``reorder_results`` rule can act on. A rule that could never
        fire is refused: a test relying on it would pass without its fault.
        """
        if not isinstance(raw, dict):
            raise ValueError("a fault rule must be an object")
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            raise ValueError(f"unknown fault rule keys: {sorted(unknown)}")
        kind = raw.get("kind")
        kinds = sorted(REQUEST_KINDS | {ITEM_KIND, RESULTS_KIND})
        if not isinstance(kind, str) or kind not in kinds:
            raise ValueError(f"'kind' must be one of {kinds}, not {kind!r}")
        endpoint = raw.get("endpoint", "*")
        endpoint = endpoint.strip("/") if isinstance(endpoint, str) else endpoint
        allowed = batch_endpoints if kind in (ITEM_KIND, RESULTS_KIND) else endpoints
        if not isinstance(endpoint, str) or (endpoint != "*" and endpoint not in allowed):
            raise ValueError(
                f"'endpoint' of a {kind} rule must be '*' or one of {sorted(allowed)}, not {endpoint!r}"
            )
        if kind == "latency" and "latency_ms" not in raw:
            raise ValueError("a latency rule needs 'latency_ms'")
        return cls(
            kind=kind,
            endpoint=endpoint,
            status=bounded_number(raw, "status", int, _DEFAULT_STATUS.get(kind, 500), 100, 599),
            retry_after=bounded_number(raw, "retry_after", float, None, 0),
            latency_ms=bounded_number(raw, "latency_ms", float, 0, 0),
            code=bounded_number(raw, "code", int, 500, 1),
            text=str(raw.get("text") or ""),
            probability=bounded_number(raw, "probability", float, None, 0, 1),
            every=bounded_number(raw, "every", int, None, 1),
            count=bounded_number(raw, "count", int, None, 0),
        )

    def applies_to(self, endpoint: str) -> bool:
        return self.endpoint in ("*", endpoint)

    def fire(self, rng: random.Random) -> bool:
        """Count one matching request/item and say whether the rule fires on it."""
        if self.count is not None and self.hits >= self.count:
            return False
        self.seen += 1
        if self.every is not None:
            fired = self.seen % self.every == 0
        elif self.probability is not None:
            fired = rng.random() < self.probability
        else:
            fired = True
        self.hits += fired
        return fired

    def snapshot(self) -> dict[str, Any]:
        remaining = None if self.count is None else self.count - self.hits
        return {
            "kind": self.kind,
            "endpoint": self.endpoint,
            "status": self.status,
            "retry_after": self.retry_after,
            "latency_ms": self.latency_ms,
            "code": self.code,
            "text": self.text,
            "probability": self.probability,
            "every": self.every,
            "count": self.count,
            "remaining": remaining,
            "seen": self.seen,
            "hits": self.hits,
        }


@dataclass(slots=True, frozen=True)
class RequestPlan:
    """What the fault layer does with one API request: extra latency, then at most one action rule."""

    latency_ms: float = 0
    action: FaultRule | None = None


class FaultBook:
    """The active fault rules, in the order they were added, and the random source for ``probability``."""

    def __init__(
        self, random_seed: int, endpoints: Collection[str], batch_endpoints: Collection[str]
    ) -> None:
        """``endpoints`` / ``batch_endpoints``: what a rule may name (see :meth:`FaultRule.parse`)."""
        self._initial_seed = random_seed
        self._endpoints = endpoints
        self._batch_endpoints = batch_endpoints
        self.rules: list[FaultRule] = []
        self.rng = random.Random(random_seed)

    def reset(self) -> None:
        """Drop every rule and restart the random sequence from the initial seed."""
        self.rules.clear()
        self.rng.seed(self._initial_seed)

    def add(self, raw_rules: Any, random_seed: int | None = None) -> None:
        """Append rules (all validated before any is added); optionally reseed the random source."""
        if not isinstance(raw_rules, list):
            raise ValueError("'rules' must be a list")
        parsed = [FaultRule.parse(raw, self._endpoints, self._batch_endpoints) for raw in raw_rules]
        if random_seed is not None:
            self.rng.seed(random_seed)
        self.rules.extend(parsed)

    def plan(self, endpoint: str) -> RequestPlan:
        """Latency of every firing latency rule, and the first firing action rule, for one request."""
        latency = 0.0
        action = None
        for rule in self.rules:
            if rule.kind in (ITEM_KIND, RESULTS_KIND) or not rule.applies_to(endpoint):
                continue
            if rule.kind == "latency":
                latency += rule.latency_ms if rule.fire(self.rng) else 0
            elif action is None and rule.fire(self.rng):
                action = rule
        return RequestPlan(latency, action)

    def item_fault(self, endpoint: str) -> FaultRule | None:
        """The first ``profile_error`` rule that fires for one batch item, if any."""
        for rule in self.rules:
            if rule.kind == ITEM_KIND and rule.applies_to(endpoint) and rule.fire(self.rng):
                return rule
        return None

    def ordered(self, endpoint: str, results: list[Any]) -> list[Any]:
        """A batch's per-profile ``results`` as answered: rotated by one when a ``reorder_results`` rule
        fires for ``endpoint`` (the first result goes last), else as they are."""
        for rule in self.rules:
            if rule.kind == RESULTS_KIND and rule.applies_to(endpoint) and rule.fire(self.rng):
                return results[1:] + results[:1]
        return results

    def snapshot(self) -> list[dict[str, Any]]:
        return [rule.snapshot() for rule in self.rules]


def bounded_number(
    raw: dict[str, Any],
    key: str,
    kind: type[int] | type[float],
    default: Any,
    minimum: float,
    maximum: float | None = None,
) -> Any:
    """``raw[key]`` as ``kind`` (``default`` when absent or null); ``ValueError`` naming ``key`` unless it
    is a finite number (an integer for ``int``) within ``minimum``..``maximum``."""
    value = raw.get(key)
    if value is None:
        return default
    try:
        valid = (
            not isinstance(value, bool)
            and isinstance(value, (int, float))
            and math.isfinite(value)
            and (kind is float or value == int(value))
        )
    except OverflowError:  # an integer beyond the float range
        valid = False
    if not valid:
        raise ValueError(f"'{key}' must be a finite number" + (" (integer)" if kind is int else ""))
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"'{key}' must be {bounds}")
    return kind(value)
