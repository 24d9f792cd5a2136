"""What `Patient/{id}/$everything` returns, as queries that carry the reader's visibility (as a search
does): the members of the R4 Patient compartment (gateway/definitions/patient-compartment.json) plus
Device and Task by `patient`, the patient itself, one page of them at a time in `rid` order (a keyset
cursor, sealed like a search's); then what the page's resources reference and the Provenance of all of
it. AuditEvents and Binaries (the raw inputs the adapters keep) are never part of it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Table, and_, exists, false, not_, or_, select, true

from gateway import resources
from gateway.model.types import SUPPORTED
from gateway.search.query import local_reference
from gateway.store.repository import Repository, Stored
from gateway.store.sizes import content_size
from gateway.store.tables import DateIndex, ReferenceIndex, Resource
from gateway.store.visibility import Visibility

R = cast(Table, Resource.__table__)
REF = cast(Table, ReferenceIndex.__table__)
DATES = cast(Table, DateIndex.__table__)
DEFINITIONS = resources.definitions() / "patient-compartment.json"

# Never returned: the audit trail (read through AuditEvent searches with gateway/audit.read) and raw inputs.
LEFT_OUT = frozenset({"AuditEvent", "Binary"})
# Beside the compartment: the patient's devices and tasks (`patient` search parameter).
EXTRA_MEMBERS = {"Device": ["patient"], "Task": ["patient"]}
# The care dates `start` and `end` filter on, per type (search parameter codes); a resource of another
# type, or without any of these dates, is kept whatever the range.
CARE_DATES: dict[str, tuple[str, ...]] = {
    "CarePlan": ("date",),
    "CareTeam": ("date",),
    "Communication": ("sent",),
    "Consent": ("date",),
    "DeviceRequest": ("event-date", "authored-on"),
    "Encounter": ("date",),
    "Flag": ("date",),
    "List": ("date",),
    "Observation": ("date",),
    "RiskAssessment": ("date",),
    "ServiceRequest": ("occurrence", "authored"),
    "Task": ("period", "authored-on"),
}


@cache
def compartment() -> dict[str, tuple[str, ...]]:
    """Type -> the reference search parameters that make its resource a member for the patient."""
    found: dict[str, list[str]] = json.loads(DEFINITIONS.read_text())
    merged = {t: list(p) for t, p in found.items() if t in SUPPORTED and t not in LEFT_OUT}
    for res_type, params in EXTRA_MEMBERS.items():
        merged[res_type] = sorted({*merged.get(res_type, []), *params})
    return {t: tuple(p) for t, p in sorted(merged.items())}


def member_types() -> list[str]:
    return sorted({*compartment(), "Patient"})


@dataclass
class Filters:
    """The operation's parameters that narrow it: types (None: all), record time, care dates."""

    types: frozenset[str] | None = None
    since: datetime | None = None
    start: datetime | None = None  # the low end of `start` (UTC)
    end: datetime | None = None  # the high end of `end` (UTC, exclusive)

    def type_ok(self, res_type: str) -> bool:
        return res_type not in LEFT_OUT and (self.types is None or res_type in self.types)


@dataclass
class Candidate:
    rid: int
    res_type: str
    size: int


