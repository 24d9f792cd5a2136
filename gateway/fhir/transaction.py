"""transaction and batch: POST [base] with a Bundle.

A transaction is one unit of work: all entries commit together or none does. It follows the
specification's processing order (DELETE, then POST, then PUT and PATCH, then GET), assigns ids to
new resources first and rewrites every reference to an entry's `fullUrl` (`urn:uuid:…`) and every
conditional reference (`Patient?identifier=…`) before anything is written. A batch runs each entry
in a unit of work of its own and reports each entry's outcome.
"""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from uuid import uuid4

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import FhirError, Issue, bad_request, not_found, precondition_failed, too_large
from gateway.fhir.context import request_context, services
from gateway.fhir.http import entry as bundle_entry
from gateway.fhir.http import fhir_response, read_json
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.search import searchset
from gateway.hooks import RequestContext
from gateway.model.types import SUPPORTED, Json, is_valid_id, loads
from gateway.pipeline import UnitOfWork, WriteResult
from gateway.search.dates import to_instant
from gateway.services import Services
from gateway.store.repository import Stored

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


@dataclass
class Entry:
    index: int
    method: str
    url: str
    res_type: str
    res_id: str | None
    query: str | None
    resource: Json | None
    full_url: str | None
    if_none_exist: str | None
    if_match: int | None


async def transaction_or_batch(request: Request) -> Response:
    svc = services(request)
    bundle = await read_json(request)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("POST to the base takes a Bundle", "Bundle")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise bad_request(f"Bundle.type must be transaction or batch, not {kind}", "Bundle.type")
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise bad_request("Bundle.entry must be a list", "Bundle.entry")
    if len(raw_entries) > svc.settings.max_bundle_entries:
        raise too_large(
            f"The Bundle has {len(raw_entries)} entries; "
            f"this server takes at most {svc.settings.max_bundle_entries}"
        )
    context = request_context(request)
    if kind == "transaction":
        entries = [_parse_entry(i, raw) for i, raw in enumerate(raw_entries)]
        body = await _run_transaction(svc, context, entries)
    else:
        body = await _run_batch(svc, context, raw_entries)
    return fhir_response(body)


def _parse_entry(index: int, raw: Any) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise bad_request(f"{where} has no request", f"{where}.request")
    req = raw["request"]
    method, url = req.get("method"), req.get("url")
    if method not in ORDER or not isinstance(url, str) or not url:
        raise bad_request(f"{where}.request needs a method (GET, POST, PUT, PATCH, DELETE) and a url", where)
    path, _, query = url.lstrip("/").partition("?")
    parts = path.split("/")
    res_type = parts[0]
    if res_type not in SUPPORTED:
        raise bad_request(f"{where}: resource type '{res_type}' is not supported", f"{where}.request.url")
    res_id = parts[1] if len(parts) > 1 else None
    if res_id is not None and not is_valid_id(res_id):
        raise bad_request(f"{where}: '{res_id}' is not a valid id", f"{where}.request.url")
    resource = raw.get("resource")
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        raise bad_request(f"{where} ({method}) has no resource", f"{where}.resource")
    if method == "PATCH":
        resource = _patch_body(resource, where)
    if_match = req.get("ifMatch")
    version = None
    if isinstance(if_match, str):
        text = if_match.removeprefix("W/").strip('"')
        if not text.isdigit():
            raise bad_request(f'{where}.request.ifMatch must be W/"n"', f"{where}.request.ifMatch")
        version = int(text)
    return Entry(
        index,
        method,
        url,
        res_type,
        res_id,
        query or None,
        copy.deepcopy(resource),
        raw.get("fullUrl"),
        req.get("ifNoneExist"),
        version,
    )


