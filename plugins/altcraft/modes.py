"""How profiles reach Altcraft: the one list of delivery modes (operator, pipeline spec, delivery)."""

from __future__ import annotations

from enum import StrEnum


class DeliveryMode(StrEnum):
    """How profiles reach Altcraft."""

    SINGLE = "single"  # workflows/import_and_start, one request per contact
    BATCH = "batch"  # workflows/import_and_start_batch
    ASYNC = "async"  # workflows/import_and_start_batch_task + tasks/status
