"""Where a throughput job's CPU goes: py-spy samples of every thread, added up by step of the data path.

A job is run under ``py-spy record --format raw`` (sampling the running threads only, so a thread waiting
for PostgreSQL or the emulator adds nothing); each sample of the timed part (the delivery, or the floor's
loop) is charged to the deepest frame that names a step, e.g. a phone check inside the mapper counts as
"validation: phone", not as "mapping". A share times the job's CPU per contact gives microseconds per step.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

OTHER = "other"
_IMPORT = "<frozen importlib._bootstrap>"  # one-time imports in the timed part are left out
#: The mapping worker giving the GIL away (``time.sleep(0)``) and waiting to take it back: py-spy counts that
#: thread as running, but it is not using a core. Samples whose deepest frame is there are left out.
_GIL_PAUSE = "pausing (altcraft/delivery.py"

#: client -> (frames that mark the timed part, [(step, frame substrings)]); deepest match wins
STEPS: dict[str, tuple[tuple[str, ...], list[tuple[str, tuple[str, ...]]]]] = {
    "ours": (
        # the delivery thread, the mapping worker, the settle worker (`delivery.Behind`) and the claim worker
        (
            "Delivery.process (",
            "prefetch.<locals>.work (",
            "LedgerSession.settle (",
            "Delivery._open_claim (",
        ),
        [
            ("validation: email", ("_email (altcraft/validation.py", "email_validator/")),
            ("validation: phone", ("_phone (altcraft/validation.py", "phonenumbers/")),
            ("source: read rows", ("altcraft/sources/",)),
            ("mapping (the rest of Mapper.map)", ("Mapper.map (",)),
            ("answer: parse and clean", ("parse_response (", "parse_answer (")),
            ("request: encode and HTTP", ("AltcraftHook.call (", "AltcraftCalls.")),
            ("ledger: claim", ("Ledger.claim (", "Ledger.open_claim (", "OpenClaim.commit (")),
            ("ledger: settle", ("Ledger.settle (",)),
            ("chunking", ("altcraft/batching.py",)),
            ("delivery bookkeeping", ("altcraft/delivery.py",)),
        ],
    ),
    "floor": (
        ("_floor_loop (",),
        [
            ("validation: email", ("email_validator/", "normalize_email (")),
            ("validation: phone", ("phonenumbers/", "normalize_phone (")),
            ("source: read rows", ("psycopg/",)),
            ("JSON encode", ("json/encoder.py", "dumps (")),
            ("request: HTTP", ("requests/", "urllib3/", "http/client.py")),
            ("answer: parse", ("json/decoder.py", "Response.json (")),
        ],
    ),
}


def py_spy() -> str | None:
    """The py-spy executable of this environment (a dev extra), if any."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def command(raw: Path) -> list[str]:
    """Prefix of a job's command line that samples it into ``raw`` (collapsed stacks)."""
    spy = py_spy()
    if spy is None:
        raise RuntimeError("py-spy is not installed (pip install -e '.[dev]')")
    return [spy, "record", "--nonblocking", "--rate", "250", "--format", "raw", "--output", str(raw), "--"]


def shares(raw: str, client: str) -> dict[str, Any]:
    """Samples of the timed part by step: ``{"samples": n, "steps": {step: share}}``, largest first."""
    timed, steps = STEPS["floor" if client.startswith("floor") else client]
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if not any(frame.startswith(timed) for frame in frames) or any(_IMPORT in f for f in frames):
            continue
        if frames[-1].startswith(_GIL_PAUSE):
            continue
        counts[_step(frames, steps)] += int(count)
    total = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda item: (item[0] == OTHER, -item[1]))
    return {"samples": total, "steps": {step: n / total for step, n in ordered} if total else {}}


def _step(frames: list[str], steps: list[tuple[str, tuple[str, ...]]]) -> str:
    for frame in reversed(frames):
        for step, marks in steps:
            if any(mark in frame for mark in marks):
                return step
    return OTHER
