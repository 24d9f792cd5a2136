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
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import ColumnElement, Connection, Table, and_, exists, false, not_, or_, select, true

from gateway.store.relations import Actors, related_patients
from gateway.store.tables import ReferenceIndex, Resource, TokenIndex

REF = cast(Table, ReferenceIndex.__table__)
TOKEN = cast(Table, TokenIndex.__table__)
RESOURCE = cast(Table, Resource.__table__)
AUDIT_EVENT = "AuditEvent"
# The access index's private parameters (gateway.security.access_index).
PARTY, PATIENT, LINK, RECIPIENT, OWNER = "_party", "_patient", "_link", "_recipient", "_owner"


class Visibility(Protocol):
    """Which resources a reader may see."""

    @property
    def everything(self) -> bool:
        """Whether it sees every resource (no condition needed)."""

    def where(self, row: Any) -> ColumnElement[bool]:
        """The condition on `row` (the `resource` table or an alias of it) that the reader sees it."""


@dataclass(frozen=True)
class Everything:
    """The gateway's own readers, region-wide clients, GATEWAY_AUTH=off."""

    @property
    def everything(self) -> bool:
        return True

    def where(self, row: Any) -> ColumnElement[bool]:
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

    def where(self, row: Any) -> ColumnElement[bool]:
        if self.types is None:
            return true() if self.audit else row.c.res_type != AUDIT_EVENT
        types = set(self.types) - {AUDIT_EVENT}
        if self.audit:
            types.add(AUDIT_EVENT)
        return row.c.res_type.in_(sorted(types)) if types else false()


@dataclass(frozen=True)
class ForOrganisation:
    """What one organisation's clients see (docs/security.md, "Organisation policy"): master data; its
    related patients; for them (or for no patient) what names it; what is addressed to it; the patients'
    patient-wide resources; what those resources naming it link to; and AuditEvents of its own clients
    and of accesses to what it authored, requested or owns."""

    actors: Actors
    now: datetime
    public_types: frozenset[str]
    patient_wide_types: frozenset[str]
    addressed_types: frozenset[str]

    @property
    def everything(self) -> bool:
        return False

    def where(self, row: Any) -> ColumnElement[bool]:
        public = row.c.res_type.in_(sorted(self.public_types))
        if not self.actors.known:
            return public  # type: ignore[no-any-return]
        patients = related_patients(self.actors, self.now)
        own = [
            public,
            and_(row.c.res_type == "Patient", row.c.res_id.in_(patients)),
            and_(
                row.c.res_type != "Patient",
                self._names(row.c.rid, PARTY),
                self._for_related(row.c.rid),
            ),
            self._linked(row),
            and_(row.c.res_type == AUDIT_EVENT, self._audits_own(row)),
        ]
        if self.addressed_types:
            own.append(
                and_(
                    row.c.res_type.in_(sorted(self.addressed_types)),
                    self._names(row.c.rid, RECIPIENT, people=True),
                )
            )
        if self.patient_wide_types:
            own.append(and_(row.c.res_type.in_(sorted(self.patient_wide_types)), self._of_related(row.c.rid)))
        return or_(*own)

    def _names(self, rid: Any, param: str, people: bool = False) -> ColumnElement[bool]:
        ref = REF.alias()
        return exists().where(
            ref.c.rid == rid,
            ref.c.param == param,
            self.actors.names(ref.c.target_type, ref.c.target_id, people),
        )

    def _of_related(self, rid: Any) -> ColumnElement[bool]:
        ref = REF.alias()
        patients = related_patients(self.actors, self.now)
        return exists().where(ref.c.rid == rid, ref.c.param == PATIENT, ref.c.target_id.in_(patients))

    def _for_related(self, rid: Any) -> ColumnElement[bool]:
        """About no patient, or about one it is related to."""
        ref = REF.alias()
        no_patient = not_(exists().where(ref.c.rid == rid, ref.c.param == PATIENT))
        return or_(no_patient, self._of_related(rid))

    def _linked(self, row: Any) -> ColumnElement[bool]:
        """Referenced through a link element by a current resource that names the organisation, for a
        related patient or none: one level down, no further."""
        link, source = REF.alias(), RESOURCE.alias()
        return exists().where(
            link.c.target_type == row.c.res_type,
            link.c.target_id == row.c.res_id,
            link.c.param == LINK,
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

    def where(self, row: Any) -> ColumnElement[bool]:
        if self.first.everything:
            return self.second.where(row)
        if self.second.everything:
            return self.first.where(row)
        return and_(self.first.where(row), self.second.where(row))


def labelled(rid: Any, labels: Iterable[tuple[str, str]]) -> ColumnElement[bool]:
    """The resource `rid` (a column of the enclosing query) carries one of these security labels."""
    token = TOKEN.alias()
    options = [and_(token.c.system == system, token.c.code == code) for system, code in sorted(labels)]
    return exists().where(token.c.rid == rid, token.c.param == "_security", or_(false(), *options))


def visible_keys(
    connection: Connection, visibility: Visibility, keys: Iterable[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of these (type, id) are current resources (not deleted) the reader sees."""
    by_type: dict[str, set[str]] = {}
    for res_type, res_id in keys:
        by_type.setdefault(res_type, set()).add(res_id)
    found: set[tuple[str, str]] = set()
    for res_type, ids in sorted(by_type.items()):
        statement = select(RESOURCE.c.res_type, RESOURCE.c.res_id).where(
            RESOURCE.c.res_type == res_type,
            RESOURCE.c.res_id.in_(sorted(ids)),
            RESOURCE.c.deleted == false(),
            visibility.where(RESOURCE),
        )
        found |= {(str(t), str(i)) for t, i in connection.execute(statement)}
    return found
