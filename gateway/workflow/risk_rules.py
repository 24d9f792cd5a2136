"""The gateway's RiskAssessments are its proposals (gateway/risk/): only the gateway creates or deletes
one; a client (a clinician's system: region-wide, or a unit the policy names as a confirming unit,
`risk_confirmers` in policy/access.yaml) changes only `status` (to `final`: confirmed; to `cancelled`:
dismissed, with a new `note` saying why), appends `note` and names a `performer`; anything else is 403,
a dismissal without a reason 422 on `RiskAssessment.note`. A new note may not claim the gateway as its
author (`authorString` "Gatewayen"): those notes are the rules' explanations, shown to every related
organisation and read back into the Flag's text (gateway/risk/assess.py, `fired_names`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.errors import forbidden, unprocessable
from gateway.hooks import GATEWAY_CLIENT, Rule
from gateway.model.types import Json
from gateway.risk.assess import ASSESSMENT_ID
from gateway.risk.marks import GATEWAY_AUTHOR

if TYPE_CHECKING:  # the organisation policy reads `is_proposal`, and the pipeline imports the policy's
    from gateway.pipeline import UnitOfWork

MAY_CHANGE = frozenset({"status", "performer", "note"})
DECISIONS = frozenset({"final", "cancelled"})
IGNORED = frozenset({"meta", "text", "id", "resourceType"})


def is_proposal(resource: Json | None) -> bool:
    identifiers = (resource or {}).get("identifier")
    return any(
        isinstance(i, dict) and i.get("system") == ASSESSMENT_ID
        for i in (identifiers if isinstance(identifiers, list) else [])
    )


def decided_by_clinician(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
    if uow.context.principal.client_id == GATEWAY_CLIENT:
        return resource
    if resource.get("resourceType") != "RiskAssessment" or not (
        is_proposal(resource) or is_proposal(current)
    ):
        return resource
    if current is None or action == "delete":
        raise forbidden("The gateway's high-risk assessments are created and removed by the gateway only")
    changed = {
        k for k in set(current) | set(resource) if k not in IGNORED and current.get(k) != resource.get(k)
    }
    if changed - MAY_CHANGE:
        raise forbidden(
            "In the gateway's high-risk assessment a clinician may change only status and performer and add "
            f"notes; not {', '.join(sorted(changed - MAY_CHANGE))}"
        )
    before, after = current.get("note") or [], resource.get("note") or []
    if not isinstance(after, list) or after[: len(before)] != before:
        raise forbidden("Notes of the high-risk assessment may only be added, never changed or removed")
    if any(isinstance(n, dict) and n.get("authorString") == GATEWAY_AUTHOR for n in after[len(before) :]):
        raise forbidden(
            f"A note by {GATEWAY_AUTHOR!r} is the gateway's own; a clinician's note names its author"
        )
    status = resource.get("status")
    if "status" in changed and status not in DECISIONS:
        raise unprocessable(
            "A clinician confirms (final) or dismisses (cancelled) the gateway's proposal",
            "RiskAssessment.status",
        )
    if status == "cancelled" and "status" in changed and len(after) == len(before):
        raise unprocessable(
            "Den som avfärdar förslaget om högriskpatient anger varför i en ny anteckning (note)",
            "RiskAssessment.note",
        )
    return resource


RULES: list[Rule] = [decided_by_clinician]
