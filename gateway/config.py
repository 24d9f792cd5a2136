"""Settings read from the environment, in one place (pydantic-settings: typed, validated at start).

`Settings(...)` gives the defaults and what it is given, never the environment (tests construct it so);
`Settings.from_env()` reads the environment: every field's variable is `GATEWAY_` and its name
upper-cased, except those with an alias (`DATABASE_URL`, `DATABASE_SCHEMA`, `GATEWAY_TIMEZONE`). A bad
value is a `ConfigurationError` naming the variable; the `gateway` command prints it and exits 2.
docs/operations.md's table of variables is generated from the fields' descriptions
(`make settings-docs`, gateway/config_docs.py)."""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from gateway import resources

ENV_PREFIX = "GATEWAY_"
# The writable defaults, in the data directory (data_dir)
DATABASE_FILE = "gateway.db"
KEY_SECRET_FILE = "key-secret"
SWITCH_ON = ("on", "true", "yes", "1")
SWITCH_OFF = ("off", "false", "no", "0")

# Set while from_env builds its Settings: only then is the environment a source.
_READING_ENVIRONMENT: ContextVar[bool] = ContextVar("gateway_settings_from_env", default=False)


class ConfigurationError(ValueError):
    """A setting's value is unusable; the message names its environment variable."""


def _switch(value: object) -> object:
    """on/off, true/false, yes/no, 1/0; anything else is a configuration error, not a silent default."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in SWITCH_ON:
        return True
    if text in SWITCH_OFF:
        return False
    raise ValueError(f"must be on or off (on/off, true/false, yes/no, 1/0), not {value!r}")


def _comma_list(value: object) -> object:
    """A comma-separated string in the environment; a tuple or list when given in code."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


Switch = Annotated[bool, BeforeValidator(_switch)]
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]


