"""The AuditEvent of an AccessRecord: FHIR R4 AuditEvent in the manner of IHE Basic Audit Log Patterns
(docs/security.md, Audit)."""

from __future__ import annotations

import base64
from datetime import datetime

from gateway.errors import FhirError, Issue
from gateway.hooks import AccessRecord, Principal
from gateway.model.types import Json
from gateway.search.dates import to_instant
from gateway.security import purpose

AUDIT_TYPE = "AuditEvent"
HSA = "urn:oid:1.2.752.29.4.19"
CLIENT_SYSTEM = "urn:gateway:client-id"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
GATEWAY_EVENTS = "urn:gateway:audit-event"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACTIONS = {
    "create": "C",
    "import": "C",
    "read": "R",
    "vread": "R",
    "history": "R",
    "device-list": "R",  # Patient/{id}/$device-list: a read of the patient's device list
    "update": "U",
    "patch": "U",
    "delete": "D",
}
REST_CODES = {"read", "vread", "update", "patch", "delete", "history", "create", "search"}


def audit_unavailable() -> FhirError:
    return FhirError(
        503,
        [Issue("error", "transient", "The audit log cannot take more records now; the request was refused")],
        {"Retry-After": "1"},
    )


def action_of(record: AccessRecord) -> str:
    if record.interaction == "update" and record.status == 201:
        return "C"
    return ACTIONS.get(record.interaction, "E")  # search, transaction, refused requests: execute


def outcome_of(status: int) -> str:
    return "0" if status < 400 else "4" if status < 500 else "8"


def _query(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _client_id(client_id: str) -> Json:
    return {"identifier": {"system": CLIENT_SYSTEM, "value": client_id}}


def _agents(principal: Principal, source_address: str | None) -> list[Json]:
    """The client who asked (the requestor unless a person is named), its organisation, its person."""
    client: Json = {
        "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}]},
        "who": _client_id(principal.client_id),
        "altId": principal.client_id,
        "name": principal.client_id,
        "requestor": principal.person is None,
    }
    if source_address:
        client["network"] = {"address": source_address, "type": "2"}
    agents = [client]
    for hsa, requestor in ((principal.organization, False), (principal.person, True)):
        if hsa:
            agents.append(
                {"who": {"identifier": {"system": HSA, "value": hsa}}, "altId": hsa, "requestor": requestor}
            )
    return agents


def _performer(principal: Principal) -> Json:
    """The gateway itself, when it wrote on behalf of the requestor (a workflow reaction): an agent that
    performed the event without initiating it."""
    return {
        "type": {"coding": [{"system": PARTICIPATION, "code": "PRF", "display": "performer"}]},
        "who": _client_id(principal.client_id),
        "altId": principal.client_id,
        "name": principal.client_id,
        "requestor": False,
    }


def audit_event(record: AccessRecord, recorded: datetime) -> Json:
    """The AuditEvent of one AccessRecord (FHIR R4, in the manner of IHE Basic Audit Log Patterns)."""
    context = record.context
    code = record.interaction
    subtype = {"system": INTERACTION if code in REST_CODES else GATEWAY_EVENTS, "code": code}
    agents = _agents(context.requestor, context.source_address)
    if context.on_behalf_of is not None:
        agents.append(_performer(context.principal))
    entities: list[Json] = [
        {
            "what": {"reference": patient},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        }
        for patient in record.patients
    ]
    references = [f"{record.res_type}/{res_id}" for res_id in record.res_ids] + record.resources
    references = [
        f"{ref}/_history/{record.versions[ref]}" if ref in record.versions else ref for ref in references
    ]
    for reference in dict.fromkeys(references):
        if reference.startswith("Patient/") and reference in record.patients:
            continue
        entities.append(
            {
                "what": {"reference": reference},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    if context.query:
        query: Json = {
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
            "query": _query(context.query),
            "description": context.query[:1000],
        }
        if record.res_type:
            query["name"] = record.res_type
        entities.append(query)
    event: Json = {
        "resourceType": AUDIT_TYPE,
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [subtype],
        "action": action_of(record),
        "recorded": to_instant(recorded),
        "outcome": outcome_of(record.status),
        "outcomeDesc": f"{record.status}" + (f" {record.detail}" if record.detail else ""),
        "purposeOfEvent": [purpose.coding(context.requestor.purpose)],
        "agent": agents,
        "source": {
            "site": context.base_url or "gateway",
            "observer": {"display": "fhir-home-device-gateway"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if entities:
        event["entity"] = entities
    return event
