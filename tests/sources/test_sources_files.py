"""FileSource on local files through ObjectStoragePath."""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import json
import logging
import os
import tracemalloc
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path

import pytest

from altcraft.sources import ERROR_FIELD, FileSource, MemoryStateStore, SourceError, Window
from altcraft.sources.files import MAX_LINE_CHARS

START = datetime(2024, 3, 1, tzinfo=UTC)
END = START + timedelta(days=1)
WINDOW = Window(START, END)


def write(path: Path, text: str | bytes, modified: datetime | None = None) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    if modified is not None:
        os.utime(path, (modified.timestamp(), modified.timestamp()))
    return path


def read(source: FileSource, window: Window | None = WINDOW, batch_size: int = 100, **kwargs) -> list[dict]:
    return [record for batch in source.batches(window, batch_size, **kwargs) for record in batch]


def ids(records: list[dict]) -> list[str]:
    return [record["id"] for record in records]


CSV_HEADER = "id,email,created_at\n"


def test_csv_rows_of_the_window_in_file_then_line_order(tmp_path):
    write(
        tmp_path / "b.csv",
        CSV_HEADER + "9,n@example.org,2024-03-01T05:00:00Z\n1,m@example.org,2024-03-01T00:00:00+00:00\n",
    )
    write(
        tmp_path / "a.csv",
        CSV_HEADER
        + "7,x@example.org,2024-03-02T00:00:00Z\n"  # exactly at the end: next window
        + "8,y@example.org,2024-02-29T23:59:59Z\n"  # before the start
        + "3,z@example.org,2024-03-01T23:59:59.999999Z\n",
    )
    (tmp_path / "notes.txt").write_text("ignored\n")
    source = FileSource(str(tmp_path), key_column="id", timestamp_column="created_at")

    records = read(source)

    assert ids(records) == ["3", "9", "1"]
    assert records[0] == {"id": "3", "email": "z@example.org", "created_at": "2024-03-01T23:59:59.999999Z"}
    assert read(source) == records


def test_batches_are_bounded_across_files(tmp_path):
    for name, keys in (("1.jsonl", "abc"), ("2.jsonl", "de")):
        write(tmp_path / name, "".join(f'{{"id": "{key}", "t": "2024-03-01T10:00:00"}}\n' for key in keys))
    source = FileSource(str(tmp_path), format="jsonl", key_column="id", timestamp_column="t")

    batches = list(source.batches(WINDOW, 2))

    assert [[record["id"] for record in batch] for batch in batches] == [["a", "b"], ["c", "d"], ["e"]]


def test_bad_jsonl_lines_become_error_records_and_the_rest_is_read(tmp_path):
    path = write(
        tmp_path / "contacts.jsonl",
        b'{"id": "1", "t": "2024-03-01T01:00:00Z"}\n'
        b'{"id": "2", "email": "secret@example.org", \n'
        b'["not", "an", "object"]\n'
        b'{"id": "4", "email": "caf\xe9@example.org", "t": "2024-03-01T01:00:00Z"}\n'
        b"\n"
        b'{"id": "6", "t": "2024-03-01T02:00:00Z", "email": null}\n'
        b'{"id": "7", "t": "yesterday"}\n'
        b'{"id": "8"}\n',
    )
    source = FileSource(str(tmp_path), format="jsonl", key_column="id", timestamp_column="t")

    records = read(source)

    assert ids(records) == ["1", f"{path}:2", f"{path}:3", f"{path}:4", "6", f"{path}:7", f"{path}:8"]
    errors = {record["id"]: record[ERROR_FIELD] for record in records if ERROR_FIELD in record}
    assert errors[f"{path}:2"].startswith("invalid JSON: ")
    assert errors[f"{path}:3"] == "not a JSON object"
    assert errors[f"{path}:4"] == "bytes that are not valid utf-8"
    assert errors[f"{path}:7"] == "t: not ISO 8601 text or epoch seconds"
    assert errors[f"{path}:8"] == "t: missing"
    assert not any("example.org" in reason for reason in errors.values())


def test_a_jsonl_line_too_long_to_hold_is_an_error_record_and_the_rest_is_read(tmp_path):
    huge = '{"id": "2", "t": "2024-03-01T01:00:00Z", "note": "' + "x" * MAX_LINE_CHARS * 2 + '"}\n'
    good = '{"id": "%s", "t": "2024-03-01T01:00:00Z"}\n'
    path = write(tmp_path / "contacts.jsonl", good % 1 + huge + good % 3)
    source = FileSource(str(tmp_path), format="jsonl", key_column="id", timestamp_column="t")

    records = read(source)

    assert ids(records) == ["1", f"{path}:2", "3"]
    assert records[1][ERROR_FIELD] == f"longer than {MAX_LINE_CHARS:,} characters"


