"""The cases of the adversarial suite, generated at collection from what the server says it supports: the
CapabilityStatement (the same function GET /fhir/metadata answers with; test_capabilities_are_the_cases
checks the running app serves exactly these) and the search registry. A new type, parameter, include or
operation is a new case without a new test."""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace
from typing import Any, cast

from gateway.config import Settings
from gateway.fhir.capabilities import capability_statement
from gateway.search.registry import Registry
from gateway.services import Services
from gateway.subscriptions import topics as subscription_topics
from tests.security.outsider.world_data import NOT_SEEDED, PUBLIC_TYPES

SORTABLE = frozenset({"token", "string", "date", "number", "uri"})


@cache
def registry() -> Registry:
    return Registry.load(Settings().profiles_dir)


@cache
def metadata() -> dict[str, Any]:
    topics = subscription_topics.load(Settings().profiles_dir)
    shim = cast(Services, SimpleNamespace(registry=registry(), settings=Settings(auth=True), topics=topics))
    return capability_statement(shim, "http://testserver/fhir")


def resources() -> list[dict[str, Any]]:
    return list(metadata()["rest"][0]["resource"])


def interactions(res_type: str) -> set[str]:
    found = next(r for r in resources() if r["type"] == res_type)
    return {i["code"] for i in found["interaction"]}


def types_with(interaction: str) -> list[str]:
    return [r["type"] for r in resources() if interaction in interactions(r["type"])]


def private_types_with(interaction: str) -> list[str]:
    """Types whose resources can be hidden from the outsider (not the public directory)."""
    return [t for t in types_with(interaction) if t not in PUBLIC_TYPES]


def written_types() -> list[str]:
    return [t for t in private_types_with("create") if t not in NOT_SEEDED]


def search_params() -> list[str]:
    """`Type.code` of every search parameter the server lists, for every type."""
    return [f"{r['type']}.{p['name']}" for r in resources() for p in r.get("searchParam", [])]


def private_search_params() -> list[str]:
    return [c for c in search_params() if c.split(".")[0] not in PUBLIC_TYPES]


def sort_params() -> list[str]:
    return [
        c
        for c in search_params()
        if (p := registry().get(*c.split(".", 1))) is not None and p.type in SORTABLE and p.indexed
    ]


def reference_params() -> list[str]:
    """`Type.code` of every `_include` the server lists: each reference parameter."""
    return [i.replace(":", ".", 1) for r in resources() for i in r.get("searchInclude", [])]


def private_reference_params() -> list[str]:
    return [c for c in reference_params() if c.split(".")[0] not in PUBLIC_TYPES]


def operations() -> list[str]:
    """Every operation the server lists, system-wide (`$name`) and per type (`Type$name`)."""
    rest = metadata()["rest"][0]
    found = [f"${o['name']}" for o in rest.get("operation", [])]
    found += [f"{r['type']}${o['name']}" for r in resources() for o in r.get("operation", [])]
    return found


# Operations on a type, not an instance (`Patient/$export`), and the system's `$export`: their own cases in
# test_outsider_export.py (kick-off, status, files, cancel), not test_operation's instance-level ones.
BULK = frozenset({"export"})


def instance_operations() -> list[str]:
    """The operations test_operation sends to an instance (and the system-wide ones it POSTs)."""
    return [o for o in operations() if o.partition("$")[2] not in BULK]


def export_entrances() -> list[str]:
    """The `$export` kick-offs the server lists: `$export` (system), `Patient$export`."""
    return [o for o in operations() if o.partition("$")[2] in BULK]


def system_interactions() -> list[str]:
    return [i["code"] for i in metadata()["rest"][0].get("interaction", [])]
