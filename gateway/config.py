"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
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


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _list(name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Every field has an environment variable of the same name, upper-cased."""

    database_url: str = f"sqlite:///{REPO_ROOT / 'var' / 'gateway.db'}"
    # A PostgreSQL schema to work in (tests use one schema each); empty means the default search_path.
    database_schema: str = ""
    # Absolute base URL of the FHIR endpoint as clients see it (https://host/fhir). The gateway's token
    # issuer and audience come from it: with auth on, start-up refuses an empty one unless
    # base_url_from_request (local trials only: then they follow each request's Host header).
    base_url: str = ""
    base_url_from_request: bool = False
    max_bundle_entries: int = 1000
    max_body_bytes: int = 16 * 1024 * 1024
    # Bounded requests (docs/operations.md, "Limits"): one resource as stored (its JSON), below the body
    # limit; a response's resources, by their stored JSON and their number (a batch's entries share
    # them); JSON nesting at every entrance; a search's parameters, a parameter's values, a conditional
    # operation's criteria; the time a request's statements may take in the database (0: no limit).
    max_resource_bytes: int = 4 * 1024 * 1024
    max_response_bytes: int = 32 * 1024 * 1024
    max_response_resources: int = 10000
    max_json_depth: int = 64
    max_search_parameters: int = 50
    max_search_values: int = 100
    max_conditional_criteria: int = 10
    statement_timeout: float = 30.0
    default_page_size: int = 50
    max_page_size: int = 1000
    # Dates and times without an offset are read in this zone (search values and stored values alike).
    local_timezone: str = "Europe/Stockholm"
    profiles_dir: Path = field(default_factory=lambda: REPO_ROOT / "profiles")
    # Security (docs/security.md). GATEWAY_AUTH=off serves every request unchecked, for local trials only.
    auth: bool = True
    # Lifetime of the access tokens the gateway issues, in seconds (SMART recommends at most 300).
    token_lifetime: int = 300
    # The `iss` of the gateway's own tokens; empty means the base URL's origin, plus /auth.
    auth_issuer: str = ""
    # How long a process trusts a client's looked-up status (active, disabled, removed), in seconds: a
    # disabled client's tokens are refused everywhere within this time (docs/security.md).
    client_status_seconds: float = 5.0
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
    # The claim carrying the access's v3 PurposeOfUse code (AuditEvent.purposeOfEvent; TREAT without it).
    oidc_claim_purpose: str = "purpose_of_use"
    # Clients' default purpose of use, "client_id=CODE", comma-separated (docs/security.md).
    client_purposes: tuple[str, ...] = ()
    # The secret the signing keys' private parts are encrypted with in the database. Production sets it;
    # empty means a generated development secret kept in key_secret_file (docs/security.md).
    key_secret: str = ""
    key_secret_file: Path = field(default_factory=lambda: REPO_ROOT / "var" / "key-secret")
    # The organisation policy (docs/security.md): its rules file, and whether it applies.
    organisation_policy: bool = True
    access_policy: Path = field(default_factory=lambda: REPO_ROOT / "policy" / "access.yaml")
    # Client ids exempt from the organisation policy (the region's own journal system), comma-separated.
    region_clients: tuple[str, ...] = ()
    # Client ids that see protected-identity Patients unmasked, besides those in the policy file.
    protected_identity_clients: tuple[str, ...] = ()
    # Reverse proxies (IP addresses, CIDR networks) whose X-Forwarded-For / Forwarded headers give the
    # client's address (audit source address); from any other peer those headers are ignored.
    trusted_proxies: tuple[str, ...] = ()
    # AuditEvent on every access (docs/security.md): off only for trials and benchmarks without it.
    audit: bool = True
    # Records waiting for the batch writer; when full, requests fail closed with 503.
    audit_queue_size: int = 10000
    audit_batch_size: int = 500
    # When the queue is full, wait for the writer to make room instead (batch commands: `for_batch`).
    audit_waits: bool = False
    # How long an answer waits for its audit records to be stored before it is refused (503), seconds.
    audit_wait_seconds: float = 10.0
    # The MLLP listener (docs/adapters/hl7v2.md). With mllp_port set, `gateway serve` runs it too.
    mllp_host: str = "127.0.0.1"
    mllp_port: int | None = None
    # Accepted sending facilities and the client each acts as: "MSH-4 HSA-id=client id", comma-separated.
    mllp_facilities: tuple[str, ...] = ()
    mllp_max_bytes: int = 1024 * 1024
    mllp_idle_seconds: int = 300
    # Processes that parse messages beside the listener's own (0: on its worker threads).
    mllp_parse_processes: int = 0
    # TLS: certificate chain and key (PEM); a client CA file makes client certificates required (mTLS).
    mllp_tls_cert: str = ""
    mllp_tls_key: str = ""
    mllp_tls_client_ca: str = ""

    # Subscriptions (docs/fhir/subscriptions.md): whether `gateway serve` delivers too (`gateway notify`
    # delivers on its own); http:// to loopback addresses (tests, local trials); the cap on the interval
    # between retries, seconds; how long an undelivered event is retried before its subscription goes
    # to `error`, and how long events stay readable by `$events`, days; a delivery's timeout, seconds;
    # concurrent deliveries in all and per endpoint (scheme, host and port); how often the outbox is
    # looked at when nothing woke the deliverer (other processes' writes), seconds; how long a process
    # holds a subscription it delivers before another may take it over, seconds (0: 3 timeouts + 30 s).
    notify: bool = True
    allow_http_loopback: bool = False
    notify_retry_cap: float = 60.0
    notify_max_age_days: float = 7.0
    notify_retention_days: float = 30.0
    notify_timeout: float = 10.0
    notify_workers: int = 8
    notify_endpoint_concurrency: int = 2
    notify_poll_seconds: float = 1.0
    notify_lease_seconds: float = 0.0
    # Fault reports (docs/workflow.md, "Fault reports"): this many faults on one patient's devices within
    # this many days (one counted per reporter, device and day) yield a return report to the prescriber.
    fault_report_threshold: int = 3
    fault_report_days: int = 30

    # The scheduler (docs/scheduling.md): how often `gateway serve` runs a pass of every job, seconds (0:
    # never; `gateway schedule run` runs one); how long a process holds a job's lease before another may
    # take it (renewed while it runs); the jobs' clock (an ISO date-time: tests and demonstrations only;
    # with auth on, start-up refuses it unless allow_fake_clock); how many days before its date a planned
    # follow-up becomes a Task; the control-and-cleaning interval and lead time in days, and intervals by
    # ISO 9999 class ("CLASS=DAYS", comma-separated; the longest matching class prefix wins, 0: no
    # control).
    schedule_seconds: float = 300.0
    schedule_lease_seconds: float = 300.0
    now: str = ""
    allow_fake_clock: bool = False
    follow_up_lead_days: int = 7
    control_interval_days: int = 28
    control_lead_days: int = 7
    control_intervals: tuple[str, ...] = ()
    # issue 19: for a patient with a `final` high-risk RiskAssessment, the follow-up and control intervals
    # not yet made Tasks are multiplied by this factor (0 < factor <= 1; 1: no shortening)
    risk_interval_factor: float = 0.5
    # how many days before a device's next service date the owner gets its service Task
    service_lead_days: int = 14

    def for_batch(self) -> Settings:
        """These settings for a batch command (`gateway load`, `gateway import …`, replay): nobody waits
        on it to be refused, so a full audit queue makes it wait for the audit writer, not fail (503)."""
        return replace(self, audit_waits=True)

    @classmethod
    def from_env(cls) -> Settings:
        defaults = cls()
        return cls(
            database_url=os.environ.get("DATABASE_URL", defaults.database_url),
            database_schema=os.environ.get("DATABASE_SCHEMA", ""),
            base_url=os.environ.get("GATEWAY_BASE_URL", "").rstrip("/"),
            base_url_from_request=_switch("GATEWAY_BASE_URL_FROM_REQUEST", defaults.base_url_from_request),
            max_bundle_entries=_int("GATEWAY_MAX_BUNDLE_ENTRIES", defaults.max_bundle_entries),
            max_body_bytes=_int("GATEWAY_MAX_BODY_BYTES", defaults.max_body_bytes),
            max_resource_bytes=_int("GATEWAY_MAX_RESOURCE_BYTES", defaults.max_resource_bytes),
            max_response_bytes=_int("GATEWAY_MAX_RESPONSE_BYTES", defaults.max_response_bytes),
            max_response_resources=_int("GATEWAY_MAX_RESPONSE_RESOURCES", defaults.max_response_resources),
            max_json_depth=_int("GATEWAY_MAX_JSON_DEPTH", defaults.max_json_depth),
            max_search_parameters=_int("GATEWAY_MAX_SEARCH_PARAMETERS", defaults.max_search_parameters),
            max_search_values=_int("GATEWAY_MAX_SEARCH_VALUES", defaults.max_search_values),
            max_conditional_criteria=_int(
                "GATEWAY_MAX_CONDITIONAL_CRITERIA", defaults.max_conditional_criteria
            ),
            statement_timeout=_float("GATEWAY_STATEMENT_TIMEOUT", defaults.statement_timeout),
            default_page_size=_int("GATEWAY_DEFAULT_PAGE_SIZE", defaults.default_page_size),
            max_page_size=_int("GATEWAY_MAX_PAGE_SIZE", defaults.max_page_size),
            local_timezone=os.environ.get("GATEWAY_TIMEZONE", defaults.local_timezone),
            profiles_dir=Path(os.environ.get("GATEWAY_PROFILES_DIR", str(defaults.profiles_dir))),
            auth=_switch("GATEWAY_AUTH", defaults.auth),
            token_lifetime=_int("GATEWAY_TOKEN_LIFETIME", defaults.token_lifetime),
            auth_issuer=os.environ.get("GATEWAY_AUTH_ISSUER", "").rstrip("/"),
            client_status_seconds=_float("GATEWAY_CLIENT_STATUS_SECONDS", defaults.client_status_seconds),
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
            oidc_claim_purpose=os.environ.get("GATEWAY_OIDC_CLAIM_PURPOSE", defaults.oidc_claim_purpose),
            client_purposes=_list("GATEWAY_CLIENT_PURPOSES"),
            key_secret=os.environ.get("GATEWAY_KEY_SECRET", ""),
            key_secret_file=Path(os.environ.get("GATEWAY_KEY_SECRET_FILE", str(defaults.key_secret_file))),
            organisation_policy=_switch("GATEWAY_ORGANISATION_POLICY", defaults.organisation_policy),
            access_policy=Path(os.environ.get("GATEWAY_ACCESS_POLICY", str(defaults.access_policy))),
            region_clients=_list("GATEWAY_REGION_CLIENTS"),
            protected_identity_clients=_list("GATEWAY_PROTECTED_IDENTITY_CLIENTS"),
            trusted_proxies=_list("GATEWAY_TRUSTED_PROXIES"),
            audit=_switch("GATEWAY_AUDIT", defaults.audit),
            audit_queue_size=_int("GATEWAY_AUDIT_QUEUE_SIZE", defaults.audit_queue_size),
            audit_batch_size=_int("GATEWAY_AUDIT_BATCH_SIZE", defaults.audit_batch_size),
            audit_wait_seconds=float(
                os.environ.get("GATEWAY_AUDIT_WAIT_SECONDS") or defaults.audit_wait_seconds
            ),
            mllp_host=os.environ.get("GATEWAY_MLLP_HOST", "") or defaults.mllp_host,
            mllp_port=_int("GATEWAY_MLLP_PORT", 0) or None,
            mllp_facilities=_list("GATEWAY_MLLP_FACILITIES"),
            mllp_max_bytes=_int("GATEWAY_MLLP_MAX_BYTES", defaults.mllp_max_bytes),
            mllp_idle_seconds=_int("GATEWAY_MLLP_IDLE_SECONDS", defaults.mllp_idle_seconds),
            mllp_parse_processes=_int("GATEWAY_MLLP_PARSE_PROCESSES", defaults.mllp_parse_processes),
            mllp_tls_cert=os.environ.get("GATEWAY_MLLP_TLS_CERT", ""),
            mllp_tls_key=os.environ.get("GATEWAY_MLLP_TLS_KEY", ""),
            mllp_tls_client_ca=os.environ.get("GATEWAY_MLLP_TLS_CLIENT_CA", ""),
            notify=_switch("GATEWAY_NOTIFY", defaults.notify),
            allow_http_loopback=_switch("GATEWAY_ALLOW_HTTP_LOOPBACK", defaults.allow_http_loopback),
            notify_retry_cap=_float("GATEWAY_NOTIFY_RETRY_CAP", defaults.notify_retry_cap),
            notify_max_age_days=_float("GATEWAY_NOTIFY_MAX_AGE_DAYS", defaults.notify_max_age_days),
            notify_retention_days=_float("GATEWAY_NOTIFY_RETENTION_DAYS", defaults.notify_retention_days),
            notify_timeout=_float("GATEWAY_NOTIFY_TIMEOUT", defaults.notify_timeout),
            notify_workers=_int("GATEWAY_NOTIFY_WORKERS", defaults.notify_workers),
            notify_endpoint_concurrency=_int(
                "GATEWAY_NOTIFY_ENDPOINT_CONCURRENCY", defaults.notify_endpoint_concurrency
            ),
            notify_poll_seconds=_float("GATEWAY_NOTIFY_POLL_SECONDS", defaults.notify_poll_seconds),
            notify_lease_seconds=_float("GATEWAY_NOTIFY_LEASE_SECONDS", defaults.notify_lease_seconds),
            schedule_seconds=_float("GATEWAY_SCHEDULE_SECONDS", defaults.schedule_seconds),
            schedule_lease_seconds=_float("GATEWAY_SCHEDULE_LEASE_SECONDS", defaults.schedule_lease_seconds),
            now=os.environ.get("GATEWAY_NOW", "").strip(),
            allow_fake_clock=_switch("GATEWAY_ALLOW_FAKE_CLOCK", defaults.allow_fake_clock),
            follow_up_lead_days=_int("GATEWAY_FOLLOW_UP_LEAD_DAYS", defaults.follow_up_lead_days),
            control_interval_days=_int("GATEWAY_CONTROL_INTERVAL_DAYS", defaults.control_interval_days),
            control_lead_days=_int("GATEWAY_CONTROL_LEAD_DAYS", defaults.control_lead_days),
            risk_interval_factor=_float("GATEWAY_RISK_INTERVAL_FACTOR", defaults.risk_interval_factor),
            control_intervals=_list("GATEWAY_CONTROL_INTERVALS"),
            service_lead_days=_int("GATEWAY_SERVICE_LEAD_DAYS", defaults.service_lead_days),
            fault_report_threshold=_int("GATEWAY_FAULT_REPORT_THRESHOLD", defaults.fault_report_threshold),
            fault_report_days=_int("GATEWAY_FAULT_REPORT_DAYS", defaults.fault_report_days),
        )
