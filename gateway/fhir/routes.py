"""The FHIR REST routes under /fhir, each handled by the module of its interaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import FhirError, method_not_allowed, not_found
from gateway.fhir import (
    capabilities,
    create,
    delete,
    device_list,
    everything,
    export,
    history,
    patch,
    read,
    search,
    transaction,
    update,
    vread,
)
from gateway.fhir.http import negotiate
from gateway.model.types import SUPPORTED, is_valid_id
from gateway.subscriptions import operations

Handler = Callable[..., Awaitable[Response]]


def _checked(handler: Handler, negotiated: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """Check the type and id in the path and negotiate the format before the interaction runs (unless
    the handler negotiates itself: `$device-list` also answers in HTML)."""

    async def endpoint(request: Request) -> Response:
        if negotiated:
            negotiate(request)
        params = dict(request.path_params)
        res_type = params.get("res_type")
        if res_type is not None and res_type not in SUPPORTED:
            raise not_found(f"Resource type '{res_type}' is not supported by this server")
        res_id = params.get("res_id")
        if res_id is not None and not is_valid_id(res_id):
            raise FhirError(400, not_found(f"'{res_id}' is not a valid resource id").issues)
        return await handler(request, **params)

    return endpoint


async def _type_level_put(request: Request, res_type: str) -> Response:
    if not request.url.query:
        raise method_not_allowed("PUT on a type needs a search condition (conditional update)")
    return await update.conditional_update(request, res_type)


async def _not_allowed(request: Request, **_: str) -> Response:
    raise method_not_allowed(f"{request.method} is not supported on {request.url.path}")


def base_route() -> Route:
    """POST [base] without a trailing slash, as FHIR clients send transactions and batches: processed
    (not redirected to `/fhir/`)."""
    return Route("/fhir", _checked(transaction.transaction_or_batch), methods=["POST"])


def routes() -> list[Route]:
    return [
        Route("/metadata", _checked(capabilities.metadata), methods=["GET"]),
        Route("/", _checked(transaction.transaction_or_batch), methods=["POST"]),
        # Bulk Data $export (docs/fhir/export.md): before the type routes, which take `$export` for a type
        Route("/$export", _checked(export.system_export, False), methods=["GET"]),
        Route("/Patient/$export", _checked(export.patient_export, False), methods=["GET"]),
        Route("/$export", _checked(_not_allowed, False), methods=["POST"]),  # no POST kick-off (yet)
        Route("/Patient/$export", _checked(_not_allowed, False), methods=["POST"]),
        Route("/Group/{res_id}/$export", export.group_export_endpoint, methods=["GET"]),
        Route("/$export-status/{job_id}", _checked(export.status), methods=["GET"]),
        Route("/$export-status/{job_id}", _checked(export.cancel), methods=["DELETE"]),
        Route("/$export-file/{job_id}/{number}", _checked(export.output_file, False), methods=["GET"]),
        Route("/Patient/{res_id}/$everything", _checked(everything.everything), methods=["GET"]),
        Route("/Subscription/{res_id}/$status", _checked(operations.status), methods=["GET"]),
        Route("/Subscription/{res_id}/$events", _checked(operations.events), methods=["GET"]),
        Route("/Patient/{res_id}/$device-list", _checked(device_list.device_list, False), methods=["GET"]),
        Route("/{res_type}/_history", _checked(history.type_history), methods=["GET"]),
        Route("/{res_type}/_search", _checked(search.search_post), methods=["POST"]),
        Route("/{res_type}/{res_id}/_history/{version_id}", _checked(vread.vread), methods=["GET"]),
        Route("/{res_type}/{res_id}/_history", _checked(history.instance_history), methods=["GET"]),
        Route("/{res_type}/{res_id}", _checked(read.read), methods=["GET"]),
        Route("/{res_type}/{res_id}", _checked(update.update), methods=["PUT"]),
        Route("/{res_type}/{res_id}", _checked(patch.patch), methods=["PATCH"]),
        Route("/{res_type}/{res_id}", _checked(delete.delete), methods=["DELETE"]),
        Route("/{res_type}/{res_id}", _checked(_not_allowed), methods=["POST"]),
        Route("/{res_type}", _checked(search.search_get), methods=["GET"]),
        Route("/{res_type}", _checked(create.create), methods=["POST"]),
        Route("/{res_type}", _checked(_type_level_put), methods=["PUT"]),
        Route("/{res_type}", _checked(_not_allowed), methods=["DELETE", "PATCH"]),
    ]
