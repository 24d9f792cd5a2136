"""The named points where cross-cutting concerns plug into every interaction, REST and adapters alike:
`rules` (business rules on a write, after validation), `authorize` (before a write is stored, and on
every read), `reactions` (follow-up writes after a store, same transaction), `audit` (after each
interaction, also a failed one, after its rollback) and `notify` (after commit, with what changed).

This module holds the request's identity and the default implementations: allow everything, audit to
the log, notify nobody. Security (SMART scopes, organisation policy, AuditEvent) replaces them.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gateway.model.types import Json
from gateway.store.relations import TRUSTED, Writer
from gateway.store.visibility import EVERYTHING, Visibility

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from gateway.pipeline import UnitOfWork, WritePath
    from gateway.search.parameters import Masking
    from gateway.store.repository import Stored

log = logging.getLogger("gateway.audit")

# The gateway's own identity: workflow reactions write as it, on behalf of the client whose write
# triggered them (RequestContext.on_behalf_of).
GATEWAY_CLIENT = "gateway"
GATEWAY_SCOPES = frozenset({"system/*.cruds"})
# Client ids the gateway keeps for itself (its reactions, the CLI, the adapters' own clients, a request
# without a token): no access token may present one and no registered client may take one, since the
# organisation policy exempts some of them (policy/access.yaml).
# `gateway:…` are the gateway's own jobs: the scheduler writes as `gateway:scheduler` (gateway/schedule).
INTERNAL_CLIENTS = frozenset({GATEWAY_CLIENT, "cli", "anonymous"})
INTERNAL_CLIENT_PREFIXES = ("adapter:", "gateway:")
SCHEDULER_CLIENT = "gateway:scheduler"


def internal_client(client_id: str) -> bool:
    return client_id in INTERNAL_CLIENTS or client_id.startswith(INTERNAL_CLIENT_PREFIXES)


@dataclass(frozen=True)
class Principal:
    """Who is asking: a client acting for an organisation (HSA-id), perhaps for a person."""

    client_id: str = "anonymous"
    organization: str | None = None
    person: str | None = None
    scopes: frozenset[str] = frozenset()
    # Why it accesses: a v3 PurposeOfUse code (gateway.security.purpose), TREAT unless its token says.
    purpose: str = "TREAT"


@dataclass
class RequestContext:
    principal: Principal = field(default_factory=Principal)
    base_url: str = ""
    source_address: str | None = None
    query: str | None = None
    # Per-request memo for policies (e.g. an organisation's related patients), keyed by the policy.
    cache: dict[str, object] = field(default_factory=dict, compare=False, repr=False)
    # Set by the audit sink once a record of this request is queued (see gateway.security.audit).
    audited: bool = False
    # The connection of the unit of work running now (set by the write path; a context runs one unit of
    # work at a time): policies query through it, so they see what the transaction has written so far
    # (a relationship made by an earlier entry).
    connection: Connection | None = field(default=None, compare=False, repr=False)
    # Set only by the write path, for a reaction's writes: the client whose write triggered them, while
    # `principal` is the gateway's own (no token can set it).
    on_behalf_of: Principal | None = None
    # Set only by an adapter entrance (REST, CLI, MLLP), once it has checked that the calling client is
    # bound to the source of the records (`gateway clients add --source KIND:ID`): `KIND:ID`. The writes of
    # the adapter's mapped Bundle are then the gateway's own (trusted: docs/security.md), while the
    # principal stays the calling client for audit.
    source: str | None = None
    # (Type, id) of what the entries of the transaction being written create or change under a
    # `urn:uuid` fullUrl: a reference to one of them is outside the reference rule (docs/security.md).
    bundle_targets: frozenset[tuple[str, str]] = frozenset()

    @property
    def requestor(self) -> Principal:
        """The client whose request this is: the triggering client of a reaction, else the principal."""
        return self.on_behalf_of or self.principal

    def for_reaction(self) -> RequestContext:
        """The context a workflow reaction writes in: the gateway with every scope, on behalf of the
        requestor, for the same purpose, from the same address; it shares this unit of work's connection."""
        requestor = self.requestor
        gateway = Principal(client_id=GATEWAY_CLIENT, scopes=GATEWAY_SCOPES, purpose=requestor.purpose)
        return RequestContext(
            principal=gateway,
            base_url=self.base_url,
            source_address=self.source_address,
            connection=self.connection,
            on_behalf_of=requestor,
        )


@dataclass(frozen=True)
class Change:
    """One stored version, for notify."""

    res_type: str
    res_id: str
    version_id: int
    method: str


