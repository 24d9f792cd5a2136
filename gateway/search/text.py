"""String folding for search: case- and accent-insensitive, so `Asa` finds `Åsa`."""

from __future__ import annotations

import unicodedata
from functools import lru_cache

MAX_FOLDED = 255


def fold(value: str) -> str:
    if value.isascii():  # no accents to strip, and casefold is lower (most values: codes, names, ids)
        return value.lower()[:MAX_FOLDED]
    return _fold_short(value) if len(value) <= MAX_FOLDED else _fold(value)


@lru_cache(maxsize=8192)  # short names recur (a device type, a unit, a town): folded once each
def _fold_short(value: str) -> str:
    return _fold(value)


def _fold(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))[:MAX_FOLDED]