@dataclass
class Everything:
    """The queries of one request: the patient (its rid), the reader's visibility, the filters."""

    connection: Connection
    patient_id: str
    patient_rid: int
    visibility: Visibility
    filters: Filters
    bases: tuple[str, ...]
    _where: ColumnElement[bool] | None = field(default=None, init=False)

    def candidates(self, after: int | None, limit: int) -> list[Candidate]:
        """Up to `limit` members after the rid `after`, in rid order, with their stored sizes."""
        statement = (
            select(R.c.rid, R.c.res_type, content_size(R.c.content))
            .where(self._members(), R.c.rid > after if after is not None else true())
            .order_by(R.c.rid)
            .limit(limit)
        )
        return [Candidate(int(r[0]), str(r[1]), int(r[2] or 0)) for r in self.connection.execute(statement)]

    def load(self, rids: Sequence[int]) -> list[Stored]:
        return Repository(self.connection).current_many(rids)

    def referenced(self, sources: list[Stored], seen: set[tuple[str, str]]) -> list[Candidate]:
        """What these resources reference (literal references to this server), visible and not yet seen."""
        keys: set[tuple[str, str]] = set()
        for stored in sources:
            keys |= set(_references(stored.json(), self.bases))
        return self._visible(keys - seen)

    def provenance(self, shown: Iterable[tuple[str, str]], seen: set[tuple[str, str]]) -> list[Candidate]:
        """The visible Provenance whose `target` is one of the resources shown, not yet seen."""
        if not self.filters.type_ok("Provenance"):
            return []
        by_type: dict[str, set[str]] = {}
        for res_type, res_id in shown:
            by_type.setdefault(res_type, set()).add(res_id)
        if not by_type:
            return []
        targets = select(REF.c.rid).where(
            REF.c.res_type == "Provenance",
            REF.c.param == "target",
            local_reference(REF, self.bases),
            or_(*(and_(REF.c.target_type == t, REF.c.target_id.in_(sorted(i))) for t, i in by_type.items())),
        )
        statement = select(R.c.rid, R.c.res_type, R.c.res_id, content_size(R.c.content)).where(
            R.c.rid.in_(targets), R.c.deleted == false(), self.visibility.where(R, "Provenance")
        )
        rows = list(self.connection.execute(statement))
        return [Candidate(int(r[0]), str(r[1]), int(r[3] or 0)) for r in rows if (r[1], r[2]) not in seen]

    def _visible(self, keys: set[tuple[str, str]]) -> list[Candidate]:
        by_type: dict[str, set[str]] = {}
        for res_type, res_id in keys:
            if self.filters.type_ok(res_type):
                by_type.setdefault(res_type, set()).add(res_id)
        found: list[Candidate] = []
        for res_type, ids in sorted(by_type.items()):
            statement = select(R.c.rid, content_size(R.c.content)).where(
                R.c.res_type == res_type,
                R.c.res_id.in_(sorted(ids)),
                R.c.deleted == false(),
                self.visibility.where(R, res_type),
            )
            rows = self.connection.execute(statement)
            found += [Candidate(int(r[0]), res_type, int(r[1] or 0)) for r in rows]
        return sorted(found, key=lambda c: c.rid)

    def _members(self) -> ColumnElement[bool]:
        if self._where is None:
            self._where = and_(
                or_(R.c.rid == self.patient_rid, R.c.rid.in_(self._compartment_rids())),
                R.c.deleted == false(),
                self._type_condition(),
                R.c.last_updated >= self.filters.since if self.filters.since is not None else true(),
                self._care_dates(),
                self.visibility.where(R),
            )
        return self._where

    def _compartment_rids(self) -> Any:
        options = [and_(REF.c.res_type == t, REF.c.param.in_(p)) for t, p in compartment().items()]
        return select(REF.c.rid).where(
            REF.c.target_type == "Patient",
            REF.c.target_id == self.patient_id,
            local_reference(REF, self.bases),
            or_(*options),
        )

    def _type_condition(self) -> ColumnElement[bool]:
        types = [t for t in member_types() if self.filters.type_ok(t)]
        return R.c.res_type.in_(types) if types else false()

    def _care_dates(self) -> ColumnElement[bool]:
        """Kept: a type without care dates, a resource without them, or one whose care date overlaps."""
        start, end = self.filters.start, self.filters.end
        if start is None and end is None:
            return true()
        options: list[ColumnElement[bool]] = [R.c.res_type.not_in(sorted(CARE_DATES))]
        for res_type, params in sorted(CARE_DATES.items()):
            dated = and_(DATES.c.rid == R.c.rid, DATES.c.param.in_(params))
            overlap = and_(
                dated,
                DATES.c.high > start if start is not None else true(),
                DATES.c.low < end if end is not None else true(),
            )
            undated = not_(exists().where(dated))
            options.append(and_(R.c.res_type == res_type, or_(undated, exists().where(overlap))))
        return or_(*options)


def _references(value: Any, bases: tuple[str, ...]) -> Iterable[tuple[str, str]]:
    """(type, id) of every literal reference to this server in a resource."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "reference" and isinstance(item, str):
                found = _local(item, bases)
                if found is not None:
                    yield found
            else:
                yield from _references(item, bases)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item, bases)


def _local(reference: str, bases: tuple[str, ...]) -> tuple[str, str] | None:
    text = reference
    for base in bases:
        if text.startswith(base + "/"):
            text = text[len(base) + 1 :]
            break
    parts = text.split("/")
    if len(parts) not in (2, 4) or parts[0] not in SUPPORTED or (len(parts) == 4 and parts[2] != "_history"):
        return None
    return parts[0], parts[1]
