"""One entry of a transaction or batch carried out in a unit of work: its write (create, update,
patch, delete), read, vread or search, and its response entry (status, location, etag; the resource as
the client may see it)."""

from __future__ import annotations

from http import HTTPStatus
from urllib.parse import parse_qsl

from gateway.errors import bad_request, gone, not_found
from gateway.fhir.bundle_entries import Entry
from gateway.fhir.search import searchset, visible_page
from gateway.fhir.transaction_plan import Plan, rewrite
from gateway.fhir.view import View
from gateway.hooks import AccessRecord, patients_of
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.search.dates import to_instant
from gateway.services import Services
from gateway.store.repository import Stored


def status_text(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _response(stored: Stored | None, status: int) -> Json:
    item: Json = {"status": status_text(status)}
    if stored is not None:
        item["location"] = f"{stored.res_type}/{stored.res_id}/_history/{stored.version_id}"
        item["etag"] = f'W/"{stored.version_id}"'
        item["lastModified"] = to_instant(stored.last_updated)
    return item


def execute_entry(svc: Services, uow: UnitOfWork, e: Entry, plan: Plan, bodies: bool = True) -> Json:
    """One entry's response; a resource in it is shown as the client may see it (masked). Without
    `bodies`, a write's response has no resource."""
    write_path = svc.write_path
    base = uow.context.base_url
    view = View(svc.hooks.policy, uow.context)

    def answer(stored: Stored, status: int) -> Json:
        shown = view.entry(base, stored) if bodies else {}
        return {**shown, "response": _response(stored, status)}

    if e.method == "DELETE":
        if e.res_id is None:
            raise bad_request("Conditional delete is not supported")
        stored = write_path.delete(uow, e.res_type, e.res_id)
        return {"response": _response(stored, 204 if stored is None else 200)}
    if e.method in ("GET", "HEAD"):
        return _get(svc, uow, e)
    if e.method == "POST" and (e.index in plan.matched or e.index in plan.aliases):
        found = plan.matched.get(e.index) or uow.repository.current(e.res_type, plan.targets[e.index])
        assert found is not None  # the earlier entry created it
        return answer(found, 200)
    body = rewrite(svc, uow, e.resource, plan)
    if e.method == "POST":  # validated before the unit of work (`validate_entries`)
        result = write_path.create(uow, body, new_id=plan.targets[e.index], checked=True, indexed=e.indexed)
    elif e.method == "PUT":
        res_id = e.res_id or plan.targets[e.index]
        if e.res_id is None:
            body["id"] = res_id
        result = write_path.update(uow, e.res_type, res_id, body, e.if_match, checked=True, indexed=e.indexed)
    else:
        res_id = e.res_id or plan.targets[e.index]
        result = write_path.patch(uow, e.res_type, res_id, body["patch"], e.if_match)
    return answer(result.stored, result.status)


def _get(svc: Services, uow: UnitOfWork, e: Entry) -> Json:
    base = uow.context.base_url
    policy = svc.hooks.policy
    view = View(policy, uow.context)
    if e.res_id is None:
        search = svc.searcher.parse(e.res_type, parse_qsl(e.query or "", keep_blank_values=True))
        page = visible_page(svc, uow, e.res_type, search)
        bundle = searchset(base, e.res_type, search, page, view)
        return {"resource": bundle, "response": {"status": status_text(200)}}
    if e.version is not None:
        visibility = policy.visibility(uow.context)
        current = uow.repository.current_visible(e.res_type, e.res_id, visibility)
        known = current is not None and e.version > 0
        stored = uow.repository.version(e.res_type, e.res_id, e.version) if known else None
        record = AccessRecord("vread", e.res_type, [e.res_id], 200, uow.context)
        if stored is None or stored.deleted:
            record.status = 404 if stored is None else 410
            uow.records.append(record)  # audited as what it is, also inside a batch
            raise (
                not_found(f"{e.url} is not known")
                if stored is None
                else gone(f"{e.url} is a deleted version")
            )
        record.patients = patients_of(stored.json())
        uow.records.append(record)
    else:
        stored = svc.write_path.read(uow, e.res_type, e.res_id)
    return {**view.entry(base, stored), "response": _response(stored, 200)}
