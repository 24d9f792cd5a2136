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

The Bundle's entries are read in gateway/fhir/bundle_entries.py, the ids and references decided in
transaction_plan.py, each entry carried out in entry_execute.py; a batch runs in batch.py.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import FhirError, bad_request
from gateway.fhir.batch import run_batch
from gateway.fhir.bundle_entries import (
    Entry,
    check_full_urls,
    checked_bundle,
    guarded,
    in_processing_order,
    parse_entry,
    references,
    validate_entries,
)
from gateway.fhir.context import request_context, services
from gateway.fhir.entry_execute import execute_entry
from gateway.fhir.http import fhir_response, read_json
from gateway.fhir.transaction_plan import Plan, bundle_targets, check_overlap, plan_entry
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.pipeline import Conflict, IdentifierTaken, UnitOfWork
from gateway.services import Services
from gateway.store.repository import StaleVersion


async def transaction_or_batch(request: Request) -> Response:
    bundle = await read_json(request)
    kind = bundle.get("type") if isinstance(bundle, dict) else None
    if kind in ("transaction", "batch"):  # what the request log and metrics call it (gateway/telemetry)
        request.scope.setdefault("state", {})["interaction"] = kind
    return fhir_response(await process_bundle(services(request), request_context(request), bundle))


async def process_bundle(svc: Services, context: RequestContext, bundle: Any, bodies: bool = True) -> Json:
    """Process a transaction or batch Bundle as POST [base] does and give the response Bundle. A failed
    transaction raises FhirError (nothing is stored); a batch reports each entry's outcome. Without
    `bodies`, a transaction's responses carry no resources (status, location and etag only)."""
    kind, raw_entries = checked_bundle(svc, bundle)
    if kind == "batch":
        return await run_batch(svc, context, raw_entries)
    return await run_in_threadpool(_run_transaction, svc, context, raw_entries, bodies)


def run_transaction(svc: Services, context: RequestContext, bundle: Any) -> Json:
    """A transaction Bundle processed on the calling thread: the adapters' entrance, which already runs
    an input's reads and its write on one worker thread (one hand-over per input, not one per step).
    The responses name what was written (status, location, etag) without the resources themselves."""
    kind, raw_entries = checked_bundle(svc, bundle)
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
            kind, raw_entries = checked_bundle(svc, bundle)
            entries = [parse_entry(i, raw, svc.settings.max_json_depth) for i, raw in enumerate(raw_entries)]
            check_full_urls(entries)
            validate_entries(svc, entries)
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
        touches |= named | {_target(reference) for reference in references(e.resource)}
    return writes, touches


def _target(reference: str) -> str:
    """A reference as `_names` names it: `Type/id` without a version; a urn or condition as it is."""
    parts = reference.split("/")
    return "/".join(parts[:2]) if len(parts) == 4 and parts[2] == "_history" else reference


def _run_transaction(
    svc: Services, context: RequestContext, raw_entries: list[Any], bodies: bool = True
) -> Json:
    """`bodies`: the responses of writes carry the resource written (not for the adapters, which read
    only the responses' status and location)."""
    entries = [parse_entry(i, raw, svc.settings.max_json_depth) for i, raw in enumerate(raw_entries)]
    check_full_urls(entries)
    validate_entries(svc, entries)

    def work(uow: UnitOfWork) -> list[Json]:
        return _transaction(svc, uow, entries, bodies)

    responses = svc.write_path.run(context, work, True)
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": responses}


def _transaction(svc: Services, uow: UnitOfWork, entries: list[Entry], bodies: bool = True) -> list[Json]:
    """The R4 transaction processing rules: DELETE, then POST, then PUT and PATCH, then GET; ids are
    decided (after the DELETEs) before anything else is written, so every `fullUrl` resolves.
    `bodies`: the responses of writes carry the resource written (as the client may see it)."""
    responses: list[Json] = [{} for _ in entries]
    ordered = in_processing_order(entries)
    plan = Plan()
    for e in ordered:
        if e.method == "DELETE":
            responses[e.index] = guarded(e, partial(execute_entry, svc, uow, e, plan, bodies))
    for e in ordered:
        if e.method != "DELETE":
            guarded(e, partial(plan_entry, svc, uow, e, plan))
        target = plan.targets.get(e.index, e.res_id)
        if e.full_url and target and e.method not in ("GET", "HEAD"):
            plan.ids[e.full_url] = f"{e.res_type}/{target}"
    check_overlap(entries, plan)
    uow.read_ahead_for_write(
        (e.res_type, e.res_id or plan.targets[e.index]) for e in entries if e.method == "PUT"
    )
    context, outer = uow.context, uow.context.bundle_targets
    context.bundle_targets = outer | bundle_targets(plan)  # references by urn:uuid are its own
    try:
        for e in ordered:
            if e.method != "DELETE":
                responses[e.index] = guarded(e, partial(execute_entry, svc, uow, e, plan, bodies))
    finally:
        context.bundle_targets = outer
    return responses
