"""CSV and JSON Lines files, local or in an object store, read through Airflow's ObjectStoragePath.

* ``path`` is a file or a directory/prefix whose files matching ``pattern`` are read (``**/`` recurses);
  ``file:///...``, ``s3://...``, ``gs://...`` URLs use ``conn_id`` for credentials. A local path that does
  not exist fails the read (`SourceError`), so a missing folder is not read as an empty one; an object
  store's prefix holding no object reads as empty (it has no folder that could be missing).
* ``window_by="column"``: rows whose ``timestamp_column`` lies outside the window are skipped
  (ISO 8601 text, naive read in ``timezone``; or epoch seconds). ``window_by="mtime"``: whole files whose
  modification time lies in the window are read.
* Order: files by path, rows in file order; the deterministic order is (file, line), not the key.
* A file is remembered as processed (by path, size, modification time and version: a local file's inode
  and change time, an object's ETag or generation) on `commit` and skipped next time; a changed file,
  also one replaced by another of the same size and modification time, counts as new. With
  ``window_by="mtime"`` a file outside the window is skipped without a state lookup. With
  ``window_by="column"`` a file is only remembered if every row fell inside the window: a file spanning
  several windows is read by each of them (rows filtered), so no window -- nor a retry or a partition of
  one -- can lose rows because another one committed first. Without a state store nothing is remembered.
* A file modified less than ``settle_seconds`` (10) ago whose last line lacks its terminator may still be
  being written, its last row cut short yet whole to the parser: the read waits until none was modified
  for ``settle_seconds`` (logged) and then reads them whole; one that changed meanwhile fails the read
  before any of its rows is read (`SourceError`), and the retry reads it.
* A file is read up to its size when listed. A local file that changes while it is read (checked after
  each block, before any row of it is used: the open file's inode, size, modification and change time
  against its listing's) fails the read (`SourceError`), no row of a block read since used: a rewrite in
  place would tear a row between old and new text. An append counts too (its status cannot tell it from
  a rewrite); the retry, or the run whose window holds its new modification time, reads the file whole.
  One renamed over it, or itself renamed or moved away, leaves the open file as it was: it is read whole.
* A local file that a link leads to out of ``path`` (resolved) is an error record keyed by its name, not
  read; a link within the folder is followed.
* A compressed file (`_compression`: gzip, bzip2, xz, zstd, zip) is one error record (``<file>:1``), not
  read as text.
* A line that cannot be read (invalid JSON, JSON nested too deep to parse or naming a key of an object
  twice, not an object, wrong number of CSV fields, text after a CSV field's closing quote, a CSV field
  over the csv module's ``field_size_limit`` of 128 KiB, bytes that are not valid in ``encoding``,
  unreadable timestamp, a line over `MAX_LINE_CHARS`) becomes an error record (`base.error_record`) with
  the key ``"<file>:<line>"`` (a CSV record's first line; bytes of a local file name that are not UTF-8 as
  U+FFFD, as in the path the state store keeps); the run goes on, the rest of the file is read, and the
  mapper rejects it (every window reading the file yields it again, under the same key). A CSV quoted field
  that never closes takes the rest of the file: its error record names the lines it took. Only a CSV
  header that cannot be read, or names a column twice (its rows would keep one of the values), fails the
  file.
* Partitions deal files by a stable hash of their path: each file is read by exactly one partition.
* ``null_values`` (CSV only): a cell whose whole text is one of them (``NULL``, ``\\N``, quoted or not) is
  None, an empty value, as a database exporting it meant; by default every cell is its text.
* ``delimiter`` (CSV): one character ``encoding`` can write, neither ``"`` (the quote character, fixed) nor
  CR or LF (`check_delimiter`); ``encoding``: a text encoding (`check_encoding`).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import os
import re
import time
import zlib
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, Literal, NamedTuple

from altcraft.records import JSON_DECODER, UNDECODABLE, UNDECODABLE_CHARS, named_twice, repeated
from altcraft.sources.base import (
    Partition,
    Record,
    SourceError,
    Stateful,
    StateStore,
    Window,
    check_partition,
    error_record,
    naive_zone,
    rechunk,
)
from altcraft.sources.timestamps import parse_timestamp
from altcraft.spec_checks import checked, no_credentials
from altcraft.storable import replace_unstorable

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

FileFormat = Literal["csv", "jsonl"]
WindowBy = Literal["column", "mtime"]

#: How long a file whose last line lacks its terminator must be unchanged to count as complete (seconds).
SETTLE_SECONDS = 10.0
MAX_SETTLE_SECONDS = 600
#: The longest line read (characters): a longer one is an error record, read past without being held.
MAX_LINE_CHARS = 16 * 1024 * 1024
_UNDECODABLE = re.compile(UNDECODABLE_CHARS)
#: The protocols of local files, where a file found may be a link to one outside the folder
_LOCAL = ("", "file", "local")


def _local(path: ObjectStoragePath) -> bool:
    """Whether ``path`` is on the local file system, where a folder exists or not; an object store's prefix
    holding no object is no error (it has no folder to miss)."""
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(path.fs, LocalFileSystem)


def check_encoding(name: str) -> str:
    """``name`` if it is a text encoding; ValueError naming the field if it is unknown, or a codec of bytes
    to bytes or text to text (``base64``, ``rot13``: ``codecs`` knows them, but no file can be read as
    text in them)."""
    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(f"encoding: unknown encoding {name!r}") from None
    try:
        "".encode(name)
    except LookupError:
        raise ValueError(f"encoding: {name!r} is not a text encoding") from None
    return name


#: Characters no CSV field delimiter may be: the quote character (fixed: ``"``) and the line breaks
_NOT_DELIMITERS = {'"': "the quote character", "\r": "a line break (CR)", "\n": "a line break (LF)"}


def check_delimiter(delimiter: str, encoding: str = "utf-8") -> str:
    """``delimiter`` if it can separate CSV fields of a file in ``encoding``: one character, not the quote
    character nor a line break (the csv module reads a file with one wrong, or ambiguously, without an
    error), and one the encoding can write (else no line holds it, and every row is one field); ValueError
    naming the field otherwise. Any other character works, a tab, a space or NUL too."""
    if len(delimiter) != 1:
        raise ValueError(f"delimiter: expected one character, got {delimiter!r}")
    if delimiter in _NOT_DELIMITERS:
        raise ValueError(
            f"delimiter: {delimiter!r} is {_NOT_DELIMITERS[delimiter]}, it cannot separate fields"
        )
    try:
        delimiter.encode(encoding)
    except UnicodeEncodeError:
        raise ValueError(
            f"delimiter: {delimiter!r} cannot be written in encoding {encoding!r}: no file in it holds one"
        ) from None
    return delimiter


class FileSource(Stateful):
    """Contacts from CSV (with a header line) or JSON Lines files; see the module docstring."""

    def __init__(
        self,
        path: str,
        *,
        key_column: str,
        format: FileFormat = "csv",
        timestamp_column: str | None = None,
        window_by: WindowBy = "column",
        encoding: str = "utf-8",
        delimiter: str = ",",
        pattern: str | None = None,
        timezone: str | None = None,
        conn_id: str | None = None,
        settle_seconds: float = SETTLE_SECONDS,
        null_values: Collection[str] = (),
        state: StateStore | None = None,
    ):
        if format not in ("csv", "jsonl"):
            raise ValueError(f"format: expected 'csv' or 'jsonl', got {format!r}")
        if window_by not in ("column", "mtime"):
            raise ValueError(f"window_by: expected 'column' or 'mtime', got {window_by!r}")
        if window_by == "column" and not timestamp_column:
            raise ValueError("timestamp_column: required when window_by is 'column'")
        if isinstance(null_values, str):
            raise ValueError(f"null_values: expected a list of cell texts, got the text {null_values!r}")
        if null_values and format != "csv":
            raise ValueError("null_values: for CSV only (JSON Lines writes null itself)")
        check_delimiter(delimiter, check_encoding(encoding))
        if not 0 <= settle_seconds <= MAX_SETTLE_SECONDS:
            raise ValueError(f"settle_seconds: expected 0 to {MAX_SETTLE_SECONDS}, got {settle_seconds!r}")
        self.path = checked("FileSource", "path", path, no_credentials)  # an object store's keys: conn_id
        self.key_column = key_column
        self.format = format
        self.timestamp_column = timestamp_column
        self.window_by = window_by
        self.encoding = encoding
        self.delimiter = delimiter
        self.pattern = pattern or f"*.{format}"
        self.timezone, self.timezone_defaulted = naive_zone(timezone)
        self.conn_id = conn_id
        self.settle_seconds = settle_seconds
        self.null_values = frozenset(null_values)
        self.state = state
        self._pending: list[tuple[str, dict[str, Any]]] = []

    @property
    def complete_records(self) -> bool:  # type: ignore[override]
        """A CSV row holds every column of its file's header (one that does not is an error record)."""
        return self.format == "csv"

    def describe(self) -> str:
        window = "file modification time" if self.window_by == "mtime" else f"column {self.timestamp_column}"
        return f"file {self.path} ({self.format}, files {self.pattern}), window by {window}"

    def _read_batches(
        self, window: Window | None, batch_size: int, partition: Partition | None
    ) -> Iterator[list[Record]]:
        self._pending = []
        yield from rechunk(self._records(window, partition), batch_size)

    def _save(self, state: StateStore) -> None:
        """Remember the files read to their end."""
        for key, identity in self._pending:
            state.set(key, identity)

    def files(self, partition: Partition | None = None) -> list[ObjectStoragePath]:
        """The files to consider, sorted by path; with a partition, only that partition's share."""
        from airflow.sdk import ObjectStoragePath

        root = ObjectStoragePath(self.path, conn_id=self.conn_id)
        if not root.is_file() and _local(root) and not root.is_dir():
            # a glob of a folder that is not there finds nothing: the run would find 0 contacts and succeed
            raise SourceError(
                f"{self.describe()}: {self.path} does not exist (or is neither a file nor a folder): nothing "
                "can be read. Check the path, and that the share holding it is mounted where the task runs"
            )
        found = [root] if root.is_file() else [p for p in root.glob(self.pattern) if p.is_file()]
        if partition is not None:
            index, count = check_partition(partition)
            found = [p for p in found if zlib.crc32(_path_bytes(p)) % count == index]
        return sorted(found, key=str)

    def _unread(self, window: Window | None, partition: Partition | None) -> list[_File]:
        """The files of this read not processed before: in the window first (``mtime``: no state lookup for a
        file outside it), then not remembered under the same identity (`same_file`)."""
        found = []
        for file in self.files(partition):
            stat = file.stat()
            modified = datetime.fromtimestamp(stat.st_mtime, UTC)
            if self.window_by == "mtime" and window is not None and not window.contains(modified):
                continue
            key = "file:" + hashlib.sha256(_path_bytes(file)).hexdigest()
            identity = file_identity(replace_unstorable(str(file)), stat)
            if self.state is None or not same_file(self.state.get(key), identity):
                found.append(_File(file, key, identity))
        return found

    def _settled(self, files: list[_File]) -> None:
        """Wait for the files that may still be being written: modified less than ``settle_seconds`` ago with
        a last line lacking its terminator (its row may be cut short and still parse as a whole one). Once
        none was modified for ``settle_seconds`` they are complete; one that changed meanwhile fails the read
        (`SourceError`) before any of its rows is read, and the retry, or the run whose window holds its new
        modification time, reads it whole."""
        now = time.time()
        fresh = [
            f
            for f in files
            if now - f.identity["mtime"] < self.settle_seconds
            and not self._ends_a_line(f.path, f.identity["size"])
        ]
        if not fresh:
            return
        wait = max(f.identity["mtime"] for f in fresh) + self.settle_seconds - now
        log.warning(
            "%s: %d file(s) modified within the last %gs end without a line terminator (still being "
            "written?): waiting %.1fs for them to settle, first %s",
            self.describe(),
            len(fresh),
            self.settle_seconds,
            wait,
            fresh[0].identity["path"],
        )
        time.sleep(max(wait, 0))
        changed = [
            f.identity["path"]
            for f in fresh
            if file_identity(f.identity["path"], f.path.stat()) != f.identity
        ]
        if changed:
            raise SourceError(
                f"{self.describe()}: {changed[0]} (and {len(changed) - 1} more) changed within "
                f"settle_seconds ({self.settle_seconds:g}s), its last line lacking a terminator: it is still "
                "being written, so none of its rows is read now; the retry (or the run whose window holds "
                "its new modification time) reads it whole"
            )

    def _ends_a_line(self, file: ObjectStoragePath, size: int) -> bool:
        """Whether the file's first ``size`` bytes (its size when listed) are none or end with a line
        terminator in ``encoding``."""
        ends = [_unit(self.encoding, "\n"), _unit(self.encoding, "\r")]
        with file.open("rb") as handle:
            handle.seek(max(size - 4, 0))
            tail = handle.read(min(size, 4))
        return not size or any(tail.endswith(end) for end in ends)

    def _records(self, window: Window | None, partition: Partition | None) -> Iterator[Record]:
        unread = self._unread(window, partition)
        self._settled(unread)
        in_folder = self._in_folder()
        for file, key, identity in unread:
            name = identity["path"]
            if not in_folder(file):
                yield error_record(
                    self.key_column, name, "a link to a file outside the folder read: not read"
                )
                continue
            all_inside = True
            for line, row in self._read(file, identity):
                try:
                    if isinstance(row, str):
                        raise ValueError(row)
                    inside = self._inside(row, window)
                except ValueError as exc:
                    yield error_record(self.key_column, f"{name}:{line}", str(exc))
                    continue
                all_inside &= inside
                if inside:
                    yield row
            if all_inside:
                self._pending.append((key, identity))

    def _in_folder(self) -> Callable[[ObjectStoragePath], bool]:
        """Whether a local file found is in ``path`` once links are resolved: a link in the folder (an SFTP
        client can make one) to any file the worker may read is not read. Object stores have no links."""
        from airflow.sdk import ObjectStoragePath

        root = ObjectStoragePath(self.path, conn_id=self.conn_id)
        if root.protocol not in _LOCAL:
            return lambda file: True
        folder = os.path.realpath(root.path)
        return lambda file: os.path.commonpath([folder, os.path.realpath(file.path)]) == folder

    def _inside(self, row: Record, window: Window | None) -> bool:
        """Whether the row belongs to the window; ValueError if its timestamp is unreadable."""
        if window is None or self.window_by == "mtime":
            return True
        if self.timestamp_column not in row:
            raise ValueError(f"{self.timestamp_column}: missing")
        try:
            return window.contains(parse_timestamp(row[self.timestamp_column], self.timezone))
        except (ValueError, OverflowError, OSError):
            raise ValueError(f"{self.timestamp_column}: not ISO 8601 text or epoch seconds") from None

    def _read(self, file: ObjectStoragePath, identity: dict[str, Any]) -> Iterator[tuple[int, Record | str]]:
        """(line number, record) pairs of the file's first bytes, up to its size when listed (`_Upto`), a
        local file's checked unchanged since (`_unchanged`) after each block is read; a text instead of a
        record says why that line is unreadable."""
        # utf-8-sig reads a file with or without a byte-order mark (Excel writes one): with plain utf-8 the
        # BOM would glue itself to the first CSV header or make the first JSON line invalid
        encoding = "utf-8-sig" if codecs.lookup(self.encoding).name == "utf-8" else self.encoding
        raw = file.open("rb")
        check = self._unchanged(raw.fileno(), identity, file.path) if _local(file) else None
        with io.BufferedReader(_Upto(raw, identity["size"], check)) as listed:
            if (packed := _compression(listed.peek(10))) is not None:
                yield 1, f"{packed}-compressed: not read (put the file in the folder uncompressed)"
                return
            with io.TextIOWrapper(listed, encoding=encoding, errors=UNDECODABLE, newline="") as handle:
                yield from (
                    self._read_csv(handle, str(file)) if self.format == "csv" else self._read_jsonl(handle)
                )

    def _unchanged(self, fd: int, identity: dict[str, Any], path: str) -> Callable[[], None]:
        """A check that the open local file ``fd``, listed at ``path``, is still the one listed as
        ``identity`` (`changed_since_listed`), else `SourceError`: run after each block is read, before any of
        its rows is used, it keeps a row torn between a file's old text and the new one written over it in
        place from being read."""

        def check() -> None:
            stat = os.fstat(fd)
            if changed_since_listed(stat, identity, moved=lambda: not _named(path, stat)):
                raise SourceError(
                    f"{self.describe()}: {identity['path']} changed while it was read (written over, "
                    "truncated or appended to): none of its rows read since is used; the retry (or the run "
                    "whose window holds its new modification time) reads it whole"
                )

        return check

    def _read_jsonl(self, handle: IO[str]) -> Iterator[tuple[int, Record | str]]:
        for number, line in enumerate(_lines(handle), start=1):
            if line is None:
                yield number, f"longer than {MAX_LINE_CHARS:,} characters"
                continue
            if not line.strip():
                continue
            if _UNDECODABLE.search(line):
                yield number, self._undecodable
                continue
            try:
                record = JSON_DECODER.decode(line)
            except json.JSONDecodeError as exc:
                yield number, f"invalid JSON: {exc.msg} at column {exc.colno}"
                continue
            except RecursionError:
                yield number, "invalid JSON: nested too deeply"
                continue
            if (twice := named_twice(record)) is not None:
                yield number, f"invalid JSON: an object names {twice!r} twice"
            else:
                yield number, record if isinstance(record, dict) else "not a JSON object"

    def _read_csv(self, handle: IO[str], name: str) -> Iterator[tuple[int, Record | str]]:
        lines = _RecordLines(handle)
        # strict: a quoted field that never closes is an error, not the rest of the file in one field, and
        # text after a closing quote ("a@b.org"junk) is not glued to the field
        reader = csv.DictReader(lines, delimiter=self.delimiter, strict=True)
        try:
            fieldnames = reader.fieldnames
        except (csv.Error, _LineTooLong) as exc:
            raise SourceError(f"{name}:{lines.count}: unreadable CSV header ({exc})") from None
        if fieldnames is not None and _UNDECODABLE.search("".join(fieldnames)):
            raise SourceError(f"{name}: the header line is not valid {self.encoding}")
        if twice := repeated(column for column in fieldnames or () if column):  # unnamed ones name nothing
            raise SourceError(
                f"{name}: the header names the column {twice!r} twice, so its rows could keep only one of "
                "the values: rename one"
            )
        while True:
            lines.record.clear()
            first_line = lines.count + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, _LineTooLong) as exc:  # a field or line too long: that row, not the file
                row = f"unreadable CSV ({exc})"  # read past below, the error and the line it holds gone
            if isinstance(row, str):
                if lines.read_past_record(self.delimiter) == "quoted":  # to the end of the file
                    row += f": a quoted field never closes, lines {first_line} to {lines.count} unread"
                yield first_line, row
            elif None in row or None in row.values():
                yield first_line, f"expected {len(fieldnames or ())} CSV fields"
            elif _UNDECODABLE.search("".join(row.values())):
                yield first_line, self._undecodable
            elif (
                nulls := self.null_values
            ):  # a cell that is one of them whole is NULL, as a database reads it
                yield first_line, {column: None if cell in nulls else cell for column, cell in row.items()}
            else:
                yield first_line, row

    @property
    def _undecodable(self) -> str:
        return f"bytes that are not valid {self.encoding}"


