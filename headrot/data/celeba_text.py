"""Parsers for the CelebA text files: pure functions of (text, file name), no I/O.

Each parser returns a `ParsedFile`: the good rows by image id, the bad lines as
rejections with a short reason naming the file and line, and warnings. The
accounting is exact: every non-blank data line ends either in `rows` or in
`rejects` (`n_lines == len(rows) + len(rejects)`), so nothing is dropped silently.

Only a malformed *header* (or a file that is not a CelebA file at all) raises,
and then a `ValueError` naming the file, the line and what to do.

Real-file quirks accepted: the count line, runs of spaces, trailing spaces (the
real attribute header ends with one), CRLF line ends, a UTF-8 BOM, blank lines,
and a count line that disagrees with the rows (a warning, not an error).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

from headrot.storage import safe_name

ATTRIBUTES_FILE = "list_attr_celeba.txt"
LANDMARKS_FILE = "list_landmarks_align_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
LIGHT_FILE = "light_labels.csv"

N_ATTRIBUTES = 40
LANDMARK_NAMES = (
    "lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y",
    "leftmouth_x", "leftmouth_y", "rightmouth_x", "rightmouth_y",
)
LIGHT_CLASSES = ("left", "center", "right")
# Index columns an attribute may not be named after.
RESERVED_COLUMNS = frozenset({"image_id", "path", "partition", "identity", "landmarks", "light_label",
                              "image", "reject_reason"})

# A plain decimal number. Python's float() also takes "nan", "inf" and "1_000",
# none of which belongs in a landmark file.
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d{1,12}$")
# Reasons quote at most this much of an offending value.
_QUOTE = 40


# ---------------------------------------------------------------------------
# Result type


@dataclass
class ParsedFile:
    """One parsed text file."""

    file: str                                   # the file's name, used in every reason
    rows: dict[str, tuple]                      # image_id -> parsed values
    line_of: dict[str, int]                     # image_id -> 1-based line of its row
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (image_id, reason)
    warnings: list[str] = field(default_factory=list)
    header: tuple[str, ...] = ()                # column names (attribute/landmark files)
    n_lines: int = 0                            # non-blank data lines seen
    declared_count: int | None = None           # the count line, where the file has one


# ---------------------------------------------------------------------------
# Value parsers: return the value or raise ValueError with a short message


def _attribute(token: str) -> bool:
    if token == "1":
        return True
    if token == "-1":
        return False
    raise ValueError(f"{_q(token)} is not -1 or 1")


def _number(token: str) -> float:
    if not _NUMBER.match(token):
        raise ValueError(f"{_q(token)} is not a number")
    value = float(token)
    if not math.isfinite(value) or abs(value) > 3.0e38:  # must fit float32
        raise ValueError(f"{_q(token)} is out of range")
    return value


def _partition(token: str) -> int:
    if token not in ("0", "1", "2"):
        raise ValueError(f"partition {_q(token)} is not 0, 1 or 2")
    return int(token)


def _identity(token: str) -> int:
    if not _INTEGER.match(token) or not 0 <= int(token) < 2**31:
        raise ValueError(f"identity {_q(token)} is not a non-negative integer")
    return int(token)


def _light(token: str) -> str:
    value = token.strip().lower()
    if value not in LIGHT_CLASSES:
        raise ValueError(f"light {_q(token)} is not one of left, center, right")
    return value


def _q(token: str) -> str:
    return repr(token if len(token) <= _QUOTE else token[:_QUOTE] + "...")


# ---------------------------------------------------------------------------
# Lines


def _lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line without its end) for every line.

    Splits on '\\n' only (not str.splitlines, which also breaks on form feeds and
    Unicode separators, so its numbers would not match an editor's).
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    return [(i + 1, line.rstrip("\r")) for i, line in enumerate(text.split("\n"))]


def _nonblank(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return [(n, line) for n, line in lines if line.strip()]


def _count_line(file: str, lines: list[tuple[int, str]]) -> tuple[int, int]:
    """The first non-blank line must be the image count: (count, line number)."""
    if not lines:
        raise ValueError(f"{file}: the file is empty; expected the image count on line 1 "
                         "(is this a CelebA file?)")
    n, line = lines[0]
    token = line.strip()
    if not _INTEGER.match(token) or int(token) < 0:
        raise ValueError(f"{file} line {n}: expected the image count (one integer), got "
                         f"{_q(line)}; is this a CelebA {file}?")
    return int(token), n


# ---------------------------------------------------------------------------
# Rows


def _parse_rows(
    parsed: ParsedFile,
    lines: list[tuple[int, str]],
    n_values: int,
    value: Callable[[str], object],
    unit: str,
    split: Callable[[str], list[str]] = str.split,
) -> None:
    """Parse `<id> v1 .. vn` rows into `parsed`; every line lands in rows or rejects."""
    names = parsed.header
    for n, line in lines:
        parsed.n_lines += 1
        tokens = split(line)
        image_id = tokens[0] if tokens else line.strip()
        where = f"{parsed.file} line {n}"
        try:
            safe_name(image_id, "image id")
        except ValueError:
            parsed.rejects.append((image_id, f"{where}: unsafe image id {_q(image_id)} "
                                             "(only letters, digits, '.', '_', '-'; no slashes)"))
            continue
        values = tokens[1:]
        if len(values) != n_values:
            parsed.rejects.append((image_id, f"{where}: expected {n_values} {unit}, got {len(values)}"))
            continue
        try:
            row = []
            for i, token in enumerate(values):
                try:
                    row.append(value(token))
                except ValueError as exc:
                    column = f" ({names[i]})" if len(names) > 1 and i < len(names) else ""
                    raise ValueError(f"{exc}{column}") from None
        except ValueError as exc:
            parsed.rejects.append((image_id, f"{where}: {exc}"))
            continue
        if image_id in parsed.rows:
            first = parsed.line_of[image_id]
            parsed.rejects.append((image_id, f"{where}: duplicate id {image_id} (first at line {first})"))
            continue
        parsed.rows[image_id] = tuple(row)
        parsed.line_of[image_id] = n


def _check_count(parsed: ParsedFile) -> None:
    if parsed.declared_count is not None and parsed.declared_count != parsed.n_lines:
        parsed.warnings.append(
            f"{parsed.file}: line 1 declares {parsed.declared_count} images but the file has "
            f"{parsed.n_lines} rows"
        )


def _no_good_rows(parsed: ParsedFile, shape: str) -> None:
    """A headerless file where not one line parses is not that file at all."""
    if parsed.n_lines and not parsed.rows:
        first = parsed.rejects[0][1]
        raise ValueError(
            f"{parsed.file}: none of its {parsed.n_lines} lines is `{shape}` "
            f"(first problem: {first}); is this the right file?"
        )


# ---------------------------------------------------------------------------
# The files


def parse_attributes(text: str, file: str = ATTRIBUTES_FILE) -> ParsedFile:
    """list_attr_celeba.txt: count, the 40 attribute names, then `<id> -1  1 ...` rows."""
    lines = _lines(text)
    nonblank = _nonblank(lines)
    count, _ = _count_line(file, nonblank)
    if len(nonblank) < 2:
        raise ValueError(f"{file}: missing the header line of {N_ATTRIBUTES} attribute names "
                         "after the count line")
    n, header_line = nonblank[1]
    names = tuple(header_line.split())
    if len(names) != N_ATTRIBUTES:
        raise ValueError(f"{file} line {n}: expected {N_ATTRIBUTES} attribute names, got "
                         f"{len(names)}; the second line of a CelebA attribute file names the "
                         "40 attributes")
    bad = [name for name in names if not re.match(r"^[A-Za-z0-9_]+$", name) or name in RESERVED_COLUMNS]
    if bad or len(set(names)) != len(names):
        what = f"unusable name {_q(bad[0])}" if bad else "repeated names"
        raise ValueError(f"{file} line {n}: {what} in the attribute header; expected 40 distinct "
                         "names such as 5_o_Clock_Shadow")
    parsed = ParsedFile(file=file, rows={}, line_of={}, header=names, declared_count=count)
    _parse_rows(parsed, nonblank[2:], N_ATTRIBUTES, _attribute, "values")
    _check_count(parsed)
    return parsed


def parse_landmarks(text: str, file: str = LANDMARKS_FILE) -> ParsedFile:
    """list_landmarks_align_celeba.txt: count, the 10 coordinate names, then rows."""
    lines = _lines(text)
    nonblank = _nonblank(lines)
    count, _ = _count_line(file, nonblank)
    if len(nonblank) < 2:
        raise ValueError(f"{file}: missing the header line of landmark names after the count line")
    n, header_line = nonblank[1]
    names = tuple(header_line.split())
    if names != LANDMARK_NAMES:
        raise ValueError(f"{file} line {n}: expected the landmark header "
                         f"`{' '.join(LANDMARK_NAMES)}`, got {_q(header_line.strip())}")
    parsed = ParsedFile(file=file, rows={}, line_of={}, header=names, declared_count=count)
    _parse_rows(parsed, nonblank[2:], len(LANDMARK_NAMES), _number, "numbers")
    _check_count(parsed)
    return parsed


def parse_partition(text: str, file: str = PARTITION_FILE) -> ParsedFile:
    """list_eval_partition.txt: `<id> 0|1|2` rows, no header."""
    parsed = ParsedFile(file=file, rows={}, line_of={}, header=("partition",))
    _parse_rows(parsed, _nonblank(_lines(text)), 1, _partition, "value")
    if not parsed.n_lines:
        raise ValueError(f"{file}: the file is empty; expected `<image id> <0|1|2>` rows")
    _no_good_rows(parsed, "<image id> <0|1|2>")
    return parsed


def parse_identity(text: str, file: str = IDENTITY_FILE) -> ParsedFile:
    """identity_CelebA.txt: `<id> <person id>` rows, no header."""
    parsed = ParsedFile(file=file, rows={}, line_of={}, header=("identity",))
    _parse_rows(parsed, _nonblank(_lines(text)), 1, _identity, "value")
    _no_good_rows(parsed, "<image id> <person id>")
    return parsed


def parse_light_labels(text: str, file: str = LIGHT_FILE) -> ParsedFile:
    """Light labels CSV: header `image_id,light`, then `<id>,left|center|right` rows."""
    nonblank = _nonblank(_lines(text))
    if not nonblank:
        raise ValueError(f"{file}: the file is empty; expected the header `image_id,light`")
    n, header_line = nonblank[0]
    header = tuple(t.strip() for t in header_line.split(","))
    if header != ("image_id", "light"):
        raise ValueError(f"{file} line {n}: expected the CSV header `image_id,light`, got "
                         f"{_q(header_line.strip())}")
    parsed = ParsedFile(file=file, rows={}, line_of={}, header=("light",))
    _parse_rows(parsed, nonblank[1:], 1, _light, "value", split=lambda line: [t.strip() for t in line.split(",")])
    return parsed
