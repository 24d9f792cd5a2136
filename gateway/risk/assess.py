"""Writing what the rules found, as the gateway, through the write path: one RiskAssessment and one Flag
per patient (found by the gateway's identifiers). The gateway proposes: a new or changed outcome is a
`preliminary` assessment and an active Flag tagged `proposed`. A clinician's system confirms (`final`:
the tag goes) or dismisses (`cancelled` with a note: the Flag becomes `inactive`); a dismissed assessment
is raised again only when the outcome's digest changes (a rule fires that did not, or a fired rule finds
new data), so an unrelated write changes nothing. The Flag follows the assessment: every write of one
(the gateway's or a clinician's) makes the reaction of gateway/risk/reaction.py write the Flag it shows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.model.types import Json
from gateway.risk.evaluate import Evaluator, Outcome
from gateway.risk.marks import BASE, GATEWAY_AUTHOR, PROPOSED
from gateway.search.dates import to_instant, utc_now
from gateway.store import locks
from gateway.store.repository import Stored

if TYPE_CHECKING:
    from gateway.pipeline import UnitOfWork, WritePath

ASSESSMENT_ID = f"{BASE}/identifier/risk-assessment"
FLAG_ID = f"{BASE}/identifier/risk-flag"
OUTCOME_EXT = f"{BASE}/StructureDefinition/risk-outcome"
FLAG_DETAIL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
RISK_FLAG = f"{BASE}/CodeSystem/risk-flag"
RISK_RULE = f"{BASE}/CodeSystem/risk-rule"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
NOT_RAISED = "none"  # the digest of an outcome that does not reach the threshold
NO_LONGER = "Reglerna för högriskpatient slår inte längre till; förslaget är återkallat av gatewayen."


def current_of(uow: UnitOfWork, patient_id: str) -> tuple[Stored | None, Stored | None]:
    held = uow.repository.held_by(
        [("RiskAssessment", ASSESSMENT_ID, patient_id), ("Flag", FLAG_ID, patient_id)]
    )
    return held.get(("RiskAssessment", ASSESSMENT_ID, patient_id)), held.get(("Flag", FLAG_ID, patient_id))


def assess(uow: UnitOfWork, write_path: WritePath, evaluator: Evaluator, patient: Stored) -> str:
    """Evaluate the rules for `patient` and write what changed; what was done, in a word. Evaluations of one
    patient take turns until their transactions end (PostgreSQL: an advisory lock on the patient): two
    writes committing at once, each bringing one input, would otherwise each see only its own and neither
    reach the threshold; the later one now reads after the earlier one's commit."""
    locks.hold_named_for_transaction(uow.connection, locks.RISK, patient.res_id)
    patient = uow.repository.current("Patient", patient.res_id) or patient  # as it is after that turn
    outcome = evaluator.evaluate(uow.connection, patient)
    found, _ = current_of(uow, patient.res_id)
    current = found.json() if found is not None and not found.deleted else None
    digest = outcome.digest() if outcome.raised else NOT_RAISED
    if current is None:
        if not outcome.raised:
            return "none"
        write_path.create(uow, _assessment(patient.res_id, outcome, None, "preliminary", digest))
        return "proposed"
    status = str(current.get("status"))
    if _digest(current) == digest:
        return "unchanged"
    if not outcome.raised:
        if status != "preliminary":
            return "unchanged"  # a clinician decided: a confirmed or dismissed assessment stays so
        resource = _assessment(patient.res_id, outcome, current, "cancelled", NOT_RAISED)
        resource["note"] = [*resource.get("note", []), {"authorString": GATEWAY_AUTHOR, "text": NO_LONGER}]
        write_path.update(uow, "RiskAssessment", str(current["id"]), resource)
        return "withdrawn"
    new_status = "final" if status == "final" else "preliminary"  # a dismissed one is raised again
    resource = _assessment(patient.res_id, outcome, current, new_status, digest)
    write_path.update(uow, "RiskAssessment", str(current["id"]), resource)
    return "proposed" if new_status == "preliminary" else "updated"


def _digest(assessment: Json) -> str | None:
    for ext in assessment.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == OUTCOME_EXT:
            return str(ext.get("valueString") or "")
    return None


