"""The tables: current resources, every version, typed search indexes and identifier claims.

`resource` holds the current version of each resource (tombstones included) under a surrogate integer
key `rid` that the index tables point at. `resource_version` holds every version, the full JSON each time,
with a global sequence number that orders history. A unique (type, id, version) on it is what makes two
concurrent writers of the same version collide in the database rather than in Python.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY columns.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Resource(Base):
    """The current version of every resource; deleted ones stay as tombstones (`deleted`)."""

    __tablename__ = "resource"
    rid: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    res_type: Mapped[str] = mapped_column(String(64))
    res_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(DateTime())
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    content: Mapped[str] = mapped_column(Text)
    # Who wrote the current version: NULL for the gateway's own writers (adapters from a bound source,
    # reactions, scheduled jobs, the CLI) and region-wide clients, else the HSA-id of the organisation whose
    # client wrote it. Relationships that grant access come only from facts a client could not forge.
    writer: Mapped[str | None] = mapped_column(String(255), nullable=True)
    __table_args__ = (
        UniqueConstraint("res_type", "res_id", name="uq_resource_type_id"),
        Index("ix_resource_type_updated", "res_type", "last_updated"),
    )


class ResourceVersion(Base):
    """Every version ever written, for vread and history. `seq` orders history across resources."""

    __tablename__ = "resource_version"
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    res_type: Mapped[str] = mapped_column(String(64))
    res_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(DateTime())
    method: Mapped[str] = mapped_column(String(8))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    content: Mapped[str] = mapped_column(Text)
    __table_args__ = (
        UniqueConstraint("res_type", "res_id", "version_id", name="uq_version_type_id_version"),
        Index("ix_version_type_updated", "res_type", "last_updated"),
        Index("ix_version_updated", "last_updated"),
    )


class IdentifierClaim(Base):
    """One row per (type, identifier system, value): the database's guarantee of one resource each."""

    __tablename__ = "identifier_claim"
    res_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    system: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
    rid: Mapped[int] = mapped_column(ForeignKey("resource.rid", ondelete="CASCADE"), index=True)


def _rid() -> Mapped[int]:
    return mapped_column(ForeignKey("resource.rid", ondelete="CASCADE"))


class TokenIndex(Base):
    __tablename__ = "idx_token"
    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rid: Mapped[int] = _rid()
    res_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    system: Mapped[str | None] = mapped_column(String(255))
    code: Mapped[str | None] = mapped_column(String(255))
    __table_args__ = (
        # one code's rows in `rid` order, `system` read from the index (migration 0011, docs/storage.md)
        Index("ix_token_code_rid", "res_type", "param", "code", "rid", postgresql_include=["system"]),
        Index("ix_token_rid", "rid"),
    )


class StringIndex(Base):
    __tablename__ = "idx_string"
    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rid: Mapped[int] = _rid()
    res_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    # Case- and accent-folded, for the default starts-with and :contains matches.
    value_folded: Mapped[str] = mapped_column(String(255))
    # As written, for :exact.
    value_exact: Mapped[str] = mapped_column(Text)
    __table_args__ = (
        # `LIKE 'x%'` under any collation (text_pattern_ops), one value's rows in `rid` order
        Index(
            "ix_string_prefix",
            "res_type",
            "param",
            "value_folded",
            "rid",
            postgresql_ops={"value_folded": "text_pattern_ops"},
        ),
        Index("ix_string_rid", "rid"),
    )


class ReferenceIndex(Base):
    __tablename__ = "idx_reference"
    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rid: Mapped[int] = _rid()
    res_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    # Local references: target type and id, url NULL. Absolute `…/Type/id` on another server: type, id and
    # that server's base in url. Anything else (urn:, canonicals, no id): the whole reference in url.
    target_type: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        # one target's rows in `rid` order (migration 0011)
        Index("ix_reference_lookup_rid", "res_type", "param", "target_id", "target_type", "rid"),
        Index("ix_reference_target", "target_type", "target_id"),
        # the access rows by what they point at (`_link` rows of a candidate: gateway/store/visibility.py)
        Index("ix_reference_param_target", "param", "target_type", "target_id"),
        Index("ix_reference_rid", "rid"),
    )


class DateIndex(Base):
    """A date, dateTime, instant or Period as the half-open UTC range [low, high)."""

    __tablename__ = "idx_date"
    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rid: Mapped[int] = _rid()
    res_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    low: Mapped[datetime] = mapped_column(DateTime())
    high: Mapped[datetime] = mapped_column(DateTime())
    __table_args__ = (
        Index("ix_date_lookup", "res_type", "param", "low", "high"),
        Index("ix_date_rid", "rid"),
    )


class NumberIndex(Base):
    __tablename__ = "idx_number"
    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rid: Mapped[int] = _rid()
    res_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    __table_args__ = (
        Index("ix_number_lookup", "res_type", "param", "value"),
        Index("ix_number_rid", "rid"),
    )


