"""The SMART scope policy: the AccessPolicy the write path and every read consult when auth is on.

create needs `c` on the resource's type, update `u`, delete `d`; search needs `s`; a resource is
visible (read, vread, history entries, search matches, `_include`/`_revinclude` results, conditional
matches) with `r` or `s` on its type, since a client that may search a type sees its resources in
results anyway. The interaction itself is checked more strictly, and answered 403, by
`gateway.security.interactions` before it runs. AuditEvent is readable with `gateway/audit.read` only,
and written by no client: audit records are the gateway's own.
"""

from __future__ import annotations

from gateway.errors import FhirError, forbidden
from gateway.hooks import Permissive, RequestContext
from gateway.model.types import Json
from gateway.security.scopes import AUDIT_READ, Grants, grants
from gateway.store.visibility import EVERYTHING, OfTypes, Visibility

WRITE_LETTERS = {"create": "c", "update": "u", "delete": "d"}
AUDIT_TYPE = "AuditEvent"


def refused(res_type: str, letters: str) -> FhirError:
    """403 for scopes lacking every one of `letters` on `res_type`."""
    needed = " or ".join(f"system/{res_type}.{letter}" for letter in letters)
    return forbidden(f"The access token's scopes do not allow this on {res_type}: it needs {needed}")


class ScopePolicy(Permissive):
    def authorize_write(
        self, context: RequestContext, action: str, resource: Json, current: Json | None
    ) -> None:
        res_type = str(resource.get("resourceType"))
        if res_type == AUDIT_TYPE:
            raise forbidden("AuditEvents are written by the gateway only")
        letter = WRITE_LETTERS.get(action)
        if letter is None:
            raise forbidden(f"Unknown write action '{action}'")
        if not grants(context.principal.scopes).permits(res_type, letter):
            raise refused(res_type, letter)

    def visibility(self, context: RequestContext, writing: bool = False) -> Visibility:
        if writing:  # a write's own letters are checked by authorize_write
            return EVERYTHING
        return readable(grants(context.principal.scopes))

    def authorize_search(self, context: RequestContext, res_type: str) -> None:
        found = grants(context.principal.scopes)
        if res_type == AUDIT_TYPE:
            if not found.has(AUDIT_READ):
                raise forbidden(f"Reading AuditEvents needs the scope {AUDIT_READ}")
            return
        if not found.permits(res_type, "s"):
            raise refused(res_type, "s")


def readable(found: Grants) -> OfTypes:
    """The types the scopes let a client read (`r` or `s`: a client that may search a type sees its
    resources in results anyway), AuditEvent only with gateway/audit.read."""
    audit = found.has(AUDIT_READ)
    if found.by_type.get("*", frozenset()) & {"r", "s"}:
        return OfTypes(None, audit)
    types = frozenset(t for t, letters in found.by_type.items() if letters & {"r", "s"})
    return OfTypes(types, audit)
