"""Replay: answer in the shapes a real Altcraft account gave (``python -m altcraft probe --record``).

The emulator still does the work (profiles, journal, task ids stay true); only the *shape* of each answer
comes from the recording of its endpoint, adapted to the request:

* keys the recording has keep the emulator's values (profile and task ids, per-item outcomes); keys only
  the recording has are answered as recorded; keys only the emulator has are dropped;
* a list takes the emulator's length, every element shaped like the first recorded one (one entry per
  request item); an empty recorded list leaves the emulator's list as it is;
* a terminal task ``status`` keeps the recorded spelling (``completed`` or ``success``);
* an endpoint recorded only with an error answers that error (body and HTTP status) every time.

So a user's real answers become regression fixtures: see ``tests/fixtures/recordings/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT = "altcraft-exchanges/1"
_TERMINAL = frozenset({"completed", "complete", "success", "succeeded", "done", "finished"})


@dataclass(frozen=True, slots=True)
class Exchange:
    """One recorded API call: what was sent (token scrubbed) and what came back."""

    endpoint: str
    status: int
    request: Any
    response: Any

    @property
    def failed(self) -> bool:
        return not isinstance(self.response, dict) or bool(self.response.get("error")) or self.status >= 400


@dataclass(frozen=True, slots=True)
class Replay:
    """The answer shape per endpoint: the last successful exchange, else the last error."""

    shapes: dict[str, Exchange]
    errors: dict[str, Exchange]

    @classmethod
    def load(cls, path: Path) -> Replay:
        return cls.from_document(json.loads(Path(path).read_text("utf-8")))

    @classmethod
    def from_document(cls, document: Any) -> Replay:
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f'not a recording: expected an object with "format": {FORMAT!r}')
        shapes: dict[str, Exchange] = {}
        errors: dict[str, Exchange] = {}
        for number, raw in enumerate(document.get("exchanges") or []):
            try:
                exchange = Exchange(
                    str(raw["endpoint"]).strip("/"), int(raw["status"]), raw.get("request"), raw["response"]
                )
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"exchange #{number}: needs endpoint, status and response") from None
            (errors if exchange.failed else shapes)[exchange.endpoint] = exchange
        return cls(shapes, {k: v for k, v in errors.items() if k not in shapes})

    def error_for(self, endpoint: str) -> Exchange | None:
        return self.errors.get(endpoint)

    def shape(self, endpoint: str, answer: dict[str, Any]) -> Any:
        recorded = self.shapes.get(endpoint)
        return answer if recorded is None else reshape(recorded.response, answer)


def reshape(recorded: Any, real: Any) -> Any:
    """``real`` in the shape of ``recorded`` (rules in the module docstring)."""
    if recorded is None or real is None:
        return None
    if isinstance(recorded, dict) and isinstance(real, dict):
        shaped = {}
        for key, value in recorded.items():
            keep_recorded = key not in real or (key == "status" and _terminal(value) and _terminal(real[key]))
            if keep_recorded:
                shaped[key] = value
            else:
                shaped[key] = reshape(value, real[key])
        return shaped
    if isinstance(recorded, list) and isinstance(real, list):
        return [reshape(recorded[0], item) for item in real] if recorded else real
    if isinstance(recorded, (dict, list)) != isinstance(real, (dict, list)):
        return recorded
    return real


def _terminal(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in _TERMINAL
