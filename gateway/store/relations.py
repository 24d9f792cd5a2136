"""Who an organisation is, and the care relations that relate it to patients, as queries.

`Actors` is what names an organisation (its Organization resources, PractitionerRoles, HealthcareServices
and CareTeams, and its HSA-id), found for one request by `find_actors`: only from resources the gateway's
own writers or a region-wide client wrote (`resource.writer` NULL), or the organisation itself, so a
client cannot make itself someone else's colleague. `care_relation` holds one row per fact relating an
actor to a patient, kept by the write path with the resource the fact comes from (`replace`);
`related_patients` is the query over it that every visibility condition uses. Rules are not known here:
the caller passes the facts (gateway.security.access_index) and whether the writer is trusted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    false,
    insert,
    or_,
    select,
    update,
)

from gateway.store.tables import CareRelation, ReferenceIndex, Resource, TokenIndex

CR = cast(Table, CareRelation.__table__)
REF = cast(Table, ReferenceIndex.__table__)
TOKEN = cast(Table, TokenIndex.__table__)
RESOURCE = cast(Table, Resource.__table__)

HSA = "hsa"  # the actor type of an organisation named by HSA-id (a logical reference)
WRITTEN = "written"  # by a trusted writer: the gateway's own, a region-wide client
CREATED = "created"  # the Patient itself, created by the organisation's client
REFERRAL = "referral"  # a Task a client addressed to another unit
GRANTING = (WRITTEN, CREATED)  # what a client must be related by to refer a patient on

# Statements that read or write no held-back rows (gateway.store.pending): care relations are written at
# once, so reading them needs no flush of what the transaction holds back.
_OF_RID = select(CR).where(CR.c.rid == bindparam("rid"), CR.c.basis != CREATED)
_DELETE_OF = delete(CR).where(CR.c.rid == bindparam("rid"), CR.c.basis != CREATED)
_INSERT = insert(CR)
_SET = (
    update(CR).where(CR.c.pk == bindparam("row")).values(until=bindparam("until"), basis=bindparam("basis"))
)
QUIET = (_OF_RID, _DELETE_OF, _INSERT, _SET)


@dataclass(frozen=True)
class Fact:
    """A care relation a resource makes: `actor` (type, id; `hsa` and an HSA-id for a logical reference)
    to Patient `patient`; `ended` when the resource's status ends it; `referral` when a client that is
    not trusted relates the actor by writing it (a Task's owner)."""

    actor_type: str
    actor_id: str
    patient: str
    ended: bool
    referral: bool


@dataclass(frozen=True)
class Actors:
    """What names one organisation (HSA-id `hsa`) as found for a request."""

    hsa: str
    organizations: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    # The Practitioners of its PractitionerRoles that a trusted writer wrote: Communications addressed
    # to them are addressed to it.
    practitioners: frozenset[str] = frozenset()
    # The HealthcareServices it provides (`providedBy`): a Task owned by one is owned by it.
    services: frozenset[str] = frozenset()

    @property
    def known(self) -> bool:
        return bool(self.hsa)

    def refs(self, groups: bool = True) -> set[tuple[str, str]]:
        found = (
            {("Organization", i) for i in self.organizations}
            | {("PractitionerRole", i) for i in self.roles}
            | {("HealthcareService", i) for i in self.services}
        )
        if groups:
            found |= {("CareTeam", i) for i in self.groups}
        if self.hsa:
            found.add((HSA, self.hsa))
        return found

    def names(self, type_column: Any, id_column: Any, people: bool = False) -> ColumnElement[bool]:
        """A condition on (type, id) columns: they name the organisation (with `people`, also the
        Practitioners of its roles)."""
        if not self.hsa:
            return false()
        parts = [and_(type_column == HSA, id_column == self.hsa)]
        for res_type, ids in (
            ("Organization", self.organizations),
            ("PractitionerRole", self.roles),
            ("HealthcareService", self.services),
            ("CareTeam", self.groups),
            ("Practitioner", self.practitioners if people else frozenset()),
        ):
            if ids:
                parts.append(and_(type_column == res_type, id_column.in_(sorted(ids))))
        return or_(*parts)


def _referring(
    connection: Connection, hsa: str, res_type: str, param: str, names: ColumnElement[bool]
) -> frozenset[str]:
    """The ids of the current resources of `res_type` whose reference `param` meets `names`, written by a
    trusted writer or by the organisation itself (`_trusted_or`)."""
    return frozenset(
        str(res_id)
        for res_id in connection.execute(
            select(RESOURCE.c.res_id)
            .join(REF, REF.c.rid == RESOURCE.c.rid)
            .where(
                REF.c.res_type == res_type,
                REF.c.param == param,
                names,
                RESOURCE.c.deleted == false(),
                _trusted_or(hsa),
            )
        ).scalars()
    )


def _trusted_or(hsa: str, row: Any = RESOURCE) -> ColumnElement[bool]:
    return or_(row.c.writer.is_(None), row.c.writer == hsa)


def find_actors(connection: Connection, hsa: str, hsa_system: str) -> Actors:
    """The organisation with HSA-id `hsa`: a few indexed queries."""
    if not hsa:
        return Actors("")
    organizations = frozenset(
        str(res_id)
        for res_id in connection.execute(
            select(RESOURCE.c.res_id)
            .join(TOKEN, TOKEN.c.rid == RESOURCE.c.rid)
            .where(
                TOKEN.c.res_type == "Organization",
                TOKEN.c.param == "identifier",
                TOKEN.c.code == hsa,
                TOKEN.c.system == hsa_system,
                RESOURCE.c.deleted == false(),
                _trusted_or(hsa),
            )
        ).scalars()
    )
    named_org = [and_(REF.c.target_type == HSA, REF.c.target_id == hsa)]
    if organizations:
        named_org.append(
            and_(REF.c.target_type == "Organization", REF.c.target_id.in_(sorted(organizations)))
        )
    role_rows = connection.execute(
        select(RESOURCE.c.rid, RESOURCE.c.res_id, RESOURCE.c.writer)
        .join(REF, REF.c.rid == RESOURCE.c.rid)
        .where(
            REF.c.res_type == "PractitionerRole",
            REF.c.param == "organization",
            or_(*named_org),
            RESOURCE.c.deleted == false(),
            _trusted_or(hsa),
        )
    ).all()
    roles = frozenset(str(row.res_id) for row in role_rows)
    trusted_roles = sorted(row.rid for row in role_rows if row.writer is None)
    practitioners: frozenset[str] = frozenset()
    if trusted_roles:
        practitioners = frozenset(
            str(value)
            for value in connection.execute(
                select(REF.c.target_id).where(
                    REF.c.rid.in_(trusted_roles),
                    REF.c.param == "practitioner",
                    REF.c.target_type == "Practitioner",
                )
            ).scalars()
        )
    services = _referring(connection, hsa, "HealthcareService", "organization", or_(*named_org))
    members = Actors(hsa, organizations, roles, services=services)
    participant = members.names(REF.c.target_type, REF.c.target_id)
    groups = _referring(connection, hsa, "CareTeam", "participant", participant)
    return Actors(hsa, organizations, roles, groups, practitioners, services)


def owns_task_about(
    connection: Connection,
    actors: Actors,
    focus: tuple[str, str],
    codes: Iterable[tuple[str, str]],
    open_statuses: Iterable[str],
) -> bool:
    """Whether the organisation owns an open Task with one of `codes` whose focus is `focus`."""
    if not actors.known:
        return False
    about, owner, code, status = REF.alias(), REF.alias(), TOKEN.alias(), TOKEN.alias()
    options = [and_(code.c.system == system, code.c.code == value) for system, value in sorted(codes)]
    statement = (
        select(about.c.rid)
        .join(owner, owner.c.rid == about.c.rid)
        .join(code, code.c.rid == about.c.rid)
        .join(status, status.c.rid == about.c.rid)
        .where(
            about.c.res_type == "Task",
            about.c.param == "focus",
            about.c.target_type == focus[0],
            about.c.target_id == focus[1],
            owner.c.res_type == "Task",
            owner.c.param == "owner",
            actors.names(owner.c.target_type, owner.c.target_id),
            code.c.res_type == "Task",
            code.c.param == "code",
            or_(false(), *options),
            status.c.res_type == "Task",
            status.c.param == "status",
            status.c.code.in_(sorted(open_statuses)),
        )
        .limit(1)
    )
    return connection.execute(statement).first() is not None


def active(now: datetime | ColumnElement[datetime]) -> ColumnElement[bool]:
    return or_(CR.c.until.is_(None), CR.c.until > now)


def related_patients(
    actors: Actors, now: datetime | ColumnElement[datetime], bases: Sequence[str] = ()
) -> Select[Any]:
    """The ids of the Patients the organisation is related to `now` (a time, or a parameter valued when
    the statement runs; by these bases, every basis when none is given): a subquery."""
    statement = select(CR.c.patient_id).where(actors.names(CR.c.actor_type, CR.c.actor_id), active(now))
    if bases:
        statement = statement.where(CR.c.basis.in_(list(bases)))
    return statement


def related_among(
    connection: Connection, actors: Actors, now: datetime, patients: Iterable[str], bases: Sequence[str] = ()
) -> set[str]:
    """Which of `patients` the organisation is related to now."""
    wanted = sorted(set(patients))
    if not wanted or not actors.known:
        return set()
    statement = related_patients(actors, now, bases).where(CR.c.patient_id.in_(wanted))
    return {str(value) for value in connection.execute(statement).scalars()}


def related_through(
    connection: Connection, actors: Actors, now: datetime, patients: Iterable[str], types: Sequence[str]
) -> set[str]:
    """Which of `patients` the organisation is related to now by what a trusted writer wrote (`written`)
    of one of these resource types (a DeviceRequest it requested, an Encounter it provided, …)."""
    wanted = sorted(set(patients))
    if not wanted or not actors.known or not types:
        return set()
    statement = (
        related_patients(actors, now, (WRITTEN,))
        .join(RESOURCE, RESOURCE.c.rid == CR.c.rid)
        .where(
            CR.c.patient_id.in_(wanted), RESOURCE.c.res_type.in_(list(types)), RESOURCE.c.deleted == false()
        )
    )
    return {str(value) for value in connection.execute(statement).scalars()}


# -- kept by the write path ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Writer:
    """Who writes a version, as relations see it: trusted (the gateway's own writers and region-wide
    clients), or an organisation (`hsa`) with what names it."""

    trusted: bool
    actors: Actors | None = None

    @property
    def hsa(self) -> str | None:
        return None if self.trusted or self.actors is None else self.actors.hsa or "?"


TRUSTED = Writer(True)


def replace(
    connection: Connection,
    rid: int,
    facts: list[Fact],
    writer: Writer,
    now: datetime,
    lasts: timedelta,
    fresh: bool,
) -> None:
    """Keep the resource's care relations as its new version says. A fact that is gone or ended ends its
    relation (`until` = now + `lasts`, unless it was ending already); a trusted writer's facts relate
    (`written`); a client's keep the basis they had, and of its new facts only referrals relate; a
    client never makes an ended relation active again."""
    rows = [] if fresh else connection.execute(_OF_RID, {"rid": rid}).all()
    old = {(r.actor_type, r.actor_id, r.patient_id): r for r in rows}
    own = writer.actors.refs() if writer.actors is not None else set()
    ends = now + lasts
    kept: set[tuple[str, str, str]] = set()
    inserts: list[dict[str, Any]] = []
    for fact in facts:
        key = (fact.actor_type, fact.actor_id, fact.patient)
        before = old.get(key)
        if writer.trusted:
            basis = WRITTEN
        elif before is not None:
            basis = before.basis
        elif fact.referral and (fact.actor_type, fact.actor_id) not in own:
            basis = REFERRAL
        else:
            continue  # a client's own write relates nobody by itself
        kept.add(key)
        if before is None:
            inserts.append(_row(rid, key, basis, ends if fact.ended else None))
            continue
        if fact.ended:
            until = before.until if before.until is not None else ends
        elif writer.trusted:
            until = None
        else:
            until = before.until
        if until != before.until or basis != before.basis:
            connection.execute(_SET, {"row": before.pk, "until": until, "basis": basis})
    for key, before in old.items():
        if key not in kept and before.until is None:
            connection.execute(_SET, {"row": before.pk, "until": ends, "basis": before.basis})
    if inserts:
        connection.execute(_INSERT, inserts)


def add_created(connection: Connection, rid: int, hsa: str, patient_id: str) -> None:
    """The Patient `patient_id` (row `rid`) was created by the organisation `hsa`'s client: its patient."""
    connection.execute(_INSERT, [_row(rid, (HSA, hsa, patient_id), CREATED, None)])


def created_by(connection: Connection, rid: int) -> set[str]:
    """The organisations that created the Patient `rid` (at most one)."""
    statement = select(CR.c.actor_id).where(CR.c.rid == rid, CR.c.basis == CREATED)
    return {str(value) for value in connection.execute(statement).scalars()}


def remove(connection: Connection, rid: int) -> None:
    """A deleted resource relates nobody (but the organisation that created a Patient keeps it)."""
    connection.execute(_DELETE_OF, {"rid": rid})


def _row(rid: int, key: tuple[str, str, str], basis: str, until: datetime | None) -> dict[str, Any]:
    return {
        "rid": rid,
        "actor_type": key[0],
        "actor_id": key[1][:255],
        "patient_id": key[2][:64],
        "basis": basis,
        "until": until,
    }