def _env(*names: str) -> Any:
    """The field's environment variable when it is not GATEWAY_ + its name (its name works in code)."""
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Runtime configuration. Every field has an environment variable (`env_name`); see the module."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        env_ignore_empty=True,  # an empty variable means the default, as unset
        validate_by_name=True,
        validate_by_alias=True,
        validate_default=False,
    )

    data_dir: Path = Field(
        default=Path("var"),
        json_schema_extra={"shown_default": "`./var` (of the working directory)"},
        description="where the gateway writes what it keeps on disk by default (the SQLite database, the "
        "development key secret, the demo client's key), relative to the working directory; never under "
        "the installed package. A volume in a container",
    )
    database_url: str = Field(
        default=f"sqlite:///{Path('var') / DATABASE_FILE}",
        validation_alias=_env("database_url", "DATABASE_URL"),
        description="SQLAlchemy URL; `postgresql+psycopg://…` for PostgreSQL",
        json_schema_extra={"shown_default": f"`sqlite:///<GATEWAY_DATA_DIR>/{DATABASE_FILE}`"},
    )
    database_schema: str = Field(
        default="",
        validation_alias=_env("database_schema", "DATABASE_SCHEMA"),
        description="a PostgreSQL schema to work in (its search_path; tests use one schema each)",
        json_schema_extra={"shown_default": "(none: the default search_path)"},
    )
    base_url: str = Field(
        default="",
        description="absolute FHIR base as clients see it (`https://host/fhir`); the tokens' issuer and "
        "audience and the token endpoint come from it; also normalises absolute references on write. "
        "**Required with `GATEWAY_AUTH` on**: without it `serve` refuses to start "
        "([security.md](security.md)); with auth off, derived from each request",
    )
    base_url_from_request: Switch = Field(
        default=False,
        description="local trials only: with auth on and no `GATEWAY_BASE_URL`, start anyway and take the "
        "URLs from each request's Host header (a WARNING at start-up)",
    )
    max_bundle_entries: int = Field(default=1000, description="entries per transaction/batch, above → 413")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, description="request body size, above → 413")
    max_resource_bytes: int = Field(
        default=4 * 1024 * 1024,
        description='one resource\'s JSON as stored (below the body limit), above → 413 (see "Limits")',
    )
    max_response_bytes: int = Field(
        default=32 * 1024 * 1024,
        description="the stored JSON one response may hold (a batch's entries share it), above → 400",
    )
    max_response_resources: int = Field(
        default=10000,
        description="the number of resources one response may hold (a batch's entries share it), above → 400",
    )
    max_json_depth: int = Field(default=64, description="nesting of JSON at every entrance, deeper → 400")
    max_search_parameters: int = Field(default=50, description="parameters of one search, above → 400")
    max_search_values: int = Field(default=100, description="values of one search parameter, above → 400")
    max_conditional_criteria: int = Field(
        default=10, description="parameters of a conditional operation's search, above → 400"
    )
    statement_timeout: float = Field(
        default=30.0,
        description="seconds one database statement of an HTTP request may run, longer → 503 (0: no limit)",
    )
    default_page_size: int = Field(default=50, description="`_count` when a search gives none")
    max_page_size: int = Field(default=1000, description="the largest `_count` served")
    local_timezone: str = Field(
        default="Europe/Stockholm",
        validation_alias=_env("local_timezone", "GATEWAY_TIMEZONE"),
        description="zone for dates and times without an offset (search values and stored values alike)",
    )
    profiles_dir: Path = Field(
        default_factory=resources.packaged_profiles,
        description="the gateway's FHIR definitions: custom SearchParameters, ValueSets, SubscriptionTopics "
        "and others (a copy of profiles/ a region edits)",
        json_schema_extra={"shown_default": "(packaged: profiles/)"},
    )
    mappings_dir: Path = Field(
        default_factory=resources.packaged_mappings,
        description="the adapters' mapping tables and the high-risk rules (a copy of mappings/ a region "
        "edits); read from the environment once per process",
        json_schema_extra={"shown_default": "(packaged: mappings/)"},
    )
    hl7v2_mappings: Path | None = Field(
        default=None,
        description="the HL7 v2 mapping tables alone ([adapters/hl7v2.md](adapters/hl7v2.md))",
        json_schema_extra={"shown_default": "`<GATEWAY_MAPPINGS_DIR>/hl7v2`"},
    )
    risk_rules: Path | None = Field(
        default=None,
        description="the high-risk rule set alone ([risk.md](risk.md))",
        json_schema_extra={"shown_default": "`<GATEWAY_MAPPINGS_DIR>/risk/rules.yaml`"},
    )
    auth: Switch = Field(
        default=True,
        description="security ([security.md](security.md)): off serves every request unchecked, for "
        "local trials only",
    )
    token_lifetime: int = Field(
        default=300,
        description="lifetime of the access tokens the gateway issues, seconds (SMART recommends at "
        "most 300)",
    )
    auth_issuer: str = Field(
        default="",
        description="the `iss` of the gateway's own tokens",
        json_schema_extra={"shown_default": "(none: the base URL's origin, plus `/auth`)"},
    )
    client_status_seconds: float = Field(
        default=5.0,
        description="how long a process trusts a client's looked-up status: a disabled or removed "
        "client's tokens are refused everywhere within this many seconds (0: looked up on every request)",
    )
    signing_alg: str = Field(
        default="ES384", description="algorithm of new signing keys (`gateway keys rotate`): ES384 or RS384"
    )
    oidc_issuer: str = Field(
        default="",
        description="an external OpenID Connect issuer whose access tokens are accepted too "
        "([security.md](security.md))",
    )
    oidc_audience: str = Field(default="", description="the `aud` the external issuer's tokens must carry")
    oidc_jwks_url: str = Field(default="", description="where the external issuer's JWKS is fetched")
    oidc_jwks_ttl: int = Field(
        default=300, description="how long the external issuer's JWKS is cached, seconds"
    )
    oidc_claim_organization: str = Field(
        default="hsa_org", description="the external issuer's claim with the organisation's HSA id"
    )
    oidc_claim_person: str = Field(
        default="hsa_id", description="the external issuer's claim with the person's HSA id"
    )
    oidc_claim_scopes: str = Field(
        default="scope",
        description="the external issuer's claim with the scopes (a space-separated string or a list)",
    )
    oidc_claim_purpose: str = Field(
        default="purpose_of_use",
        description="the external issuer's claim with the purpose of use (AuditEvent.purposeOfEvent; "
        "`TREAT` without it)",
    )
    client_purposes: CommaList = Field(
        default=(),
        description="`client_id=CODE,…`: a client's default v3 PurposeOfUse code; others get `TREAT`",
    )
    key_secret: str = Field(
        default="",
        description="encrypts the signing keys' private parts in the database, and keys the ids the "
        "adapters derive from source records (HMAC); **production must set it** (or "
        "`GATEWAY_KEY_SECRET_FILE`), the same in every "
        "process, and keep it: another secret gives records replayed after the change other ids than "
        'those stored ([security.md](security.md), "Ids of source records")',
        json_schema_extra={"shown_default": "(none: `GATEWAY_KEY_SECRET_FILE`'s)"},
    )
    key_secret_file: Path = Field(
        default=Path("var") / KEY_SECRET_FILE,
        json_schema_extra={
            "shown_default": f"(none: a development secret in `<GATEWAY_DATA_DIR>/{KEY_SECRET_FILE}`)"
        },
        description="a file holding the installation's secret, read when `GATEWAY_KEY_SECRET` is empty: "
        "a compose or Kubernetes secret (`/run/secrets/…`), never generated: a missing or empty file "
        "stops start-up. Unset, a development secret is generated once into the data directory; with "
        "`GATEWAY_AUTH` on and PostgreSQL the gateway does not start on it ([security.md](security.md))",
    )
    organisation_policy: Switch = Field(
        default=True,
        description="whether the organisation policy applies ([security.md](security.md))",
    )
    access_policy: Path = Field(
        default_factory=resources.packaged_access_policy,
        description="the organisation policy's rules file (a copy of policy/access.yaml a region edits; "
        "[security.md](security.md))",
        json_schema_extra={"shown_default": "(packaged: policy/access.yaml)"},
    )
    region_clients: CommaList = Field(
        default=(),
        description="client ids exempt from the organisation policy (the region's own journal system), "
        "comma-separated",
    )
    protected_identity_clients: CommaList = Field(
        default=(),
        description="client ids that see protected-identity Patients unmasked, besides those in the "
        "policy file, comma-separated",
    )
    trusted_proxies: CommaList = Field(
        default=(),
        description="reverse proxies (IP addresses, CIDR networks, comma-separated) whose "
        "`X-Forwarded-For` / `Forwarded` headers give the client's address for the audit records (and "
        "`X-Forwarded-Proto` the scheme); from any other peer they are ignored. Behind a proxy on the "
        "same host set `127.0.0.1` (uvicorn's own default trust of it is off) "
        '([security.md](security.md), "Source address")',
    )
    audit: Switch = Field(
        default=True,
        description="an AuditEvent on every access ([security.md](security.md)): off only for trials "
        "and benchmarks without it",
    )
    audit_queue_size: int = Field(
        default=10000,
        description="records waiting for the audit writer; when full, requests fail closed with 503 "
        "([security.md](security.md), Audit)",
    )
    audit_batch_size: int = Field(
        default=500, description="the most AuditEvents the audit writer commits in one batch"
    )
    audit_waits: Switch = Field(
        default=False,
        description="when the audit queue is full, wait for the writer to make room instead of 503 "
        "(batch commands such as `gateway load` and `gateway import` always do)",
    )
    audit_wait_seconds: float = Field(
        default=10.0,
        description="how long an answer waits for its audit records to be stored; past it the answer is 503",
    )
    mllp_host: str = Field(default="127.0.0.1", description="MLLP listening address")
    mllp_port: int | None = Field(
        default=None,
        description="MLLP port; when set, `gateway serve` runs the MLLP listener too (one worker only); "
        "`gateway mllp` defaults to 2575 (0: none)",
    )
    mllp_facilities: CommaList = Field(
        default=(),
        description="accepted sending facilities and their clients: `HSA-id=client-id,…`; any other "
        "facility → `AR`",
        json_schema_extra={"shown_default": "(none: every facility, as `adapter:hl7v2`, with a warning)"},
    )
    mllp_max_bytes: int = Field(
        default=1024 * 1024, description="largest MLLP frame (above → `AR`, connection closed)"
    )
    mllp_idle_seconds: int = Field(default=300, description="idle MLLP connection timeout, seconds")
    mllp_parse_processes: int = Field(
        default=0,
        description="processes that parse HL7 messages beside the MLLP listener's own (`gateway mllp` "
        "and inside `gateway serve`; `gateway mllp --parse-processes` overrides it; 0: on its worker "
        "threads)",
    )
    mllp_tls_cert: str = Field(
        default="",
        description="PEM certificate chain: with `GATEWAY_MLLP_TLS_KEY` the listener speaks only TLS "
        "(1.2 or later)",
        json_schema_extra={"shown_default": "(none: plain TCP)"},
    )
    mllp_tls_key: str = Field(default="", description="PEM key of `GATEWAY_MLLP_TLS_CERT`")
    mllp_tls_client_ca: str = Field(
        default="",
        description="PEM CA file: clients must present a certificate it signed (mutual TLS)",
    )
    notify: Switch = Field(
        default=True,
        description="`gateway serve` delivers subscriptions' notifications too "
        "(docs/fhir/subscriptions.md; `gateway notify` delivers on its own)",
    )
    allow_http_loopback: Switch = Field(
        default=False, description="http:// endpoints on loopback addresses (tests, local trials only)"
    )
    notify_retry_cap: float = Field(
        default=60.0, description="longest interval between retries of a delivery, seconds"
    )
    notify_max_age_days: float = Field(
        default=7.0, description="an event undelivered this many days puts its subscription in `error`"
    )
    notify_retention_days: float = Field(default=30.0, description="days events are kept for `$events`")
    notify_timeout: float = Field(
        default=10.0,
        description="one delivery attempt's timeout, seconds; the ceiling of a subscription's "
        "`backport-timeout`",
    )
    notify_workers: int = Field(default=8, description="concurrent deliveries of a process")
    notify_endpoint_concurrency: int = Field(
        default=2, description="concurrent deliveries to one endpoint (scheme, host, port)"
    )
    notify_poll_seconds: float = Field(
        default=1.0, description="how often the outbox is looked at for other processes' writes, seconds"
    )
    notify_lease_seconds: float = Field(
        default=0.0,
        json_schema_extra={"shown_default": "0 (3 × timeout + 30)"},
        description="how long a process holds a subscription it delivers, seconds (0: 3 × timeout + 30); "
        "a killed process's are taken over after it. Keep it well above one attempt's time, or another "
        "process may send an event again",
    )
    fault_report_threshold: int = Field(
        default=3,
        description="this many fault reports on one patient's devices within `GATEWAY_FAULT_REPORT_DAYS` "
        "(one per reporter, device and day) yield a return report to the prescriber "
        '(docs/workflow.md, "Fault reports")',
    )
    fault_report_days: int = Field(
        default=30, description="the window of `GATEWAY_FAULT_REPORT_THRESHOLD`, days"
    )
    schedule_seconds: float = Field(
        default=300.0,
        description="how often `gateway serve` runs a pass of every scheduled job (0: never; "
        "`gateway schedule run` runs one) ([scheduling.md](scheduling.md))",
    )
    schedule_lease_seconds: float = Field(
        default=300.0,
        description="how long a process holds a job's lease (renewed every third of it while the job "
        "runs); a dead process's job is taken over after it",
    )
    now: str = Field(
        default="",
        description="the scheduled jobs' clock, an ISO date-time, for tests and demonstrations; due "
        "computations and `authoredOn` only. With auth on, start-up refuses it unless "
        "`GATEWAY_ALLOW_FAKE_CLOCK` is on",
        json_schema_extra={"shown_default": "(none: the real clock)"},
    )
    allow_fake_clock: Switch = Field(default=False, description="lets `GATEWAY_NOW` be set with auth on")
    follow_up_lead_days: int = Field(
        default=7, description="how many days before its planned date a follow-up becomes a Task"
    )
    control_interval_days: int = Field(default=28, description="the control-and-cleaning interval, days")
    control_lead_days: int = Field(
        default=7, description="how many days before its due date a control becomes a Task"
    )
    control_intervals: CommaList = Field(
        default=(),
        description="intervals by ISO 9999 class, `CLASS=DAYS,…` (`1203=0` for none; the longest "
        "matching class prefix wins)",
    )
    risk_interval_factor: float = Field(
        default=0.5,
        description="for a patient with a `final` high-risk RiskAssessment, the follow-up and control "
        "intervals not yet made Tasks are multiplied by it (0 < factor ≤ 1; 1: none shortened; another "
        "value counts as 1) ([risk.md](risk.md), [scheduling.md](scheduling.md))",
    )
    service_lead_days: int = Field(
        default=14,
        description="how many days before the register's next service date the owner gets a "
        "`service-due` Task",
    )
    # -- operations: metrics, logs, shutdown (docs/operations.md) --------------------------------------
    metrics_port: int | None = Field(
        default=None,
        description="a port of its own for `GET /metrics` without a token, for the Prometheus scraper "
        "(served by `gateway serve`, summing every worker); on the main port `/metrics` needs the scope "
        "`gateway/metrics`",
        json_schema_extra={"shown_default": "(none: only on the main port)"},
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="the address the metrics port is bound to: this host only unless set (a container "
        "binds it on an internal network the scraper shares)",
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="`gateway serve`'s log lines: `json` (one object a line), `text`, or `auto` (text when "
        "stderr is a terminal, else JSON)",
    )
    shutdown_grace_seconds: float = Field(
        default=8.0,
        description="on SIGTERM, how long `gateway serve` lets the requests in flight finish before it "
        "cancels them, and then as long again for the MLLP messages in flight, the deliverer and the "
        "scheduler; then it stores every queued audit record and exits 0. The container's stop timeout "
        "must exceed twice it",
    )
    # -- bulk export (gateway/export, docs/fhir/export.md) -------------------------------------------------
    export_retention_hours: float = Field(
        default=24.0,
        description="how long an export's output is kept after it finished, hours; then the worker deletes "
        "it and its status URL answers 404",
    )
    export_poll_seconds: float = Field(
        default=2.0,
        description="how often `gateway serve`'s export worker looks for jobs, seconds (0: no worker in "
        "`serve`; `gateway export run-once` runs one pass)",
    )
    export_lease_seconds: float = Field(
        default=120.0,
        description="how long a worker holds an export job (renewed with every chunk it writes); a dead "
        "worker's job is taken over after it, from its last chunk",
    )
    export_chunk_resources: int = Field(
        default=1000, ge=1, description="resources per stored chunk of output (one transaction each)"
    )
    export_jobs_per_client: int = Field(
        default=4,
        ge=1,
        description="exports one client may have waiting or running at once; a kick-off past it is "
        "answered 429 with Retry-After",
    )
    export_file_resources: int = Field(
        default=100_000,
        ge=1,
        description="resources per output file of an export (a type's resources "
        "beyond it go on in another file)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _READING_ENVIRONMENT.get():
            return (init_settings, env_settings)
        return (init_settings,)

    @model_validator(mode="after")
    def _in_the_data_dir(self) -> Settings:
        """The writable defaults not given follow the data directory (made absolute: a process's messages
        name where it writes)."""
        directory = self.data_dir.absolute()
        derived = {
            "database_url": f"sqlite:///{directory / DATABASE_FILE}",
            "key_secret_file": directory / KEY_SECRET_FILE,
        }
        for name, value in derived.items():
            if name not in self.model_fields_set:
                object.__setattr__(self, name, value)  # frozen: set once, while validating
        return self

    @field_validator("base_url", "auth_issuer")
    @classmethod
    def _without_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("now")
    @classmethod
    def _stripped(cls, value: str) -> str:
        return value.strip()

    @field_validator("mllp_port", "metrics_port")
    @classmethod
    def _port_or_none(cls, value: int | None) -> int | None:
        return value or None

    def replace(self, **changes: Any) -> Settings:
        """These settings with some fields changed, validated like the rest."""
        return type(self).model_validate({**self.model_dump(exclude_unset=True), **changes})

    def demo_key(self) -> Path:
        """Where `gateway clients demo` keeps the demo client's private key (make run)."""
        return self.data_dir.absolute() / "demo-client.jwk.json"

    def for_batch(self) -> Settings:
        """These settings for a batch command (`gateway load`, `gateway import …`, replay): nobody waits
        on it to be refused, so a full audit queue makes it wait for the audit writer, not fail (503)."""
        return self.replace(audit_waits=True)

    @classmethod
    def from_env(cls) -> Settings:
        """The settings the environment gives; a bad value is a ConfigurationError naming its variable."""
        token = _READING_ENVIRONMENT.set(True)
        try:
            return cls()
        except ValidationError as error:
            raise ConfigurationError(_message(cls, error)) from None
        finally:
            _READING_ENVIRONMENT.reset(token)

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of a field."""
        alias = cls.model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return str(alias.choices[-1])
        return ENV_PREFIX + field.upper()


_MEANINGS = {
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "bool_parsing": "must be on or off",
    "path_type": "must be a path",
}


def _message(cls: type[Settings], error: ValidationError) -> str:
    """One line per bad variable: `GATEWAY_MAX_PAGE_SIZE: must be an integer, not 'abc'`."""
    lines = []
    for problem in error.errors():
        location = problem["loc"][0] if problem["loc"] else ""
        field = str(location)
        if field not in cls.model_fields:  # an alias: find its field
            field = next(
                (name for name in cls.model_fields if cls.env_name(name).lower() == field.lower()), field
            )
        name = cls.env_name(field) if field in cls.model_fields else field
        if problem["type"] == "value_error":
            meaning = str(problem["ctx"]["error"]) if "ctx" in problem else problem["msg"]
            lines.append(f"{name}: {meaning}")
        else:
            meaning = _MEANINGS.get(problem["type"], problem["msg"])
            lines.append(f"{name}: {meaning}, not {problem['input']!r}")
    return "\n".join(lines)
