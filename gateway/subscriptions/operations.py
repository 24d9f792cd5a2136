"""`Subscription/{id}/$status` and `Subscription/{id}/$events` (Subscriptions R5 Backport IG).

Both answer only the subscription's own client (another's answers 404 like an unknown id: the read goes
through the same visibility). `$events?eventsSinceNumber=&eventsUntilNumber=&content=` returns the events
kept (GATEWAY_NOTIFY_RETENTION_DAYS) as a notification Bundle of type `query-event`, each focus rendered
through the caller's read policy now; every answer is audited with the patients it names.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import bad_request
from gateway.fhir.context import run, services
from gateway.fhir.http import fhir_response
from gateway.hooks import AccessRecord
from gateway.pipeline import UnitOfWork
from gateway.subscriptions.notifications import events_between, notification
from gateway.subscriptions.resource import PAYLOAD_CONTENTS, STATE, SUBSCRIPTION, payload_content

MAX_EVENTS = 1000  # events in one $events answer; ask again from the last number for more


def _number(request: Request, name: str) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise bad_request(f"{name} must be an event number (a positive integer)", name)
    return int(value)


async def status(request: Request, res_id: str) -> Response:
    svc = services(request)

    def work(uow: UnitOfWork) -> dict[str, Any]:
        current = svc.write_path.read(uow, SUBSCRIPTION, res_id)  # hidden or unknown: 404, audited
        state = uow.connection.execute(select(STATE).where(STATE.c.sub_id == res_id)).first()
        if state is None or not state.topic:
            raise bad_request("$status is for topic-based subscriptions", "Subscription.criteria")
        found = notification(
            svc.hooks.policy, uow.connection, uow.context, state, current.json(), "query-status", [], "empty"
        )
        status_entry = found.bundle["entry"][0]
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": 1,
            "entry": [{"resource": status_entry["resource"], "search": {"mode": "match"}}],
        }

    return fhir_response(await run(request, work, write=False))


async def events(request: Request, res_id: str) -> Response:
    svc = services(request)
    since, until = _number(request, "eventsSinceNumber"), _number(request, "eventsUntilNumber")
    content = request.query_params.get("content")
    if content is not None and content not in PAYLOAD_CONTENTS:
        raise bad_request("content is empty, id-only or full-resource", "content")

    def work(uow: UnitOfWork) -> dict[str, Any]:
        current = svc.write_path.read(uow, SUBSCRIPTION, res_id)
        state = uow.connection.execute(select(STATE).where(STATE.c.sub_id == res_id)).first()
        if state is None or not state.topic:
            raise bad_request("$events is for topic-based subscriptions", "Subscription.criteria")
        last = int(state.last_number) if until is None else min(until, int(state.last_number))
        first = max(1, since if since is not None else 1, last - MAX_EVENTS + 1)
        found_events = events_between(uow.connection, res_id, first, last)
        resource = current.json()
        shown = content or payload_content(resource)
        found = notification(
            svc.hooks.policy, uow.connection, uow.context, state, resource, "query-event", found_events, shown
        )
        record = AccessRecord("events", SUBSCRIPTION, [res_id], 200, uow.context, f"events {first}-{last}")
        record.patients, record.resources = found.patients, found.resources
        uow.records.append(record)
        return found.bundle

    return fhir_response(await run(request, work, write=False))
