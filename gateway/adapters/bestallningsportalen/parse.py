"""Splitting an order export into orders, each with its raw text kept verbatim.

Three shapes are accepted: one JSON object, a JSON array of objects, or JSON Lines (one object a line).
Input comes as text chunks, so a file of any size is read in bounded memory: a JSON array is decoded
element by element from a sliding buffer, JSON Lines line by line. A line that is not JSON is reported
(with its number) and the next line still loads; an array broken mid-way stops at the break. An order
nested deeper than the depth limit (GATEWAY_MAX_JSON_DEPTH) is reported like one that is not JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from gateway.limits.depth import DEFAULT_MAX_DEPTH, SETTING, depth_exceeds

_DECODER = json.JSONDecoder()
_WS = " \t\r\n"


@dataclass(frozen=True)
class Piece:
    """One order as sent: its position (1-based: array item or line), raw text, and value or error."""

    number: int
    raw: str
    value: Any = None
    error: str | None = None


def _shape(chunks: Iterator[str]) -> tuple[str, str]:
    """The first non-blank character (which says the shape) and the text read so far."""
    buffer = ""
    for chunk in chunks:
        buffer += chunk
        stripped = buffer.lstrip(_WS + "\ufeff")
        if stripped:
            return stripped[0], stripped
    return "", ""


def pieces(chunks: Iterable[str], lines: bool = False, max_depth: int = DEFAULT_MAX_DEPTH) -> Iterator[Piece]:
    """Orders from text chunks. `lines` forces JSON Lines (application/x-ndjson); otherwise a leading
    `[` means an array and anything else a single object or JSON Lines. An order nested deeper than
    `max_depth` comes as an error."""
    stream = iter(chunks)
    first, buffer = _shape(stream)
    if not first:
        return
    found = _array(buffer[1:], stream) if first == "[" and not lines else _lines(buffer, stream, lines)
    for piece in found:
        if piece.error is None and depth_exceeds(piece.value, max_depth):
            yield Piece(piece.number, piece.raw[:200], error=_too_deep(piece.number, max_depth))
        else:
            yield piece


def _too_deep(number: int, max_depth: int) -> str:
    return f"order {number} nests deeper than {max_depth} levels ({SETTING})"


def _decode(text: str, start: int = 0) -> tuple[Any, int]:
    """One JSON value at `start`: Python's decoder recurses, so JSON nested past what the stack holds is
    a ValueError here, as any other text that is no JSON, not a RecursionError."""
    try:
        return _DECODER.raw_decode(text, start)
    except RecursionError as error:
        raise ValueError("nested too deep to read") from error


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError as error:
        raise ValueError("nested too deep to read") from error


def _array(buffer: str, stream: Iterator[str]) -> Iterator[Piece]:
    number, exhausted = 0, False
    while True:
        buffer = buffer.lstrip(_WS)
        if buffer.startswith("]"):
            return
        if buffer.startswith(",") and number:
            buffer = buffer[1:].lstrip(_WS)
        try:
            if not buffer:
                raise ValueError("empty")
            value, end = _decode(buffer)
        except ValueError as error:
            if not exhausted:
                chunk = next(stream, None)
                if chunk is None:
                    exhausted = True
                else:
                    buffer += chunk
                continue
            if buffer:
                yield Piece(
                    number + 1, buffer[:200], error=f"item {number + 1} of the array is not JSON: {error}"
                )
            else:
                yield Piece(number + 1, "", error="the JSON array is not closed")
            return
        if end == len(buffer) and not exhausted and isinstance(value, int | float):
            chunk = next(stream, None)  # a number may continue in the next chunk
            if chunk is not None:
                buffer += chunk
                continue
            exhausted = True
        number += 1
        yield Piece(number, buffer[:end], value)
        buffer = buffer[end:]


def _lines(buffer: str, stream: Iterator[str], forced: bool) -> Iterator[Piece]:
    """JSON Lines; or, when the first line is not complete JSON, one object over several lines."""
    while "\n" not in buffer:
        chunk = next(stream, None)
        if chunk is None:
            break
        buffer += chunk
    if not forced and not _complete(buffer.split("\n", 1)[0]):
        text = "".join([buffer, *stream]).strip(_WS)
        try:
            yield Piece(1, text, _loads(text))
        except ValueError as error:
            yield Piece(1, text[:200], error=f"the document is not JSON: {error}")
        return
    number, pending = 0, buffer
    for chunk in [None, *stream]:
        pending += chunk or ""
        *complete, pending = pending.split("\n")
        for line in complete:
            number += 1
            piece = _line(number, line)
            if piece:
                yield piece
    piece = _line(number + 1, pending)
    if piece:
        yield piece


def _complete(line: str) -> bool:
    try:
        _loads(line)
    except ValueError:
        return False
    return True


def _line(number: int, line: str) -> Piece | None:
    text = line.strip(_WS + "\ufeff")
    if not text:
        return None
    try:
        return Piece(number, text, _loads(text))
    except ValueError as error:
        return Piece(number, text, error=f"line {number} is not JSON: {error}")
