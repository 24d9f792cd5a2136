"""The jobs' clock: the real one, unless GATEWAY_NOW (or `gateway schedule run --now`) sets it.

It sets the jobs' due computations and their Tasks' `authoredOn` only: never token expiry,
`meta.lastUpdated` or `AuditEvent.recorded`, which keep the real clock. With auth on, a set clock stops
start-up unless GATEWAY_ALLOW_FAKE_CLOCK=1 (a fake clock on a real installation would make every due
date a lie)."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.config import Settings
from gateway.search.dates import utc_now
from gateway.security.endpoints import StartupRefused

FAKE_CLOCK_REFUSED = (
    "GATEWAY_NOW sets the scheduler's clock, for tests and demonstrations only: with GATEWAY_AUTH on, "
    "start-up refuses it unless GATEWAY_ALLOW_FAKE_CLOCK=1."
)


class FakeClockRefused(StartupRefused):
    """GATEWAY_NOW with auth on and without GATEWAY_ALLOW_FAKE_CLOCK."""


def parse(value: str) -> datetime:
    """An ISO date-time (a date alone is its midnight UTC) as a naive UTC datetime; ValueError else."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def now(settings: Settings, override: str | None = None) -> datetime:
    """The jobs' now (naive UTC): `override`, else GATEWAY_NOW, else the real clock."""
    value = override or settings.now
    return parse(value) if value else utc_now()


def check_fake_clock(settings: Settings) -> None:
    """Start-up check: a set clock with auth on needs GATEWAY_ALLOW_FAKE_CLOCK; a malformed one stops."""
    if not settings.now:
        return
    try:
        parse(settings.now)
    except ValueError as error:
        raise FakeClockRefused(f"GATEWAY_NOW is not an ISO date-time: {settings.now!r}") from error
    if settings.auth and not settings.allow_fake_clock:
        raise FakeClockRefused(FAKE_CLOCK_REFUSED)
