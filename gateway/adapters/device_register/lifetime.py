"""The end of a unit's expected lifetime (issue 18): its purchase date (`inkopsdatum`) plus its lifetime
(`livslangd_ar`, years, a decimal rounded to whole months), stored as the `lifetimeEnd` date of extension
device-maintenance so the SearchParameter `lifetime-end` (profiles/) indexes it. The register mapping
sets it (device.py); backfill.py sets it on the Devices stored before, through the write path
(`gateway backfill device-lifetime`, docs/adapters/device-register.md). Pure: no database here."""

from __future__ import annotations

import calendar
from datetime import date

from gateway.model.types import Json

MAINTENANCE_EXT = "https://fhir.home-device-gateway.se/StructureDefinition/device-maintenance"
LIFETIME_END = "lifetimeEnd"


def lifetime_end(purchased: object, years: object) -> str | None:
    """`purchased` (YYYY-MM-DD) plus `years` (rounded to whole months; the day clamped to the month's
    last), or None when either is missing or not a date and a number."""
    if not isinstance(purchased, str) or isinstance(years, bool) or not isinstance(years, int | float):
        return None
    try:
        start = date.fromisoformat(purchased[:10])
    except ValueError:
        return None
    months = round(float(years) * 12)
    if months < 0:
        return None
    year, month = divmod(start.month - 1 + months, 12)
    year += start.year
    if year > 9999:
        return None
    day = min(start.day, calendar.monthrange(year, month + 1)[1])
    return date(year, month + 1, day).isoformat()


def _value(parts: list[Json], url: str) -> object:
    for part in parts:
        if part.get("url") == url:
            return part.get("valueDate") or (part.get("valueDuration") or {}).get("value")
    return None


def with_lifetime_end(parts: list[Json]) -> list[Json]:
    """The maintenance extension's parts with `lifetimeEnd` as purchaseDate and lifetime say (placed right
    after purchaseDate, as the mapping writes it; dropped when they say nothing)."""
    kept = [p for p in parts if p.get("url") != LIFETIME_END]
    end = lifetime_end(_value(kept, "purchaseDate"), _value(kept, "lifetime"))
    if end is None:
        return kept
    at = next(i for i, p in enumerate(kept) if p.get("url") == "purchaseDate") + 1
    return [*kept[:at], {"url": LIFETIME_END, "valueDate": end}, *kept[at:]]


def device_with_lifetime_end(device: Json) -> Json | None:
    """The Device with its lifetime end set right, or None when it already is (or has nothing to set)."""
    extensions = device.get("extension")
    if not isinstance(extensions, list):
        return None
    changed = False
    result = []
    for extension in extensions:
        if isinstance(extension, dict) and extension.get("url") == MAINTENANCE_EXT:
            parts = [p for p in extension.get("extension") or [] if isinstance(p, dict)]
            updated = with_lifetime_end(parts)
            if updated != extension.get("extension"):
                result.append({**extension, "extension": updated})
                changed = True
                continue
        result.append(extension)
    return {**device, "extension": result} if changed else None
