"""SMART scopes: parsing the v2 (`system/Task.cruds`) and v1 (`system/Task.read`) forms, what a set of
scopes permits, and which requested scopes a client's registration covers.

A resource scope is `<context>/<type|*>.<permissions>`. `system/` and `user/` scopes permit on the
resource type as written. `patient/` scopes are recognised but permit nothing: the gateway has no patient
launch context (Backend Services), so it cannot confine them to one patient. A v2 scope with a query
(`system/Observation.rs?category=…`) permits nothing yet either: granting it without the query would
widen it. Other scopes (`gateway/adapter.hl7v2`, `gateway/audit.read`, `gateway/metrics`) are plain
names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

# create, read, update, delete, search: SMART v2's letters, in the order the spec requires them.
LETTERS = "cruds"
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
CONTEXTS = ("system", "user", "patient")
ENFORCED_CONTEXTS = ("system", "user")
_RESOURCE = re.compile(r"^(system|user|patient)/(\*|[A-Z][A-Za-z]{0,63})\.([a-z*]+)$")

ADAPTER_BESTALLNINGSPORTALEN = "gateway/adapter.bestallningsportalen"
ADAPTER_DEVICE_REGISTER = "gateway/adapter.device-register"
ADAPTER_HL7V2 = "gateway/adapter.hl7v2"
ADAPTER_QUARANTINE = "gateway/adapter.quarantine"
AUDIT_READ = "gateway/audit.read"
METRICS = "gateway/metrics"  # GET /metrics on the main port (docs/operations.md)
GATEWAY_SCOPES = (
    ADAPTER_BESTALLNINGSPORTALEN,
    ADAPTER_DEVICE_REGISTER,
    ADAPTER_HL7V2,
    ADAPTER_QUARANTINE,
    AUDIT_READ,
    METRICS,
)


@dataclass(frozen=True)
class ResourceScope:
    context: str  # system | user | patient
    res_type: str  # a resource type or "*"
    permissions: frozenset[str]  # letters of LETTERS


def parse_permissions(text: str) -> frozenset[str] | None:
    """`cruds` subsets in the spec's order (v2), or `read`/`write`/`*` (v1); None when neither."""
    if text in V1:
        return frozenset(V1[text])
    position = -1
    for letter in text:
        index = LETTERS.find(letter)
        if index <= position:  # unknown, repeated or out of order
            return None
        position = index
    return frozenset(text) if text else None


def parse_resource_scope(scope: str) -> ResourceScope | None:
    """A resource scope, or None for anything else (plain scopes, malformed ones, scopes with a query)."""
    match = _RESOURCE.match(scope)
    if match is None:
        return None
    permissions = parse_permissions(match.group(3))
    if permissions is None:
        return None
    return ResourceScope(match.group(1), match.group(2), permissions)


def is_known(scope: str) -> bool:
    """Whether the gateway understands the scope at all (used to refuse malformed registrations)."""
    return scope in GATEWAY_SCOPES or parse_resource_scope(scope) is not None


@dataclass(frozen=True)
class Grants:
    """What a set of scopes permits: per resource type (or "*") the letters, plus the plain scopes."""

    by_type: dict[str, frozenset[str]]
    plain: frozenset[str]

    def permits(self, res_type: str, letter: str) -> bool:
        return letter in self.by_type.get(res_type, frozenset()) or letter in self.by_type.get(
            "*", frozenset()
        )

    def permits_any(self, res_type: str, letters: str) -> bool:
        return any(self.permits(res_type, letter) for letter in letters)

    def has(self, scope: str) -> bool:
        return scope in self.plain


@lru_cache(maxsize=1024)
def grants(scopes: frozenset[str]) -> Grants:
    """The permissions of a token's scopes (cached: tokens of one client repeat the same set)."""
    by_type: dict[str, set[str]] = {}
    plain = set()
    for scope in scopes:
        parsed = parse_resource_scope(scope)
        if parsed is None:
            plain.add(scope)
        elif parsed.context in ENFORCED_CONTEXTS:
            by_type.setdefault(parsed.res_type, set()).update(parsed.permissions)
    return Grants({k: frozenset(v) for k, v in by_type.items()}, frozenset(plain))


def split(text: str | None) -> list[str]:
    return [scope for scope in (text or "").split(" ") if scope]


def covered(requested: str, registered: Iterable[str]) -> bool:
    """Whether a requested scope asks for no more than the registered scopes allow: the same scope, or a
    resource scope of the same context whose type and permissions some registered scopes cover."""
    registered = list(registered)
    if requested in registered:
        return True
    wanted = parse_resource_scope(requested)
    if wanted is None:
        return False
    allowed: set[str] = set()
    for scope in registered:
        have = parse_resource_scope(scope)
        if have and have.context == wanted.context and have.res_type in (wanted.res_type, "*"):
            allowed |= have.permissions
    return wanted.permissions <= allowed


def grant(requested: Iterable[str], registered: Iterable[str]) -> list[str]:
    """The requested scopes the registration covers, in the order asked (duplicates dropped)."""
    registered = list(registered)
    granted: list[str] = []
    for scope in requested:
        if scope not in granted and covered(scope, registered):
            granted.append(scope)
    return granted