def _patch_body(resource: Any, where: str) -> Json:
    """PATCH entries carry the JSON Patch as a Binary (the spec's way for JSON Patch in Bundles)."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary" and "data" in resource:
        try:
            return {"patch": loads(base64.b64decode(resource["data"]))}
        except ValueError as error:
            raise bad_request(f"{where}: the Binary does not hold a JSON Patch: {error}", where) from error
    raise bad_request(
        f"{where}: a PATCH entry carries its JSON Patch as a Binary resource", f"{where}.resource"
    )


async def _run_transaction(svc: Services, context: RequestContext, entries: list[Entry]) -> Json:
    def work(uow: UnitOfWork) -> list[Json]:
        return _transaction(svc, uow, entries)

    responses = await run_in_threadpool(svc.write_path.run, context, work, True)
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}


def _transaction(svc: Services, uow: UnitOfWork, entries: list[Entry]) -> list[Json]:
    ids: dict[str, str] = {}  # fullUrl → Type/id
    planned: dict[int, str] = {}  # entry index → id to use (POST new, conditional PUT)
    matched: dict[int, Stored] = {}  # POST whose If-None-Exist found a resource
    for e in entries:
        try:
            _plan(svc, uow, e, planned, matched)
        except FhirError as error:
            raise _at(error, e) from error
        target = planned.get(e.index, e.res_id)
        if e.full_url and target:
            ids[e.full_url] = f"{e.res_type}/{target}"
    for e in entries:
        if e.resource is not None and e.method in ("POST", "PUT"):
            try:
                e.resource = _rewrite(svc, uow, e.resource, ids)
            except FhirError as error:
                raise _at(error, e) from error
    responses: list[Json] = [{} for _ in entries]
    for e in sorted(entries, key=lambda x: (ORDER[x.method], x.index)):
        try:
            responses[e.index] = _execute(svc, uow, e, planned, matched)
        except FhirError as error:
            raise _at(error, e) from error
    return responses


def _plan(
    svc: Services, uow: UnitOfWork, e: Entry, planned: dict[int, str], matched: dict[int, Stored]
) -> None:
    """Decide the id each POST and conditional PUT will write to, before any reference is rewritten."""
    if e.method == "POST":
        if e.if_none_exist:
            found = svc.searcher.match(uow.connection, e.res_type, e.if_none_exist)
            if len(found) > 1:
                raise precondition_failed(
                    f"ifNoneExist '{e.if_none_exist}' matches more than one {e.res_type}"
                )
            if found:
                matched[e.index] = found[0]
                planned[e.index] = found[0].res_id
        planned.setdefault(e.index, str(uuid4()))
    elif e.method == "PUT" and e.res_id is None:
        found = svc.searcher.match(uow.connection, e.res_type, e.query or "")
        if len(found) > 1:
            raise precondition_failed(f"The condition '{e.query}' matches more than one {e.res_type}")
        body_id = (e.resource or {}).get("id")
        planned[e.index] = found[0].res_id if found else (body_id or str(uuid4()))


def _at(error: FhirError, e: Entry) -> FhirError:
    where = f"Bundle.entry[{e.index}]"
    issues = [
        Issue(i.severity, i.code, f"{where} ({e.method} {e.url}): {i.diagnostics}", i.expression or (where,))
        for i in error.issues
    ]
    return FhirError(error.status, issues, error.headers)


def _rewrite(svc: Services, uow: UnitOfWork, node: Any, ids: dict[str, str]) -> Any:
    if isinstance(node, list):
        return [_rewrite(svc, uow, item, ids) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: _rewrite(svc, uow, value, ids) for key, value in node.items()}
    reference = result.get("reference")
    if isinstance(reference, str):
        if reference in ids:
            result["reference"] = ids[reference]
        elif reference.startswith("urn:uuid:") or reference.startswith("urn:oid:"):
            raise bad_request(f"The reference '{reference}' matches no fullUrl in the Bundle")
        elif "?" in reference and reference.split("?")[0] in SUPPORTED:
            res_type, _, query = reference.partition("?")
            found = svc.searcher.match(uow.connection, res_type, query)
            if len(found) != 1:
                what = "no" if not found else "more than one"
                raise precondition_failed(
                    f"The conditional reference '{reference}' matches {what} {res_type}"
                )
            result["reference"] = f"{res_type}/{found[0].res_id}"
    return result


def _response(result: WriteResult | None, stored: Stored | None, status: int) -> Json:
    item: Json = {"status": STATUS_TEXT.get(status, str(status))}
    if stored is not None:
        item["location"] = f"{stored.res_type}/{stored.res_id}/_history/{stored.version_id}"
        item["etag"] = f'W/"{stored.version_id}"'
        item["lastModified"] = to_instant(stored.last_updated)
    return item


def _execute(
    svc: Services, uow: UnitOfWork, e: Entry, planned: dict[int, str], matched: dict[int, Stored]
) -> Json:
    write_path = svc.write_path
    base = uow.context.base_url
    if e.method == "DELETE":
        if e.res_id is None:
            raise bad_request("Conditional delete is not supported")
        stored = write_path.delete(uow, e.res_type, e.res_id)
        return {"response": _response(None, stored, 204 if stored is None else 200)}
    if e.method == "POST":
        if e.index in matched:
            found = matched[e.index]
            return {**bundle_entry(base, found), "response": _response(None, found, 200)}
        result = write_path.create(uow, e.resource, new_id=planned[e.index])
    elif e.method == "PUT":
        res_id = e.res_id or planned[e.index]
        body = dict(e.resource or {})
        if e.res_id is None:
            body["id"] = res_id
        result = write_path.update(uow, e.res_type, res_id, body, e.if_match)
    elif e.method == "PATCH":
        if e.res_id is None:
            raise bad_request("Conditional patch is not supported")
        result = write_path.patch(uow, e.res_type, e.res_id, (e.resource or {})["patch"], e.if_match)
    else:
        return _get(svc, uow, e)
    return {**bundle_entry(base, result.stored), "response": _response(result, result.stored, result.status)}


def _get(svc: Services, uow: UnitOfWork, e: Entry) -> Json:
    base = uow.context.base_url
    parts = urlsplit(e.url).path.lstrip("/").split("/")
    if e.res_id is None:
        search = svc.searcher.parse(e.res_type, parse_qsl(e.query or "", keep_blank_values=True))
        page = svc.searcher.search(uow.connection, search)
        policy = svc.hooks.policy
        page.matches = [m for m in page.matches if policy.can_read(uow.context, m.json())]
        page.included = [i for i in page.included if policy.can_read(uow.context, i.json())]
        return {"resource": searchset(base, e.res_type, search, page), "response": {"status": "200 OK"}}
    if len(parts) == 4 and parts[2] == "_history" and parts[3].isdigit():
        stored = uow.repository.version(e.res_type, e.res_id, int(parts[3]))
        if stored is None or not svc.hooks.policy.can_read(uow.context, stored.json()):
            raise not_found(f"{e.url} is not known")
    else:
        stored = svc.write_path.read(uow, e.res_type, e.res_id)
    return {**bundle_entry(base, stored), "response": _response(None, stored, 200)}


async def _run_batch(svc: Services, context: RequestContext, raw_entries: list[Any]) -> Json:
    responses: list[Json] = []
    for index, raw in enumerate(raw_entries):
        try:
            e = _parse_entry(index, raw)
            if e.resource is not None and e.method in ("POST", "PUT"):
                for value in _references(e.resource):
                    if value.startswith("urn:uuid:"):
                        raise bad_request(f"Batch entries cannot refer to each other ('{value}')")

            def work(uow: UnitOfWork, e: Entry = e) -> Json:
                planned: dict[int, str] = {}
                matched: dict[int, Stored] = {}
                _plan(svc, uow, e, planned, matched)
                if e.resource is not None and e.method in ("POST", "PUT"):
                    e.resource = _rewrite(svc, uow, e.resource, {})
                return _execute(svc, uow, e, planned, matched)

            responses.append(await run_in_threadpool(svc.write_path.run, context, work, _writes(raw)))
        except FhirError as error:
            responses.append(
                {
                    "response": {
                        "status": str(error.status),
                        "outcome": operation_outcome(error.issues),
                    }
                }
            )
    return {"resourceType": "Bundle", "type": "batch-response", "entry": responses}


def _writes(raw: Any) -> bool:
    method = raw.get("request", {}).get("method") if isinstance(raw, dict) else None
    return method not in ("GET", "HEAD")


def _references(node: Any) -> list[str]:
    if isinstance(node, list):
        return [ref for item in node for ref in _references(item)]
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [ref for value in node.values() for ref in _references(value)]
    return []
