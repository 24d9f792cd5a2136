"""transaction and batch: POST [base] with a Bundle.

A transaction is one unit of work: all entries commit together or none does, and an error names the
entry (`Bundle.entry[i]`). It follows the specification's processing order (DELETE, then POST, then
PUT and PATCH, then GET). After the DELETEs it decides the id of every entry that creates or changes a
resource (conditional creates and updates included, and refuses two entries changing the same one),
so that each reference to an entry's `fullUrl` (`urn:uuid:…`) becomes `Type/id`. Conditional
references (`Patient?identifier=…`) are resolved as each entry is written: against the database as
the transaction has left it so far, or else to the resource another entry creates or updates under
the very same condition. A batch runs each entry in a unit of work of its own and reports each
entry's outcome; its entries cannot refer to each other.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import parse_qsl
from uuid import uuid4

from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import (
    FhirError,
    Issue,
    bad_request,
    gone,
    not_found,
    precondition_failed,
    too_large,
)
from gateway.fhir.context import request_context, services
from gateway.fhir.http import fhir_response, read_json
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.search import searchset, visible_page
from gateway.fhir.view import View
from gateway.hooks import AccessRecord, RequestContext, patients_of
from gateway.limits import budget, numbers
from gateway.limits.depth import check_depth
from gateway.model.types import SUPPORTED, Json, is_valid_id, loads
from gateway.model.validate import validate
from gateway.pipeline import AUDIT_EVENT, Conflict, IdentifierTaken, UnitOfWork
from gateway.search.dates import to_instant
from gateway.search.extract import IndexRows
from gateway.services import Services
from gateway.store.repository import StaleVersion, Stored

T = TypeVar("T")

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


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
    version: int | None = None  # GET [type]/[id]/_history/[vid]
    # Its resource's index rows but the references' (which the transaction rewrites), extracted with
    # its validation before the unit of work.
    indexed: IndexRows | None = None


@dataclass
class Plan:
    """What a transaction decided before writing: the id each entry acts on and what it stands for."""

    ids: dict[str, str] = field(default_factory=dict)  # fullUrl → Type/id
    targets: dict[int, str] = field(default_factory=dict)  # entry index → id it creates or changes
    matched: dict[int, Stored] = field(default_factory=dict)  # POST whose ifNoneExist found a resource
    aliases: dict[int, int] = field(default_factory=dict)  # POST whose ifNoneExist an earlier POST makes
    conditions: dict[tuple[str, tuple[tuple[str, str], ...]], str] = field(default_factory=dict)


def _status(code: int) -> str:
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


async def transaction_or_batch(request: Request) -> Response:
    bundle = await read_json(request)
    return fhir_response(await process_bundle(services(request), request_context(request), bundle))


async def process_bundle(svc: Services, context: RequestContext, bundle: Any, bodies: bool = True) -> Json:
    """Process a transaction or batch Bundle as POST [base] does and give the response Bundle. A failed
    transaction raises FhirError (nothing is stored); a batch reports each entry's outcome. Without
    `bodies`, a transaction's responses carry no resources (status, location and etag only)."""
    kind, raw_entries = _checked(svc, bundle)
    if kind == "batch":
        return await _run_batch(svc, context, raw_entries)
    return await run_in_threadpool(_run_transaction, svc, context, raw_entries, bodies)


def run_transaction(svc: Services, context: RequestContext, bundle: Any) -> Json:
    """A transaction Bundle processed on the calling thread: the adapters' entrance, which already runs
    an input's reads and its write on one worker thread (one hand-over per input, not one per step).
    The responses name what was written (status, location, etag) without the resources themselves."""
    kind, raw_entries = _checked(svc, bundle)
    if kind != "transaction":
        raise bad_request("The adapters write transaction Bundles only", "Bundle.type")
    return _run_transaction(svc, context, raw_entries, bodies=False)


