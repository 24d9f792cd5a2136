"""Handovers a unit opens itself (policy `client_handovers`, docs/security.md): what a client that is not
exempt may put in a Task with the gateway's code `handover` it creates. The reaction that fills its
device inputs (gateway.workflow.handovers) acts on what these checks let through."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from gateway.errors import forbidden, unprocessable
from gateway.model.types import Json
from gateway.search.dates import utc_now
from gateway.security.access_index import AccessIndex
from gateway.security.rules import ClientHandovers
from gateway.store import relations
from gateway.store.relations import Actors
from gateway.store.repository import Repository

IGNORED = frozenset({"resourceType", "id", "meta", "text"})


def authorize_client_handover(
    rules: ClientHandovers,
    access: AccessIndex,
    names: Callable[[Actors, Any], bool],
    connection: Connection,
    actors: Actors,
    resource: Json,
) -> None:
    """Raise a FhirError unless the organisation `actors` names may open this handover (403 naming what is
    wrong; 422 for a missing reason)."""
    given = sorted(set(resource) - IGNORED - rules.may_give)
    if given:
        allowed = ", ".join(sorted(rules.may_give))
        raise forbidden(
            f"A handover a unit opens may give only {allowed}; not {', '.join(given)} (the gateway fills "
            "the device inputs)"
        )
    if resource.get("status") not in rules.statuses:
        raise forbidden(
            f"A handover a unit opens starts as {' or '.join(sorted(rules.statuses))}: Task.status"
        )
    if not names(actors, resource.get("requester")):
        raise forbidden("A handover a unit opens names the unit itself as its requester: Task.requester")
    _receiver(rules, access, names, connection, actors, resource.get("owner"))
    patients = access.patients(resource)
    related = relations.related_through(connection, actors, utc_now(), patients, rules.related_through)
    if not patients or patients - related:
        raise forbidden(
            "A unit may open a handover only for a patient it is related to through what the region or the "
            "gateway wrote: a DeviceRequest it requested or performs, an Encounter it provided, a Task "
            "addressed to it (Task.for)"
        )
    if not resource.get("reasonCode") and not resource.get("reasonReference"):
        raise unprocessable(
            "A handover a unit opens needs a reason (reasonCode or reasonReference)", "Task.reasonCode"
        )


def _receiver(
    rules: ClientHandovers,
    access: AccessIndex,
    names: Callable[[Actors, Any], bool],
    connection: Connection,
    actors: Actors,
    owner: object,
) -> None:
    """The owner: one of `rules.receivers` that a trusted writer wrote (the region maintains), not the
    unit itself."""
    reference = owner.get("reference") if isinstance(owner, dict) else None
    key = access.local(reference) if isinstance(reference, str) else None
    stored = Repository(connection).current(*key) if key is not None and key[0] in rules.receivers else None
    if stored is None or stored.deleted or stored.writer is not None:
        raise forbidden(
            f"The receiver of a handover (Task.owner) must be one of {', '.join(sorted(rules.receivers))} "
            "that the region maintains"
        )
    if names(actors, owner):
        raise forbidden("A unit may not hand a patient over to itself (Task.owner)")