class UriIndex(Base):
    __tablename__ = "idx_uri"
    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rid: Mapped[int] = _rid()
    res_type: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(512))
    __table_args__ = (
        Index("ix_uri_lookup", "res_type", "param", "value"),
        Index("ix_uri_rid", "rid"),
    )


INDEX_TABLES = (TokenIndex, StringIndex, ReferenceIndex, DateIndex, NumberIndex, UriIndex)


class CareRelation(Base):
    """One fact that relates an actor (an Organization, a PractitionerRole, a CareTeam, or an HSA-id as
    `hsa`) to a patient: the resource `rid` it comes from, why (`basis`: `written` by a trusted writer,
    `created` the Patient itself, `referral` a Task addressed to another unit) and until when it lasts
    (NULL while what grants it is active). Kept by the write path with the resource (docs/security.md)."""

    __tablename__ = "care_relation"
    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    rid: Mapped[int] = _rid()
    actor_type: Mapped[str] = mapped_column(String(64))
    actor_id: Mapped[str] = mapped_column(String(255))
    patient_id: Mapped[str] = mapped_column(String(64))
    basis: Mapped[str] = mapped_column(String(16))
    until: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    __table_args__ = (
        Index("ix_relation_actor", "actor_type", "actor_id", "patient_id"),
        Index("ix_relation_patient", "patient_id"),
        Index("ix_relation_rid", "rid"),
    )


class AuditBatch(Base):
    """One batch of AuditEvents the audit writer of a process committed: a link of that process's chain
    (`previous` is the hash of its batch `number - 1`; `hash` covers `previous` and the events' stored
    content), so `gateway audit verify` finds a batch deleted or altered (docs/security.md, Audit)."""

    __tablename__ = "audit_batch"
    process: Mapped[str] = mapped_column(String(128), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    previous: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    events: Mapped[str] = mapped_column(Text)  # the ids of its AuditEvents, a JSON array
    committed_at: Mapped[datetime] = mapped_column(DateTime())
    # Its events were archived (`gateway audit archive`): the link stays, its events are in the archive.
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (Index("ix_audit_batch_committed", "committed_at"),)


class AuditArchive(Base):
    """An archive `gateway audit archive` wrote: the AuditEvents recorded before `before`, moved to a file
    whose SHA-256 is kept here."""

    __tablename__ = "audit_archive"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    before: Mapped[datetime] = mapped_column(DateTime())
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    events: Mapped[int] = mapped_column(Integer)
    archived_at: Mapped[datetime] = mapped_column(DateTime())


class QuarantineItem(Base):
    """An adapter input that was rejected, kept verbatim to be corrected and replayed."""

    __tablename__ = "quarantine"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    adapter: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime())
    # The source's own key for the input (ordernummer + version, CSV line, MSH-4 + MSH-10), for people.
    source_key: Mapped[str | None] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(128))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    # The OperationOutcome (JSON) that explains the rejection.
    outcome: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | replayed | discarded
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime())
    # The client that sent the input (NULL: the adapter's own, e.g. the CLI without --client); an item
    # belongs to it: listed, shown and replayed for it only (docs/security.md).
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    __table_args__ = (
        Index("ix_quarantine_adapter_status", "adapter", "status", "id"),
        Index("ix_quarantine_client", "client_id", "adapter", "status", "id"),
    )


class OAuthClient(Base):
    """A registered system client (SMART Backend Services): the organisation it acts for, the public keys
    its assertions are signed with (a JWKS), and the scopes it may be granted."""

    __tablename__ = "oauth_client"
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    organization: Mapped[str] = mapped_column(String(255))  # HSA-id
    jwks: Mapped[str] = mapped_column(Text)
    scopes: Mapped[str] = mapped_column(Text)  # space-separated
    created_at: Mapped[datetime] = mapped_column(DateTime())
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class ClientSource(Base):
    """A source a registered client may send records of to an adapter entrance (`gateway clients add
    --source KIND:ID`): `bestallningsportalen` and a portal id, `device-register` and `REGISTER@owner
    HSA-id`, `hl7v2` and an MSH-4 HSA-id. A record naming another source is refused like an unknown one."""

    __tablename__ = "client_source"
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_client.client_id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(255), primary_key=True)
    __table_args__ = (Index("ix_client_source_kind", "kind", "source"),)


class DisabledClient(Base):
    """A client id whose tokens are refused from now on: an external issuer's client (registered clients
    are disabled in `oauth_client.active`), `gateway clients disable ID`."""

    __tablename__ = "disabled_client"
    client_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    disabled_at: Mapped[datetime] = mapped_column(DateTime())


class SigningKey(Base):
    """The gateway's own token signing keys (private JWK as JSON). The newest active key signs; a retired
    key stays in the JWKS, for verification, until the tokens it signed have expired."""

    __tablename__ = "signing_key"
    kid: Mapped[str] = mapped_column(String(128), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    private_jwk: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime())
    retired_at: Mapped[datetime | None] = mapped_column(DateTime())