@dataclass
class AccessRecord:
    """What `audit` receives: one interaction and its result."""

    interaction: str
    res_type: str | None
    res_ids: list[str]
    status: int
    context: RequestContext
    detail: str = ""
    # The patients concerned, as `Patient/id` (from the resources' subject, patient, for, … references).
    patients: list[str] = field(default_factory=list)
    # Resources of any type concerned, as `Type/id`, beside `res_ids` (e.g. what one imported record touched).
    resources: list[str] = field(default_factory=list)
    # The version a write stored (or found), by `Type/id`: its AuditEvent names that version
    # (`Type/id/_history/n`), so `gateway audit verify` can tell every version has its record.
    versions: dict[str, int] = field(default_factory=dict)


# Interactions whose records in one unit of work are audited together (searches and histories carry
# their own query, imports their own detail: each stays one AuditEvent).
COMBINED = frozenset({"create", "update", "patch", "delete", "read", "vread"})


def combined(records: list[AccessRecord]) -> list[AccessRecord]:
    """One record per interaction, outcome, actor and patient(s) of a unit of work: a transaction that
    writes six resources of one patient is one AuditEvent with six entities (as IHE MHD audits a whole
    Provide Bundle), not six; resources of different patients, or of none, stay apart (IHE BALP: one
    AuditEvent per patient). Each resource is still named, so `AuditEvent?entity=` finds it."""
    into: dict[tuple[object, ...], AccessRecord] = {}
    result: list[AccessRecord] = []
    for record in records:
        context = record.context
        actors = (context.principal.client_id, context.requestor.client_id, context.query)
        concerns = tuple(sorted(record.patients))  # one AuditEvent per patient (IHE BALP)
        key: tuple[object, ...] = (record.interaction, record.status, record.detail, *actors, concerns)
        target = into.get(key) if record.interaction in COMBINED else None
        if target is None:
            target = AccessRecord(
                record.interaction, record.res_type, [], record.status, context, record.detail
            )
            if record.interaction in COMBINED:
                into[key] = target
            result.append(target)
        elif target.res_type != record.res_type:  # several types: each named as Type/id
            target.resources = [f"{target.res_type}/{res_id}" for res_id in target.res_ids] + target.resources
            target.res_type, target.res_ids = None, []
        if target.res_type is None and record.res_type is not None:
            target.resources += [f"{record.res_type}/{res_id}" for res_id in record.res_ids]
        else:
            target.res_ids += record.res_ids
        target.resources += record.resources
        target.versions |= record.versions
        target.patients += [patient for patient in record.patients if patient not in target.patients]
    return result


PATIENT_FIELDS = ("subject", "patient", "for", "beneficiary")


def patients_of(resource: Json | None) -> list[str]:
    """The patients a resource concerns: itself when a Patient, else its subject/patient/for/beneficiary
    references to a Patient (absolute references reduced to `Patient/id`)."""
    if not resource:
        return []
    if resource.get("resourceType") == "Patient":
        return [f"Patient/{resource.get('id')}"] if resource.get("id") else []
    found: list[str] = []
    for name in PATIENT_FIELDS:
        value = resource.get(name)
        for item in value if isinstance(value, list) else [value]:
            reference = item.get("reference") if isinstance(item, dict) else None
            if isinstance(reference, str) and "Patient/" in reference:
                local = "Patient/" + reference.rsplit("Patient/", 1)[1].split("/", 1)[0]
                if local not in found:
                    found.append(local)
    return found


def patients_in(resources: list[Json]) -> list[str]:
    """The patients of several resources, each once, in order."""
    return list(dict.fromkeys(p for resource in resources for p in patients_of(resource)))


class AccessPolicy(Protocol):
    """The one gate every interaction passes (docs/security.md): what a reader sees, as a condition in
    its queries (`visibility`), and what a writer may write. Every path that answers from the database
    puts `visibility` in its own query; every write calls `authorize_write`; every response body passes
    `mask`."""

    def visibility(self, context: RequestContext, writing: bool = False) -> Visibility:
        """Which resources `context` may see: a condition on `resource` rows. `writing`: which it may
        see as the target of a write (its scopes' letters are checked by `authorize_write` instead)."""

    def writer(self, context: RequestContext) -> Writer:
        """Who writes, as care relations see it: trusted (the gateway's own writers, region-wide clients),
        or an organisation whose own writes relate nobody by themselves."""

    def may_create_by_put(self, context: RequestContext) -> bool:
        """Whether `context` may create a resource under an id it chooses (PUT to an unknown id)."""

    def authorize_search(self, context: RequestContext, res_type: str) -> None:
        """Raise a 403 FhirError when `context` may not search `res_type` at all."""

    def authorize_write(
        self, context: RequestContext, action: str, resource: Json, current: Json | None
    ) -> None:
        """Raise a FhirError when `context` may not perform `action` (create, update, delete); `current`
        is the version it replaces, one `context` may see."""

    def authorize_patch(self, context: RequestContext, current: Json, operations: object) -> None:
        """Raise a 403 FhirError when a JSON Patch may not be applied as given (a patch touching what the
        mask hides), before it is applied."""

    def identity_query(self, res_type: str, query: str) -> bool:
        """Whether a conditional query matches a patient identity across organisations (the named
        exception of docs/security.md: a hidden match is a 409 duplicate)."""

    def mask(self, context: RequestContext, resource: Json) -> Json:
        """The resource as `context` may see it in a response (protected identities masked)."""

    @property
    def masks(self) -> bool:
        """Whether `mask` can change anything (else responses serve stored content unparsed)."""

    def masking(self, context: RequestContext) -> Masking | None:
        """The search parameters whose values `mask` hides from `context` in labelled resources: a search
        by them leaves those resources out, a sort by them orders them as valueless."""

    def keep_hidden(self, context: RequestContext, resource: Json, current: Json | None) -> Json:
        """The resource an update stores: what the mask hides from `context` put back as stored, so a
        client cannot change, or wipe by writing back what it read, what it is not shown."""

    def acts_for(self, context: RequestContext, node: object) -> bool:
        """Whether the client whose write this is (`context.requestor`) acts for the organisation `node`
        references (a Task's owner), so a reaction may act on its answer."""


