"""What a reader may see, as a condition on a row of `resource` (or an alias of it).

Every path that answers from the database (read, vread, history, search and its includes, chains,
conditional matches, transaction entries, audit reads) puts the reader's `Visibility` into its own query,
so hidden rows are never fetched: pages are full, totals count what is shown, cursors hold nothing hidden,
and a hidden id takes the same path as an unknown one. The policy (gateway/security) decides which
Visibility a request has; the conditions are built here from the access index rows
(gateway/security/access_index.py) and the care relations (gateway/store/relations.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    Select,
    Table,
    and_,
    bindparam,
    exists,
    false,
    not_,
    or_,
    select,
    true,
)

from gateway.search.dates import utc_now
from gateway.store.relations import Actors, related_patients
from gateway.store.tables import ReferenceIndex, Resource, TokenIndex

REF = cast(Table, ReferenceIndex.__table__)
TOKEN = cast(Table, TokenIndex.__table__)
RESOURCE = cast(Table, Resource.__table__)
AUDIT_EVENT = "AuditEvent"
# The access index's private parameters (gateway.security.access_index); an AuditEvent is named by its
# agents under `_agent`, so what names an organisation does not grow with its audit trail.
PARTY, PATIENT, LINK, RECIPIENT, OWNER = "_party", "_patient", "_link", "_recipient", "_owner"
AGENT = "_agent"


class Visibility(Protocol):
    """Which resources a reader may see."""

    @property
    def everything(self) -> bool:
        """Whether it sees every resource (no condition needed)."""

    def where(self, row: Any, res_type: str | None = None) -> ColumnElement[bool]:
        """The condition on `row` (the `resource` table or an alias of it) that the reader sees it;
        `res_type`: the type `row` is known to be (a read, a search's matches), so the condition needs
        only what can hold for that type."""


@dataclass(frozen=True)
class Everything:
    """The gateway's own readers, region-wide clients, GATEWAY_AUTH=off."""

    @property
    def everything(self) -> bool:
        return True

    def where(self, row: Any, res_type: str | None = None) -> ColumnElement[bool]:
        return true()


EVERYTHING = Everything()


@dataclass(frozen=True)
class OfTypes:
    """Resources of the types a token's scopes let it read (`r` or `s`); `types` None: every type.
    AuditEvents only with `audit` (the scope gateway/audit.read)."""

    types: frozenset[str] | None
    audit: bool

    @property
    def everything(self) -> bool:
        return self.types is None and self.audit

    def readable(self, res_type: str) -> bool:
        if res_type == AUDIT_EVENT:
            return self.audit
        return self.types is None or res_type in self.types

    def where(self, row: Any, res_type: str | None = None) -> ColumnElement[bool]:
        if res_type is not None:
            return true() if self.readable(res_type) else false()
        if self.types is None:
            return true() if self.audit else row.c.res_type != AUDIT_EVENT
        types = set(self.types) - {AUDIT_EVENT}
        if self.audit:
            types.add(AUDIT_EVENT)
        return row.c.res_type.in_(sorted(types)) if types else false()


# "Now", valued when a statement runs: a condition built once serves every request.
NOW = bindparam("visibility_now", callable_=utc_now, type_=DateTime())


class ForOrganisation:
    """What one organisation's clients see (docs/security.md, "Organisation policy"): master data; its
    related patients; for them (or for no patient) what names it; what is addressed to it; the patients'
    patient-wide resources; what those resources naming it link to; and AuditEvents of its own clients
    and of accesses to what it authored, requested or owns. Built once per organisation (the policy
    keeps them), each type's condition once per table."""

    def __init__(
        self,
        actors: Actors,
        public_types: frozenset[str],
        patient_wide_types: frozenset[str],
        addressed_types: frozenset[str],
    ) -> None:
        self.actors = actors
        self.public_types = public_types
        self.patient_wide_types = patient_wide_types
        self.addressed_types = addressed_types
        self._built: dict[tuple[str | None], ColumnElement[bool]] = {}

    @property
    def everything(self) -> bool:
        return False

    def where(self, row: Any, res_type: str | None = None) -> ColumnElement[bool]:
        if row is not RESOURCE:  # an alias of a chain or a history: built for it
            return self._build(row, res_type)
        key = (res_type,)
        if key not in self._built:
            self._built[key] = self._build(row, res_type)
        return self._built[key]

    def _build(self, row: Any, res_type: str | None) -> ColumnElement[bool]:
        if res_type is not None:
            return self._for_type(row, res_type)
        public = row.c.res_type.in_(sorted(self.public_types))
        if not self.actors.known:
            return public  # type: ignore[no-any-return]
        options = [
            public,
            and_(row.c.res_type == "Patient", self._patient(row)),
            and_(row.c.res_type == AUDIT_EVENT, self._audit(row)),
            and_(row.c.res_type.not_in(["Patient", AUDIT_EVENT]), self._data(row, None)),
        ]
        return or_(*options)

    def _for_type(self, row: Any, res_type: str) -> ColumnElement[bool]:
        if res_type in self.public_types:
            return true()
        if not self.actors.known:
            return false()
        if res_type == "Patient":
            return self._patient(row)
        if res_type == AUDIT_EVENT:
            return self._audit(row)
        return self._data(row, res_type)

    def _patient(self, row: Any) -> ColumnElement[bool]:
        """A Patient: one it is related to now. The type is named with the ids, so the planner can start
        from the related patients (uq_resource_type_id) when they are fewer than a search's matches."""
        return and_(row.c.res_type == "Patient", row.c.res_id.in_(self._related()))

    def _audit(self, row: Any) -> ColumnElement[bool]:
        """An AuditEvent: of its own clients' accesses, or of accesses to what it authored, requested or
        owns."""
        return or_(self._names(row.c.rid, AGENT), self._audits_own(row))

    def _data(self, row: Any, res_type: str | None) -> ColumnElement[bool]:
        """Patient data and the rest: what names it for a related patient or none, what such a resource
        links to, what is addressed to it, a related patient's patient-wide resources."""
        options = [and_(self._names(row.c.rid, PARTY), self._for_related(row.c.rid)), self._linked(row)]
        if self.addressed_types and (res_type is None or res_type in self.addressed_types):
            addressed = self._names(row.c.rid, RECIPIENT, people=True)
            if res_type is None:
                addressed = and_(row.c.res_type.in_(sorted(self.addressed_types)), addressed)
            options.append(addressed)
        if self.patient_wide_types and (res_type is None or res_type in self.patient_wide_types):
            wide = self._of_related(row.c.rid)
            if res_type is None:
                wide = and_(row.c.res_type.in_(sorted(self.patient_wide_types)), wide)
            options.append(wide)
        return or_(*options)

    def _related(self) -> Select[Any]:
        return related_patients(self.actors, NOW)

    def _names(self, rid: Any, param: str, people: bool = False) -> ColumnElement[bool]:
        ref = REF.alias()
        named = self.actors.names(ref.c.target_type, ref.c.target_id, people)
        return exists().where(ref.c.rid == rid, ref.c.param == param, named)

    def _of_related(self, rid: Any) -> ColumnElement[bool]:
        ref = REF.alias()
        return exists().where(ref.c.rid == rid, ref.c.param == PATIENT, ref.c.target_id.in_(self._related()))

    def _for_related(self, rid: Any) -> ColumnElement[bool]:
        """About no patient, or about one it is related to."""
        ref = REF.alias()
        no_patient = not_(exists().where(ref.c.rid == rid, ref.c.param == PATIENT))
        return or_(no_patient, self._of_related(rid))

    def _linked(self, row: Any) -> ColumnElement[bool]:
        """Referenced through a link element by a current resource that names the organisation, for a
        related patient or none: one level down, no further. The candidate's own `_link` rows drive it
        (index ix_reference_param_target), so a resource nothing links to costs one index probe."""
        link, source = REF.alias(), RESOURCE.alias()
        return exists().where(
            link.c.param == LINK,
            link.c.target_type == row.c.res_type,
            link.c.target_id == row.c.res_id,
            source.c.rid == link.c.rid,
            source.c.deleted == false(),
            self._names(link.c.rid, PARTY),
            self._for_related(link.c.rid),
        )

    def _audits_own(self, row: Any) -> ColumnElement[bool]:
        """An AuditEvent recording access to patient data (not master data) the organisation authored,
        requested or owns."""
        entity, target, owner = REF.alias(), RESOURCE.alias(), REF.alias()
        return exists().where(
            entity.c.rid == row.c.rid,
            entity.c.param == "entity",
            target.c.res_type == entity.c.target_type,
            target.c.res_id == entity.c.target_id,
            target.c.res_type.not_in(sorted(self.public_types)),
            exists().where(
                owner.c.rid == target.c.rid,
                owner.c.param == OWNER,
                self.actors.names(owner.c.target_type, owner.c.target_id),
            ),
        )


@dataclass(frozen=True)
class Both:
    """Visible to both: a token's scopes and its organisation."""

    first: Visibility
    second: Visibility

    @property
    def everything(self) -> bool:
        return self.first.everything and self.second.everything

    def where(self, row: Any, res_type: str | None = None) -> ColumnElement[bool]:
        if self.first.everything:
            return self.second.where(row, res_type)
        if self.second.everything:
            return self.first.where(row, res_type)
        return and_(self.first.where(row, res_type), self.second.where(row, res_type))


def labelled(rid: Any, labels: Iterable[tuple[str, str]]) -> ColumnElement[bool]:
    """The resource `rid` (a column of the enclosing query) carries one of these security labels."""
    token = TOKEN.alias()
    options = [and_(token.c.system == system, token.c.code == code) for system, code in sorted(labels)]
    return exists().where(token.c.rid == rid, token.c.param == "_security", or_(false(), *options))


def visible_keys(
    connection: Connection, visibility: Visibility, keys: Iterable[tuple[str, str]], deleted: bool = False
) -> set[tuple[str, str]]:
    """Which of these (type, id) are current resources the reader sees (with `deleted`, tombstones too)."""
    by_type: dict[str, set[str]] = {}
    for res_type, res_id in keys:
        by_type.setdefault(res_type, set()).add(res_id)
    found: set[tuple[str, str]] = set()
    for res_type, ids in sorted(by_type.items()):
        statement = select(RESOURCE.c.res_type, RESOURCE.c.res_id).where(
            RESOURCE.c.res_type == res_type,
            RESOURCE.c.res_id.in_(sorted(ids)),
            true() if deleted else RESOURCE.c.deleted == false(),
            visibility.where(RESOURCE, res_type),
        )
        found |= {(str(t), str(i)) for t, i in connection.execute(statement)}
    return found
