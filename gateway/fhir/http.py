"""HTTP details shared by the interactions: media types, negotiation, headers and Prefer."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import bad_request, not_acceptable, precondition_failed, unsupported_media_type
from gateway.limits import numbers
from gateway.limits.depth import check_depth
from gateway.limits.resources import ResourceLimits
from gateway.model.types import dumps, loads
from gateway.search.dates import to_instant
from gateway.store.repository import Stored

FHIR_JSON = "application/fhir+json"
JSON_TYPES = ("application/fhir+json", "application/json", "application/json-patch+json")
_ACCEPTED_FORMATS = {"json", "application/json", "application/fhir+json"}
_XML_FORMATS = {"xml", "text/xml", "application/xml", "application/fhir+xml"}


def fhir_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    content = body if isinstance(body, str | bytes) else dumps(body)
    return Response(content, status, headers, media_type=f"{FHIR_JSON}; charset=utf-8")


def negotiate(request: Request) -> None:
    """JSON only: `_format=xml` or an Accept that admits no JSON is answered 406."""
    fmt = request.query_params.get("_format")
    if fmt is not None:
        if fmt in _XML_FORMATS:
            raise not_acceptable("Only JSON is supported; ask for _format=json")
        if fmt.split(";")[0].strip() not in _ACCEPTED_FORMATS:
            raise not_acceptable(f"_format={fmt} is not supported; use json")
        return
    accept = request.headers.get("accept", "")
    if not accept:
        return
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if any(k in ("*/*", "application/*", *JSON_TYPES) or k.endswith("+json") for k in kinds):
        return
    raise not_acceptable(f"Cannot answer in {accept}; this server speaks application/fhir+json")


async def read_json(request: Request, allowed: tuple[str, ...] = JSON_TYPES, resource: bool = False) -> Any:
    """The JSON body, held to the depth limit (GATEWAY_MAX_JSON_DEPTH); a `resource` body (create,
    update) to the resource size limit too, before it is parsed (GATEWAY_MAX_RESOURCE_BYTES)."""
    settings = request.app.state.services.settings
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type not in allowed:
        raise unsupported_media_type(f"Content-Type {content_type} is not supported; send {allowed[0]}")
    body = await request.body()
    if not body:
        raise bad_request("The request has no body")
    if resource and len(body) > settings.max_resource_bytes:
        raise ResourceLimits(settings.max_resource_bytes).too_large(len(body))
    try:
        value = loads(body)
    except ValueError as error:  # orjson stops at 1024 levels of nesting with a JSONDecodeError too
        raise bad_request(f"The body is not valid JSON: {error}") from error
    check_depth(value, settings.max_json_depth, "The body")
    return value


def version_headers(stored: Stored) -> dict[str, str]:
    return {
        "ETag": f'W/"{stored.version_id}"',
        "Last-Modified": stored.last_updated.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }


def location(base: str, stored: Stored) -> str:
    return f"{base}/{stored.res_type}/{stored.res_id}/_history/{stored.version_id}"


def if_match(request: Request) -> int | None:
    """The version an `If-Match: W/"n"` names."""
    value = request.headers.get("if-match")
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not numbers.is_whole(text):
        raise precondition_failed(f"If-Match '{value}' does not name a version (W/\"n\")")
    # A number past the largest version matches none (412 as any other version it does not have).
    return numbers.version(text) or 0


def prefer(request: Request, name: str) -> str | None:
    for part in request.headers.get("prefer", "").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip() == name:
            return value.strip().strip('"')
    return None


def base_url(request: Request, configured: str) -> str:
    if configured:
        return configured
    return str(request.base_url).rstrip("/") + "/fhir"


def instant(stored: Stored) -> str:
    return to_instant(stored.last_updated)