def _assessment(patient_id: str, outcome: Outcome, current: Json | None, status: str, digest: str) -> Json:
    rules = outcome.rule_set
    kept = [
        n
        for n in (current or {}).get("note") or []
        if isinstance(n, dict) and n.get("authorString") != GATEWAY_AUTHOR
    ]
    notes = [
        {"authorString": GATEWAY_AUTHOR, "text": f"{_display(f.rule.code)}: {f.rule.explanation}"}
        for f in outcome.fired
    ]
    resource: Json = {
        "resourceType": "RiskAssessment",
        "extension": [{"url": OUTCOME_EXT, "valueString": digest}],
        "identifier": [{"system": ASSESSMENT_ID, "value": patient_id}],
        "status": status,
        "method": {
            "coding": [{"system": RISK_RULE, "code": rules.name, "version": rules.version}],
            "text": f"Gatewayens regler för högriskpatient ({rules.name}), version {rules.version}",
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "occurrenceDateTime": to_instant(utc_now()),
        "basis": [{"reference": ref} for ref in outcome.basis],
        "prediction": [
            {
                "outcome": {
                    "coding": [{"system": RISK_FLAG, "code": "hogriskpatient"}],
                    "text": "Högriskpatient",
                },
                "qualitativeRisk": {"coding": [{"system": RISK_PROBABILITY, "code": "high"}]},
            }
        ]
        if outcome.raised
        else [],
        "note": kept + notes,
    }
    if current is not None:
        resource["id"] = current["id"]
        for element in ("performer",):
            if element in current:
                resource[element] = current[element]
    return {k: v for k, v in resource.items() if v != []}


def flag_for(
    patient_id: str, assessment_id: str, fired: list[str], status: str, current: Json | None
) -> Json:
    """The patient's Flag as an assessment of `status` shows it."""
    names = ", ".join(fired)
    flag: Json = {
        "resourceType": "Flag",
        "identifier": [{"system": FLAG_ID, "value": patient_id}],
        "extension": [
            {"url": FLAG_DETAIL, "valueReference": {"reference": f"RiskAssessment/{assessment_id}"}}
        ],
        "status": "inactive" if status in ("cancelled", "entered-in-error") else "active",
        "category": [{"coding": [{"system": FLAG_CATEGORY, "code": "safety", "display": "Safety"}]}],
        "code": {
            "coding": [{"system": RISK_FLAG, "code": "hogriskpatient", "display": "Högriskpatient"}],
            "text": f"Högriskpatient ({names})" if names else "Högriskpatient",
        },
        "subject": {"reference": f"Patient/{patient_id}"},
    }
    if status == "preliminary":
        flag["meta"] = {"tag": [PROPOSED]}
    if current is not None:
        flag["id"] = current["id"]
    return flag


def fired_names(assessment: Json) -> list[str]:
    """The fired rules' names, as the assessment's gateway notes give them (`name: explanation`)."""
    return [
        str(n.get("text", "")).split(":", 1)[0]
        for n in assessment.get("note") or []
        if isinstance(n, dict)
        and n.get("authorString") == GATEWAY_AUTHOR
        and ":" in str(n.get("text", ""))
        and n.get("text") != NO_LONGER
    ]


def write_flag(uow: UnitOfWork, write_path: WritePath, wanted: Json, current: Json | None) -> None:
    if current is None:
        write_path.create(uow, wanted)
        return
    if _same(current, wanted):
        return
    write_path.update(uow, "Flag", str(current["id"]), wanted)


def _same(current: Json, wanted: Json) -> bool:
    def shown(resource: Json) -> Any:
        tags = [(t.get("system"), t.get("code")) for t in (resource.get("meta") or {}).get("tag") or []]
        return ({k: v for k, v in resource.items() if k != "meta"}, sorted(tags))

    return bool(shown(current) == shown(wanted))


_DISPLAYS = {
    "bor-ensam": "bor ensam",
    "kognitiv-svikt": "kognitiv svikt",
    "ingen-hjalp-hemma": "ingen hjälp hemma",
    "tolk-eller-sprak": "tolk eller språk",
    "hog-alder": "hög ålder",
    "manga-hjalpmedel": "många hjälpmedel",
    "avancerat-hjalpmedel": "avancerat hjälpmedel",
}


def _display(code: str) -> str:
    return _DISPLAYS.get(code, code)
