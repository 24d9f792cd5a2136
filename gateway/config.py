"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Every field has an environment variable of the same name, upper-cased."""

    database_url: str = f"sqlite:///{REPO_ROOT / 'var' / 'gateway.db'}"
    # A PostgreSQL schema to work in (tests use one schema each); empty means the default search_path.
    database_schema: str = ""
    # Absolute base URL of the FHIR endpoint as clients see it; empty means "derive from the request".
    base_url: str = ""
    max_bundle_entries: int = 1000
    max_body_bytes: int = 16 * 1024 * 1024
    default_page_size: int = 50
    max_page_size: int = 1000
    # Dates and times without an offset are read in this zone (search values and stored values alike).
    local_timezone: str = "Europe/Stockholm"
    profiles_dir: Path = field(default_factory=lambda: REPO_ROOT / "profiles")

    @classmethod
    def from_env(cls) -> Settings:
        defaults = cls()
        return cls(
            database_url=os.environ.get("DATABASE_URL", defaults.database_url),
            database_schema=os.environ.get("DATABASE_SCHEMA", ""),
            base_url=os.environ.get("GATEWAY_BASE_URL", "").rstrip("/"),
            max_bundle_entries=_int("GATEWAY_MAX_BUNDLE_ENTRIES", defaults.max_bundle_entries),
            max_body_bytes=_int("GATEWAY_MAX_BODY_BYTES", defaults.max_body_bytes),
            default_page_size=_int("GATEWAY_DEFAULT_PAGE_SIZE", defaults.default_page_size),
            max_page_size=_int("GATEWAY_MAX_PAGE_SIZE", defaults.max_page_size),
            local_timezone=os.environ.get("GATEWAY_TIMEZONE", defaults.local_timezone),
            profiles_dir=Path(os.environ.get("GATEWAY_PROFILES_DIR", str(defaults.profiles_dir))),
        )
