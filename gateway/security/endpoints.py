"""The authorization server's HTTP endpoints and what the FHIR base says about them:
POST /auth/token, GET /auth/jwks, GET /fhir/.well-known/smart-configuration, and the `security` part
of the CapabilityStatement (with the loud warning when auth is off); and the start-up checks that the
gateway knows its own address (GATEWAY_BASE_URL) before it issues or checks a token, and that an
installation on PostgreSQL with auth on has its own key secret (GATEWAY_KEY_SECRET)."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter
from sqlalchemy.engine import make_url
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.config import Settings
from gateway.hooks import Principal
from gateway.security.jwts import CLIENT_ALGORITHMS, peek
from gateway.security.scopes import GATEWAY_SCOPES
from gateway.security.sealing import KeySecretUnreadable, secret_file, secret_file_named
from gateway.security.tokens import Authority, OAuthError, Urls

log = logging.getLogger("gateway.security")
router = APIRouter(include_in_schema=False)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
AUTH_OFF_WARNING = (
    "WARNING: GATEWAY_AUTH=off: this server checks no access tokens and serves every request unchecked. "
    "For local trials only, never with real patient data."
)
BASE_URL_REQUIRED = (
    "GATEWAY_BASE_URL is not set. With GATEWAY_AUTH on, the issuer and audience of the gateway's tokens "
    "and the token endpoint client assertions are addressed to come from it, never from a request's Host "
    "header: set GATEWAY_BASE_URL to the FHIR base as clients see it (e.g. https://fhir.example.se/fhir). "
    "For local trials only, GATEWAY_BASE_URL_FROM_REQUEST=on takes them from each request instead."
)
KEY_SECRET_REQUIRED = (
    "GATEWAY_KEY_SECRET is not set. With GATEWAY_AUTH on and a PostgreSQL database, the secret that "
    "encrypts the signing keys and keys the adapters' ids must be the installation's own, the same in "
    "every process that shares the database, and kept: set GATEWAY_KEY_SECRET, or GATEWAY_KEY_SECRET_FILE "
    "to a file that holds it (a compose or Kubernetes secret, e.g. /run/secrets/gateway_key_secret). A "
    "development secret is generated only on SQLite or with auth off."
)
FROM_REQUEST_WARNING = (
    "WARNING: GATEWAY_BASE_URL_FROM_REQUEST=on without GATEWAY_BASE_URL: the token issuer, audience and "
    "token endpoint follow each request's Host header. For local trials only, never with real patient data."
)
SCOPES_SUPPORTED = ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write", *GATEWAY_SCOPES]
SMART_EXTENSION = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"


def authority(request: Request) -> Authority:
    found: Authority = request.app.state.authority
    return found


def urls(request: Request) -> Urls:
    return Urls.of(authority(request).settings, str(request.base_url))


def _oauth_error(error: OAuthError) -> JSONResponse:
    headers = dict(NO_STORE)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="auth"'
    body = {"error": error.error, "error_description": error.description}
    return JSONResponse(body, error.status, headers)


@router.post("/auth/token")
async def token(request: Request) -> JSONResponse:
    """Client credentials grant with a private_key_jwt client assertion (RFC 6749 §4.4, RFC 7523)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type != "application/x-www-form-urlencoded":
        return _oauth_error(
            OAuthError("invalid_request", "The body must be application/x-www-form-urlencoded")
        )
    try:
        pairs = parse_qsl(
            (await request.body()).decode("utf-8"), keep_blank_values=True, strict_parsing=False
        )
    except UnicodeDecodeError:
        return _oauth_error(OAuthError("invalid_request", "The body is not UTF-8"))
    fields = dict(pairs)
    if len(fields) != len(pairs):  # RFC 6749 §3.2: parameters MUST NOT be included more than once
        return _oauth_error(OAuthError("invalid_request", "A parameter is repeated"))
    try:
        body = await run_in_threadpool(authority(request).token, fields, urls(request))
    except OAuthError as error:
        log.info("token refused: %s: %s", error.error, error.description)
        return _oauth_error(error)
    # the token issued is audited (AuditRequests) as issued to this client, for its organisation
    _, claims = peek(body["access_token"])
    request.state.principal = Principal(
        client_id=str(claims.get("client_id")),
        organization=claims.get("organization"),
        scopes=frozenset(str(claims.get("scope", "")).split()),
    )
    return JSONResponse(body, 200, NO_STORE)


