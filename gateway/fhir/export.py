"""Bulk Data `$export` (FHIR Bulk Data Access IG 2.0.0, docs/fhir/export.md): the kick-off at system
level (`GET [base]/$export`) and Patient level (`GET [base]/Patient/$export`), the status URL
(`[base]/$export-status/{job}`: GET polls, DELETE cancels) and the output files
(`[base]/$export-file/{job}/{n}`, NDJSON, streamed a stored chunk at a time).

The job is made by the export worker (gateway/export/worker.py) as the client that asked: what its
searches would show it, masked as they would be. A job, its status and its files are the asking client's
only: for any other client (and for an unknown or expired job) each URL answers the same 404. Group level
is not served (Group is not a type this gateway has)."""

from __future__ import annotations

from collections.abc import Iterator
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.errors import FhirError, Issue, bad_request, not_found
from gateway.export import jobs
from gateway.export.jobs import DONE, FAILED, Job
from gateway.export.parameters import PATIENT, SYSTEM, ExportParameters, parse
from gateway.fhir.context import request_context, run, services
from gateway.fhir.http import fhir_response, prefer
from gateway.fhir.outcome import operation_outcome
from gateway.hooks import AccessRecord, RequestContext
from gateway.pipeline import UnitOfWork
from gateway.search.dates import to_instant, utc_now

OPERATION = "export"
STATUS, FILE = "$export-status", "$export-file"
RETRY_SECONDS = 2
GONE = "No export job at this address"  # unknown, expired, cancelled or another client's: one answer
FHIR_JSON = "application/fhir+json"


async def system_export(request: Request) -> Response:
    return await _kick_off(request, SYSTEM)


async def patient_export(request: Request) -> Response:
    return await _kick_off(request, PATIENT)


async def group_export_endpoint(request: Request) -> Response:
    """Not through `_checked`: Group is no type of this server's, and the answer says why."""
    message = "Group is not a type this server serves: export at system level ($export) or Patient/$export"
    raise FhirError(501, [Issue("error", "not-supported", message, ("Group",))])


def _accepts_fhir_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return any(k in (FHIR_JSON, "application/json", "application/*", "*/*") for k in kinds)


async def _kick_off(request: Request, level: str) -> Response:
    if prefer(request, "respond-async") is None:
        raise bad_request("$export is asynchronous: send the header Prefer: respond-async", "Prefer")
    if not _accepts_fhir_json(request):
        message = "$export answers in application/fhir+json: send Accept: application/fhir+json"
        raise bad_request(message, "Accept")
    svc = services(request)
    context = request_context(request)
    lenient = prefer(request, "handling") == "lenient"
    parameters = parse(
        list(request.query_params.multi_items()),
        level,
        svc.hooks.policy,
        context,
        svc.searcher,
        ZoneInfo(svc.settings.local_timezone),
        lenient,
    )
    path = "Patient/$export" if level == PATIENT else "$export"
    query = str(request.url.query)
    request_url = f"{context.base_url}/{path}" + (f"?{query}" if query else "")
    job = jobs.new_job(context, request_url, parameters.to_json(), svc.settings.export_retention_hours)

    def work(uow: UnitOfWork) -> None:
        limit = svc.settings.export_jobs_per_client
        if jobs.unfinished(uow.connection, job.client_id, job.created_at) >= limit:
            message = f"This client has {limit} exports waiting or running: wait for one, or cancel one"
            raise FhirError(429, [Issue("error", "throttled", message)], {"Retry-After": "60"})
        jobs.create(uow.connection, job)
        detail = f"${OPERATION} kick-off: {', '.join(parameters.types)}"
        uow.records.append(AccessRecord(OPERATION, None, [], 202, uow.context, detail))

    await run(request, work, write=True)
    location = f"{context.base_url}/{STATUS}/{job.job_id}"
    return Response(status_code=202, headers={"Content-Location": location})


def _own_job(context: RequestContext, uow: UnitOfWork, job_id: str) -> Job:
    found = jobs.find(uow.connection, job_id, context.principal.client_id, utc_now())
    if found is None:
        raise not_found(GONE)
    return found


async def status(request: Request, job_id: str) -> Response:
    context = request_context(request)

    def work(uow: UnitOfWork) -> Job:
        return _own_job(context, uow, job_id)

    job = await run(request, work, write=False)
    if job.status == FAILED:
        issue = Issue("error", "exception", job.message or "The export failed")
        return fhir_response(operation_outcome([issue]), 500)
    if job.status != DONE:
        total = len(ExportParameters.from_json(job.parameters).types)
        current = min(job.progress.type_index + 1, total)
        progress = f"{job.exported} resources exported; type {current} of {total}"
        return Response(status_code=202, headers={"X-Progress": progress, "Retry-After": str(RETRY_SECONDS)})
    return JSONResponse(_manifest(job), headers={"Expires": _http_date(job)})


def _manifest(job: Job) -> dict[str, object]:
    return {
        "transactionTime": to_instant(job.transaction_time),
        "request": job.request,
        "requiresAccessToken": True,
        "output": [
            {
                "type": item["type"],
                "url": f"{job.base_url}/{FILE}/{job.job_id}/{item['number']}",
                "count": item["count"],
            }
            for item in job.progress.files
        ],
        "error": [],
    }


def _http_date(job: Job) -> str:
    return job.expires_at.strftime("%a, %d %b %Y %H:%M:%S GMT")


async def cancel(request: Request, job_id: str) -> Response:
    context = request_context(request)

    def work(uow: UnitOfWork) -> None:
        _own_job(context, uow, job_id)
        jobs.remove(uow.connection, job_id)
        uow.records.append(AccessRecord(OPERATION, None, [], 202, uow.context, f"${OPERATION} cancelled"))

    await run(request, work, write=True)
    return Response(status_code=202)


async def output_file(request: Request, job_id: str, number: str) -> Response:
    context = request_context(request)
    svc = services(request)
    if not number.isdigit() or len(number) > 9:
        raise not_found(GONE)
    file_number = int(number)

    def work(uow: UnitOfWork) -> list[int]:
        job = _own_job(context, uow, job_id)
        found = jobs.parts(uow.connection, job.job_id, file_number) if job.status == DONE else []
        if not found:
            raise not_found(GONE)
        detail = f"${OPERATION} file {file_number}"
        uow.records.append(AccessRecord(OPERATION, None, [], 200, uow.context, detail))
        return found

    parts = await run(request, work, write=False)
    engine = svc.engine

    def stream() -> Iterator[bytes]:
        """One stored chunk at a time: the memory a download takes does not grow with the file."""
        for part in parts:
            with engine.connect() as connection:
                content = jobs.part_content(connection, job_id, file_number, part)
            if content is None:  # cancelled or expired while it was read: the file ends here
                return
            yield content.encode("utf-8")

    return StreamingResponse(stream(), media_type="application/fhir+ndjson")
