"""Checks shared by every model a pipeline spec holds (pipeline, source, mapping, trigger) and by the
connections: each rule is one function or one bound here, so no copy of it can drift.

Numbers are bounded by where they go: a value within its bounds parses, builds and runs (a larger
``pool_slots`` made every run fail to be created: SQLite's INTEGER and PostgreSQL's int4 refused it).
"""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator

MAX_INT32 = 2**31 - 1
"""An INTEGER column of Airflow's metadata database (pool slots), or a 32-bit API parameter (a page)."""
MAX_INT64 = 2**63 - 1
"""A BIGINT column, where the ledger keeps scenario ids: the largest Altcraft id (scenario, database,
resource) a spec may give."""
MAX_BYTES = 1 << 30
"""The largest size in bytes or characters a spec may set (1 GiB): a request, an answer, a profile or a
value this size is held in a worker's memory."""
MAX_TIMEOUT_SECONDS = 86_400
"""The longest one HTTP request of a source may take (a day); 1e10 seconds overflows the socket's timer."""
MIN_REQUESTS_PER_SECOND = 0.001
"""The slowest request rate a source may keep to (one request in 1,000 seconds): a rate near zero made
the wait between two requests overflow the sleep."""


def check_timezone(name: str) -> str:
    """Validate an IANA time zone name (``UTC``, ``Europe/Berlin``); the error names the field."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of zones (America), a long name
        raise ValueError(f"timezone: unknown time zone {name[:60]!r}") from None
    return name


Timezone = Annotated[str, AfterValidator(check_timezone)]
