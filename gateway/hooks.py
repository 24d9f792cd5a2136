"""The named points where cross-cutting concerns plug into every interaction, REST and adapters alike:
`rules` (business rules on a write, after validation), `authorize` (before a write is stored, and on
every read), `reactions` (follow-up writes after a store, same transaction), `audit` (after each
interaction, also a failed one, after its rollback) and `notify` (after commit, with what changed).

This module holds the request's identity and the default implementations: allow everything, audit to
the log, notify nobody. Security (SMART scopes, organisation policy, AuditEvent) replaces them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gateway.model.types import Json

if TYPE_CHECKING:
    from gateway.pipeline import UnitOfWork, WritePath
    from gateway.store.repository import Stored

log = logging.getLogger("gateway.audit")


@dataclass(frozen=True)
class Principal:
    """Who is asking: a client acting for an organisation (HSA-id), perhaps for a person."""

    client_id: str = "anonymous"
    organization: str | None = None
    person: str | None = None
    scopes: frozenset[str] = frozenset()


@dataclass
class RequestContext:
    principal: Principal = field(default_factory=Principal)
    base_url: str = ""
    source_address: str | None = None
    query: str | None = None


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


class AccessPolicy(Protocol):
    def authorize_write(
        self, context: RequestContext, action: str, resource: Json, current: Json | None
    ) -> None:
        """Raise a 403 FhirError when `context` may not perform `action` (create, update, delete)."""

    def can_read(self, context: RequestContext, resource: Json) -> bool:
        """Whether the resource is visible; invisible ones read as 404 and are left out of results."""

    def authorize_search(self, context: RequestContext, res_type: str) -> None:
        """Raise a 403 FhirError when `context` may not search or read `res_type` at all."""


class Rule(Protocol):
    """A business rule on a write, run after validation and before authorization, in the write's
    transaction. It returns the resource to store (possibly completed, e.g. a derived recipient) or
    raises a FhirError (422 for a rule the content breaks). `action` is create, update or delete."""

    def __call__(self, uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json: ...


class Reaction(Protocol):
    """Runs after a version is stored, in the same transaction, and may write more through `write_path`
    (e.g. a completed Task updating the request it confirms). Its writes pass every step again."""

    def __call__(
        self, uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Json | None
    ) -> None: ...


class AuditSink(Protocol):
    def record(self, record: AccessRecord) -> None: ...


class Notifier(Protocol):
    def changed(self, changes: list[Change]) -> None: ...


class AllowAll:
    def authorize_write(
        self, context: RequestContext, action: str, resource: Json, current: Json | None
    ) -> None:
        return None

    def can_read(self, context: RequestContext, resource: Json) -> bool:
        return True

    def authorize_search(self, context: RequestContext, res_type: str) -> None:
        return None


class LogAudit:
    def record(self, record: AccessRecord) -> None:
        log.debug(
            "%s %s %s -> %s by %s",
            record.interaction,
            record.res_type,
            ",".join(record.res_ids[:10]),
            record.status,
            record.context.principal.client_id,
        )


class NoNotify:
    def changed(self, changes: list[Change]) -> None:
        return None


@dataclass
class Hooks:
    policy: AccessPolicy = field(default_factory=AllowAll)
    rules: list[Rule] = field(default_factory=list)
    reactions: list[Reaction] = field(default_factory=list)
    audit: AuditSink = field(default_factory=LogAudit)
    notify: Notifier = field(default_factory=NoNotify)
