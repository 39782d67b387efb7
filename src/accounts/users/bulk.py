"""Bulk import and export files: user rows read from NDJSON or CSV, and written back in either format.

Every row is decoded into `UserCreate`, so a file obeys exactly the rules of `POST /api/v1/users`; a row
that breaks them becomes a `RowError` with its line number, never a failed import. Files are read a line
at a time, so memory stays flat whatever their size.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import msgspec

from accounts.users.schemas import ImportFormat, RowError, UserCreate, UserExportRow
from accounts.users.services import normalise_email

MEDIA_TYPES: dict[ImportFormat, str] = {"ndjson": "application/x-ndjson", "csv": "text/csv"}
FORMATS: dict[str, ImportFormat] = {media_type: name for name, media_type in MEDIA_TYPES.items()}
BINARY = "application/octet-stream"
"""A file sent without naming its format (what generated clients send): sniff_format tells which it is."""
MAX_LINE_BYTES = 64 * 1024
"""Longer lines are row errors: a valid row is a few kilobytes at most (see UserCreate's limits)."""
EXPORT_FIELDS = tuple(UserExportRow.__struct_fields__)
_IMPORT_FIELDS = frozenset(UserCreate.__struct_fields__)
_REQUIRED_FIELDS = ("email", "username")
_BOM = b"\xef\xbb\xbf"
_TOO_LONG = f"the line is longer than {MAX_LINE_BYTES} bytes"
_NOT_UTF8 = "the line is not valid UTF-8"
_NDJSON_ROW = msgspec.json.Decoder(UserCreate)
_JSON = msgspec.json.Encoder()

Parsed = tuple[int, UserCreate | str]
"""A row's line number and the user it holds, or why it holds none."""


class UploadTooLarge(Exception):
    """The upload is larger than the limit; nothing of it is kept."""


class BadHeader(ValueError):
    """A CSV file whose header row does not name the columns of a user."""


async def receive(chunks: AsyncIterable[bytes], path: Path, limit: int) -> int:
    """Write `chunks` to `path` (a new file), at most `limit` bytes; returns the size. On any failure the
    file is removed."""
    size = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Plain writes: a chunk lands in the page cache in microseconds, less than a thread hop costs.
        with path.open("xb") as file:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge
                file.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return size


def sniff_format(path: Path) -> ImportFormat:
    """NDJSON rows are JSON objects, so such a file starts with `{`; a CSV file starts with its header row."""
    with path.open("rb") as file:
        start = file.read(MAX_LINE_BYTES).removeprefix(_BOM).lstrip()
    return "ndjson" if start.startswith(b"{") else "csv"


@contextmanager
def write_whole(path: Path) -> Iterator[BinaryIO]:
    """A file for writing that appears at `path` only once the block ends without error: it is written
    under a temporary name, then renamed, so a reader sees all of it or none. On failure it is removed."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as file:
            yield file
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's header row; BadHeader unless they are fields of UserCreate,
    each at most once, with `email` and `username` among them."""
    with path.open("rb") as file:
        first = file.readline(MAX_LINE_BYTES + 1).removeprefix(_BOM)
    try:
        text = first.decode()
    except UnicodeDecodeError:
        raise BadHeader("The CSV header row is not valid UTF-8.") from None
    columns = next(csv.reader([text]), [])
    unknown = [name for name in columns if name not in _IMPORT_FIELDS]
    if unknown:
        raise BadHeader(
            f"Unknown CSV column(s) {', '.join(map(repr, unknown))}; use {', '.join(UserCreate.__struct_fields__)}."
        )
    if len(set(columns)) != len(columns):
        raise BadHeader("A CSV column appears twice in the header row.")
    missing = [name for name in _REQUIRED_FIELDS if name not in columns]
    if missing:
        raise BadHeader(f"The CSV header row needs the column(s) {', '.join(missing)}.")
    return columns


def count_rows(path: Path, file_format: ImportFormat) -> int:
    """How many rows the file holds (non-blank lines, less a CSV header): the job's total. A CSV cell
    spanning lines makes this an over-estimate until the import ends."""
    with path.open("rb") as file:
        rows = sum(1 for line in file if line.strip())
    return max(rows - 1, 0) if file_format == "csv" else rows


def read_rows(file: BinaryIO, file_format: ImportFormat) -> Iterator[Parsed]:
    return _read_ndjson(file) if file_format == "ndjson" else _read_csv(file)


def _lines(file: BinaryIO) -> Iterator[bytes | None]:
    """The file's lines (a first-line BOM dropped); None stands for a line longer than MAX_LINE_BYTES."""
    first = True
    while line := file.readline(MAX_LINE_BYTES + 1):
        if first:
            line, first = line.removeprefix(_BOM), False
        if len(line) > MAX_LINE_BYTES:
            while not line.endswith(b"\n") and (line := file.readline(MAX_LINE_BYTES)):
                pass  # skip the rest of the long line
            yield None
        else:
            yield line


def _read_ndjson(file: BinaryIO) -> Iterator[Parsed]:
    for number, line in enumerate(_lines(file), start=1):
        if line is None:
            yield number, _TOO_LONG
        elif line.strip():
            yield number, _decode_json_row(line)


def _decode_json_row(line: bytes) -> UserCreate | str:
    try:
        return _NDJSON_ROW.decode(line)
    except msgspec.ValidationError as exc:
        return str(exc)
    except msgspec.DecodeError as exc:
        return f"not valid JSON: {exc}"
    except UnicodeDecodeError:
        return _NOT_UTF8


def _read_csv(file: BinaryIO) -> Iterator[Parsed]:
    bad_lines: dict[int, str] = {}
    reader = csv.reader(_csv_lines(file, bad_lines), strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        return
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, f"not valid CSV: {exc}"
            start = reader.line_num + 1
            continue
        end, line = reader.line_num, start
        start = end + 1
        if problem := next((bad_lines.pop(n) for n in range(line, end + 1) if n in bad_lines), None):
            yield line, problem
        elif not cells:
            continue  # a blank line
        elif len(cells) != len(header):
            yield line, f"expected {len(header)} cells (as in the header row), found {len(cells)}"
        else:
            yield line, _convert_csv_row(header, cells)


def _csv_lines(file: BinaryIO, bad_lines: dict[int, str]) -> Iterator[str]:
    """The file's lines as text for the csv module; an undecodable or too long line is noted in
    `bad_lines` (and read as an empty line, so line numbers stay right)."""
    for number, line in enumerate(_lines(file), start=1):
        if line is None:
            bad_lines[number] = _TOO_LONG
            yield "\n"
            continue
        try:
            yield line.decode()
        except UnicodeDecodeError:
            bad_lines[number] = _NOT_UTF8
            yield "\n"


def _convert_csv_row(header: list[str], cells: list[str]) -> UserCreate | str:
    # An empty cell is an absent field: null for the optional ones, "missing" for email and username.
    row = {name: value for name, value in zip(header, cells, strict=True) if value != ""}
    try:
        return msgspec.convert(row, UserCreate)
    except msgspec.ValidationError as exc:
        return str(exc)


@dataclass
class RowChecker:
    """The checks that need the rows before: an e-mail (any case) or a username may appear only once in
    a file. E-mails come out lower-cased, as the service stores them."""

    emails: dict[str, int] = field(default_factory=dict)
    usernames: dict[str, int] = field(default_factory=dict)

    def check(self, line: int, user: UserCreate) -> UserCreate | str:
        email = normalise_email(user.email)
        if (first := self.emails.setdefault(email, line)) != line:
            return f"the e-mail address appears more than once in the file (first on line {first})"
        if (first := self.usernames.setdefault(user.username, line)) != line:
            return f"the username appears more than once in the file (first on line {first})"
        if email != user.email:
            user = msgspec.structs.replace(user, email=email)
        return user


def encode_errors(errors: Iterable[RowError]) -> bytes:
    return _JSON.encode_lines(sorted(errors, key=lambda error: error.line))


class ExportWriter:
    """Writes pages of users to an export file, in the format an import reads back."""

    def __init__(self, file: BinaryIO, file_format: ImportFormat) -> None:
        self.file = file
        self.format = file_format
        self._text = io.TextIOWrapper(file, encoding="utf-8", newline="") if file_format == "csv" else None
        self._csv = csv.writer(self._text, lineterminator="\n") if self._text is not None else None
        if self._csv is not None:
            self._csv.writerow(EXPORT_FIELDS)

    def write(self, rows: list[UserExportRow]) -> None:
        if self._csv is None:
            self.file.write(_JSON.encode_lines(rows))
            return
        self._csv.writerows(["" if value is None else value for value in msgspec.structs.astuple(row)] for row in rows)

    def close(self) -> None:
        if self._text is not None:
            self._text.flush()
            self._text.detach()