class AssertionJti(Base):
    """The `jti` of every client assertion accepted, until it expires: a second use is a replay."""

    __tablename__ = "assertion_jti"
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(), index=True)


class NotifyOutbox(Base):
    """One row per resource version a write stored, written in the write's own transaction (a rolled-back
    write leaves none); the subscription matcher takes them in `id` order and deletes them
    (docs/fhir/subscriptions.md). Nothing per subscription is written at write time."""

    __tablename__ = "notify_outbox"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    res_type: Mapped[str] = mapped_column(String(64))
    res_id: Mapped[str] = mapped_column(String(64))
    version_id: Mapped[int] = mapped_column(Integer)
    method: Mapped[str] = mapped_column(String(8))
    stored_at: Mapped[datetime] = mapped_column(DateTime())


class SubscriptionState(Base):
    """A Subscription's delivery state, beside its resource: who it evaluates as (the client that wrote
    it, its organisation and scopes then), the last event number given and acknowledged, retries and the
    lease of the process delivering it (PostgreSQL: taken with SKIP LOCKED, expiring)."""

    __tablename__ = "subscription_state"
    sub_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(255))
    organization: Mapped[str | None] = mapped_column(String(255), nullable=True)
    scopes: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # requested | active | error | off
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    topic: Mapped[str | None] = mapped_column(String(255), nullable=True)  # None: R4 classic criteria
    last_number: Mapped[int] = mapped_column(BigInteger, default=0)  # the last event number given
    acked: Mapped[int] = mapped_column(BigInteger, default=0)  # the last number the receiver answered 2xx
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    last_sent: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    heartbeat_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)  # topic-based, when asked
    lease_owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime())
    __table_args__ = (Index("ix_subscription_state_status", "status", "retry_at"),)


class SubscriptionEvent(Base):
    """The event log: a subscription's events numbered from 1 without gaps, naming the focus by type, id
    and version only (its content is rendered at delivery, through the subscriber's read policy then)."""

    __tablename__ = "subscription_event"
    sub_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    res_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    res_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime())
    __table_args__ = (Index("ix_subscription_event_time", "occurred_at"),)


class ChangeMark(Base):
    """A counter a process reads to know whether its memo of something is stale: the subscription
    matcher's memo of what names each subscriber's organisation (`subscriptions.actors`, raised by the
    matcher run that takes an outbox row of an Organization, PractitionerRole, HealthcareService or
    CareTeam; gateway/subscriptions/matcher.py)."""

    __tablename__ = "change_mark"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class ClientNotify(Base):
    """What a registered client's subscriptions may deliver to (`gateway clients add --notify-endpoint
    PREFIX --notify-network CIDR --notify-ca FILE --notify-client-cert FILE`): `kind` endpoint, network,
    ca or cert."""

    __tablename__ = "client_notify"
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_client.client_id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(1024), primary_key=True)


class ScheduleLease(Base):
    """The lease of a scheduled job (gateway/schedule/lease.py): the process running it (`holder`) until
    `lease_until` (UTC, renewed while it runs); an expired lease (its process died) may be taken over.
    `done_at` (UTC, the real clock) is when the job's last complete pass started and `done_mark` what it
    depended on besides time, for a job that reads only what changed since (gateway/schedule/high_risk.py)."""

    __tablename__ = "schedule_lease"
    job: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    done_mark: Mapped[str | None] = mapped_column(String(128), nullable=True)


class ExportJob(Base):
    """A bulk `$export` job (gateway/export, docs/fhir/export.md): who asked (the client, its organisation
    and scopes then, so the worker reads as that client), what it asked, where it has come to (`progress`,
    committed with each chunk of output) and the lease of the worker making it (`worker_id` until
    `lease_until`, renewed with each chunk; an expired lease is taken over). `job_id` is the unguessable
    id of its status URL."""

    __tablename__ = "export_job"
    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(255))
    organization: Mapped[str | None] = mapped_column(String(255), nullable=True)
    person: Mapped[str | None] = mapped_column(String(255), nullable=True)
    scopes: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(32))
    base_url: Mapped[str] = mapped_column(Text)
    source_address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request: Mapped[str] = mapped_column(Text)  # the kick-off URL, for the manifest
    parameters: Mapped[str] = mapped_column(Text)  # JSON: level, types, since, type filters
    status: Mapped[str] = mapped_column(String(16))  # queued | running | done | failed
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[str] = mapped_column(Text)  # JSON: where the worker has come to
    exported: Mapped[int] = mapped_column(BigInteger, default=0)
    transaction_time: Mapped[datetime] = mapped_column(DateTime())
    created_at: Mapped[datetime] = mapped_column(DateTime())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime())
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    __table_args__ = (
        Index("ix_export_job_status", "status", "lease_until"),
        Index("ix_export_job_expires", "expires_at"),
    )


class ExportOutput(Base):
    """One chunk of an export's output: part `part` of file `file_number`, NDJSON of one type (a file is
    served by streaming its parts in order, one at a time)."""

    __tablename__ = "export_output"
    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    file_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    res_type: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
