"""SIP (samordnad individuell plan): a CarePlan of category SIP becomes active only with the patient's
consent on record: an active Consent whose provision.data refers to the CarePlan."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table, and_, false, select

from gateway.errors import unprocessable
from gateway.hooks import Rule
from gateway.model.types import Json, loads
from gateway.pipeline import UnitOfWork
from gateway.store.tables import ReferenceIndex, Resource

CAREPLAN_CATEGORY = "https://fhir.home-device-gateway.se/CodeSystem/careplan-category"
REF = cast(Table, ReferenceIndex.__table__)
RES = cast(Table, Resource.__table__)


def referring(uow: UnitOfWork, res_type: str, param: str, target_type: str, target_id: str) -> list[Json]:
    """Current resources of `res_type` whose search parameter `param` refers to target_type/target_id."""
    statement = (
        select(RES.c.content)
        .join(REF, REF.c.rid == RES.c.rid)
        .where(
            and_(
                REF.c.res_type == res_type,
                REF.c.param == param,
                REF.c.target_type == target_type,
                REF.c.target_id == target_id,
                RES.c.deleted == false(),
            )
        )
        .limit(100)
    )
    return [loads(row[0]) for row in uow.connection.execute(statement)]


def is_sip(resource: Json) -> bool:
    return any(
        coding.get("system") == CAREPLAN_CATEGORY and coding.get("code") == "sip"
        for category in resource.get("category") or []
        for coding in category.get("coding") or []
    )


def active_only_with_consent(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
    if resource.get("resourceType") != "CarePlan" or action == "delete" or not is_sip(resource):
        return resource
    if resource.get("status") != "active" or (current or {}).get("status") == "active":
        return resource
    consents = referring(uow, "Consent", "data", "CarePlan", str(resource.get("id")))
    if not any(c.get("status") == "active" for c in consents):
        raise unprocessable(
            "A SIP becomes active only with the patient's consent on record: no active Consent has "
            f"provision.data referring to CarePlan/{resource.get('id')}",
            "CarePlan.status",
        )
    return resource


RULES: list[Rule] = [active_only_with_consent]
