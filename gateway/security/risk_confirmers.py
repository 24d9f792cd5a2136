"""Who may decide on the gateway's high-risk proposal for a patient (policy `risk_confirmers`): besides
region-wide clients, the units that requested a DeviceRequest for the patient (by `requester`) and the
patient's primary-care unit (`Patient.generalPractitioner`), each naming only its own PractitionerRole
(or itself) as `performer` and as the author of each note it adds. Only the gateway's own proposals
(identifier `…/identifier/risk-assessment`) are theirs to decide: another organisation's RiskAssessment
stays under the ordinary ownership rules. What they may change is the workflow rule's
(gateway/workflow/risk_rules.py).

What a reader is shown of a RiskAssessment (`as_seen`; the assessment is visible patient-wide, named
exception 9 of docs/security.md) and what a writer's update keeps of what it was not shown
(`kept_as_stored`) are here too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, exists, false, or_, select

from gateway.errors import forbidden
from gateway.model.types import Json
from gateway.risk.marks import GATEWAY_AUTHOR
from gateway.store.relations import Actors
from gateway.store.repository import Repository
from gateway.store.tables import ReferenceIndex, Resource
from gateway.store.visibility import Visibility, visible_keys
from gateway.workflow.risk_rules import is_proposal

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
    """Whether the organisation may decide on this assessment: one of the gateway's proposals (another
    organisation's assessment is not the confirmers' to change), for a patient it confirms for (403 for a
    performer, or a new note's `authorReference`, not its own: a note is shown to the organisation its
    author names, `as_seen`, so no unit may put its words in another's name)."""
    if not is_proposal(current) or not actors.known:
        return False
    reference = (current.get("subject") or {}).get("reference")
    if not isinstance(reference, str) or not reference.startswith("Patient/"):
        return False
    patient_id = reference.split("/", 1)[1]
    if not _confirms(confirmers, names, connection, actors, patient_id):
        return False
    if resource.get("performer") != current.get("performer") and not names(actors, resource.get("performer")):
        raise forbidden(
            "The performer of a decision on a high-risk assessment is the unit's own PractitionerRole"
        )
    before, after = current.get("note") or [], resource.get("note") or []
    added = after[len(before) :] if isinstance(after, list) and isinstance(before, list) else []
    if any(
        isinstance(n, dict) and "authorReference" in n and not names(actors, n["authorReference"])
        for n in added
    ):
        raise forbidden(
            "The author (authorReference) of a note added to a high-risk assessment is the unit itself or "
            "one of its PractitionerRoles"
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


def as_seen(
    local: Callable[[str], tuple[str, str] | None],
    connection: Connection,
    visibility: Visibility,
    own: Callable[[Any], bool],
    resource: Json,
) -> Json:
    """A RiskAssessment as a reader that is not region-wide is shown it: the assessment is visible to every
    organisation related to the patient, what it was made from and what clinicians wrote on it are not.
    `basis`: only the entries the reader may read itself (as `_include` would show them). `note`: the
    gateway's own notes of its proposals (the rules' explanations, `authorString` "Gatewayen": they quote
    no source values), and the notes whose `authorReference` names the reader's organisation or one of its
    PractitionerRoles (`own`); another note (a dismissal's free-text reason) is its author's and the
    region's only. A note naming no author (`authorString` or none) is the region's only, its writer's
    too: nothing records which organisation wrote it. A confirming unit may name only itself as a note's
    author (`authorize_decision`)."""
    shown = dict(resource)
    notes = [n for n in resource.get("note") or [] if isinstance(n, dict)]
    gateways = is_proposal(resource)
    kept_notes = [
        n
        for n in notes
        if (gateways and n.get("authorString") == GATEWAY_AUTHOR) or own(n.get("authorReference"))
    ]
    if len(kept_notes) != len(resource.get("note") or []):
        _set(shown, "note", kept_notes)
    basis = [b for b in resource.get("basis") or [] if isinstance(b, dict)]
    keys = {id(b): local(str(b.get("reference"))) for b in basis}
    wanted = {key for key in keys.values() if key is not None}
    if wanted:
        seen = visible_keys(connection, visibility, wanted)
        _set(shown, "basis", [b for b in basis if keys[id(b)] in seen])
    return shown


def kept_as_stored(seen: Json, resource: Json, current: Json) -> Json:
    """The update of a RiskAssessment by a writer that was shown `seen` of `current`: the `basis` entries and
    notes it was not shown are put back as stored, so that writing back what it read (a confirming unit's
    decision, with its new notes at the end) neither wipes them nor is refused for removing them. What the
    writer gave is compared with what it was shown, never with what is stored, and what it was not shown
    is always put back besides: a guess at a hidden entry or note, right or wrong, makes the same change
    (and the same answer), so no write confirms one."""
    kept = dict(resource)
    held_basis, shown_basis, given_basis = (
        _list(current, "basis"),
        _list(seen, "basis"),
        _list(resource, "basis"),
    )
    if given_basis == shown_basis:
        _set(kept, "basis", held_basis)
    else:
        _set(kept, "basis", [*given_basis, *_without(held_basis, shown_basis)])
    held, shown, given = _list(current, "note"), _list(seen, "note"), _list(resource, "note")
    if given[: len(shown)] == shown:
        _set(kept, "note", [*held, *given[len(shown) :]])
    else:
        _set(kept, "note", [*_without(held, shown), *given])
    return kept


def _list(resource: Json, element: str) -> list[Any]:
    found = resource.get(element)
    return list(found) if isinstance(found, list) else []


def _without(held: list[Any], shown: list[Any]) -> list[Any]:
    """What of `held` was not shown (`shown` is `held` less some items, in order)."""
    rest = list(shown)
    hidden = []
    for item in held:
        if rest and item == rest[0]:
            rest.pop(0)
        else:
            hidden.append(item)
    return hidden


def authorize_patch(operations: Any) -> None:
    """A JSON Patch is applied to the stored assessment, notes and basis its writer is not shown included:
    one that is not region-wide may touch `note` only by adding one at its end (`add` `/note/-`), and
    `basis` not at all, so that no operation (a `test` above all) confirms a guess of what it is not
    shown."""
    for operation in operations if isinstance(operations, list) else []:
        if not isinstance(operation, dict):
            continue
        if operation.get("op") == "add" and operation.get("path") == "/note/-":
            continue
        pointers = [operation.get(key) for key in ("path", "from")]
        if any(isinstance(p, str) and [*p.split("/"), ""][1] in ("", "note", "basis") for p in pointers):
            raise forbidden(
                "A patch of a RiskAssessment may add a note at the end (add /note/-) and may not otherwise "
                "touch note or basis (nor the whole resource): parts of them are hidden from this client"
            )


def _set(resource: Json, element: str, items: list[Any]) -> None:
    if items:
        resource[element] = items
    else:
        resource.pop(element, None)
