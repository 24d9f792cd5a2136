"""What a writer that owns a resource only in part may change (policy `restricted_owners`, `gateway_tasks`):
the elements a change touches beyond those it may change, the notes it may append, and the owner it may
point at another unit of its own organisation (issue 18: a Task reassigned within the organisation)."""

from __future__ import annotations

from typing import Any

from gateway.model.types import Json
from gateway.security.access_index import ACTORS, OWNERS, AccessIndex
from gateway.store.relations import Actors


def changed_elements(before: Json, after: Json) -> set[str]:
    ignored = {"meta", "text", "id", "resourceType"}
    keys = (set(before) | set(after)) - ignored
    return {k for k in keys if before.get(k) != after.get(k)}


def names(access: AccessIndex, actors: Actors, node: Any) -> bool:
    """Whether `node` references the organisation or its people (OrganisationPolicy.names)."""
    return bool(actors.known and set(access.named(node, ACTORS)) & actors.refs())


def reassigned_within(access: AccessIndex, actors: Actors, before: object, after: object) -> bool:
    """`before` names the organisation and `after` is one Reference to it, its HealthcareService or its
    PractitionerRole (literally or by HSA-id; not a CareTeam, not another organisation's unit)."""
    if not isinstance(after, dict) or not names(access, actors, before):
        return False
    named = set(access.named(after, OWNERS))
    return bool(named) and named <= actors.refs(groups=False)


def refused_changes(
    access: AccessIndex,
    actors: Actors,
    current: Json,
    resource: Json,
    may_change: frozenset[str],
    may_append: frozenset[str],
    may_reassign: frozenset[str] = frozenset(),
) -> list[str]:
    """The elements a change touches beyond `may_change`; an element of `may_append` (a Task's `note`)
    may take new items at its end, each authored by the organisation or one of its PractitionerRoles,
    while those already there stay as they are; an element of `may_reassign` (a Task's `owner`) that
    names the organisation may be pointed at another of its units (`reassigned_within`)."""
    refused = []
    for element in sorted(changed_elements(current, resource) - may_change):
        if element in may_reassign and reassigned_within(
            access, actors, current.get(element), resource.get(element)
        ):
            continue
        before, after = current.get(element) or [], resource.get(element) or []
        appended = (
            element in may_append
            and isinstance(before, list)
            and isinstance(after, list)
            and after[: len(before)] == before
            and all(
                isinstance(item, dict) and names(access, actors, item.get("authorReference"))
                for item in after[len(before) :]
            )
        )
        if not appended:
            refused.append(element)
    return refused
