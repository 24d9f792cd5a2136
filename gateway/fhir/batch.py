"""batch: POST [base] with a Bundle of type `batch`. Each entry runs in a unit of work of its own and
gets its own status; a failing entry fails alone, and entries cannot refer to each other."""

from __future__ import annotations

from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool

from gateway.errors import FhirError, bad_request
from gateway.fhir.bundle_entries import Entry, at_entry, parse_entry, references, validate_entries
from gateway.fhir.entry_execute import execute_entry, status_text
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.transaction_plan import Plan, plan_entry
from gateway.hooks import RequestContext
from gateway.limits import budget
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.services import Services


async def run_batch(svc: Services, context: RequestContext, raw_entries: list[Any]) -> Json:
    """Each entry on its own, in a unit of work of its own; a failing entry gets its own status."""
    responses: list[Json] = []
    for index, raw in enumerate(raw_entries):
        spent = budget.refused()  # the response is full: the entries after are not run
        if spent is not None:
            responses.append(_failed(spent))
            continue
        try:
            e = parse_entry(index, raw, svc.settings.max_json_depth)
        except FhirError as error:
            responses.append(_failed(error))
            continue

        def work(uow: UnitOfWork, e: Entry = e) -> Json:
            for value in references(e.resource):
                if value.startswith(("urn:uuid:", "urn:oid:")):
                    raise bad_request(f"Batch entries cannot refer to each other ('{value}')")
            plan = Plan()
            if e.method != "DELETE":
                plan_entry(svc, uow, e, plan)
            return execute_entry(svc, uow, e, plan)

        def validated_run(e: Entry = e, writes: bool = _writes(raw)) -> Json:
            validate_entries(svc, [e])
            return svc.write_path.run(context, partial(work, e=e), writes)

        try:
            responses.append(await run_in_threadpool(validated_run))
        except FhirError as error:
            responses.append(_failed(at_entry(error, e)))
    return {"resourceType": "Bundle", "type": "batch-response", "entry": responses}


def _failed(error: FhirError) -> Json:
    return {"response": {"status": status_text(error.status), "outcome": operation_outcome(error.issues)}}


def _writes(raw: Any) -> bool:
    method = raw.get("request", {}).get("method") if isinstance(raw, dict) else None
    return method not in ("GET", "HEAD")