def test_bad_csv_rows_become_error_records(tmp_path):
    path = write(
        tmp_path / "contacts.csv",
        b"id;email;created_at\n"
        b"1;a@example.org;2024-03-01 10:00:00\n"
        b"2;b@example.org\n"
        b"3;c@example.org;2024-03-01 10:00:00;extra\n"
        b'4;"multi\nline@example.org";2024-03-01 10:00:00\n'
        b"5;\xff@example.org;2024-03-01 10:00:00\n",
    )
    source = FileSource(str(path), key_column="id", timestamp_column="created_at", delimiter=";")

    records = read(source)

    assert ids(records) == ["1", f"{path}:3", f"{path}:4", "4", f"{path}:7"]
    assert [record.get(ERROR_FIELD) for record in records] == [
        None,
        "expected 3 CSV fields",
        "expected 3 CSV fields",
        None,
        "bytes that are not valid utf-8",
    ]


def test_a_quote_that_never_closes_is_its_rows_error_naming_the_lines_it_took(tmp_path):
    """The csv module (not strict) read a quoted field that never closes to the end of the file: contact 2
    was delivered with the lines of contacts 3 and 4 in its last field, and they were lost without a word."""
    path = write(
        tmp_path / "contacts.csv",
        CSV_HEADER + "1,a@example.org,2024-03-01 10:00\n"
        '2,b@example.org,"2024-03-01 10:00\n'
        "3,c@example.org,2024-03-01 10:00\n"
        "4,d@example.org,2024-03-01 10:00\n",
    )
    source = FileSource(str(path), key_column="id", window_by="mtime")

    assert [(r["id"], r.get(ERROR_FIELD)) for r in read(source, None)] == [
        ("1", None),
        (
            f"{path}:3",
            "unreadable CSV (unexpected end of data): a quoted field never closes, lines 3 to 5 unread",
        ),
    ]


def test_text_after_a_closing_quote_is_its_rows_error_and_the_rest_is_read(tmp_path):
    """``"b@example.org"junk`` was read as ``b@example.orgjunk``, an address the file does not plainly
    hold."""
    path = write(
        tmp_path / "contacts.csv",
        CSV_HEADER + '1,a@example.org,2024-03-01 10:00\n2,"b@example.org"junk,2024-03-01 10:00\n'
        "3,c@example.org,2024-03-01 10:00\n",
    )
    source = FileSource(str(path), key_column="id", window_by="mtime")

    assert [(r["id"], r.get(ERROR_FIELD)) for r in read(source, None)] == [
        ("1", None),
        (f"{path}:3", "unreadable CSV (',' expected after '\"')"),
        ("3", None),
    ]


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
@pytest.mark.parametrize(("packer", "name"), [(gzip.compress, "gzip"), (bz2.compress, "bzip2")])
def test_a_compressed_file_is_its_error_record_saying_so(tmp_path, file_format, packer, name):
    """A compressed file was read as text: a CSV failed the whole read ("the header line is not valid
    utf-8"), a JSON Lines file was a rejection per line of compressed bytes ("bytes that are not valid
    utf-8"), its contacts never read and the reasons pointing away from the cause."""
    text = {"csv": CSV_HEADER + "1,a@example.org,2024-03-01 10:00\n", "jsonl": '{"id": "1"}\n'}[file_format]
    written = START + timedelta(hours=1)  # long settled: no wait for a last line without its terminator
    packed = write(tmp_path / f"a.{file_format}", packer(text.encode()), written)
    write(tmp_path / f"b.{file_format}", text.replace("1", "2", 1), written)
    source = FileSource(str(tmp_path), format=file_format, key_column="id", window_by="mtime")

    assert [(r["id"], r.get(ERROR_FIELD)) for r in read(source, None)] == [
        (f"{packed}:1", f"{name}-compressed: not read (put the file in the folder uncompressed)"),
        ("2", None),
    ]


def test_other_encodings_are_decoded(tmp_path):
    write(tmp_path / "latin.csv", "id,name,created_at\n1,Zoë,2024-03-01 10:00\n".encode("latin-1"))
    source = FileSource(str(tmp_path), key_column="id", timestamp_column="created_at", encoding="latin-1")

    assert read(source)[0]["name"] == "Zoë"


#: an encoding whose invalid bytes may be below 0x80, which ``surrogateescape`` cannot keep: the codec of its
#: text after the byte order mark, the mark, and an invalid code unit (UTF-16: a lone high surrogate;
#: UTF-32: a code point past U+10FFFF)
WIDE = {
    "utf-16": ("utf-16-le", codecs.BOM_UTF16_LE, b"\x00\xd8"),
    "utf-32": ("utf-32-le", codecs.BOM_UTF32_LE, b"\x00\x00\x11\x00"),
}


#: per format: its rows of contacts 1 to 3, contact 2's email after ``#``, and the timestamp column
WIDE_ROWS = {
    "csv": (
        "id,email,created_at\n" + "".join(f"{n},u{n}@example.org,2024-03-01 10:00\n" for n in (1, 2, 3)),
        "created_at",
    ),
    "jsonl": (
        "".join(
            f'{{"id": "{n}", "email": "u{n}@example.org", "t": "2024-03-01T10:00:00Z"}}\n' for n in (1, 2, 3)
        ),
        "t",
    ),
}


