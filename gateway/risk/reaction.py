"""When the rules are evaluated: on every write of what they read (a reaction, in the write's transaction,
as the gateway), for the patients the written resource concerns; and in a pass over every patient
(`risk_pass`: `gateway risk evaluate`, and the scheduler's pass once it exists). A write of one of the
gateway's RiskAssessments (its own, or a clinician's confirmation or dismissal) makes the patient's
Flag follow it."""

from __future__ import annotations

from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import false, select

from gateway.hooks import GATEWAY_SCOPES, Principal, RequestContext, patients_of
from gateway.model.types import Json
from gateway.risk.assess import ASSESSMENT_ID, assess, current_of, fired_names, flag_for, write_flag
from gateway.risk.evaluate import Evaluator
from gateway.risk.rules import RuleSet
from gateway.store.repository import R, Stored

if TYPE_CHECKING:
    from gateway.pipeline import UnitOfWork, WritePath
    from gateway.services import Services

# `gateway risk evaluate`: the operator's (client `cli`, exempt from the organisation policy); the
# scheduler's pass writes as `gateway:scheduler` (gateway/schedule/registry.py)
PASS_CONTEXT = RequestContext(principal=Principal(client_id="cli", scopes=GATEWAY_SCOPES))
PASS_BATCH = 200


class RiskReaction:
    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator
        self.types = evaluator.rule_set.read_types()

    def __call__(self, uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Json | None) -> None:
        if stored.res_type == "RiskAssessment":
            follow_flag(uow, write_path, stored)
            return
        if stored.res_type not in self.types:
            return
        resource = None if stored.deleted else stored.json()
        if not (self.evaluator.relevant(resource) or self.evaluator.relevant(previous)):
            return  # nothing a rule reads: the outcome cannot change
        for reference in dict.fromkeys(patients_of(resource) + patients_of(previous)):
            patient = uow.repository.current("Patient", reference.split("/", 1)[1])
            if patient is not None and not patient.deleted:
                assess(uow, write_path, self.evaluator, patient)


def follow_flag(uow: UnitOfWork, write_path: WritePath, stored: Stored) -> None:
    """The Flag an assessment of the gateway's shows: active and tagged `proposed` while preliminary,
    active when final, inactive when cancelled."""
    if stored.deleted:
        return
    assessment = stored.json()
    identifiers = [i for i in assessment.get("identifier") or [] if isinstance(i, dict)]
    patient_id = next((str(i.get("value")) for i in identifiers if i.get("system") == ASSESSMENT_ID), None)
    if patient_id is None:
        return
    _, flag = current_of(uow, patient_id)
    current = flag.json() if flag is not None and not flag.deleted else None
    status = str(assessment.get("status"))
    if current is None and status not in ("preliminary", "final"):
        return
    wanted = flag_for(patient_id, stored.res_id, fired_names(assessment), status, current)
    write_flag(uow, write_path, wanted, current)


def evaluator_for(svc: Services, rule_set: RuleSet) -> Evaluator:
    return Evaluator(rule_set, svc.settings.profiles_dir, ZoneInfo(svc.settings.local_timezone))


def risk_pass(
    svc: Services, patient_id: str | None = None, context: RequestContext = PASS_CONTEXT
) -> dict[str, int]:
    """Evaluate the rules for one patient, or every patient (in batches of PASS_BATCH, one transaction
    each), as `context` (one of the gateway's exempt writers: the CLI's, the scheduler's): what was done,
    counted (`proposed`, `updated`, `withdrawn`, `unchanged`, `none`)."""
    from gateway.risk.rules import load

    evaluator = evaluator_for(svc, load())
    counts: dict[str, int] = {}
    after = 0
    while True:

        def work(uow: UnitOfWork, after: int = after) -> list[int]:
            query = select(R.c.rid, R.c.res_id).where(
                R.c.res_type == "Patient", R.c.deleted == false(), R.c.rid > after
            )
            if patient_id is not None:
                query = query.where(R.c.res_id == patient_id)
            rows = list(uow.connection.execute(query.order_by(R.c.rid).limit(PASS_BATCH)))
            for stored in uow.repository.current_many([int(r[0]) for r in rows]):
                done = assess(uow, svc.write_path, evaluator, stored)
                counts[done] = counts.get(done, 0) + 1
            return [int(r[0]) for r in rows]

        rids = svc.write_path.run(context, work, True)
        if len(rids) < PASS_BATCH:
            return counts
        after = rids[-1]