def run_transactions(svc: Services, context: RequestContext, bundles: list[Json]) -> list[Json]:
    """Transaction Bundles (one per source record: the adapters' bulk entrance) in one unit of work, each
    in a savepoint of its own, in order; the responses of those stored. A Bundle that fails is undone
    (`UnitOfWork.attempt`) and neither it nor any after it is stored: the answer is then shorter than
    `bundles`, the ones before it are stored, and the caller runs the one that failed by itself
    (`run_transaction`, which answers it exactly as it would have been alone) before the rest. A Bundle
    that writes, or refers to, what an earlier one of them writes stops the group the same way before
    it runs: it was built on what was stored before that write, and is to be built again. One
    commit, one read of what is stored and one INSERT per index table for many records, instead of one
    each; the records' audit events and notifications follow the commit as for any unit of work. The
    responses name what was written (status, location, etag) without the resources themselves."""
    prepared: list[list[Entry]] = []
    written: set[str] = set()
    for bundle in bundles:
        try:
            kind, raw_entries = _checked(svc, bundle)
            entries = [_parse_entry(i, raw, svc.settings.max_json_depth) for i, raw in enumerate(raw_entries)]
            _check_full_urls(entries)
            _validate(svc, entries)
        except FhirError:
            break  # answered when it is run by itself
        writes, touches = _names(entries)
        if kind != "transaction" or touches & written:
            # One that touches what an earlier one writes was built on what was stored before that
            # write (a Patient it would create, merge or refer to): run by itself, it is built again.
            break
        written |= writes
        prepared.append(entries)
    if not prepared:
        return []

    def work(uow: UnitOfWork) -> list[list[Json]]:
        # Every Bundle's PUT targets in one query (a record's write drops what it read ahead and wrote).
        uow.read_ahead_for_write(
            (e.res_type, e.res_id) for entries in prepared for e in entries if e.method == "PUT" and e.res_id
        )
        stored: list[list[Json]] = []
        for entries in prepared:
            try:
                stored.append(uow.attempt(partial(_transaction, svc, uow, entries, bodies=False)))
            except (FhirError, IdentifierTaken, Conflict, StaleVersion, IntegrityError):
                break
        return stored

    try:
        answers = svc.write_path.run(context, work, True)
    except FhirError as error:
        if error.status != 409:
            raise
        return []  # a concurrent writer outlasted the retries; nothing is stored: each is run by itself
    return [{"resourceType": "Bundle", "type": "transaction-response", "entry": a} for a in answers]


def _names(entries: list[Entry]) -> tuple[set[str], set[str]]:
    """What a transaction's entries name: the fullUrls, ids and conditions of what they write (the
    adapters' fullUrls are derived from identifiers, so one Patient has one fullUrl in every record's
    Bundle), and all they touch: those, what they read and what they refer to."""
    writes: set[str] = set()
    touches: set[str] = set()
    for e in entries:
        named = {key for key in (e.full_url, e.res_id and f"{e.res_type}/{e.res_id}") if key}
        named |= {f"{e.res_type}?{condition}" for condition in (e.if_none_exist, e.query) if condition}
        if e.method not in ("GET", "HEAD"):
            writes |= named
        touches |= named | {_target(reference) for reference in _references(e.resource)}
    return writes, touches


def _target(reference: str) -> str:
    """A reference as `_names` names it: `Type/id` without a version; a urn or condition as it is."""
    parts = reference.split("/")
    return "/".join(parts[:2]) if len(parts) == 4 and parts[2] == "_history" else reference


def _checked(svc: Services, bundle: Any) -> tuple[str, list[Any]]:
    """The Bundle's type and entries, after the checks every entrance makes."""
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
    return kind, raw_entries


def _parse_entry(index: int, raw: Any, max_depth: int) -> Entry:
    """`max_depth`: how deep the JSON Patch of a PATCH entry may nest (GATEWAY_MAX_JSON_DEPTH)."""
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
    version = None
    if (
        len(parts) == 4
        and method in ("GET", "HEAD")
        and parts[2] == "_history"
        and numbers.is_whole(parts[3])
    ):
        version = numbers.version(parts[3]) or 0  # past the largest version: none (404), not an SQL error
    elif len(parts) > 2 or (method == "POST" and res_id is not None):
        raise bad_request(f"{where}: {method} {url} is not supported in a Bundle", f"{where}.request.url")
    resource = raw.get("resource")
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict):
            raise bad_request(f"{where} ({method}) has no resource", f"{where}.resource")
        if resource.get("resourceType") != res_type:
            raise bad_request(
                f"{where}: the resource is a {resource.get('resourceType')}, the url names {res_type}",
                f"{where}.resource.resourceType",
            )
    elif method == "PATCH":
        resource = _patch_body(resource, where, max_depth)
    else:
        resource = None
    if_match = req.get("ifMatch")
    expected = None
    if isinstance(if_match, str):
        text = if_match.removeprefix("W/").strip('"')
        if not numbers.is_whole(text):
            raise bad_request(f'{where}.request.ifMatch must be W/"n"', f"{where}.request.ifMatch")
        expected = numbers.version(text) or 0  # past the largest version: matches none (412)
    if_none_exist = req.get("ifNoneExist") if method == "POST" else None
    return Entry(
        index,
        method,
        url,
        res_type,
        res_id,
        query or None,
        resource,  # read only: `_rewrite` builds the copy that is written
        raw.get("fullUrl"),
        if_none_exist.lstrip("?") if isinstance(if_none_exist, str) and if_none_exist else None,
        expected,
        version,
    )


