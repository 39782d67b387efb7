"""accounts.users.bulk: reading import files and writing export files (pure, no database)."""

from __future__ import annotations

import io
from pathlib import Path

import msgspec
import pytest

from accounts.users.bulk import (
    MAX_LINE_BYTES,
    BadHeader,
    ExportWriter,
    RowChecker,
    UploadTooLarge,
    count_rows,
    csv_header,
    read_rows,
    receive,
)
from accounts.users.schemas import ImportFormat, UserCreate, UserExportRow


def rows(data: bytes, file_format: ImportFormat) -> list[tuple[int, UserCreate | str]]:
    return list(read_rows(io.BytesIO(data), file_format))


def test_ndjson_rows_keep_their_physical_line_numbers() -> None:
    data = (
        b'\xef\xbb\xbf{"email": "a@example.com", "username": "ada"}\r\n\n  \n'
        b'{"email": "b@example.com", "username": "bob"}'
    )
    assert rows(data, "ndjson") == [
        (1, UserCreate(email="a@example.com", username="ada")),
        (4, UserCreate(email="b@example.com", username="bob")),
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not valid JSON: "),
        (b"null", "Expected `object`, got `null`"),
        (b'"text"', "Expected `object`, got `str`"),
        (b'{"email": "a@example.com"}', "Object missing required field `username`"),
        (b'{"email": "a@example.com", "username": "ada", "id": 1}', "Object contains unknown field `id`"),
        (b'{"email": "a@example.com", "username": "ada", "password": "short"}', "length >= 8"),
        (b'{"email": "a@example.com", "username": "ada", "bio": "a\\u0000b"}', "at `$.bio`"),
        (b'{"email": "a@example.com", "username": "ada"} {"x": 1}', "not valid JSON: "),
        (b'{"email": "a@example.com", "username": "\xff"}', "the line is not valid UTF-8"),
    ],
)
def test_a_malformed_ndjson_line_is_a_reason_never_an_exception(line: bytes, reason: str) -> None:
    [(number, result)] = rows(line + b"\n", "ndjson")
    assert number == 1
    assert isinstance(result, str)
    assert reason in result


def test_an_overlong_line_is_skipped_whole() -> None:
    data = b'{"bio": "' + b"x" * MAX_LINE_BYTES + b'"}\n{"email": "a@example.com", "username": "ada"}\n'
    assert rows(data, "ndjson") == [
        (1, f"the line is longer than {MAX_LINE_BYTES} bytes"),
        (2, UserCreate(email="a@example.com", username="ada")),
    ]


def test_csv_cells_become_fields_and_empty_cells_absent_ones() -> None:
    data = b'username,email,bio\nada,a@example.com,\nbob,b@example.com,"two\nlines"\n\n"unterminated,x@example.com,\n'
    assert rows(data, "csv") == [
        (2, UserCreate(email="a@example.com", username="ada")),
        (3, UserCreate(email="b@example.com", username="bob", bio="two\nlines")),
        (6, "not valid CSV: unexpected end of data"),
    ]


def test_a_file_without_even_a_header_has_no_rows() -> None:
    assert rows(b"", "csv") == []


def test_the_header_must_name_user_fields(tmp_path: Path) -> None:
    path = tmp_path / "users.csv"
    path.write_bytes(b"\xef\xbb\xbfemail,username,password\n")
    assert csv_header(path) == ["email", "username", "password"]
    for header in (b"email,username,is_superuser\n", b"email\n", b"email,username,email\n", b"\xff\n", b""):
        path.write_bytes(header)
        with pytest.raises(BadHeader):
            csv_header(path)


def test_the_checker_lowers_emails_and_refuses_second_sightings() -> None:
    checker = RowChecker()
    assert checker.check(1, UserCreate(email="Ada@Example.COM", username="ada")) == UserCreate(
        email="ada@example.com", username="ada"
    )
    assert "first on line 1" in str(checker.check(2, UserCreate(email="ADA@example.com", username="other")))
    assert "username" in str(checker.check(3, UserCreate(email="b@example.com", username="ada")))


def test_rows_are_counted_without_blank_lines_or_the_header(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"a\n\nb\n  \nc")
    assert count_rows(path, "ndjson") == 3
    assert count_rows(path, "csv") == 2


@pytest.mark.parametrize("file_format", ["ndjson", "csv"])
def test_an_export_reads_back_as_the_same_users(file_format: ImportFormat) -> None:
    exported = [
        UserExportRow(email="a@example.com", username="ada", full_name='Ada, "the" Countess', bio="two\nlines"),
        UserExportRow(email="b@example.com", username="bob", full_name=None, bio=None),
    ]
    buffer = io.BytesIO()
    writer = ExportWriter(buffer, file_format)
    writer.write(exported)
    writer.close()
    read = [user for _, user in rows(buffer.getvalue(), file_format)]
    assert read == [msgspec.convert(msgspec.to_builtins(row), UserCreate) for row in exported]


async def test_an_upload_over_the_limit_leaves_no_file(tmp_path: Path) -> None:
    async def chunks(count: int):  # type: ignore[no-untyped-def]
        for _ in range(count):
            yield b"x" * 100

    path = tmp_path / "imports" / "upload.ndjson"
    assert await receive(chunks(3), path, 300) == 300
    assert path.read_bytes() == b"x" * 300
    path.unlink()
    with pytest.raises(UploadTooLarge):
        await receive(chunks(4), path, 300)
    assert not path.exists()
