"""When the rules are evaluated: on every write of what they read (a reaction, in the write's transaction,
as the gateway), for the patients the written resource concerns; and in a pass over every patient
(`risk_pass`: `gateway risk evaluate`, and the scheduler's pass once it exists). A write of one of the
gateway's RiskAssessments (its own, or a clinician's confirmation or dismissal) makes the patient's
Flag follow it."""

from __future__ import annotations

from collections.abc import Callable, Collection
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
    svc: Services,
    patient_id: str | None = None,
    context: RequestContext = PASS_CONTEXT,
    patients: Collection[str] | None = None,
    going: Callable[[], bool] | None = None,
) -> dict[str, int]:
    """Evaluate the rules for one patient, for the `patients` named (ids), or for every patient; in
    batches of PASS_BATCH, one transaction each, the gateway writing on behalf of `context` (one of its
    exempt writers: the CLI's, the scheduler's): what was done, counted (`proposed`, `updated`,
    `withdrawn`, `unchanged`, `none`). `going` is asked after each batch (the scheduler's lease): False
    stops the pass."""
    from gateway.risk.rules import load

    evaluator = evaluator_for(svc, load())
    acting = context.for_reaction()  # the gateway writes its assessments, on behalf of the CLI or scheduler
    counts: dict[str, int] = {}
    named = (
        None
        if patients is None and patient_id is None
        else sorted({*(patients or ()), *([patient_id] if patient_id else [])})
    )

    def batch(after: int, ids: list[str] | None) -> list[int]:
        def work(uow: UnitOfWork) -> list[int]:
            query = select(R.c.rid).where(R.c.res_type == "Patient", R.c.deleted == false(), R.c.rid > after)
            if ids is not None:
                query = query.where(R.c.res_id.in_(ids))
            rids = [int(row[0]) for row in uow.connection.execute(query.order_by(R.c.rid).limit(PASS_BATCH))]
            for stored in uow.repository.current_many(rids):
                done = assess(uow, svc.write_path, evaluator, stored)
                counts[done] = counts.get(done, 0) + 1
            return rids

        found: list[int] = svc.write_path.run(acting, work, True)
        return found

    if named is not None:
        for start in range(0, len(named), PASS_BATCH):
            batch(0, named[start : start + PASS_BATCH])
            if going is not None and not going():
                break
        return counts
    after = 0
    while True:
        rids = batch(after, None)
        if len(rids) < PASS_BATCH or (going is not None and not going()):
            return counts
        after = rids[-1]