class Permissive:
    """Allows everything: GATEWAY_AUTH=off, and the base the real policies override."""

    def visibility(self, context: RequestContext, writing: bool = False) -> Visibility:
        return EVERYTHING

    def writer(self, context: RequestContext) -> Writer:
        return TRUSTED

    def may_create_by_put(self, context: RequestContext) -> bool:
        return True

    def authorize_search(self, context: RequestContext, res_type: str) -> None:
        return None

    def authorize_write(
        self, context: RequestContext, action: str, resource: Json, current: Json | None
    ) -> None:
        return None

    def authorize_patch(self, context: RequestContext, current: Json, operations: object) -> None:
        return None

    def identity_query(self, res_type: str, query: str) -> bool:
        return False

    def mask(self, context: RequestContext, resource: Json) -> Json:
        return resource

    @property
    def masks(self) -> bool:
        return False

    def masking(self, context: RequestContext) -> Masking | None:
        return None

    def keep_hidden(self, context: RequestContext, resource: Json, current: Json | None) -> Json:
        return resource

    def acts_for(self, context: RequestContext, node: object) -> bool:
        return True


class Rule(Protocol):
    """A business rule on a write, run after validation and before authorization, in the write's
    transaction. It returns the resource to store (possibly completed, e.g. a derived recipient: a new
    object, the one given is never changed in place) or raises a FhirError (422 for a rule the content
    breaks). `action` is create, update or delete."""

    def __call__(self, uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json: ...


class Reaction(Protocol):
    """Runs after a version is stored, in the same transaction, and may write more through `write_path`
    (e.g. a completed Task updating the request it confirms). Its writes pass every step again, as the
    gateway on behalf of the client whose write triggered it (`uow.context` is `for_reaction()` then)."""

    def __call__(
        self, uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Json | None
    ) -> None: ...


class AuditSink(Protocol):
    def store(self, connection: Connection, records: list[AccessRecord]) -> None:
        """Store the records of a unit of work that writes, in its transaction (before it commits)."""

    def record(self, record: AccessRecord) -> Future[None] | None:
        """Queue a record; the Future (None: nothing to wait for) resolves once it is stored."""


class Notifier(Protocol):
    def store(self, connection: Connection, changes: list[Change]) -> None:
        """Keep what a unit of work changed, in its transaction (before it commits): the outbox rows of
        the subscriptions (gateway/subscriptions/outbox.py), so a rolled-back write notifies nobody."""

    def changed(self, changes: list[Change]) -> None:
        """After the commit: what changed (to wake whoever delivers)."""


class AllowAll(Permissive):
    """GATEWAY_AUTH=off: every request unchecked."""


class LogAudit:
    """GATEWAY_AUDIT=off: records go to the debug log only."""

    def store(self, connection: Connection, records: list[AccessRecord]) -> None:
        for record in records:
            self.record(record)

    def record(self, record: AccessRecord) -> Future[None] | None:
        log.debug(
            "%s %s %s -> %s by %s",
            record.interaction,
            record.res_type,
            ",".join(record.res_ids[:10]),
            record.status,
            record.context.principal.client_id,
        )
        return None


class NoNotify:
    def store(self, connection: Connection, changes: list[Change]) -> None:
        return None

    def changed(self, changes: list[Change]) -> None:
        return None


@dataclass
class Hooks:
    policy: AccessPolicy = field(default_factory=AllowAll)
    rules: list[Rule] = field(default_factory=list)
    reactions: list[Reaction] = field(default_factory=list)
    audit: AuditSink = field(default_factory=LogAudit)
    notify: Notifier = field(default_factory=NoNotify)
