"""Keep the garbage collector off a delivery's hot path.

A task process holds a few hundred thousand long-lived objects before it reads its first row (Airflow,
the providers, the DAG). The collector's full passes, triggered every few tens of thousands of
allocations, walk all of them each time: about 20 microseconds of CPU per contact in `make bench`
(bench/throughput.py), a fifth of the client's cost. Inside :func:`frozen_heap` those objects sit in the
permanent generation (`gc.freeze`), so a full pass walks only what the delivery created.

The young generation's threshold is raised too (700 to :data:`YOUNG_THRESHOLD` new container objects
not yet freed): a delivery holds a few batches of records and profiles at a time, thousands of objects
that the default threshold walked again and again while they lived (in `make bench`, about 760 passes of
the young and 70 of the middle generation per 100,000 contacts: 2.9 microseconds of CPU per contact, to
free a few hundred objects); now a pass comes only when that many objects pile up, which a delivery's
batches rarely reach (2 to 4 passes per 100,000 contacts). Collection itself is unchanged:
garbage is collected as usual, a pass at most that many objects later, and the freeze and the thresholds
are handed back when the block ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Generator
from contextlib import contextmanager

#: Container objects allocated and not yet freed that start a pass over the young generation (inside
#: :func:`frozen_heap`; Python's default is 700). Above the swing of a delivery's batches in flight.
YOUNG_THRESHOLD = 20_000

_lock = threading.Lock()
_depth = 0
_thresholds: tuple[int, ...] = ()


@contextmanager
def frozen_heap() -> Generator[None]:
    """Freeze the objects that exist now and raise the young generation's threshold for the duration of
    the block (nested and threaded blocks share one: the first in sets them, the last out restores them).
    A threshold of 0 (automatic collection off) stays 0."""
    global _depth, _thresholds
    with _lock:
        if _depth == 0:
            gc.freeze()
            _thresholds = gc.get_threshold()
            young, *older = _thresholds
            gc.set_threshold(young and max(young, YOUNG_THRESHOLD), *older)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.set_threshold(*_thresholds)
                gc.unfreeze()
