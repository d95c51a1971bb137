"""The relaunch policy of a scenario's contacts: apart from the ledger package, so that validating a pipeline
spec (at every parse of the DAG folder) imports no SQL tables or stores."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
MAX_COOLDOWN = timedelta(days=36_500)
"""The longest cooldown (100 years): now minus a longer one leaves the dates a ledger can compare."""
_POLICY_HELP = "relaunch policy must be 'once', 'every_run' or 'cooldown:<N>d|h|m'"


@dataclass(frozen=True)
class RelaunchPolicy:
    """When a contact already launched into the scenario may be launched again.

    ``once``: never. ``cooldown``: when its last launch is older than ``cooldown`` and it was not launched
    for the same window. ``every_run``: by every run, except a rerun of a window it was launched for.
    """

    kind: Literal["once", "cooldown", "every_run"]
    cooldown: timedelta | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("once", "cooldown", "every_run"):
            raise ValueError(f"{_POLICY_HELP}, got kind {self.kind!r}")
        if (self.kind == "cooldown") != (self.cooldown is not None):
            raise ValueError("a cooldown duration is required for kind 'cooldown' and only for it")
        if self.cooldown is not None and (self.cooldown <= timedelta(0) or self.cooldown % _UNITS["m"]):
            raise ValueError("cooldown must be a positive whole number of minutes")
        if self.cooldown is not None and self.cooldown > MAX_COOLDOWN:
            raise ValueError(f"cooldown must be at most {MAX_COOLDOWN.days} days (longer is `once`)")

    @classmethod
    def parse(cls, text: str) -> RelaunchPolicy:
        """Parse ``once``, ``every_run`` or ``cooldown:<N><d|h|m>`` (e.g. ``cooldown:30d``)."""
        spec = text.strip().lower()
        if spec in ("once", "every_run"):
            return cls(spec)  # type: ignore[arg-type]
        kind, _, amount = spec.partition(":")
        match = re.fullmatch(r"([0-9]{1,9})([dhm])", amount)
        if kind != "cooldown" or match is None:
            raise ValueError(f"{_POLICY_HELP}, got {text!r}")
        return cls("cooldown", int(match[1]) * _UNITS[match[2]])

    def __str__(self) -> str:
        if self.cooldown is None:
            return self.kind
        unit = next(name for name, size in _UNITS.items() if not self.cooldown % size)
        return f"cooldown:{self.cooldown // _UNITS[unit]}{unit}"
