"""Whole numbers from URLs and headers (`_count`, versions, ids of quarantined items), range-checked
before they reach SQL: `str.isdigit()` admits characters `int()` refuses (`²`), `int()` refuses more
than 4300 digits, and neither database takes an integer past 64 bits (SQLite: OverflowError)."""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")
# resource.version_id and resource_version.version_id are INTEGER columns.
MAX_VERSION = 2**31 - 1
MAX_BIGINT = 2**63 - 1


def whole(text: str, maximum: int = MAX_BIGINT) -> int | None:
    """`text` as a whole number of ASCII digits no larger than `maximum`; None for anything else."""
    if not _DIGITS.fullmatch(text):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(maximum)):
        return None
    number = int(digits)
    return number if number <= maximum else None


def is_whole(text: str) -> bool:
    """ASCII digits only (any number of them)."""
    return bool(_DIGITS.fullmatch(text))


def count(text: str, maximum: int) -> int | None:
    """A page size (`_count`): ASCII digits, capped at `maximum` however many there are; None when
    `text` is no whole number."""
    if not _DIGITS.fullmatch(text):
        return None
    digits = text.lstrip("0") or "0"
    return maximum if len(digits) > len(str(maximum)) else min(int(digits), maximum)


def version(text: str) -> int | None:
    """A version id (`_history/N`, `If-Match: W/"N"`): 1 up to the largest a version can be, else None."""
    number = whole(text, MAX_VERSION)
    return number if number else None