#: The first bytes of the compressed files a folder may hold, read as text they are garbage
_MAGIC = {b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}
_BZIP2 = re.compile(rb"BZh[1-9]1AY&SY")


def _compression(head: bytes) -> str | None:
    """The compression whose signature a file starts with (``head``, its first bytes), or None."""
    if _BZIP2.match(head):
        return "bzip2"
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)


class _File(NamedTuple):
    """A file to read, with its state key and identity."""

    path: ObjectStoragePath
    key: str
    identity: dict[str, Any]


#: What the listing says of a file that tells a replacement of the same size and modification time: a local
#: file's inode and change time (a file renamed over it, or rewritten in place, and its time set back), an
#: object's ETag or generation. Free: the listing gives them; no byte of the file is read.
_VERSION_FIELDS = ("ino", "created", "ETag", "etag", "generation")


def file_identity(path: str, stat: Any) -> dict[str, Any]:
    """How a file is remembered as processed: path, size, modification time, version (`_VERSION_FIELDS`)."""
    version = [[field, stat[field]] for field in _VERSION_FIELDS if stat.get(field) is not None]
    return {"path": path, "size": stat.st_size, "mtime": stat.st_mtime, "version": version}


def same_file(stored: Any, identity: dict[str, Any]) -> bool:
    """Whether ``stored`` remembers the file of ``identity``; an identity stored without a version (by an
    earlier version of this source) by its path, size and modification time, so that no processed file is
    read again after an upgrade."""
    if isinstance(stored, dict) and "version" not in stored:
        return stored == {k: v for k, v in identity.items() if k != "version"}
    return stored == identity


