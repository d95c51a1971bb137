"""Where contacts come from: SQL tables and queries, files, REST APIs and Python callables.

Every source streams a data window as batches of records; see `altcraft.sources.base` for the contract
and `altcraft.sources.spec` for the pipeline spec models. Importing this package is cheap: database,
HTTP and object-storage libraries are loaded only when a source is read.
"""

from altcraft.sources.base import (
    ERROR_FIELD,
    ErrorRecord,
    MemoryStateStore,
    Partition,
    Record,
    Source,
    SourceError,
    StateStore,
    Window,
    error_record,
)
from altcraft.sources.files import FileSource
from altcraft.sources.python import PythonSource
from altcraft.sources.rest import (
    CursorPaginator,
    NextLinkPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    Paginator,
    RestSource,
)
from altcraft.sources.spec import SourceSpec
from altcraft.sources.sql import SqlQuerySource, SqlTableSource

__all__ = [
    "ERROR_FIELD",
    "CursorPaginator",
    "ErrorRecord",
    "FileSource",
    "MemoryStateStore",
    "NextLinkPaginator",
    "OffsetPaginator",
    "PageNumberPaginator",
    "Paginator",
    "Partition",
    "PythonSource",
    "Record",
    "RestSource",
    "Source",
    "SourceError",
    "SourceSpec",
    "SqlQuerySource",
    "SqlTableSource",
    "StateStore",
    "Window",
    "error_record",
]
