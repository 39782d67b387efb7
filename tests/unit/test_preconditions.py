"""Parsing `If-Match` and `If-None-Match` (RFC 9110 section 13.1), and writing ETags: pure functions."""

from __future__ import annotations

import pytest

from accounts.core.http.preconditions import MalformedPrecondition, etag, if_match_versions, none_match

MALFORMED = [
    "",
    " ",
    "\t",
    "garbage",
    "1",
    '"1',
    '1"',
    '"1" "2"',
    '"1";"2"',
    "W/1",
    'w/"1"',
    'W /"1"',
    '"a b"',
    '" 1"',
    '"tab\there"',
    '"del\x7f"',
    '"nul\x00"',
    "**",
    '*, "1"',
    '"1", *',
    "'1'",
    ",",
    '"\uff11"',  # a full-width digit: not a tag character at all
]


# --- etag ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "tag"), [(1, '"1"'), (0, '"0"'), (42, '"42"'), (2**31 - 1, '"2147483647"')])
def test_etag_is_the_version_in_quotes(version: int, tag: str) -> None:
    assert etag(version) == tag


@pytest.mark.parametrize("version", [1, 7, 999_999_999])
def test_an_etag_round_trips_through_both_headers(version: int) -> None:
    assert if_match_versions(etag(version)) == [version]
    assert none_match(etag(version), version) is True
    assert none_match(etag(version), version + 1) is False


# --- If-Match -----------------------------------------------------------------------------------


def test_no_if_match_header_accepts_any_version() -> None:
    assert if_match_versions(None) is None


@pytest.mark.parametrize("header", ["*", " *", "* ", "\t*\t"])
def test_a_star_accepts_any_version(header: str) -> None:
    assert if_match_versions(header) is None


@pytest.mark.parametrize(
    ("header", "versions"),
    [
        ('"3"', [3]),
        (' "3"', [3]),
        ('"3" ', [3]),
        ('\t"3"\t', [3]),
        ('"1", "2"', [1, 2]),
        ('"1","2"', [1, 2]),
        ('"1" ,\t"2" , "3"', [1, 2, 3]),
        ('"2", "1"', [2, 1]),
        ('"0"', [0]),
        ('"999999999"', [999_999_999]),
    ],
)
def test_if_match_lists_the_versions_it_names(header: str, versions: list[int]) -> None:
    assert if_match_versions(header) == versions


def test_a_long_list_keeps_every_version() -> None:
    header = ", ".join(etag(n) for n in range(1, 301))
    assert if_match_versions(header) == list(range(1, 301))


@pytest.mark.parametrize(("header", "versions"), [('W/"3"', []), ('W/"1", "2"', [2]), ('"1", W/"2"', [1])])
def test_weak_tags_never_match_an_if_match(header: str, versions: list[int]) -> None:
    """Strong comparison (RFC 9110 13.1.1): a weak tag matches nothing, even the current version's."""
    assert if_match_versions(header) == versions


@pytest.mark.parametrize(
    "header",
    [
        '"abc"',
        '""',
        '"-1"',
        '"+1"',
        '"1.0"',
        '"1e3"',
        '"0x1"',
        '"\x80"',
        '"\xff1"',
    ],
)
def test_tags_this_service_never_gives_match_no_version(header: str) -> None:
    assert if_match_versions(header) == []


@pytest.mark.parametrize("header", ['"\xb2"', '"\xb3"', '"\xb9"', '"1\xb2"'])
def test_latin1_superscript_digits_match_no_version_and_do_not_crash(header: str) -> None:
    """Headers arrive decoded as Latin-1, so the obs-text bytes 0xB2, 0xB3 and 0xB9 become `²`, `³` and `¹`:
    `str.isdigit()` says yes to them, `int()` refuses them."""
    assert if_match_versions(header) == []


@pytest.mark.parametrize(
    "header",
    ['"99999999999999999999"', '"2147483648"', '"9999999999"', '"1' + "0" * 1000 + '"', '"00000000001"'],
)
def test_numbers_too_large_for_a_version_match_no_version(header: str) -> None:
    """A version is a PostgreSQL integer: a longer tag must not reach the database as an out-of-range value."""
    versions = if_match_versions(header)
    assert versions is not None
    assert all(0 <= version < 2**31 for version in versions)
    assert versions == []


@pytest.mark.parametrize(("header", "version"), [('"01"', 1), ('"007"', 7), ('"00"', 0)])
def test_if_match_compares_tags_character_by_character(header: str, version: int) -> None:
    """The service sends `"1"`, never `"01"`: under strong comparison the two are different tags."""
    assert version not in (if_match_versions(header) or [])


def test_a_quoted_star_is_an_ordinary_tag_not_the_wildcard() -> None:
    """`*` is the wildcard; `"*"` is an opaque tag that this service never gives."""
    assert if_match_versions('"*"') == []


@pytest.mark.parametrize(
    ("header", "versions"), [('"1",', [1]), ('"1",,"2"', [1, 2]), (', "1"', [1]), ('"1", ,"2"', [1, 2])]
)
def test_empty_list_elements_are_ignored(header: str, versions: list[int]) -> None:
    """RFC 9110 5.6.1.2: a recipient must accept and ignore empty elements of a list."""
    assert if_match_versions(header) == versions


@pytest.mark.parametrize("header", MALFORMED)
def test_a_malformed_if_match_is_rejected(header: str) -> None:
    with pytest.raises(MalformedPrecondition):
        if_match_versions(header)


# --- If-None-Match ------------------------------------------------------------------------------


def test_no_if_none_match_header_matches_nothing() -> None:
    assert none_match(None, 1) is False


@pytest.mark.parametrize(
    ("header", "version"),
    [
        ('"1"', 1),
        (' "1" ', 1),
        ('"5", "1"', 1),
        ('"1","5"', 1),
        ('"a", "b", "12"', 12),
        ('W/"1"', 1),
        ('W/"4", "9"', 4),
        ("*", 1),
        (" * ", 3),
        ('"2147483647"', 2**31 - 1),
    ],
)
def test_if_none_match_names_the_version(header: str, version: int) -> None:
    """Weak comparison (RFC 9110 13.1.2): `W/"1"` matches version 1."""
    assert none_match(header, version) is True


@pytest.mark.parametrize(
    ("header", "version"),
    [
        ('"2"', 1),
        ('"1"', 11),
        ('"11"', 1),
        ('"01"', 1),
        ('"abc"', 1),
        ('""', 1),
        ('W/"2"', 1),
        ('"2", "3"', 1),
        ('"99999999999999999999"', 1),
        ('"*"', 1),
        ('W/"*"', 1),
    ],
)
def test_if_none_match_does_not_name_the_version(header: str, version: int) -> None:
    assert none_match(header, version) is False


@pytest.mark.parametrize("header", MALFORMED)
def test_a_malformed_if_none_match_is_rejected(header: str) -> None:
    with pytest.raises(MalformedPrecondition):
        none_match(header, 1)
