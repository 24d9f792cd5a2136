"""Security: the SMART Backend Services authorization server, access tokens on every request, and SMART
scopes enforced as the AccessPolicy. See docs/security.md."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from gateway.errors import forbidden
from gateway.hooks import Principal
from gateway.security.middleware import unauthorized
from gateway.security.scopes import grants


def require_scope(request: Request, scope: str) -> Principal:
    """The request's Principal when its token carries `scope` (e.g. `gateway/adapter.hl7v2`); 401 without
    a token, 403 without the scope. With GATEWAY_AUTH=off, the anonymous Principal passes."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if not request.app.state.services.settings.auth:
        return principal or Principal()
    if principal is None:
        raise unauthorized("This request needs an access token", None)
    if not grants(principal.scopes).has(scope):
        raise forbidden(f"This entrance needs the scope {scope}")
    return principal


def requires(scope: str) -> Callable[[Request], Principal]:
    """A FastAPI dependency: `@router.post(..., dependencies=[Depends(requires(ADAPTER_HL7V2))])`."""

    def dependency(request: Request) -> Principal:
        return require_scope(request, scope)

    return dependency
