"""Who may decide on the gateway's high-risk proposal for a patient (policy `risk_confirmers`): besides
region-wide clients, the units that requested a DeviceRequest for the patient (by `requester`) and the
patient's primary-care unit (`Patient.generalPractitioner`), each naming only its own PractitionerRole
(or itself) as `performer`. What they may change is the workflow rule's (gateway/workflow/risk_rules.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, and_, exists, false, or_, select

from gateway.errors import forbidden
from gateway.model.types import Json
from gateway.store.relations import Actors
from gateway.store.repository import Repository
from gateway.store.tables import ReferenceIndex, Resource
from gateway.store.visibility import Visibility, visible_keys

REF = cast(Table, ReferenceIndex.__table__)
RES = cast(Table, Resource.__table__)


@dataclass(frozen=True)
class RiskConfirmers:
    """`requested`: types whose `requester` makes a unit a confirmer for the patient; `primary_care`: the
    patient's generalPractitioner is one."""

    requested: tuple[str, ...] = ("DeviceRequest",)
    primary_care: bool = True

    @classmethod
    def parse(cls, data: Any) -> RiskConfirmers:
        if not isinstance(data, dict):
            return cls()
        return cls(tuple(str(t) for t in data.get("requested") or ()), bool(data.get("primary_care", False)))


def authorize_decision(
    confirmers: RiskConfirmers,
    names: Callable[[Actors, Any], bool],
    connection: Connection,
    actors: Actors,
    current: Json,
    resource: Json,
) -> bool:
    """Whether the organisation may decide on this assessment (403 for a performer not its own)."""
    reference = (current.get("subject") or {}).get("reference")
    if not isinstance(reference, str) or not reference.startswith("Patient/") or not actors.known:
        return False
    patient_id = reference.split("/", 1)[1]
    if not _confirms(confirmers, names, connection, actors, patient_id):
        return False
    if resource.get("performer") != current.get("performer") and not names(actors, resource.get("performer")):
        raise forbidden(
            "The performer of a decision on a high-risk assessment is the unit's own PractitionerRole"
        )
    return True


def _confirms(
    confirmers: RiskConfirmers,
    names: Callable[[Actors, Any], bool],
    connection: Connection,
    actors: Actors,
    patient_id: str,
) -> bool:
    if confirmers.primary_care:
        patient = Repository(connection).current("Patient", patient_id)
        if (
            patient is not None
            and not patient.deleted
            and names(actors, patient.json().get("generalPractitioner"))
        ):
            return True
    refs = actors.refs(groups=False)
    if not confirmers.requested or not refs:
        return False
    subject, requester = REF.alias(), REF.alias()
    statement = select(subject.c.rid).where(
        subject.c.res_type.in_(confirmers.requested),
        subject.c.param.in_(["subject", "patient"]),
        subject.c.target_type == "Patient",
        subject.c.target_id == patient_id,
        exists().where(
            requester.c.rid == subject.c.rid,
            requester.c.param == "requester",
            or_(*(and_(requester.c.target_type == t, requester.c.target_id == i) for t, i in sorted(refs))),
        ),
        exists().where(RES.c.rid == subject.c.rid, RES.c.deleted == false()),
    )
    return connection.execute(statement.limit(1)).first() is not None


def basis_as_seen(
    local: Callable[[str], tuple[str, str] | None], engine: Engine, visibility: Visibility, resource: Json
) -> Json:
    """A RiskAssessment with only the `basis` entries the reader may read itself (as `_include` would
    show them): the assessment is visible to every organisation related to the patient, what it was
    made from is not. Its notes quote no source values (rule explanations only)."""
    basis = [b for b in resource.get("basis") or [] if isinstance(b, dict)]
    keys = {id(b): local(str(b.get("reference"))) for b in basis}
    wanted = {key for key in keys.values() if key is not None}
    if not wanted:
        return resource
    with engine.connect() as connection:
        seen = visible_keys(connection, visibility, wanted)
    shown = dict(resource)
    kept = [b for b in basis if keys[id(b)] in seen]
    if kept:
        shown["basis"] = kept
    else:
        shown.pop("basis", None)
    return shown
