"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _switch(name: str, default: bool) -> bool:
    """on/off, true/false, yes/no, 1/0; anything else is a configuration error, not a silent default."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise ValueError(f"{name} must be on or off, not {value!r}")


def _list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())


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
    # Security (docs/security.md). GATEWAY_AUTH=off serves every request unchecked, for local trials only.
    auth: bool = True
    # Lifetime of the access tokens the gateway issues, in seconds (SMART recommends at most 300).
    token_lifetime: int = 300
    # The `iss` of the gateway's own tokens; empty means the origin the request came to, plus /auth.
    auth_issuer: str = ""
    # Algorithm of new signing keys (`gateway keys rotate`): ES384 or RS384.
    signing_alg: str = "ES384"
    # An external OpenID Connect issuer whose access tokens are accepted too (empty: none).
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_url: str = ""
    oidc_jwks_ttl: int = 300
    # The claims of the external issuer's tokens that carry these (scopes: a space-separated string or list).
    oidc_claim_organization: str = "hsa_org"
    oidc_claim_person: str = "hsa_id"
    oidc_claim_scopes: str = "scope"
    # The organisation policy (docs/security.md): its rules file, and whether it applies.
    # GATEWAY_ORGANISATION_POLICY is on by default from the environment; Settings() in code leaves it off.
    organisation_policy: bool = False
    access_policy: Path = field(default_factory=lambda: REPO_ROOT / "policy" / "access.yaml")
    # Client ids exempt from the organisation policy (the region's own journal system), comma-separated.
    region_clients: tuple[str, ...] = ()
    # Client ids that see protected-identity Patients unmasked, besides those in the policy file.
    protected_identity_clients: tuple[str, ...] = ()
    # AuditEvent on every access (docs/security.md): off only for trials and benchmarks without it.
    audit: bool = True
    # Records waiting for the batch writer; when full, requests fail closed with 503.
    audit_queue_size: int = 10000
    audit_batch_size: int = 500

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
            auth=_switch("GATEWAY_AUTH", defaults.auth),
            token_lifetime=_int("GATEWAY_TOKEN_LIFETIME", defaults.token_lifetime),
            auth_issuer=os.environ.get("GATEWAY_AUTH_ISSUER", "").rstrip("/"),
            signing_alg=os.environ.get("GATEWAY_SIGNING_ALG", defaults.signing_alg),
            oidc_issuer=os.environ.get("GATEWAY_OIDC_ISSUER", ""),
            oidc_audience=os.environ.get("GATEWAY_OIDC_AUDIENCE", ""),
            oidc_jwks_url=os.environ.get("GATEWAY_OIDC_JWKS_URL", ""),
            oidc_jwks_ttl=_int("GATEWAY_OIDC_JWKS_TTL", defaults.oidc_jwks_ttl),
            oidc_claim_organization=os.environ.get(
                "GATEWAY_OIDC_CLAIM_ORGANIZATION", defaults.oidc_claim_organization
            ),
            oidc_claim_person=os.environ.get("GATEWAY_OIDC_CLAIM_PERSON", defaults.oidc_claim_person),
            oidc_claim_scopes=os.environ.get("GATEWAY_OIDC_CLAIM_SCOPES", defaults.oidc_claim_scopes),
            organisation_policy=_switch("GATEWAY_ORGANISATION_POLICY", True),
            access_policy=Path(os.environ.get("GATEWAY_ACCESS_POLICY", str(defaults.access_policy))),
            region_clients=_list("GATEWAY_REGION_CLIENTS"),
            protected_identity_clients=_list("GATEWAY_PROTECTED_IDENTITY_CLIENTS"),
            audit=_switch("GATEWAY_AUDIT", defaults.audit),
            audit_queue_size=_int("GATEWAY_AUDIT_QUEUE_SIZE", defaults.audit_queue_size),
            audit_batch_size=_int("GATEWAY_AUDIT_BATCH_SIZE", defaults.audit_batch_size),
        )
