"""The scope an HTTP request needs before it runs, from its method and path, answered 403 when missing.

FHIR interactions (SMART v2 letters, on the type in the path):
read, vread, instance history: r · search (GET or POST _search): s · type history: r or s ·
create: c · update (also conditional, and update-as-create): u or c (the policy then checks which) ·
patch: u · delete: d. A transaction or batch is checked entry by entry by the policy, as are includes.

Adapter entrances: `/adapters/<name>…` needs `gateway/adapter.<name>` (so `/adapters/hl7v2` needs
`gateway/adapter.hl7v2`, `/adapters/quarantine` needs `gateway/adapter.quarantine`): a new adapter is
closed until its scope is granted. AuditEvent reads need `gateway/audit.read`; the metrics (`GET
/metrics`) need `gateway/metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import FhirError, forbidden
from gateway.security.policy import AUDIT_TYPE, refused
from gateway.security.scopes import AUDIT_READ, METRICS, Grants


@dataclass(frozen=True)
class Need:
    """Some letter of `letters` on `res_type`, or (when `scope` is set) that plain scope."""

    res_type: str = ""
    letters: str = ""
    scope: str = ""


def _fhir_need(method: str, parts: list[str]) -> Need | None:
    if not parts or not parts[0][:1].isupper():
        return None  # the whole-system interactions (transaction, batch) and unknown paths
    res_type, rest = parts[0], parts[1:]
    letters = None
    if not rest:
        letters = {"GET": "s", "POST": "c", "PUT": "uc"}.get(method)
    elif rest == ["_search"] and method == "POST":
        letters = "s"
    elif rest == ["_history"] and method == "GET":
        letters = "rs"
    elif rest[0].startswith("$"):
        letters = None  # operations check for themselves
    elif len(rest) == 1:
        letters = {"GET": "r", "PUT": "uc", "PATCH": "u", "DELETE": "d"}.get(method)
    elif rest[1] == "_history" and len(rest) in (2, 3) and method == "GET":
        letters = "r"
    if letters is None:
        return None
    if res_type == AUDIT_TYPE and letters in ("r", "s", "rs"):
        return Need(scope=AUDIT_READ)
    return Need(res_type, letters)


def need(method: str, path: str) -> Need | None:
    """What a request needs beyond a valid token, or None."""
    method = "GET" if method == "HEAD" else method  # Starlette answers HEAD with the GET route
    if path.startswith("/fhir/"):
        return _fhir_need(method, [part for part in path[len("/fhir/") :].split("/") if part])
    if path.startswith("/adapters/"):
        name = path[len("/adapters/") :].split("/", 1)[0]
        return Need(scope=f"gateway/adapter.{name}") if name else None
    if path == "/metrics":
        return Need(scope=METRICS)
    return None


def check(method: str, path: str, found: Grants) -> FhirError | None:
    """The 403 to answer, or None when the scopes allow the request."""
    required = need(method, path)
    if required is None:
        return None
    if required.scope:
        if found.has(required.scope):
            return None
        return forbidden(f"This entrance needs the scope {required.scope}")
    if found.permits_any(required.res_type, required.letters):
        return None
    return refused(required.res_type, required.letters)
