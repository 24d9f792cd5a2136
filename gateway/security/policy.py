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
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.security.scopes import AUDIT_READ, grants

WRITE_LETTERS = {"create": "c", "update": "u", "delete": "d"}
AUDIT_TYPE = "AuditEvent"


def refused(res_type: str, letters: str) -> FhirError:
    """403 for scopes lacking every one of `letters` on `res_type`."""
    needed = " or ".join(f"system/{res_type}.{letter}" for letter in letters)
    return forbidden(f"The access token's scopes do not allow this on {res_type}: it needs {needed}")


class ScopePolicy:
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

    def can_read(self, context: RequestContext, resource: Json) -> bool:
        found = grants(context.principal.scopes)
        res_type = str(resource.get("resourceType"))
        if res_type == AUDIT_TYPE:
            return found.has(AUDIT_READ)
        return found.permits_any(res_type, "rs")

    def authorize_search(self, context: RequestContext, res_type: str) -> None:
        found = grants(context.principal.scopes)
        if res_type == AUDIT_TYPE:
            if not found.has(AUDIT_READ):
                raise forbidden(f"Reading AuditEvents needs the scope {AUDIT_READ}")
            return
        if not found.permits(res_type, "s"):
            raise refused(res_type, "s")
