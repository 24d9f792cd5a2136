"""Topic-based subscriptions (Subscriptions R5 Backport IG): handshake, numbered events in history Bundles,
heartbeats, $status and $events; each focus as the subscriber may read it."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select

from gateway.store.repository import R
from tests.subscriptions.conftest import World, ref
from tests.subscriptions.receiver import Receiver

BASE = "https://fhir.home-device-gateway.se"
HANDOVER = f"{BASE}/SubscriptionTopic/handover-task"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"


def handover(world: World, task_id: str, org: str, patient_id: str, status: str = "requested") -> None:
    world.put(
        {
            "resourceType": "Task",
            "id": task_id,
            "status": status,
            "intent": "order",
            "code": {"coding": [{"system": f"{BASE}/CodeSystem/care-transition-task", "code": "handover"}]},
            "for": ref(f"Patient/{patient_id}"),
            "owner": ref(f"Organization/{org}"),
        }
    )


def topic_subscription(
    endpoint: str, content: str, filters: tuple[str, ...] = (), **channel: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Överlämningar",
        "criteria": HANDOVER,
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]},
            **channel,
        },
    }
    if filters:
        body["_criteria"] = {
            "extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": f} for f in filters]
        }
    return body


def subscribe(world: World, body: dict[str, Any], headers: dict[str, str]) -> str:
    response = world.api.post("/fhir/Subscription", json=body, headers=headers)
    assert response.status_code == 201, response.text
    sub_id: str = response.json()["id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if world.api.get(f"/fhir/Subscription/{sub_id}", headers=headers).json()["status"] == "active":
            return sub_id
        time.sleep(0.05)
    raise AssertionError("the subscription did not become active")


def status_of(bundle: dict[str, Any]) -> dict[str, Any]:
    parameters = bundle["entry"][0]["resource"]
    assert parameters["resourceType"] == "Parameters"
    found: dict[str, Any] = {"events": []}
    for parameter in parameters["parameter"]:
        if parameter["name"] == "notification-event":
            part = {p["name"]: p for p in parameter["part"]}
            focus = part.get("focus", {}).get("valueReference", {}).get("reference")
            found["events"].append((int(part["event-number"]["valueString"]), focus))
        else:
            found[parameter["name"]] = next(v for k, v in parameter.items() if k.startswith("value"))
    return found


def notified_events(receiver: Receiver) -> list[tuple[int, str | None]]:
    return [e for r in receiver.received for e in status_of(r.json())["events"]]


def test_handshake_then_numbered_events_of_the_subscriber_only(notifying: World, receiver: Receiver) -> None:
    world = notifying
    if world.services.settings.audit:
        return
    metadata = world.api.get("/fhir/metadata").json()
    [entry] = [r for r in metadata["rest"][0]["resource"] if r["type"] == "Subscription"]
    assert HANDOVER in [e["valueCanonical"] for e in entry["extension"]]
    sub_b = subscribe(world, topic_subscription(receiver.base + "b", "full-resource"), world.b)
    [handshake] = receiver.wait_for(1)
    assert handshake.path == "/hooks/b" and status_of(handshake.json())["type"] == "handshake"
    handover(world, "ha1", "orgA", "pa")
    handover(world, "hb1", "orgB", "pb")
    world.task("plain", "orgB", "pb")  # not a handover: not this topic
    handover(world, "hb1", "orgB", "pb", status="accepted")
    got = receiver.wait_for(3)
    time.sleep(0.5)
    assert notified_events(receiver) == [
        (1, "http://testserver/fhir/Task/hb1"),
        (2, "http://testserver/fhir/Task/hb1"),
    ]
    resources = [e.get("resource") for r in got[1:] for e in r.json()["entry"][1:]]
    assert [r["owner"]["reference"] for r in resources] == ["Organization/orgB"] * 2
    assert [r["status"] for r in resources] == ["requested", "accepted"]
    # $status and $events, the subscriber's own only
    status = world.api.get(f"/fhir/Subscription/{sub_b}/$status", headers=world.b)
    assert status.status_code == 200
    assert status_of(status.json())["events-since-subscription-start"] == "2"
    assert world.api.get(f"/fhir/Subscription/{sub_b}/$status", headers=world.a).status_code == 404
    assert world.api.get(f"/fhir/Subscription/{sub_b}/$events", headers=world.a).status_code == 404
    events = world.api.get(
        f"/fhir/Subscription/{sub_b}/$events?eventsSinceNumber=2&content=id-only", headers=world.b
    )
    assert events.status_code == 200, events.text
    found = status_of(events.json())
    assert found["type"] == "query-event" and found["events"] == [(2, "http://testserver/fhir/Task/hb1")]
    assert "resource" not in events.json()["entry"][1]


def test_filters_and_a_receiver_down_then_back(notifying: World, receiver: Receiver) -> None:
    world = notifying
    if world.services.settings.audit:
        return
    body = topic_subscription(receiver.base + "a", "id-only", ("Task?owner=Organization/orgA",))
    subscribe(world, body, world.a)
    assert receiver.wait_for(1)
    receiver.status = 503
    handover(world, "h0", "orgA", "pa")
    handover(world, "h1", "orgA", "pa")
    time.sleep(0.8)
    receiver.stop()
    handover(world, "h2", "orgA", "pa")
    handover(world, "h3", "orgA", "pa")
    time.sleep(0.4)
    receiver.status = 200
    receiver.start()
    deadline = time.monotonic() + 15
    while len(notified_events(receiver)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    numbers = [n for n, _ in notified_events(receiver)]
    assert numbers == [1, 2, 3, 4]
    assert [f for _, f in notified_events(receiver)] == [
        f"http://testserver/fhir/Task/h{n}" for n in range(4)
    ]


def test_heartbeats_when_asked(notifying: World, receiver: Receiver) -> None:
    world = notifying
    if world.services.settings.audit:
        return
    heartbeat = {"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": 1}
    subscribe(world, topic_subscription(receiver.base + "a", "empty", extension=[heartbeat]), world.a)
    got = receiver.wait_for(3, timeout=10)
    kinds = [status_of(r.json())["type"] for r in got]
    assert kinds[0] == "handshake" and "heartbeat" in kinds[1:]


def test_an_events_answer_is_audited_with_what_it_names(notifying: World, receiver: Receiver) -> None:
    """`$events` is a read of the events' resources: its AuditEvent names the asking client, the
    Subscription and the patients and resources the answer showed."""
    world = notifying
    if not world.services.settings.audit:
        return
    sub_a = subscribe(world, topic_subscription(receiver.base + "a", "id-only"), world.a)
    assert receiver.wait_for(1)
    handover(world, "ha1", "orgA", "pa")
    assert len(receiver.wait_for(2)) == 2
    answer = world.api.get(f"/fhir/Subscription/{sub_a}/$events?content=full-resource", headers=world.a)
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 10
    found: list[dict[str, Any]] = []
    while not found and time.monotonic() < deadline:
        with world.services.engine.connect() as connection:
            rows = connection.execute(select(R.c.content).where(R.c.res_type == "AuditEvent"))
            found = [e for e in (json.loads(c) for (c,) in rows) if e["subtype"][0]["code"] == "events"]
        time.sleep(0.1)
    [event] = found
    whats = [e["what"]["reference"] for e in event["entity"] if "what" in e]
    assert f"Subscription/{sub_a}" in whats and "Patient/pa" in whats
    assert any(what.startswith("Task/ha1") for what in whats)
    assert event["agent"][0]["who"]["identifier"]["value"] == world.a_client.client_id
