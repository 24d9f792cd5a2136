"""`GET [base]/Patient/{id}/$device-list` (profiles/OperationDefinition-device-list.json): the patient's
device list (hjälpmedelsförteckning, issue 19) as one searchset Bundle (the List first, `match`, then what
it needs, `include`), or with `_format=html` (or an Accept preferring text/html) as a printable Swedish
page. A patient the reader may not see answers 404 as an unknown one. One AuditEvent names the patient and
every resource shown (docs/security.md, named exception "the device list")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from uuid import uuid4

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from gateway.errors import not_acceptable, not_found
from gateway.fhir.context import run, services
from gateway.fhir.http import fhir_response
from gateway.hooks import AccessRecord
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.schedule import clock
from gateway.schedule.control import next_controls
from gateway.schedule.follow_up import next_follow_ups
from gateway.search.dates import to_instant, utc_now
from gateway.security.scopes import grants
from gateway.services import Services
from gateway.workflow.device_list import Gathered, gather
from gateway.workflow.device_list_render import narrative, page
from gateway.workflow.device_list_view import View, view

OPERATION = "device-list"
DEFINITION = "https://fhir.home-device-gateway.se/OperationDefinition/device-list"
LIST_CODE = {
    "coding": [{"system": "http://loinc.org", "code": "46264-8", "display": "History of medical device use"}],
    "text": "Hjälpmedelsförteckning",
}
EMPTY_REASON = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
HTML_FORMATS = {"html", "text/html"}
JSON_FORMATS = {"json", "application/json", "application/fhir+json"}
AUDIT_DETAIL = "device list of the patient (named exception: the device list)"


def wants_html(request: Request) -> bool:
    """`_format=html`, or an Accept whose first (highest-q) type is text/html; other formats but JSON 406."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        kind = fmt.split(";")[0].strip().lower()
        if kind in HTML_FORMATS:
            return True
        if kind in JSON_FORMATS:
            return False
        raise not_acceptable(f"_format={fmt} is not supported here; use json or html")
    accept = request.headers.get("accept", "")
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(accept.split(",")):
        kind, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if kind.strip():
            ranked.append((-quality, index, kind.strip().lower()))
    ranked.sort()
    for quality, _, kind in ranked:
        if quality == 0:
            break
        if kind == "text/html":
            return True
        if kind in ("*/*", "application/*") or kind in JSON_FORMATS or kind.endswith("+json"):
            return False
    if ranked:
        raise not_acceptable(f"Cannot answer in {accept}; ask for application/fhir+json or text/html")
    return False


@dataclass
class Answer:
    found: Gathered
    shown: View
    bundle: Json


def _bundle(found: Gathered, shown: View, base: str) -> Json:
    now = to_instant(utc_now())
    patient = f"Patient/{found.patient.res_id}"
    entries = []
    for stored in found.items:
        entries.append({"item": {"reference": f"{stored.res_type}/{stored.res_id}"}})
    listed: Json = {
        "resourceType": "List",
        "id": str(uuid4()),
        "meta": {"lastUpdated": now},
        "text": {"status": "generated", "div": narrative(shown)},
        "status": "current",
        "mode": "snapshot",
        "title": "Hjälpmedelsförteckning",
        "code": LIST_CODE,
        "subject": {"reference": patient},
        "date": now,
        "entry": entries,
    }
    if not entries:
        listed["emptyReason"] = {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "nilknown"}
            ],
            "text": "Inga hjälpmedel i hemmet är kända",
        }
    result = [{"fullUrl": f"urn:uuid:{listed['id']}", "resource": listed, "search": {"mode": "match"}}]
    for key in found.included:
        result.append(
            {"fullUrl": f"{base}/{key}", "resource": found.by_key[key], "search": {"mode": "include"}}
        )
    return {
        "resourceType": "Bundle",
        "id": str(uuid4()),
        "meta": {"lastUpdated": now},
        "type": "searchset",
        "total": 1,
        "link": [{"relation": "self", "url": f"{base}/{patient}/${OPERATION}"}],
        "entry": result,
    }


def _dates(svc: Services, found: Gathered, patient: str) -> list[str]:
    """Set each item's next follow-up and control date as the scheduler plans them (read as the gateway:
    the named exception), with the scheduler's clock; what they were read from, for the audit."""
    now = clock.now(svc.settings)
    item_of = {line: item for item, lines in found.requests_of.items() for line in lines}
    follow_ups: dict[str, tuple[date, list[str]]] = {}
    for line, (day, sources) in next_follow_ups(svc, patient, now).items():
        item = item_of.get(line)
        if item is not None and (item not in follow_ups or day < follow_ups[item][0]):
            follow_ups[item] = (day, sources)
    controls = {key: dated for key, dated in next_controls(svc, patient, now).items() if key in found.by_key}
    found.follow_up_of = {item: day.isoformat() for item, (day, _) in follow_ups.items()}
    found.control_of = {key: day.isoformat() for key, (day, _) in controls.items()}
    read = [source for _, sources in follow_ups.values() for source in sources]
    return read + [source for _, source in controls.values()]


async def device_list(request: Request, res_id: str) -> Response:
    svc = services(request)
    html = wants_html(request)

    def work(uow: UnitOfWork) -> Answer:
        policy = svc.hooks.policy
        visibility = policy.visibility(uow.context)
        patient = uow.repository.current_visible("Patient", res_id, visibility)
        if patient is None or patient.deleted:
            uow.records.append(AccessRecord(OPERATION, "Patient", [res_id], 404, uow.context, AUDIT_DETAIL))
            raise not_found(f"Patient/{res_id} is not known")
        # the named exception's self-care assessments: to readers whose scopes let them read Observations
        disclose = visibility.everything or grants(uow.context.principal.scopes).permits("Observation", "r")
        found = gather(uow.connection, visibility, patient, disclose)
        dated_by = _dates(svc, found, f"Patient/{patient.res_id}")
        if policy.masks:  # protected identities: shown as the reader may see them, in the page too
            found.patient_json = policy.mask(uow.context, found.patient_json)
            found.by_key = {key: policy.mask(uow.context, value) for key, value in found.by_key.items()}
        shown = view(found)
        bundle = _bundle(found, shown, uow.context.base_url)
        record = AccessRecord(OPERATION, "Patient", [res_id], 200, uow.context, AUDIT_DETAIL)
        record.patients = [f"Patient/{res_id}"]
        shown_too = [f"RiskAssessment/{a.get('id')}" for a in found.flag_details.values()]  # notes shown
        shown_too += dated_by  # the plans and Tasks the dates were read from (named exception)
        record.resources = [
            *found.included,
            *(k for k in dict.fromkeys(shown_too) if k not in found.included),
        ]
        uow.records.append(record)
        return Answer(found, shown, bundle)

    answer = await run(request, work, write=False)
    if html:
        generated = utc_now().strftime("%Y-%m-%d %H:%M UTC")
        return HTMLResponse(page(answer.shown, generated), headers={"Cache-Control": "no-store"})
    return fhir_response(answer.bundle, headers={"Cache-Control": "no-store"})
