"""What a delivery sends, rendered at delivery time through the subscriber's read policy then.

R4 classic: an empty POST to the endpoint when `channel.payload` is absent; with a payload, a PUT of the
event's version to `[endpoint]/[Type]/[id]`, masked as a read by the client would be. When the focus is
no longer readable by the client, the event goes as an empty POST (nothing of the focus). Topic-based:
a history Bundle (gateway/subscriptions/notifications.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Table, select

from gateway.hooks import RequestContext, patients_of
from gateway.model.types import Json, dumps
from gateway.store.repository import Repository
from gateway.store.tables import DisabledClient, OAuthClient
from gateway.store.visibility import visible_keys
from gateway.subscriptions.endpoints import Target
from gateway.subscriptions.matcher import EVENTS
from gateway.subscriptions.resource import SUBSCRIPTION, passed
from gateway.subscriptions.sender import Request

if TYPE_CHECKING:
    from gateway.subscriptions.delivery import Deliverer

CLIENTS = cast(Table, OAuthClient.__table__)
DISABLED = cast(Table, DisabledClient.__table__)
FHIR_JSON = "application/fhir+json"

__all__ = ["Built", "build", "client_active", "passed"]


@dataclass
class Built:
    sub_id: str
    request: Request
    acked: int | None = None  # the event number a 2xx acknowledges
    activate: bool = False  # a handshake: a 2xx makes the subscription active
    patients: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)


def client_active(connection: Connection, client_id: str, external: bool) -> bool:
    """Not disabled, and registered and active (`external`: an external issuer's client may be
    unregistered)."""
    if connection.execute(select(DISABLED.c.client_id).where(DISABLED.c.client_id == client_id)).first():
        return False
    row = connection.execute(select(CLIENTS.c.active).where(CLIENTS.c.client_id == client_id)).first()
    return external if row is None else bool(row[0])


def headers(deliverer: Deliverer, sub_id: str, resource: Json) -> list[tuple[str, str]]:
    """The channel's headers, unsealed (never logged)."""
    found = []
    for header in (resource.get("channel") or {}).get("header") or []:
        name, _, value = str(header).partition(":")
        opened = deliverer.sealer().unseal(f"{SUBSCRIPTION}/{sub_id}", value.strip())
        found.append((name.strip(), str(opened.get("value", ""))))
    return found


def readable(
    deliverer: Deliverer, connection: Connection, context: RequestContext, key: tuple[str, str]
) -> bool:
    """Whether the client may read the focus now (current, not deleted, visible to it)."""
    visibility = deliverer.services.hooks.policy.visibility(context)
    return key in visible_keys(connection, visibility, [key])


def build(
    deliverer: Deliverer,
    connection: Connection,
    context: RequestContext,
    state: Any,
    resource: Json,
    target: Target,
) -> Built | None:
    sub_id = str(state.sub_id)
    if state.topic:
        from gateway.subscriptions import notifications

        return notifications.build(deliverer, connection, context, state, resource, target)
    if state.status == "requested":  # R4 classic: no handshake, active at once
        deliverer.set_status(sub_id, "active", None)
        return None
    number = int(state.acked) + 1
    if number > int(state.last_number):
        return None
    event = connection.execute(
        select(EVENTS).where(EVENTS.c.sub_id == sub_id, EVENTS.c.number == number)
    ).first()
    sent_headers = headers(deliverer, sub_id, resource)
    empty = Request("POST", target.path, tuple(sent_headers), b"")
    if event is None or event.res_type is None:  # purged past its retention: nothing of it to send
        return Built(sub_id, empty, acked=number)
    key = (str(event.res_type), str(event.res_id))
    payload = (resource.get("channel") or {}).get("payload")
    if not payload or not readable(deliverer, connection, context, key):
        return Built(sub_id, empty, acked=number)
    stored = Repository(connection).version(key[0], key[1], int(event.version_id))
    if stored is None or stored.deleted:
        return Built(sub_id, empty, acked=number)
    content = deliverer.services.hooks.policy.mask(context, stored.json())
    kind = payload if payload in (FHIR_JSON, "application/json") else FHIR_JSON
    path = target.path.split("?", 1)[0].rstrip("/") + f"/{key[0]}/{key[1]}"
    request = Request("PUT", path, (*sent_headers, ("Content-Type", kind)), dumps(content).encode())
    reference = f"{key[0]}/{key[1]}/_history/{event.version_id}"
    return Built(sub_id, request, acked=number, patients=patients_of(content), resources=[reference])