def _check_full_urls(entries: list[Entry]) -> None:
    seen: dict[str, int] = {}
    for e in entries:
        if e.full_url is None:
            continue
        if e.full_url in seen:
            raise bad_request(
                f"Bundle.entry[{e.index}].fullUrl '{e.full_url}' is also the fullUrl of "
                f"Bundle.entry[{seen[e.full_url]}]",
                f"Bundle.entry[{e.index}].fullUrl",
            )
        seen[e.full_url] = e.index


def _patch_body(resource: Any, where: str, max_depth: int) -> Json:
    """PATCH entries carry the JSON Patch as a Binary (the spec's way for JSON Patch in Bundles)."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary" and "data" in resource:
        try:
            operations = loads(base64.b64decode(resource["data"], validate=True))
        except (ValueError, TypeError) as error:
            raise bad_request(f"{where}: the Binary does not hold a JSON Patch: {error}", where) from error
        if not isinstance(operations, list):
            raise bad_request(f"{where}: a JSON Patch is a list of operations", f"{where}.resource.data")
        check_depth(operations, max_depth, f"{where}: the JSON Patch")
        return {"patch": operations}
    raise bad_request(
        f"{where}: a PATCH entry carries its JSON Patch as a Binary resource", f"{where}.resource"
    )


def _run_transaction(
    svc: Services, context: RequestContext, raw_entries: list[Any], bodies: bool = True
) -> Json:
    """`bodies`: the responses of writes carry the resource written (not for the adapters, which read
    only the responses' status and location)."""
    entries = [_parse_entry(i, raw, svc.settings.max_json_depth) for i, raw in enumerate(raw_entries)]
    _check_full_urls(entries)
    _validate(svc, entries)

    def work(uow: UnitOfWork) -> list[Json]:
        return _transaction(svc, uow, entries, bodies)

    responses = svc.write_path.run(context, work, True)
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}


def _in_processing_order(entries: list[Entry]) -> list[Entry]:
    """DELETE, then POST, then PUT and PATCH, then GET (R4 transaction rules), each in Bundle order."""
    return sorted(entries, key=lambda x: (ORDER[x.method], x.index))


def _validate(svc: Services, entries: list[Entry]) -> None:
    """Validate the resources the entries write, in processing order, before the unit of work: not under
    SQLite's write lock, and once however often a conflict re-runs the unit of work. Rewriting their
    references changes nothing else of them, so the write path checks only the references again, and
    extracts only the references' index rows (`Entry.indexed` holds the others')."""
    for e in _in_processing_order(entries):
        if e.method in ("POST", "PUT") and e.res_type != AUDIT_EVENT:  # AuditEvents: the write path refuses
            expected = (e.res_type, e.res_id) if e.method == "PUT" else (None, None)
            _guarded(e, partial(validate, e.resource, *expected))
            assert e.resource is not None
            e.indexed = svc.write_path.extractor.rows(e.resource, references=False)


def _transaction(svc: Services, uow: UnitOfWork, entries: list[Entry], bodies: bool = True) -> list[Json]:
    """The R4 transaction processing rules: DELETE, then POST, then PUT and PATCH, then GET; ids are
    decided (after the DELETEs) before anything else is written, so every `fullUrl` resolves.
    `bodies`: the responses of writes carry the resource written (as the client may see it)."""
    responses: list[Json] = [{} for _ in entries]
    ordered = _in_processing_order(entries)
    plan = Plan()
    for e in ordered:
        if e.method == "DELETE":
            responses[e.index] = _guarded(e, partial(_execute, svc, uow, e, plan, bodies))
    for e in ordered:
        if e.method != "DELETE":
            _guarded(e, partial(_plan, svc, uow, e, plan))
        target = plan.targets.get(e.index, e.res_id)
        if e.full_url and target and e.method not in ("GET", "HEAD"):
            plan.ids[e.full_url] = f"{e.res_type}/{target}"
    _check_overlap(entries, plan)
    uow.read_ahead_for_write(
        (e.res_type, e.res_id or plan.targets[e.index]) for e in entries if e.method == "PUT"
    )
    context, outer = uow.context, uow.context.bundle_targets
    context.bundle_targets = outer | _bundle_targets(plan)  # references by urn:uuid are its own
    try:
        for e in ordered:
            if e.method != "DELETE":
                responses[e.index] = _guarded(e, partial(_execute, svc, uow, e, plan, bodies))
    finally:
        context.bundle_targets = outer
    return responses


