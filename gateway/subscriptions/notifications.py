"""Topic-based notifications (Subscriptions R5 Backport IG, STU 1.1, for R4): history Bundles whose first
entry is the subscription status (`Parameters`, profile backport-subscription-status-r4) with
`events-since-subscription-start` and one `notification-event` per event (number, timestamp, focus),
then the focus resources as `backport-payload-content` asks (`empty`: none, and no focus reference;
`id-only`: their references; `full-resource`: the resources). Each focus is rendered now, through the
subscriber's read policy and masking: one it may no longer read goes without focus, its number kept.
Used for handshakes, heartbeats and event notifications, and by `$status` and `$events`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import uuid4

from sqlalchemy import Connection, select

from gateway.hooks import AccessPolicy, RequestContext, patients_of
from gateway.model.types import Json, dumps
from gateway.search.dates import to_instant, utc_now
from gateway.store.repository import Repository
from gateway.store.visibility import visible_keys
from gateway.subscriptions.endpoints import Target
from gateway.subscriptions.matcher import EVENTS
from gateway.subscriptions.resource import MAX_COUNT, SUBSCRIPTION, channel_extension, payload_content
from gateway.subscriptions.sender import Request

if TYPE_CHECKING:
    from gateway.subscriptions.delivery import Deliverer
    from gateway.subscriptions.render import Built

STATUS_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"
)
DEFAULT_MAX_COUNT = 20


class Notification:
    """One notification Bundle, and who and what it discloses (for the audit)."""

    def __init__(self) -> None:
        self.bundle: Json = {}
        self.patients: list[str] = []
        self.resources: list[str] = []


def events_between(connection: Connection, sub_id: str, first: int, last: int) -> list[Any]:
    return list(
        connection.execute(
            select(EVENTS)
            .where(EVENTS.c.sub_id == sub_id, EVENTS.c.number >= first, EVENTS.c.number <= last)
            .order_by(EVENTS.c.number)
        )
    )


def notification(
    policy: AccessPolicy,
    connection: Connection,
    context: RequestContext,
    state: Any,
    resource: Json,
    kind: str,
    events: list[Any],
    content: str,
    status: str | None = None,
) -> Notification:
    base = context.base_url.rstrip("/")
    sub_id = str(state.sub_id)
    keys = [(str(e.res_type), str(e.res_id)) for e in events if e.res_type is not None]
    readable = visible_keys(connection, policy.visibility(context), keys) if keys else set()
    found = Notification()
    parameters: list[Json] = [
        {"name": "subscription", "valueReference": {"reference": f"{base}/{SUBSCRIPTION}/{sub_id}"}},
        {"name": "topic", "valueCanonical": str(state.topic)},
        {"name": "status", "valueCode": status or str(state.status)},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(int(state.last_number))},
    ]
    entries: list[Json] = []
    repository = Repository(connection)
    for event in events:
        part: list[Json] = [
            {"name": "event-number", "valueString": str(int(event.number))},
            {"name": "timestamp", "valueInstant": to_instant(event.occurred_at)},
        ]
        key = (str(event.res_type), str(event.res_id))
        if content != "empty" and event.res_type is not None and key in readable:
            url = f"{base}/{key[0]}/{key[1]}"
            part.append({"name": "focus", "valueReference": {"reference": url}})
            entry: Json = {"fullUrl": url, "request": {"method": "PUT", "url": f"{key[0]}/{key[1]}"}}
            stored = repository.version(key[0], key[1], int(event.version_id))
            if stored is not None and not stored.deleted:
                masked = policy.mask(context, stored.json())
                found.patients += [p for p in patients_of(masked) if p not in found.patients]
                if content == "full-resource":
                    entry["resource"] = masked
                    entry["response"] = {"status": "200"}
            found.resources.append(f"{key[0]}/{key[1]}/_history/{event.version_id}")
            entries.append(entry)
        parameters.append({"name": "notification-event", "part": part})
    status_entry = {
        "fullUrl": f"urn:uuid:{uuid4()}",
        "resource": {
            "resourceType": "Parameters",
            "meta": {"profile": [STATUS_PROFILE]},
            "parameter": parameters,
        },
        "request": {"method": "GET", "url": f"{SUBSCRIPTION}/{sub_id}/$status"},
        "response": {"status": "200"},
    }
    found.bundle = {
        "resourceType": "Bundle",
        "id": str(uuid4()),
        "type": "history",
        "timestamp": to_instant(utc_now()),
        "entry": [status_entry, *entries],
    }
    return found


def build(
    deliverer: Deliverer,
    connection: Connection,
    context: RequestContext,
    state: Any,
    resource: Json,
    target: Target,
) -> Built | None:
    from gateway.subscriptions.render import Built, headers

    sub_id = str(state.sub_id)
    acked, last = int(state.acked), int(state.last_number)
    events: list[Any] = []
    if state.status == "requested":
        kind = "handshake"
    elif acked < last:
        kind = "event-notification"
        count = channel_extension(resource, MAX_COUNT)
        most = count if isinstance(count, int) and count > 0 else DEFAULT_MAX_COUNT
        events = events_between(connection, sub_id, acked + 1, min(last, acked + most))
        if not events:  # purged past their retention: acknowledged as sent
            return Built(sub_id, Request("POST", target.path, (), b""), acked=min(last, acked + most))
    elif state.heartbeat_seconds:
        kind = "heartbeat"
    else:
        return None
    content = payload_content(resource)
    policy = deliverer.services.hooks.policy
    found = notification(policy, connection, context, state, resource, kind, events, content)
    sent = (*headers(deliverer, sub_id, resource), ("Content-Type", "application/fhir+json"))
    request = Request("POST", target.path, sent, dumps(found.bundle).encode())
    return Built(
        sub_id,
        request,
        acked=int(events[-1].number) if events else None,
        activate=kind == "handshake",
        patients=found.patients,
        resources=found.resources,
    )
