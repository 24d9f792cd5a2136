"""The one place errors become responses: every error is an OperationOutcome with its status code."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import FhirError, Issue
from gateway.fhir.http import fhir_response

log = logging.getLogger("gateway")


def operation_outcome(issues: list[Issue]) -> dict[str, object]:
    return {"resourceType": "OperationOutcome", "issue": [issue.to_json() for issue in issues]}


def information(message: str) -> dict[str, object]:
    return operation_outcome([Issue("information", "informational", message)])


def error_response(error: FhirError) -> Response:
    issues = error.issues or [Issue("error", "processing", f"HTTP {error.status}")]
    return fhir_response(operation_outcome(issues), error.status, error.headers)


async def handle_fhir_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, FhirError)
    return error_response(error)


async def handle_unexpected(request: Request, error: Exception) -> Response:
    log.exception("Unhandled error serving %s %s", request.method, request.url.path, exc_info=error)
    return error_response(FhirError(500, [Issue("fatal", "exception", "Internal server error")]))