def _bundle_targets(plan: Plan) -> frozenset[tuple[str, str]]:
    """What the transaction's entries create or change under a `urn:uuid` fullUrl, as (Type, id)."""
    found = set()
    for full_url, target in plan.ids.items():
        res_type, _, res_id = target.partition("/")
        if full_url.startswith("urn:uuid:") and res_id:
            found.add((res_type, res_id))
    return frozenset(found)


def _guarded(e: Entry, step: Callable[[], T]) -> T:
    """Run one step of an entry; its errors name the entry."""
    try:
        return step()
    except FhirError as error:
        raise _at(error, e) from error
    except Conflict as error:
        raise Conflict(f"Bundle.entry[{e.index}] ({e.method} {e.url}): {error}") from error
    except IdentifierTaken as error:
        where = f"Bundle.entry[{e.index}]"
        raise IdentifierTaken(
            f"{where} ({e.method} {e.url}): {error}", _expression(error.expression, where, e)
        ) from error


def _condition(res_type: str, query: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return res_type, tuple(sorted(parse_qsl(query, keep_blank_values=True)))


def _plan(svc: Services, uow: UnitOfWork, e: Entry, plan: Plan) -> None:
    """Decide the id each POST and conditional PUT or PATCH will write to, before anything is written.
    Conditions match only what the client may see (`WritePath.match`)."""
    write_path = svc.write_path
    if e.method == "POST":
        if e.if_none_exist:
            found = write_path.match(uow, e.res_type, e.if_none_exist, "create")
            if len(found) > 1:
                raise precondition_failed(
                    f"ifNoneExist '{e.if_none_exist}' matches more than one {e.res_type}"
                )
            key = _condition(e.res_type, e.if_none_exist)
            if found:
                plan.matched[e.index] = found[0]
                plan.targets[e.index] = found[0].res_id
            elif key in plan.conditions:
                # An earlier entry of this Bundle creates what this one asks for: use it, as a replay would.
                first = next(i for i, t in plan.targets.items() if t == plan.conditions[key])
                plan.aliases[e.index] = first
                plan.targets[e.index] = plan.conditions[key]
            plan.targets.setdefault(e.index, str(uuid4()))
            plan.conditions.setdefault(key, plan.targets[e.index])
        else:
            plan.targets[e.index] = str(uuid4())
    elif e.method in ("PUT", "PATCH") and e.res_id is None:
        if not e.query:
            raise bad_request(f"{e.method} {e.url} needs an id or a search condition")
        found = write_path.match(uow, e.res_type, e.query, "update")
        if len(found) > 1:
            raise precondition_failed(f"The condition '{e.query}' matches more than one {e.res_type}")
        if not found and e.method == "PUT" and not svc.hooks.policy.may_create_by_put(uow.context):
            raise not_found(f"The condition '{e.query}' matches no {e.res_type} known here")
        if e.method == "PATCH":
            if not found:
                raise not_found(f"The condition '{e.query}' matches no {e.res_type}")
            plan.targets[e.index] = found[0].res_id
            return
        body_id = (e.resource or {}).get("id")
        if found and body_id is not None and body_id != found[0].res_id:
            raise bad_request(
                f"The resource id '{body_id}' differs from the matching {e.res_type}/{found[0].res_id}",
                "id",
            )
        plan.targets[e.index] = found[0].res_id if found else (body_id or str(uuid4()))
        plan.conditions.setdefault(_condition(e.res_type, e.query), plan.targets[e.index])


def _check_overlap(entries: list[Entry], plan: Plan) -> None:
    """Two entries may not change the same resource (R4: identities in DELETE/POST/PUT/PATCH overlap)."""
    seen: dict[tuple[str, str], int] = {}
    for e in entries:
        if e.method in ("GET", "HEAD") or e.index in plan.matched or e.index in plan.aliases:
            continue
        target = plan.targets.get(e.index, e.res_id)
        if target is None:
            continue
        key = (e.res_type, target)
        if key in seen:
            raise bad_request(
                f"Bundle.entry[{e.index}] and Bundle.entry[{seen[key]}] both change "
                f"{e.res_type}/{target}; a transaction changes each resource once",
                f"Bundle.entry[{e.index}]",
            )
        seen[key] = e.index


def _at(error: FhirError, e: Entry) -> FhirError:
    where = f"Bundle.entry[{e.index}]"
    issues = []
    for issue in error.issues:
        expressions = tuple(_expression(x, where, e) for x in issue.expression) or (where,)
        diagnostics = issue.diagnostics
        if not diagnostics.startswith(where):
            diagnostics = f"{where} ({e.method} {e.url}): {diagnostics}"
        issues.append(Issue(issue.severity, issue.code, diagnostics, expressions))
    return FhirError(error.status, issues, error.headers)


def _expression(expression: str, where: str, e: Entry) -> str:
    """A path in the entry's resource (`Task.status`) as a path in the Bundle."""
    res_type = e.res_type
    if expression.startswith("Bundle."):
        return expression
    if e.method in ("GET", "HEAD", "DELETE"):  # a search parameter or the like: it is in the url
        return f"{where}.request.url"
    if expression == res_type or expression.startswith((f"{res_type}.", f"{res_type}[")):
        return f"{where}.resource{expression[len(res_type) :]}"
    return f"{where}.resource.{expression}"


def _rewrite(svc: Services, uow: UnitOfWork, node: Any, plan: Plan) -> Any:
    """Replace references to a Bundle entry's fullUrl by Type/id, and resolve conditional references."""
    if isinstance(node, list):
        return [_rewrite(svc, uow, item, plan) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: _rewrite(svc, uow, value, plan) for key, value in node.items()}
    reference = result.get("reference")
    if isinstance(reference, str):
        if reference in plan.ids:
            result["reference"] = plan.ids[reference]
        elif reference.startswith(("urn:uuid:", "urn:oid:")):
            raise bad_request(f"The reference '{reference}' matches no fullUrl in the Bundle")
        elif "?" in reference and reference.split("?")[0] in SUPPORTED:
            result["reference"] = _resolve(svc, uow, reference, plan)
    return result


def _resolve(svc: Services, uow: UnitOfWork, reference: str, plan: Plan) -> str:
    """A conditional reference (`Patient?identifier=…`): exactly one match, in the database as the
    transaction has left it so far, or the resource another entry creates under the same condition."""
    res_type, _, query = reference.partition("?")
    found = svc.write_path.match(uow, res_type, query, "read")
    if len(found) > 1:
        raise precondition_failed(f"The conditional reference '{reference}' matches more than one {res_type}")
    if found:
        return f"{res_type}/{found[0].res_id}"
    planned = plan.conditions.get(_condition(res_type, query))
    if planned is None:
        raise precondition_failed(f"The conditional reference '{reference}' matches no {res_type}")
    return f"{res_type}/{planned}"


def _response(stored: Stored | None, status: int) -> Json:
    item: Json = {"status": _status(status)}
    if stored is not None:
        item["location"] = f"{stored.res_type}/{stored.res_id}/_history/{stored.version_id}"
        item["etag"] = f'W/"{stored.version_id}"'
        item["lastModified"] = to_instant(stored.last_updated)
    return item


def _execute(svc: Services, uow: UnitOfWork, e: Entry, plan: Plan, bodies: bool = True) -> Json:
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
    body = _rewrite(svc, uow, e.resource, plan)
    if e.method == "POST":  # validated before the unit of work (`_validate`)
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
        return {"resource": bundle, "response": {"status": _status(200)}}
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


async def _run_batch(svc: Services, context: RequestContext, raw_entries: list[Any]) -> Json:
    """Each entry on its own, in a unit of work of its own; a failing entry gets its own status."""
    responses: list[Json] = []
    for index, raw in enumerate(raw_entries):
        spent = budget.refused()  # the response is full: the entries after are not run
        if spent is not None:
            responses.append(_failed(spent))
            continue
        try:
            e = _parse_entry(index, raw, svc.settings.max_json_depth)
        except FhirError as error:
            responses.append(_failed(error))
            continue

        def work(uow: UnitOfWork, e: Entry = e) -> Json:
            for value in _references(e.resource):
                if value.startswith(("urn:uuid:", "urn:oid:")):
                    raise bad_request(f"Batch entries cannot refer to each other ('{value}')")
            plan = Plan()
            if e.method != "DELETE":
                _plan(svc, uow, e, plan)
            return _execute(svc, uow, e, plan)

        def validated_run(e: Entry = e, writes: bool = _writes(raw)) -> Json:
            _validate(svc, [e])
            return svc.write_path.run(context, partial(work, e=e), writes)

        try:
            responses.append(await run_in_threadpool(validated_run))
        except FhirError as error:
            responses.append(_failed(_at(error, e)))
    return {"resourceType": "Bundle", "type": "batch-response", "entry": responses}


def _failed(error: FhirError) -> Json:
    return {"response": {"status": _status(error.status), "outcome": operation_outcome(error.issues)}}


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