@pytest.mark.parametrize("file_format", sorted(WIDE_ROWS))
@pytest.mark.parametrize("encoding", sorted(WIDE))
def test_a_row_invalid_in_a_wide_encoding_is_its_error_record_and_the_rest_is_read(
    tmp_path, encoding, file_format
):
    """Bytes not valid in UTF-16 or UTF-32 include bytes below 0x80, which the ``surrogateescape`` handler
    cannot keep: the read failed with a UnicodeDecodeError on the first, its other rows undelivered."""
    codec, bom, bad = WIDE[encoding]
    text, column = WIDE_ROWS[file_format]
    before, after = text.split("u2@")
    path = write(tmp_path / f"contacts.{file_format}", bom + before.encode(codec) + bad + after.encode(codec))
    source = FileSource(
        str(tmp_path), format=file_format, key_column="id", timestamp_column=column, encoding=encoding
    )

    records = read(source)

    line = 3 if file_format == "csv" else 2
    assert [(r["id"], r.get(ERROR_FIELD)) for r in records] == [
        ("1", None),
        (f"{path}:{line}", f"bytes that are not valid {encoding}"),
        ("3", None),
    ]


def test_a_csv_header_that_cannot_be_decoded_fails_naming_the_file(tmp_path):
    path = write(tmp_path / "broken.csv", b"id,\xffmail\n1,a\n")
    source = FileSource(str(tmp_path), key_column="id", timestamp_column="created_at")

    with pytest.raises(SourceError, match=f"{path}: the header line is not valid utf-8"):
        read(source)


def test_a_csv_header_naming_a_column_twice_fails_naming_the_file_and_column(tmp_path):
    """A CRM export with two "phone" columns gave each row the second one's value: the first was lost
    without a word. Columns without a name (an Excel row's trailing commas) name nothing twice."""
    write(tmp_path / "a.csv", "id,email,created_at,,\n1,user1@example.org,2024-03-01T01:00:00Z,,\n")
    path = write(tmp_path / "b.csv", "id,phone,phone,created_at\n1,+79001234567,,2024-03-01T01:00:00Z\n")
    source = FileSource(str(tmp_path), key_column="id", timestamp_column="created_at")

    with pytest.raises(SourceError, match=f"^{path}: the header names the column 'phone' twice"):
        read(source)
    path.unlink()
    assert ids(read(source)) == ["1"]


def test_a_json_line_naming_a_field_twice_is_its_error_record_and_the_rest_is_read(tmp_path):
    """As a CSV header's: json.loads keeps the last of two values of one name, so the first was lost without
    a word. A line is a record of its own: its error, and the other lines are read."""
    path = write(
        tmp_path / "contacts.jsonl",
        b'{"id": "1", "t": "2024-03-01T01:00:00Z", "phone": "+79001234567"}\n'
        b'{"id": "2", "t": "2024-03-01T01:00:00Z", "phone": "+79001234567", "phone": ""}\n'
        b'{"id": "3", "t": "2024-03-01T01:00:00Z", "extra": {"a": 1, "a": 2}}\n'
        b'{"id": "4", "t": "2024-03-01T01:00:00Z", "extra": [{"a": 1}, {"a": 2}]}\n',
    )
    source = FileSource(str(tmp_path), format="jsonl", key_column="id", timestamp_column="t")

    assert [(r["id"], r.get(ERROR_FIELD)) for r in read(source)] == [
        ("1", None),
        (f"{path}:2", "invalid JSON: an object names 'phone' twice"),
        (f"{path}:3", "invalid JSON: an object names 'a' twice"),
        ("4", None),
    ]


def test_naive_timestamps_use_the_timezone_and_numbers_are_epoch_seconds(tmp_path):
    write(
        tmp_path / "t.jsonl",
        '{"id": "berlin-start", "t": "2024-03-01T01:00:00"}\n'  # 00:00 UTC
        '{"id": "berlin-before", "t": "2024-03-01T00:59:59"}\n'
        f'{{"id": "epoch-in", "t": {START.timestamp() + 60}}}\n'
        f'{{"id": "epoch-text-end", "t": "{int(END.timestamp())}"}}\n',
    )
    source = FileSource(
        str(tmp_path), format="jsonl", key_column="id", timestamp_column="t", timezone="Europe/Berlin"
    )

    assert ids(read(source)) == ["berlin-start", "epoch-in"]


def test_a_timestamp_is_read_whole_as_iso_8601(tmp_path):
    """Python 3.11's fromisoformat read a date's offset as a time of day (2024-03-01+03:00 was 03:00 UTC,
    inside the window, though its midnight at +03:00 is the day before) and took any character between date
    and time."""
    write(
        tmp_path / "t.csv",
        CSV_HEADER
        + "east,a@example.org,2024-03-01+03:00\n"  # 2024-02-29T21:00Z: the window before
        + "west,b@example.org,2024-03-01-05:00\n"  # 2024-03-01T05:00Z
        + "junk,c@example.org,2024-03-01x05:00\n",
    )
    source = FileSource(str(tmp_path), key_column="id", timestamp_column="created_at")

    records = read(source)

    assert ids(records) == ["west", f"{tmp_path / 't.csv'}:4"]
    assert records[1][ERROR_FIELD] == "created_at: not ISO 8601 text or epoch seconds"


