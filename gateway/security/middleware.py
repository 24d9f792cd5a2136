"""Authentication on every request: a Bearer access token becomes the request's Principal (in
`request.state.principal`, from where `gateway.fhir.context.request_context` takes it), and the scope the
interaction needs is checked before it runs. Plain ASGI, outermost, so a refused request costs no body.

Open without a token: the CapabilityStatement, the SMART discovery document, the authorization
server (/auth/…) and the probes.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import FhirError, Issue, method_not_allowed
from gateway.fhir.outcome import error_response
from gateway.security.audit_requests import changes_audit
from gateway.security.interactions import check
from gateway.security.oidc import Rejected
from gateway.security.revocation import ClientRefused
from gateway.security.scopes import grants
from gateway.security.tokens import Authority, Urls

OPEN_PATHS = frozenset({"/fhir/metadata", "/fhir/.well-known/smart-configuration", "/healthz", "/readyz"})
OPEN_PREFIXES = ("/auth/",)


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def unauthorized(message: str, error: str | None = "invalid_token") -> FhirError:
    """401 with the RFC 6750 challenge; no `error` when no token was sent at all (§3.1)."""
    return FhirError(401, [Issue("error", "login", message)], {"WWW-Authenticate": challenge(error, message)})


def challenge(error: str | None, description: str) -> str:
    """A `WWW-Authenticate: Bearer` value (ASCII, quotes escaped away)."""
    value = 'Bearer realm="fhir"'
    if error:
        quoted = description.encode("ascii", "replace").decode().replace("\\", "").replace('"', "'")
        value += f', error="{error}", error_description="{quoted}"'
    return value


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Authenticate:
    def __init__(self, app: ASGIApp, authority: Authority) -> None:
        self.app = app
        self.authority = authority

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        token = bearer(request)
        if token is None:
            message = "This request needs an access token (Authorization: Bearer ...); see /auth/token"
            error = unauthorized(
                message, None if "authorization" not in request.headers else "invalid_request"
            )
            await error_response(error)(scope, receive, send)
            return
        urls = Urls.of(self.authority.settings, str(request.base_url))
        try:
            principal = await self.authority.principal(token, urls)
        except Rejected as rejected:
            if isinstance(rejected, ClientRefused):  # a disabled client's attempt is audited as its own
                scope.setdefault("state", {})["principal"] = rejected.principal
            await error_response(unauthorized(str(rejected)))(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal  # known to audit, also when refused
        if changes_audit(scope["method"], scope["path"]):
            message = "AuditEvents are written by the gateway only; they cannot be created or changed"
            await error_response(method_not_allowed(message))(scope, receive, send)
            return
        refused = check(scope["method"], scope["path"], grants(principal.scopes))
        if refused is not None:
            refused.headers["WWW-Authenticate"] = challenge("insufficient_scope", str(refused))
            await error_response(refused)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)