def changed_since_listed(
    stat: os.stat_result, identity: dict[str, Any], *, moved: Callable[[], bool] = lambda: False
) -> bool:
    """Whether a local file's ``stat`` (`os.fstat` of the file open) tells it changed since it was listed as
    ``identity``: any write or truncation moves its modification time, and setting that back (`cp -p`) its
    change time. A rename or an unlink moves the change time alone, not the text: a file no longer linked
    (a file renamed over it, or it deleted) or ``moved`` (no longer at its listed path: renamed, moved out of
    the folder) is still the one listed if nothing else changed. Only then is ``moved`` asked."""
    listed = {"size": identity["size"], "mtime": identity["mtime"], **dict(identity["version"])}
    seen = {  # as fsspec's LocalFileSystem.info lists them
        "size": stat.st_size,
        "mtime": stat.st_mtime,
        "ino": stat.st_ino,
        "created": getattr(stat, "st_birthtime", stat.st_ctime),
    }
    changed = {field for field, value in listed.items() if seen.get(field) != value}
    if changed == {"created"} and (stat.st_nlink == 0 or moved()):
        return False
    return bool(changed)


def _named(path: str, stat: os.stat_result) -> bool:
    """Whether ``path`` still names the file of ``stat`` (an error other than its absence: as if it did)."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return (here.st_dev, here.st_ino) == (stat.st_dev, stat.st_ino)


def _unit(encoding: str, char: str) -> bytes:
    """``char`` encoded in ``encoding``, without the byte order mark some encodings put first."""
    return (char * 2).encode(encoding)[len(char.encode(encoding)) :]


def _path_bytes(file: ObjectStoragePath) -> bytes:
    """The path's UTF-8 bytes, for the hashes that name and deal a file. A local name that is not UTF-8 comes
    with its bytes as lone surrogates (``os.fsdecode``), which are encoded back as they came."""
    return str(file).encode("utf-8", "surrogatepass")


class _Upto(io.RawIOBase):
    """The first ``size`` bytes of a binary file, its size when listed: a row its writer appends while the
    file is read (cut short at the end so far) is never read. ``check``, if any, runs after each block is
    read, before any byte of it is passed on (`FileSource._unchanged`)."""

    def __init__(self, raw: IO[bytes], size: int, check: Callable[[], None] | None = None) -> None:
        self._raw, self._left, self._check = raw, size, check

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(min(len(buffer), self._left))
        if data and self._check is not None:
            self._check()
        buffer[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _LineTooLong(Exception):
    """A CSV line over `MAX_LINE_CHARS`: the reader gets none of it (`_RecordLines`)."""


class _RecordLines:
    """A file's lines for `csv.reader`, counted, keeping those of the record being read so that a record
    the reader gave up on can be read past to its real end (a quoted field may span lines). A line over
    `MAX_LINE_CHARS` raises `_LineTooLong` instead, and is read past in pieces, never held whole."""

    def __init__(self, handle: IO[str]) -> None:
        self.handle = handle
        self.count = 0
        self.record: list[str] = []
        self._cut = False  # the last piece read is not the whole rest of its line

    def __iter__(self) -> _RecordLines:
        return self

    def __next__(self) -> str:
        if not (line := self._piece()):
            raise StopIteration
        self.record.append(line)
        if self._cut:
            raise _LineTooLong(f"a line longer than {MAX_LINE_CHARS:,} characters")
        return line

    def _piece(self) -> str:
        """The next line, or its next `MAX_LINE_CHARS` characters if it is longer; "" at the end."""
        piece = self.handle.readline(MAX_LINE_CHARS)
        self.count += bool(piece) and not self._cut
        self._cut = _cut(piece)
        return piece

    def read_past_record(self, delimiter: str) -> str:
        """Skip the rest of the current record: the reader drops the rest of the line it failed on, and
        would read the lines of a quoted field that goes on as records of their own. Returns where the file
        ends (`_csv_state`): "quoted" if in a quoted field that never closed."""
        state = "start"
        for line in self.record:
            state = _csv_state(line, delimiter, state)
        self.record.clear()
        while (self._cut or state == "quoted") and (piece := self._piece()):
            state = _csv_state(piece, delimiter, state)
        return state


def _csv_state(text: str, delimiter: str, state: str = "start") -> str:
    """Where `csv.reader` (default dialect: ``"`` quotes, doubled to escape) is after ``text``: at the
    "start" of a field or record, in an unquoted "field", in a "quoted" field, or at a "quote" in one."""
    if '"' not in text:  # no field opens or closes a quote: the text's last character decides
        if state == "quoted" or not text:
            return state
        return "start" if text[-1] == delimiter or text[-1] in "\r\n" else "field"
    for char in text:
        if state == "quoted":
            state = "quote" if char == '"' else "quoted"
        elif char == '"' and state in ("start", "quote"):
            state = "quoted"  # a quoted field opens, or a doubled quote stays in it
        elif char == delimiter or char in "\r\n":
            state = "start"
        else:
            state = "field"
    return state


def _lines(handle: IO[str]) -> Iterator[str | None]:
    """The lines of a text file; None for a line over `MAX_LINE_CHARS`, read past in pieces (a file with
    no line break would otherwise be held whole)."""
    while line := handle.readline(MAX_LINE_CHARS):
        if not _cut(line):
            yield line
            continue
        while _cut(handle.readline(MAX_LINE_CHARS)):
            pass
        yield None


def _cut(piece: str) -> bool:
    """Whether ``piece``, read by ``readline(MAX_LINE_CHARS)``, is not the whole rest of its line."""
    return len(piece) == MAX_LINE_CHARS and piece[-1] not in "\r\n"