@router.get("/auth/jwks")
async def jwks(request: Request) -> JSONResponse:
    """The public keys the gateway's access tokens are signed with, retired ones included until unused."""
    keys = await run_in_threadpool(authority(request).ring.jwks)
    return JSONResponse(keys, headers={"Cache-Control": "max-age=60"})


def smart_configuration(found: Urls) -> dict[str, Any]:
    return {
        "issuer": found.issuer,
        "jwks_uri": found.jwks_uri,
        "token_endpoint": found.token_endpoint,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(CLIENT_ALGORITHMS),
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": ["client-confidential-asymmetric", "permission-v2", "permission-v1"],
    }


@router.get("/fhir/.well-known/smart-configuration")
async def discovery(request: Request) -> JSONResponse:
    return JSONResponse(smart_configuration(urls(request)))


def capability_security(statement: dict[str, Any], settings: Settings, base: str) -> dict[str, Any]:
    """Add `rest.security` to a CapabilityStatement: the SMART token endpoint, or the auth-off warning."""
    found = Urls.of(settings, base.removesuffix("/fhir"))
    security: dict[str, Any] = {
        "service": [{"coding": [{"system": SECURITY_SERVICE, "code": "SMART-on-FHIR"}]}],
        "extension": [
            {"url": SMART_EXTENSION, "extension": [{"url": "token", "valueUri": found.token_endpoint}]}
        ],
        "description": "SMART Backend Services: client_credentials with a private_key_jwt assertion "
        f"(RS384 or ES384) at {found.token_endpoint}; discovery at {base}/.well-known/smart-configuration",
    }
    if not settings.auth:
        security = {"description": AUTH_OFF_WARNING}
        implementation = statement.setdefault("implementation", {})
        implementation["description"] = f"{AUTH_OFF_WARNING} {implementation.get('description', '')}".strip()
    for rest in statement.get("rest", []):
        rest["security"] = security
    return statement


class StartupRefused(ValueError):
    """The settings are not safe to serve with; the message says which and what to set."""


def check_base_url(settings: Settings) -> None:
    """Refuse to start with a malformed GATEWAY_BASE_URL, or with auth on and none at all unless
    GATEWAY_BASE_URL_FROM_REQUEST."""
    if settings.base_url:
        parts = urlsplit(settings.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise StartupRefused(
                "GATEWAY_BASE_URL must be an absolute http(s) URL of the FHIR base, e.g. "
                f"https://fhir.example.se/fhir, not {settings.base_url!r}"
            )
        return
    if not settings.auth:
        return
    if not settings.base_url_from_request:
        raise StartupRefused(BASE_URL_REQUIRED)


def check_key_secret(settings: Settings) -> None:
    """Refuse to start when GATEWAY_KEY_SECRET_FILE names a file without a secret, or, with auth on and
    PostgreSQL, when neither GATEWAY_KEY_SECRET nor GATEWAY_KEY_SECRET_FILE gives one: the development
    secret (generated into the data directory) is for SQLite and trials."""
    if settings.key_secret:
        return
    if secret_file_named(settings):
        try:
            secret_file(settings.key_secret_file)
        except KeySecretUnreadable as error:
            raise StartupRefused(str(error)) from None
        return
    if settings.auth and make_url(settings.database_url).get_backend_name() == "postgresql":
        raise StartupRefused(KEY_SECRET_REQUIRED)


def warn_if_off(settings: Settings) -> None:
    """The WARNING block of auth off, or of auth on with URLs that follow the request."""
    if not settings.auth:
        log.warning("%s", "!" * 100)
        log.warning("%s", AUTH_OFF_WARNING)
        log.warning("%s", "!" * 100)
    elif not settings.base_url:
        log.warning("%s", FROM_REQUEST_WARNING)
