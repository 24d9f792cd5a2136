"""vread: GET [base]/[type]/[id]/_history/[vid]."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import gone, not_found
from gateway.fhir.context import request_context, run, services
from gateway.fhir.http import fhir_response, version_headers
from gateway.fhir.view import View
from gateway.hooks import AccessRecord, patients_of
from gateway.limits import numbers
from gateway.pipeline import UnitOfWork
from gateway.store.repository import Stored


async def vread(request: Request, res_type: str, res_id: str, version_id: str) -> Response:
    policy = services(request).hooks.policy

    def work(uow: UnitOfWork) -> Stored:
        # The current version decides visibility (a tombstone keeps its last version's access rows), so
        # an old version never shows what the policy hides now, and a hidden id reads as an unknown one.
        visibility = policy.visibility(uow.context)
        current = uow.repository.current_visible(res_type, res_id, visibility)
        number = numbers.version(version_id)  # past the largest version: none (404), not an SQL error
        stored = uow.repository.version(res_type, res_id, number) if number is not None else None
        if current is None or stored is None:
            raise not_found(f"{res_type}/{res_id}/_history/{version_id} is not known")
        if stored.deleted:
            raise gone(f"Version {version_id} of {res_type}/{res_id} is a deletion")
        record = AccessRecord("vread", res_type, [res_id], 200, uow.context)
        record.patients = patients_of(stored.json())
        uow.records.append(record)
        return stored

    stored = await run(request, work, write=False, point_read=True)
    view = View(policy, request_context(request))
    return fhir_response(view.body(stored), 200, version_headers(stored))
