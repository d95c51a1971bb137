"""Where a throughput job's CPU goes: py-spy samples of every thread, added up by thread and step.

A job is run under ``py-spy record --format raw``; each sample of the timed part (the delivery, or the
floor's loop) is charged to its thread, told by the frame that starts the thread's part, and to the
deepest frame that names a step, e.g. a phone check inside the mapper counts as "validation: phone", not
as "mapping". A step's share of its thread's samples times that thread's CPU per contact (measured in the
job, `bench.common.ThreadCpu`) gives microseconds per step.

Only samples holding the GIL count (``--gil``) and shares are taken within a thread: py-spy counts a thread
as running while it is ready but waits for a core, and on a busy machine a thread that wakes often (the
ledger workers on every PostgreSQL answer, the source on every fetch) waits far more than one that
computes. Shares of all samples across threads overstated the ledger's CPU nearly threefold.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

OTHER = "other"
OTHER_THREADS = "other threads"
_IMPORT = "<frozen importlib._bootstrap>"  # one-time imports in the timed part are left out
#: The mapping worker giving the GIL away (``time.sleep(0)``) and waiting to take it back: py-spy counts that
#: thread as running, but it is not using a core. Samples whose deepest frame is there are left out.
_GIL_PAUSE = "pausing (altcraft/delivery.py"

#: client -> ({thread: frame that starts its part of the timed part}, [(step, frame substrings)]); a sample
#: goes to the first thread whose frame it has, and to the deepest step that matches
STEPS: dict[str, tuple[dict[str, str], list[tuple[str, tuple[str, ...]]]]] = {
    "ours": (
        {
            "MainThread": "Delivery.process (",  # the delivery thread
            "altcraft-prefetch": "prefetch.<locals>.work (",  # reads and maps the next batches
            "altcraft-claim": "Delivery._open_claim (",  # claims the next chunk while one is sent
            "altcraft-settle": "Delivery._settle.<locals>.write (",  # settles a chunk (`delivery.Behind`)
        },
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
        {"MainThread": "_floor_loop ("},
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
    return [
        spy,
        "record",
        "--nonblocking",
        "--gil",
        "--rate",
        "250",
        "--format",
        "raw",
        "--output",
        str(raw),
        "--",
    ]


def shares(raw: str, client: str) -> dict[str, Any]:
    """Samples of the timed part by thread and step: ``{"samples": n, "threads": {thread: {"samples": n,
    "steps": {step: share of the thread's samples}}}}``, steps largest first."""
    threads, steps = STEPS["floor" if client.startswith("floor") else client]
    counts: dict[str, Counter[str]] = {thread: Counter() for thread in threads}
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = next((t for t, mark in threads.items() if any(f.startswith(mark) for f in frames)), None)
        if thread is None or any(_IMPORT in f for f in frames) or frames[-1].startswith(_GIL_PAUSE):
            continue
        counts[thread][_step(frames, steps)] += int(count)
    return {
        "samples": sum(sum(c.values()) for c in counts.values()),
        "threads": {thread: _ordered(c) for thread, c in counts.items() if c},
    }


def _ordered(counts: Counter[str]) -> dict[str, Any]:
    total = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda item: (item[0] == OTHER, -item[1]))
    return {"samples": total, "steps": {step: n / total for step, n in ordered}}


def step_cpu(run: dict[str, Any]) -> dict[str, float]:
    """CPU per contact (us) by step of a sampled job: each thread's step shares times the thread's CPU per
    contact; the CPU of threads outside the job's parts (the deadline thread) is
    ``OTHER_THREADS``. Largest first, the rest last."""
    thread_cpu = run["thread_cpu_us_per_contact"]
    cpu: Counter[str] = Counter()
    for thread, sampled in run["threads"].items():
        for step, share in sampled["steps"].items():
            cpu[step] += share * thread_cpu.get(thread, 0.0)
    cpu[OTHER_THREADS] = max(
        0.0, run["cpu_us_per_contact"] - sum(thread_cpu.get(t, 0.0) for t in run["threads"])
    )
    return dict(sorted(cpu.items(), key=lambda item: (item[0] in (OTHER, OTHER_THREADS), -item[1])))


def _step(frames: list[str], steps: list[tuple[str, tuple[str, ...]]]) -> str:
    for frame in reversed(frames):
        for step, marks in steps:
            if any(mark in frame for mark in marks):
                return step
    return OTHER
