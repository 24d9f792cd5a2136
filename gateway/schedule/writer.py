"""How the jobs write: through the write path, as the reserved principal `gateway:scheduler` (no token
can present it and no client can be registered under it: `gateway.hooks.internal_client`), acting for
the Organization whose plan it is. Its AuditEvents name the scheduler first, then that organisation
(`agent[0]`, `agent[1]`); its Provenances name the gateway as performer on behalf of the Organization.

A scheduled Task's id is deterministic: an HMAC (gateway.adapters.ids, the installation's secret) of the
job, the plan item and the occurrence number, so every pass, process and restart computes the same ids
and writes a Task that exists already never again."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TypeVar
from uuid import uuid4

from gateway.adapters.ids import SourceIds
from gateway.config import Settings
from gateway.errors import FhirError
from gateway.hooks import SCHEDULER_CLIENT, Principal, RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.search.dates import to_instant
from gateway.security.scopes import GATEWAY_SCOPES
from gateway.services import Services
from gateway.store.repository import Repository
from gateway.workflow.orders import gateway_agent_for

T = TypeVar("T")
log = logging.getLogger("gateway.schedule")
HSA = "urn:oid:1.2.752.29.4.19"
BASE = "https://fhir.home-device-gateway.se"
TASK_CODES = f"{BASE}/CodeSystem/task-code"
BUSINESS_STATUS = f"{BASE}/CodeSystem/task-business-status"
ALL_SCOPES = frozenset({"system/*.cruds", *GATEWAY_SCOPES})


@dataclass
class Tally:
    """What a job did in a pass."""

    created: int = 0
    updated: int = 0
    reports: int = 0
    cancelled: int = 0
    seen: int = 0
    errors: list[str] = field(default_factory=list)

    def total(self) -> int:
        return self.created + self.updated + self.reports + self.cancelled


def local(reference: object) -> str:
    """`Type/id` of a relative (or versioned, or absolute) reference, else ""."""
    parts = [p for p in str(reference or "").split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return "/".join(parts[-2:]) if len(parts) >= 2 else ""


def _hsa(resource: Json) -> str | None:
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") == HSA and identifier.get("value"):
            return str(identifier["value"])
    return None


def organisation_of(repository: Repository, reference: object) -> tuple[Json | None, str | None]:
    """The Organization a unit reference belongs to (itself, a HealthcareService's providedBy, a
    PractitionerRole's organization) as a reference, and its HSA-id."""
    key = local(reference)
    for _ in range(2):
        if "/" not in key:
            return None, None
        res_type, res_id = key.split("/", 1)
        stored = repository.current(res_type, res_id)
        if stored is None or stored.deleted:
            return ({"reference": key} if res_type == "Organization" else None), None
        resource = stored.json()
        if res_type == "Organization":
            return {"reference": key}, _hsa(resource)
        inner = resource.get("providedBy") or resource.get("organization")
        key = local((inner or {}).get("reference"))
    return None, None


def context_for(hsa: str | None) -> RequestContext:
    """The scheduler acting for the organisation with this HSA-id (none: the scheduler alone)."""
    return RequestContext(
        principal=Principal(client_id=SCHEDULER_CLIENT, organization=hsa, scopes=ALL_SCOPES)
    )


@lru_cache(maxsize=8)
def _ids(settings: Settings) -> SourceIds:
    return SourceIds.of(settings)  # reads the key secret (a file in development): once a process


def task_id(services: Services, job: str, *key: str) -> str:
    """The deterministic id of a job's Task (or report) for this plan item and occurrence."""
    return _ids(services.settings).id(SCHEDULER_CLIENT, job, *key)


class Refusals:
    """How many scheduled writes this process had refused: a pass with one is not complete (the next
    pass must look at everything again, gateway/schedule/changes.py)."""

    count = 0


def write_for(services: Services, owner: object, work: Callable[[UnitOfWork, Json | None], T]) -> T | None:
    """Run `work` in one unit of work of the write path, as the scheduler acting for the Organization
    `owner` belongs to (passed to `work` as a reference, for the Provenance). A write the write path
    refuses (a plan whose Task would not validate) is logged and skipped: one bad plan item never stops
    the others; the next pass tries it again."""
    with services.engine.connect() as connection:
        unit = owner.get("reference") if isinstance(owner, dict) else owner
        organisation, hsa = organisation_of(Repository(connection), unit)
    try:
        return services.write_path.run(context_for(hsa), lambda uow: work(uow, organisation))
    except FhirError as error:
        log.warning("a scheduled write for %s was refused: %s %s", unit, error.status, error)
        Refusals.count += 1
        return None


def provenance(uow: UnitOfWork, targets: list[str], organisation: Json | None, reason: str) -> Json:
    """The Provenance of a job's writes (`Type/id/_history/n` each)."""
    agent = gateway_agent_for(uow.context, organisation or {"display": "okänd organisation"})
    if organisation is None:
        agent.pop("onBehalfOf")
    return {
        "resourceType": "Provenance",
        "id": str(uuid4()),
        "target": [{"reference": ref} for ref in targets],
        "recorded": to_instant(uow.now),
        "reason": [{"text": reason}],
        "activity": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE"}]
        },
        "agent": [agent],
    }


def coded(system: str, code: str, display: str) -> Json:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def has_code(concept: object, system: str, code: str) -> bool:
    codings = (concept or {}).get("coding") if isinstance(concept, dict) else None
    return any(
        isinstance(c, dict) and c.get("system") == system and c.get("code") == code for c in codings or []
    )
