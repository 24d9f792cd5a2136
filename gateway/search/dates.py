"""FHIR date, dateTime and instant values as half-open UTC ranges [low, high), by their precision.

`2024` covers the whole year, `2024-05-01` the whole day, `2024-05-01T10:00` the whole minute. Values
without an offset are read in the configured local zone (Europe/Stockholm by default).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

MIN = datetime(1, 1, 2)
MAX = datetime(9999, 12, 30)

_PATTERN = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d+))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class DateFormatError(ValueError):
    pass


def _add_months(value: datetime, months: int) -> datetime:
    month = value.month - 1 + months
    return value.replace(year=value.year + month // 12, month=month % 12 + 1)


def date_range(text: str, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The UTC range [low, high) a FHIR date/dateTime/instant string stands for."""
    match = _PATTERN.match(text.strip())
    if not match:
        raise DateFormatError(f"'{text}' is not a FHIR date, dateTime or instant")
    g = match.groupdict()
    try:
        year, month, day = int(g["y"]), int(g["m"] or 1), int(g["d"] or 1)
        hour, minute, second = int(g["H"] or 0), int(g["M"] or 0), int(g["S"] or 0)
        fraction = g["f"] or ""
        micro = int((fraction + "000000")[:6]) if fraction else 0
        tz = g["tz"]
        offset: tzinfo = zone
        if tz == "Z":
            offset = UTC
        elif tz:
            sign = 1 if tz[0] == "+" else -1
            offset = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
        low = datetime(year, month, day, hour, minute, second, micro, tzinfo=offset)
    except ValueError as error:
        raise DateFormatError(f"'{text}' is not a valid date: {error}") from error
    try:
        if g["f"]:
            high = low + timedelta(microseconds=10 ** (6 - min(len(fraction), 6)))
        elif g["S"]:
            high = low + timedelta(seconds=1)
        elif g["M"]:
            high = low + timedelta(minutes=1)
        elif g["H"]:
            high = low + timedelta(hours=1)
        elif g["d"]:
            high = low + timedelta(days=1)
        elif g["m"]:
            high = _add_months(low, 1)
        else:
            high = low.replace(year=low.year + 1)
    except (OverflowError, ValueError):
        return _utc(low), datetime.max  # the end of year 9999: past what datetime holds
    return _utc(low), _utc(high)


def _utc(value: datetime) -> datetime:
    """As naive UTC; values that fall outside year 1 to 9999 in UTC are held at the nearest end."""
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:
        return datetime.min if value.year == 1 else datetime.max


def shift(value: datetime, delta: timedelta) -> datetime:
    """`value + delta`, held within what datetime holds."""
    try:
        return value + delta
    except OverflowError:
        return datetime.min if delta < timedelta(0) else datetime.max


def to_instant(value: datetime) -> str:
    """A naive UTC datetime as a FHIR instant with millisecond precision."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