def test_mtime_window_reads_whole_files_once(tmp_path):
    write(tmp_path / "early.csv", CSV_HEADER + "1,a@example.org,\n", START - timedelta(seconds=1))
    inside = write(tmp_path / "inside.csv", CSV_HEADER + "2,b@example.org,\n", START)
    write(tmp_path / "late.csv", CSV_HEADER + "3,c@example.org,\n", END)
    state = MemoryStateStore()
    source = FileSource(str(tmp_path), key_column="id", window_by="mtime", state=state)

    assert ids(read(source)) == ["2"]
    assert ids(read(source)) == ["2"], "nothing is remembered before commit"
    source.commit()
    assert ids(read(source)) == []
    source.commit()

    write(inside, CSV_HEADER + "2,b@example.org,\n4,d@example.org,\n", START + timedelta(hours=1))
    assert ids(read(source)) == ["2", "4"], "a changed file is read again"
    assert ids(read(source, Window(END, END + timedelta(days=1)))) == ["3"]


def test_column_window_remembers_only_files_wholly_inside_it(tmp_path):
    write(tmp_path / "inside.csv", CSV_HEADER + "1,a@example.org,2024-03-01 10:00\n")
    write(
        tmp_path / "two-days.csv",
        CSV_HEADER + "2,b@example.org,2024-03-01 11:00\n3,c@example.org,2024-03-02 10:00\n",
    )
    state = MemoryStateStore()
    source = FileSource(str(tmp_path), key_column="id", timestamp_column="created_at", state=state)
    next_window = Window(END, END + timedelta(days=1))

    assert ids(read(source)) == ["1", "2"]
    source.commit()
    assert [state.get(key)["path"] for key in state] == [str(tmp_path / "inside.csv")]
    assert ids(read(source)) == ["2"], "a retry of the window still finds the rows of the spanning file"
    assert ids(read(source, next_window)) == ["3"]
    source.commit()
    assert len(list(state)) == 1


def test_commit_before_all_batches_were_read_is_refused(tmp_path):
    write(tmp_path / "a.csv", CSV_HEADER + "1,a@example.org,\n2,b@example.org,\n", START)
    state = MemoryStateStore()
    source = FileSource(str(tmp_path), key_column="id", window_by="mtime", state=state)

    batches = source.batches(WINDOW, 1)
    next(batches)
    batches.close()

    with pytest.raises(SourceError, match="fully consumed"):
        source.commit()
    assert list(state) == []


@pytest.mark.parametrize("url", [False, True])
def test_a_link_to_a_file_outside_the_folder_is_its_error_record_and_not_read(tmp_path, url):
    """A link in the folder (an SFTP client can make one) was followed to any file the worker may read, and
    that file's lines were read as contacts. A link to a file inside the folder is read."""
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    write(inbox / "a.csv", CSV_HEADER + "1,a@example.org,2024-03-01 10:00\n")
    write(tmp_path / "secret.csv", CSV_HEADER + "9,s@example.org,2024-03-01 10:00\n")
    (inbox / "sub" / "out.csv").symlink_to(tmp_path / "secret.csv")
    (inbox / "sub" / "in.csv").symlink_to(inbox / "a.csv")
    path = f"file://{inbox}" if url else str(inbox)
    state = MemoryStateStore()
    source = FileSource(path, key_column="id", timestamp_column="created_at", pattern="**/*.csv", state=state)

    records = read(source)
    source.commit()

    assert [(r["id"], r.get(ERROR_FIELD)) for r in records] == [
        ("1", None),
        ("1", None),
        (f"{path}/sub/out.csv", "a link to a file outside the folder read: not read"),
    ]
    assert [r["id"] for r in read(source)] == [f"{path}/sub/out.csv"]  # rejected by every read


def test_partitions_deal_each_file_to_exactly_one_partition(tmp_path):
    for number in range(8):
        rows = f"{number}a,a@example.org,\n{number}b,b@example.org,\n"
        write(tmp_path / f"part-{number}.csv", CSV_HEADER + rows)
    source = FileSource(str(tmp_path), key_column="id", window_by="mtime")

    whole = ids(read(source, None))
    parts = [ids(read(source, None, partition=(index, 3))) for index in range(3)]

    assert len(whole) == 16
    assert sorted(chain.from_iterable(parts)) == sorted(whole)
    files_of = [{key[:-1] for key in part} for part in parts]
    assert sum(len(files) for files in files_of) == 8, "both rows of a file go to the same partition"
    assert [ids(read(source, None, partition=(index, 3))) for index in range(3)] == parts


