"""String folding for search: case- and accent-insensitive, so `Asa` finds `Åsa`."""

from __future__ import annotations

import unicodedata

MAX_FOLDED = 255


def fold(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))[:MAX_FOLDED]
