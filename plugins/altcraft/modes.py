"""How profiles reach Altcraft: the one list of delivery modes (operator, pipeline spec, delivery)."""

from __future__ import annotations

from enum import StrEnum


class DeliveryMode(StrEnum):
    """How profiles reach Altcraft."""

    SINGLE = "single"  # workflows/import_and_start, one request per contact
    BATCH = "batch"  # workflows/import_and_start_batch
    ASYNC = "async"  # workflows/import_and_start_batch_task + tasks/status


#: Modes whose launching request is answered only once Altcraft has processed it: nothing of it is left to
#: run later. An ``async`` request creates a task that may still be queued when the request's answer is lost.
SYNCHRONOUS = frozenset({DeliveryMode.SINGLE, DeliveryMode.BATCH})