def test_file_urls_and_single_files_are_read_through_object_storage(tmp_path):
    path = write(tmp_path / "only.jsonl", '{"id": "1"}\n', START)

    for location in (tmp_path.as_uri(), path.as_uri(), str(path)):
        source = FileSource(location, format="jsonl", key_column="id", window_by="mtime")
        assert ids(read(source)) == ["1"], location


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "xml"}, "^format: "),
        ({"window_by": "column", "timestamp_column": None}, "^timestamp_column: required"),
        ({"window_by": "ctime"}, "^window_by: "),
        ({"encoding": "utf-9"}, "^encoding: unknown"),
        ({"delimiter": ";;"}, "^delimiter: "),
        ({"delimiter": '"'}, "^delimiter: '\"' is the quote character"),
        ({"delimiter": "\r"}, r"^delimiter: '\\r' is a line break \(CR\)"),
        ({"delimiter": "\n"}, r"^delimiter: '\\n' is a line break \(LF\)"),
        ({"delimiter": "§", "encoding": "ascii"}, "^delimiter: '§' cannot be written in encoding 'ascii'"),
        ({"delimiter": "\udc80"}, r"^delimiter: '\\udc80' cannot be written in encoding 'utf-8'"),
        ({"encoding": "base64"}, "^encoding: 'base64' is not a text encoding"),
        ({"encoding": "rot13"}, "^encoding: 'rot13' is not a text encoding"),
        ({"timezone": "Mars/Olympus"}, "^timezone: unknown"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FileSource(str(tmp_path), key_column="id", **{"timestamp_column": "t", **kwargs})


@pytest.mark.parametrize("delimiter", ["\t", " ", "\0", "|", "\x85", "\u2028", "'"])
def test_any_other_delimiter_reads_what_the_csv_module_writes(tmp_path, delimiter):
    """Only the quote character and line breaks are refused: a tab, a space, NUL or a character some
    readers take for a line break separate fields as a comma does, in quoted fields too."""
    rows = [
        ["id", "email", "note"],
        ["1", "a@example.org", f'a "quote"{delimiter}and\na line'],
        ["2", "", " x "],
    ]
    with (tmp_path / "a.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)
    source = FileSource(str(tmp_path), key_column="id", window_by="mtime", delimiter=delimiter)

    assert read(source, None) == [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def test_credentials_in_the_url_are_refused_the_connection_holds_them():
    with pytest.raises(ValueError, match="FileSource path: a URL with a user name or password") as refused:
        FileSource("s3://key:secret@bucket/in/", key_column="id", window_by="mtime", conn_id="aws")
    assert "secret" not in str(refused.value)
    source = FileSource("s3://bucket/in/", key_column="id", window_by="mtime", conn_id="aws")

    assert source.describe() == "file s3://bucket/in/ (csv, files *.csv), window by file modification time"


def test_a_csv_field_over_the_field_size_limit_is_its_rows_error_and_the_rest_is_read(tmp_path):
    """The csv module refuses a field over 128 KiB; that failed the whole file. A quoted one may span lines
    that must not be read as rows of their own (the second holds what looks like a contact)."""
    big = "x" * (csv.field_size_limit() + 1)
    path = write(
        tmp_path / "contacts.csv",
        CSV_HEADER
        + "1,a@example.org,2024-03-01T01:00:00Z\n"
        + f'2,"{big}\n9,ghost@example.org,2024-03-01T01:00:00Z\n'
        + f'still ""quoted"", {big}",2024-03-01T01:00:00Z\n'
        + "3,c@example.org,2024-03-01T01:00:00Z\n"
        + f"4,{big},2024-03-01T01:00:00Z\n"
        + f'5,"{big}","a second quoted field\n6,ghost@example.org,2024-03-01T01:00:00Z"\n'
        + "6,f@example.org,2024-03-01T01:00:00Z\n",
    )
    source = FileSource(str(path), key_column="id", timestamp_column="created_at")

    records = read(source)

    limit = f"unreadable CSV (field larger than field limit ({csv.field_size_limit()}))"
    assert [(r["id"], r.get(ERROR_FIELD)) for r in records] == [
        ("1", None),
        (f"{path}:3", limit),
        ("3", None),
        (f"{path}:7", limit),
        (f"{path}:8", limit),
        ("6", None),
    ]


def test_a_csv_line_too_long_to_hold_is_its_rows_error_and_memory_stays_bounded(tmp_path):
    """A CSV line was read whole (a file of one 1 GB line: 1 GB and more held), and a quoted field never
    closed kept every line after it while they were read past (a 64 MiB line: 11 times `MAX_LINE_CHARS`
    traced). Now pieces of `MAX_LINE_CHARS` characters at most, as for JSON Lines."""
    row = "%s,user%s@example.org,2024-03-01T01:00:00Z\n"
    huge = "2," + "x" * (MAX_LINE_CHARS * 4) + ",2024-03-01T01:00:00Z\n"
    long_line = write(tmp_path / "a.csv", CSV_HEADER + row % (1, 1) + huge + row % (3, 3))
    lines = ("x" * 1000 + "\n") * (MAX_LINE_CHARS // 250)  # 64 MiB of them
    never_closed = write(tmp_path / "b.csv", CSV_HEADER + row % (4, 4) + '5,"' + lines)
    del huge, lines
    source = FileSource(str(tmp_path), key_column="id", timestamp_column="created_at")
    source.files()  # Airflow imported before memory is traced

    tracemalloc.start()
    try:
        records = read(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert peak < MAX_LINE_CHARS * 5  # readline's own pieces; the line's length does not count
    limit = f"unreadable CSV (field larger than field limit ({csv.field_size_limit()}))"
    assert [(r["id"], r.get(ERROR_FIELD)) for r in records] == [
        ("1", None),
        (f"{long_line}:3", f"unreadable CSV (a line longer than {MAX_LINE_CHARS:,} characters)"),
        ("3", None),
        ("4", None),
        (
            f"{never_closed}:3",
            f"{limit}: a quoted field never closes, lines 3 to {2 + MAX_LINE_CHARS // 250} unread",
        ),
    ]


def test_a_jsonl_line_nested_too_deep_to_parse_is_an_error_record(tmp_path):
    good = '{"id": "%s", "t": "2024-03-01T01:00:00Z"}\n'
    path = write(
        tmp_path / "contacts.jsonl", good % 1 + '{"id": "2", "x": ' + "[" * 100_000 + "\n" + good % 3
    )
    source = FileSource(str(tmp_path), format="jsonl", key_column="id", timestamp_column="t")

    records = read(source)

    assert [(r["id"], r.get(ERROR_FIELD)) for r in records] == [
        ("1", None),
        (f"{path}:2", "invalid JSON: nested too deeply"),
        ("3", None),
    ]


def test_a_local_name_that_is_not_utf8_is_read_and_remembered_in_storable_text(tmp_path):
    """Its state key hashed the name's text as UTF-8, which failed the whole source; the state keeps its
    path with U+FFFD for the byte (Airflow's state store sends JSON as UTF-8), and its key tells it apart."""
    for name in ("caf\udce9.csv", "caf\udce8.csv"):  # the bytes 0xE9 and 0xE8
        write(tmp_path / name, CSV_HEADER + "1,user1@example.org,2024-03-01T10:00:00+00:00\n")
    state = MemoryStateStore()
    source = FileSource(str(tmp_path), key_column="id", timestamp_column="created_at", state=state)
    assert ids(read(source)) == ["1", "1"]
    source.commit()
    kept = [state.get(key) for key in state]
    assert sorted(identity["path"].rpartition("/")[2] for identity in kept) == ["caf\ufffd.csv"] * 2
    json.dumps(kept, ensure_ascii=False).encode("utf-8")  # no lone surrogate left
    assert read(source) == []


def test_a_file_replaced_by_another_of_the_same_size_and_mtime_is_read(tmp_path):
    """The state kept path, size and mtime only: a file renamed over the one read (or rewritten in place), its
    modification time set back as `cp -p` or `rsync -t` do, was skipped and its contacts never read."""
    path = write(tmp_path / "a.csv", CSV_HEADER + "1,a@example.org,\n", START)
    source = FileSource(str(tmp_path), key_column="id", window_by="mtime", state=MemoryStateStore())
    assert ids(read(source)) == ["1"]
    source.commit()

    write(tmp_path / "next.tmp", CSV_HEADER + "2,b@example.org,\n", START).rename(path)
    assert ids(read(source)) == ["2"], "a file renamed over it"
    source.commit()
    write(path, CSV_HEADER + "3,c@example.org,\n", START)
    assert ids(read(source)) == ["3"], "rewritten in place"
    source.commit()
    assert ids(read(source)) == []


def test_a_file_remembered_without_a_version_by_an_earlier_version_is_not_read_again(tmp_path):
    path = write(tmp_path / "a.csv", CSV_HEADER + "1,a@example.org,\n", START)
    state = MemoryStateStore()
    source = FileSource(str(tmp_path), key_column="id", window_by="mtime", state=state)
    read(source)
    source.commit()
    [key] = state
    state.set(key, {k: v for k, v in state.get(key).items() if k != "version"})

    assert ids(read(source)) == []
    os.utime(path, ((START + timedelta(hours=1)).timestamp(),) * 2)
    assert ids(read(source)) == ["1"]


def test_a_file_whose_last_line_is_being_written_is_not_read_cut_short(tmp_path, caplog):
    """A CSV's last row cut short by its writer ("2,b@exa") has every field: it was read, and launched, as a
    contact of another address. Now the read waits until the file is unchanged for settle_seconds: one
    that changed meanwhile fails the read before any of its rows is read, and the retry reads it whole."""
    path = tmp_path / "a.csv"
    source = FileSource(str(tmp_path), key_column="id", window_by="mtime", settle_seconds=2)
    now = datetime.now(UTC)
    window = Window(now - timedelta(hours=1), now + timedelta(hours=1))
    write(path, CSV_HEADER + "1,a@example.org,\n2,b@exa")

    def finish_the_line(record: logging.LogRecord) -> None:
        with path.open("a") as handle:
            handle.write("mple.org,\n")

    writer = logging.Handler()  # the writer finishes the line while the read waits (its log line says so)
    writer.emit = finish_the_line
    files_log = logging.getLogger("altcraft.sources.files")
    files_log.addHandler(writer)
    try:
        with pytest.raises(SourceError, match=r"a\.csv \(and 0 more\) changed within settle_seconds \(2s\)"):
            read(source, window)
    finally:
        files_log.removeHandler(writer)
    assert "end without a line terminator (still being written?): waiting" in caplog.text

    assert [record["email"] for record in read(source, window)] == ["a@example.org", "b@example.org"]


#: per format: a file's first line (or none), a row of contact n (its email last), and contact 1001's row cut
#: short (an address of another domain so far)
GROWING = {
    "csv": (
        "id,created_at,email\n",
        "{n},2024-03-01 10:00,u{n}@example.org\n",
        "1001,2024-03-01 10:00,e@example.co",
    ),
    "jsonl": ("", '{{"id": "{n}", "email": "u{n}@example.org"}}\n', '{"id": "1001", "email": "e@example.co'),
}


@pytest.mark.parametrize("file_format", sorted(GROWING))
def test_a_row_appended_while_the_file_is_read_fails_the_read_and_is_read_whole_again(tmp_path, file_format):
    """The read went on past the size the file had when it was listed (and remembered at commit): a row its
    writer was appending meanwhile was read cut short, a CSV one delivered as a contact of another address
    (e@example.co), a JSON line rejected. The read stops at that size; an append, which the open file's
    status cannot tell from a rewrite, fails the read before any row of a block read after it is used, and
    the grown file, no longer the one listed, is read again whole."""
    header, row, cut = GROWING[file_format]
    path = write(tmp_path / f"a.{file_format}", header + "".join(row.format(n=n) for n in range(1, 1001)))
    state = MemoryStateStore()
    source = FileSource(str(tmp_path), format=file_format, key_column="id", window_by="mtime", state=state)

    batches = source.batches(None, 10)
    records = next(batches)  # the file is open, its first block read
    with path.open("a") as handle:
        handle.write(cut)
    with pytest.raises(SourceError, match=rf"a\.{file_format} changed while it was read"):
        records.extend(chain.from_iterable(batches))

    assert 10 <= len(records) < 1000
    assert [(r["id"], r.get(ERROR_FIELD)) for r in records] == [
        (str(n), None) for n in range(1, len(records) + 1)
    ]
    with path.open("a") as handle:
        handle.write("m\n" if file_format == "csv" else 'm"}\n')
    again = read(source, None)
    source.commit()
    assert [r["email"] for r in again][-2:] == ["u1000@example.org", "e@example.com"]
    assert read(source, None) == []


def _overwrite(path: Path, text: str) -> None:
    """Write ``text`` over the file's bytes from its start, in place (same inode), without truncating it."""
    with path.open("r+b") as handle:
        handle.write(text.encode())


def _rewrite(path: Path, text: str) -> None:
    """Truncate the file and write ``text`` into it, in place (same inode), as `>` in a shell does."""
    path.write_text(text)


def _rewrite_keeping_the_time(path: Path, text: str) -> None:
    """Rewrite the file in place and set its modification time back, as `cp -p` or `rsync -t --inplace`."""
    times = path.stat()
    path.write_text(text)
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))


@pytest.mark.parametrize("change", [_rewrite, _overwrite, _rewrite_keeping_the_time])
def test_a_file_rewritten_in_place_while_it_is_read_yields_no_row_read_after(tmp_path, change):
    """A file rewritten in place between two blocks of its read was read on: rows after the first block
    came from the new text, the row across the blocks' boundary torn between the two (u2@exa + mple.net: a
    valid address of no one), and the file was remembered as read. Now the open file's status is checked
    after each block, before any row of it is used: the read fails naming the file, and its next read reads
    the new text whole."""
    old = CSV_HEADER + "".join(f"{n},u{n}@example.org,\n" for n in range(1, 1001))
    new = CSV_HEADER + "".join(f"{n},w{n}@example.net,\n" for n in range(1, 1001))
    assert len(old) == len(new)
    path = write(tmp_path / "a.csv", old, START)
    state = MemoryStateStore()
    source = FileSource(str(tmp_path), key_column="id", window_by="mtime", state=state)

    batches = source.batches(None, 10)
    records = next(batches)  # the file is open, its first block read
    change(path, new)
    with pytest.raises(SourceError, match=r"a\.csv changed while it was read"):
        records.extend(chain.from_iterable(batches))

    assert 10 <= len(records) < 1000
    assert [r["email"] for r in records] == [f"u{n}@example.org" for n in range(1, len(records) + 1)]
    with pytest.raises(SourceError, match="fully consumed"):
        source.commit()
    assert list(state) == []
    again = read(source, None)
    source.commit()
    assert [r["email"] for r in again] == [f"w{n}@example.net" for n in range(1, 1001)]


def test_a_file_rewritten_after_it_was_listed_is_not_read(tmp_path):
    """A file rewritten (longer) after the listing, while the one before it was read, was read up to the
    size listed: its new text cut where the old one ended, and remembered as read. Now its first block is
    checked against its listing like every other: the read fails naming it."""
    write(tmp_path / "a.csv", CSV_HEADER + "".join(f"{n},u{n}@example.org,\n" for n in range(1, 1001)), START)
    second = write(tmp_path / "b.csv", CSV_HEADER + "1,ann@example.org,\n", START)
    source = FileSource(str(tmp_path), key_column="id", window_by="mtime", state=MemoryStateStore())

    batches = source.batches(None, 10)
    records = next(batches)  # both listed, a.csv open
    second.write_text(CSV_HEADER + "1,al@example.org,\n2,bob@example.org,\n")
    with pytest.raises(SourceError, match=r"b\.csv changed while it was read"):
        records.extend(chain.from_iterable(batches))

    assert ids(records) == [str(n) for n in range(1, 1001)]
    assert [r["email"] for r in read(source, None)][-2:] == ["al@example.org", "bob@example.org"]


def test_a_file_read_in_one_block_is_not_failed_by_an_append_after_it(tmp_path):
    """A file no longer than one block is read whole at once: a row appended once it is read is left to the
    next read, which reads the grown file again."""
    path = write(tmp_path / "a.csv", CSV_HEADER + "1,a@example.org,\n2,b@example.org,\n", START)
    source = FileSource(str(tmp_path), key_column="id", window_by="mtime", state=MemoryStateStore())

    batches = source.batches(None, 1)
    records = next(batches)
    with path.open("a") as handle:
        handle.write("3,c@example.org,\n")
    records.extend(chain.from_iterable(batches))
    source.commit()

    assert ids(records) == ["1", "2"]
    assert ids(read(source, None)) == ["1", "2", "3"]


def test_a_file_renamed_over_the_one_being_read_is_read_next_time(tmp_path):
    """A writer that replaces the file by renaming a new one over it leaves the open file as it was: it is
    read whole, and the new file next time."""
    path = write(tmp_path / "a.csv", CSV_HEADER + "".join(f"{n},u{n}@example.org,\n" for n in range(1, 1001)))
    source = FileSource(str(tmp_path), key_column="id", window_by="mtime", state=MemoryStateStore())

    batches = source.batches(None, 10)
    records = next(batches)
    write(tmp_path / "next.tmp", CSV_HEADER + "1001,v@example.org,\n").rename(path)
    records.extend(chain.from_iterable(batches))
    source.commit()

    assert ids(records) == [str(n) for n in range(1, 1001)]
    assert ids(read(source, None)) == ["1001"]


@pytest.mark.parametrize("away", ["renamed in the folder", "moved out of it"])
def test_a_file_moved_while_it_is_read_is_read_whole(tmp_path, away):
    """A rename moves a file's change time, not its text: a file moved while it was read (an archiver taking
    it out of the folder) failed the read, and its retry no longer found it, so its rows after the first
    block were never read. Its open file is still the one listed: it is read whole."""
    folder = tmp_path / "in"
    folder.mkdir()
    path = write(folder / "a.csv", CSV_HEADER + "".join(f"{n},u{n}@example.org,\n" for n in range(1, 1001)))
    source = FileSource(str(folder), key_column="id", window_by="mtime", state=MemoryStateStore())

    batches = source.batches(None, 10)
    records = next(batches)
    path.rename(folder / "b.csv" if away == "renamed in the folder" else tmp_path / "a.csv")
    records.extend(chain.from_iterable(batches))

    assert ids(records) == [str(n) for n in range(1, 1001)]


def test_a_file_whose_mode_changes_while_it_is_read_fails_the_read(tmp_path):
    """Its change time moves as a rewrite that sets the modification time back (`cp -p`) moves it: where the
    file is still under its name the two cannot be told apart, so the read fails and the retry reads it."""
    path = write(tmp_path / "a.csv", CSV_HEADER + "".join(f"{n},u{n}@example.org,\n" for n in range(1, 1001)))
    source = FileSource(str(tmp_path), key_column="id", window_by="mtime", state=MemoryStateStore())

    batches = source.batches(None, 10)
    next(batches)
    path.chmod(0o600)
    with pytest.raises(SourceError, match=r"a\.csv changed while it was read"):
        list(chain.from_iterable(batches))
    assert len(read(source, None)) == 1000


def test_a_settled_file_without_a_last_line_terminator_is_read_whole(tmp_path):
    """A writer that leaves out the last line's terminator: once the file is unchanged for settle_seconds,
    its last row is whole."""
    now = datetime.now(UTC)
    write(tmp_path / "a.jsonl", '{"id": "1"}\n{"id": "2"}', now - timedelta(seconds=1.8))
    write(tmp_path / "b.jsonl", '{"id": "3"}', now - timedelta(hours=1))
    source = FileSource(str(tmp_path), key_column="id", format="jsonl", window_by="mtime", settle_seconds=2)

    assert ids(read(source, Window(now - timedelta(days=1), now + timedelta(hours=1)))) == ["1", "2", "3"]


def test_a_local_path_that_does_not_exist_fails_the_read_an_empty_folder_reads_nothing(tmp_path):
    """A folder that is not there (a typo, a share not mounted) read as no file at all: the run found 0
    contacts and turned green, as if the source were empty."""
    (tmp_path / "empty").mkdir()
    assert read(FileSource(str(tmp_path / "empty"), key_column="id", window_by="mtime")) == []
    for missing in (tmp_path / "missing", tmp_path / "missing.csv"):
        for location in (str(missing), missing.as_uri()):
            source = FileSource(location, key_column="id", window_by="mtime")
            with pytest.raises(SourceError, match="does not exist"):
                read(source)
