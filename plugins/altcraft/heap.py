"""Keep the garbage collector's full passes off a delivery's hot path.

A task process holds a few hundred thousand long-lived objects before it reads its first row (Airflow,
the providers, the DAG). The collector's full passes, triggered every few tens of thousands of
allocations, walk all of them each time: about 20 microseconds of CPU per contact in `make bench`
(bench/throughput.py), a fifth of the client's cost. Inside :func:`frozen_heap` those objects sit in the
permanent generation (`gc.freeze`), so a full pass walks only what the delivery created. Collection
itself is unchanged: garbage made inside the block is collected as usual, and whatever was frozen is
handed back to the collector when the block ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Generator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0


@contextmanager
def frozen_heap() -> Generator[None]:
    """Freeze the objects that exist now for the duration of the block (nested and threaded blocks
    share one freeze: the first in freezes, the last out unfreezes)."""
    global _depth
    with _lock:
        if _depth == 0:
            gc.freeze()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.unfreeze()
