"""R4 classic subscriptions delivered to a real receiver: as the subscriber, in order, nothing lost."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import text

from tests.subscriptions.conftest import World, subscription
from tests.subscriptions.receiver import Receiver


def subscribe(world: World, receiver: Receiver, headers: dict[str, str], **channel: Any) -> str:
    body = subscription(receiver.base + "tasks", header=["Authorization: Bearer kommun-hemlighet"], **channel)
    response = world.api.post("/fhir/Subscription", json=body, headers=headers)
    assert response.status_code == 201, response.text
    sub_id: str = response.json()["id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if world.api.get(f"/fhir/Subscription/{sub_id}", headers=headers).json()["status"] == "active":
            return sub_id
        time.sleep(0.05)
    raise AssertionError("the subscription did not become active")


def test_municipality_b_never_receives_a_tasks(notifying: World, receiver: Receiver) -> None:
    world = notifying
    subscribe(world, receiver, world.b, payload="application/fhir+json")
    world.task("ta1", "orgA", "pa")
    world.task("tb1", "orgB", "pb")
    world.task("ta2", "orgA", "pa")
    world.task("tb2", "orgB", "pb", status="accepted")  # no longer matches
    got = receiver.wait_for(1)
    time.sleep(1.0)
    got = list(receiver.received)
    assert [(r.method, r.path) for r in got] == [("PUT", "/hooks/tasks/Task/tb1")]
    assert got[0].json()["owner"]["reference"] == "Organization/orgB"
    assert got[0].headers["authorization"] == "Bearer kommun-hemlighet"
    assert got[0].headers["content-type"] == "application/fhir+json"


def test_empty_notifications_when_no_payload(notifying: World, receiver: Receiver) -> None:
    world = notifying
    subscribe(world, receiver, world.a)
    world.task("ta1", "orgA", "pa")
    world.task("tb1", "orgB", "pb")
    got = receiver.wait_for(1)
    time.sleep(0.5)
    assert [(r.method, r.path, r.body) for r in receiver.received] == [("POST", "/hooks/tasks", b"")]
    assert got


def test_a_receiver_down_then_back_gets_everything_in_order(notifying: World, receiver: Receiver) -> None:
    world = notifying
    subscribe(world, receiver, world.a, payload="application/fhir+json")
    receiver.status = 503
    for n in range(3):
        world.task(f"t{n}", "orgA", "pa")
    time.sleep(1.0)
    receiver.stop()  # now it refuses connections
    for n in range(3, 6):
        world.task(f"t{n}", "orgA", "pa")
    time.sleep(0.5)
    receiver.status = 200
    receiver.start()
    got = receiver.wait_for(6)
    assert [r.path for r in got] == [f"/hooks/tasks/Task/t{n}" for n in range(6)]


def test_a_rolled_back_write_notifies_nobody(notifying: World, receiver: Receiver) -> None:
    world = notifying
    subscribe(world, receiver, world.a, payload="application/fhir+json")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "for": {"reference": "Patient/pa"},
                    "owner": {"reference": "Organization/orgA"},
                },
                "request": {"method": "POST", "url": "Task"},
            },
            {"request": {"method": "GET", "url": "Patient/nope"}},
        ],
    }
    assert world.api.post("/fhir", json=bundle, headers=world.region).status_code == 404
    world.task("after", "orgA", "pa")
    got = receiver.wait_for(1)
    time.sleep(0.5)
    assert [r.path for r in receiver.received] == ["/hooks/tasks/Task/after"]
    assert got


def test_each_delivery_with_a_body_is_audited(notifying: World, receiver: Receiver) -> None:
    world = notifying
    if not world.services.settings.audit:
        return
    subscribe(world, receiver, world.a, payload="application/fhir+json")
    world.task("ta1", "orgA", "pa")
    assert receiver.wait_for(1)
    deadline = time.monotonic() + 10
    found: list[dict[str, Any]] = []
    while not found and time.monotonic() < deadline:
        with world.services.engine.connect() as connection:
            rows = connection.execute(text("SELECT content FROM resource WHERE res_type = 'AuditEvent'"))
            events = [json.loads(c) for (c,) in rows]
        found = [e for e in events if e["subtype"][0]["code"] == "notify"]
        time.sleep(0.1)
    [event] = found
    assert event["outcome"] == "0"
    assert receiver.base + "tasks" in event["outcomeDesc"]
    assert "kommun-hemlighet" not in json.dumps(events)
    whats = [e["what"]["reference"] for e in event["entity"]]
    assert "Patient/pa" in whats and "Task/ta1/_history/1" in whats
    assert event["agent"][0]["who"]["identifier"]["value"] == world.a_client.client_id
