"""Reading a device register export (semicolon-separated CSV, as Swedish spreadsheet tools write it) into
rows, each with its CSV line number and raw text kept verbatim.

Input comes as text chunks, so a file of any size is read in bounded memory. The header is read and
checked first: a file lacking a required column (or not CSV at all) raises `HeaderError` before any row
is given. A quoted value may span lines; the row's number is the line it starts on (the header is line 1).
A row with the wrong number of values is given with an error, and the next row still loads."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

SEPARATOR = ";"


class HeaderError(Exception):
    """The file cannot be read as a register export at all: nothing of it is loaded."""


@dataclass(frozen=True)
class Row:
    """One row as sent: its CSV line number, raw text, and its values by column (or an error)."""

    line: int
    raw: str
    values: dict[str, str | None]
    error: str | None = None


def verbatim(header: str, row: Row) -> bytes:
    """A row as kept (Binary, quarantine): the header line and the row's text, a CSV of its own."""
    return f"{header}\n{row.raw}\n".encode()


def _lines(chunks: Iterable[str]) -> Iterator[str]:
    pending = ""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split("\n")
        yield from complete
    if pending:
        yield pending


def _records(lines: Iterator[str]) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each record; a record continues while a quote is open."""
    start, parts = 0, list[str]()
    for number, line in enumerate(lines, 1):
        if not parts:
            start = number
        parts.append(line.rstrip("\r"))
        text = "\n".join(parts)
        if text.count('"') % 2 == 0:
            parts = []
            yield start, text
    if parts:
        yield start, "\n".join(parts)


def _split(text: str) -> list[str]:
    return next(csv.reader(io.StringIO(text, newline=""), delimiter=SEPARATOR, quotechar='"'), [])


class RegisterCsv:
    """A register export being read: `header` (checked at construction), then `rows()` once."""

    def __init__(self, chunks: Iterable[str], required: Iterable[str]) -> None:
        self._records = _records(_lines(chunks))
        first = next(self._records, None)
        if first is None or not first[1].strip():
            raise HeaderError("The file is empty: a register export starts with a header row")
        text = first[1].lstrip("\ufeff")
        self.header_text = text
        self.header = [name.strip().lower() for name in _split(text)]
        missing = [name for name in required if name not in self.header]
        if missing:
            if len(self.header) < 2:
                raise HeaderError(
                    "The file is not a semicolon-separated register export: its first line has "
                    f"{len(self.header)} column(s); required columns: {', '.join(required)}"
                )
            raise HeaderError(f"The header lacks required column(s): {', '.join(missing)}")
        duplicates = sorted({name for name in self.header if self.header.count(name) > 1})
        if duplicates:
            raise HeaderError(f"The header names column(s) more than once: {', '.join(duplicates)}")

    def rows(self) -> Iterator[Row]:
        for line, text in self._records:
            if not text.strip(" \t\r\n;"):
                continue
            try:
                cells = _split(text)
            except csv.Error as error:
                yield Row(line, text, {}, f"line {line} is not CSV: {error}")
                continue
            if len(cells) != len(self.header):
                message = f"line {line} has {len(cells)} values; the header has {len(self.header)} columns"
                yield Row(line, text, {}, message)
                continue
            values = {name: (cell.strip() or None) for name, cell in zip(self.header, cells, strict=True)}
            yield Row(line, text, values)


def typed(values: dict[str, str | None], fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The row as the checker takes it: absent cells left out, integers and decimals (decimal comma)
    as numbers when they read as such (otherwise left as text, for the checker to name)."""
    record: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        kind = fields.get(name, {}).get("type")
        if kind == "integer" and value.isdigit():
            record[name] = int(value)
        elif kind == "decimal":
            try:
                number = float(value.replace(",", "."))
            except ValueError:
                record[name] = value
                continue
            if not math.isfinite(number):
                record[name] = value
            else:
                record[name] = int(number) if number.is_integer() else number
        else:
            record[name] = value
    return record
