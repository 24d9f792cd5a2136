"""A handover Task made by a real HL7 v2 discharge over MLLP reaches the municipality's subscriptions: its
topic-based one (numbered, the Task as the municipality reads it) and its R4 classic one (a PUT of the
Task); the other municipality's subscriptions receive nothing of it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from gateway.app import create_app
from gateway.security.organisation import ACTORS_SECONDS
from gateway.services import Services
from gateway.store.tables import ClientNotify
from tests.conftest import Database
from tests.subscriptions.conftest import NOTIFYING, subscription
from tests.subscriptions.receiver import Received, Receiver
from tests.subscriptions.test_topics import status_of, topic_subscription
from tests.workflow.journey import KOMMUN_A, Journey
from tests.workflow.test_return_reports_e2e import at_home


@pytest.fixture
def journey(database: Database, receiver: Receiver) -> Iterator[Journey]:
    """The journey's parties (auth and the organisation policy on), the deliverer running, both
    municipalities allowed to deliver to the receiver."""
    database.clear()
    settings = database.settings(auth=True, organisation_policy=True, **NOTIFYING)
    services = Services.build(settings, engine=database.engine)
    with TestClient(create_app(services.settings, services=services)) as http:
        journey = Journey(services, http)
        with services.engine.begin() as connection:
            for who in ("ka", "kb"):
                row = {"client_id": f"{who}-client", "kind": "endpoint", "value": receiver.base}
                connection.execute(insert(ClientNotify), row)
        yield journey
    services.close()


def subscribe(j: Journey, who: str, body: dict[str, object]) -> str:
    sub_id = str(j.post(who, body)["id"])
    deadline = time.monotonic() + 10
    while j.get(who, f"Subscription/{sub_id}")["status"] != "active":
        assert time.monotonic() < deadline, j.get(who, f"Subscription/{sub_id}")
        time.sleep(0.05)
    return sub_id


def test_a_discharge_over_mllp_reaches_the_municipalitys_subscriptions(
    journey: Journey, receiver: Receiver
) -> None:
    j = journey
    subscribe(j, "ka", topic_subscription(receiver.base + "ka-topic", "full-resource"))
    classic = {"criteria": "Task?code=handover&status=requested"}
    subscribe(j, "ka", subscription(receiver.base + "ka-classic", payload="application/fhir+json") | classic)
    subscribe(j, "kb", topic_subscription(receiver.base + "kb-topic", "id-only"))
    subscribe(j, "kb", subscription(receiver.base + "kb-classic", payload="application/fhir+json") | classic)
    at_home(j)  # an oxygen concentrator ordered, delivered and on loan at the patient's home
    j.stay()  # A01 then A03 over MLLP: the gateway opens a handover Task to the patient's municipality
    kommun = f"Organization/{j.organization(KOMMUN_A)}"
    deadline = time.monotonic() + ACTORS_SECONDS + 5
    while not j.search("ka", f"Task?code=handover&owner={kommun}&status=requested"):
        assert time.monotonic() < deadline  # the municipality's Organization is new: ACTORS_SECONDS
        time.sleep(0.2)
    task = j.handover("ka", kommun)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        paths = {r.path for r in receiver.received}
        if "/hooks/ka-classic/Task/" + task["id"] in paths and _topic(receiver):
            break
        time.sleep(0.05)
    time.sleep(0.5)  # anything else that would come (to B) has had its time
    [notified] = _topic(receiver)
    bundle = notified.json()
    assert status_of(bundle)["events"] == [(1, f"http://testserver/fhir/Task/{task['id']}")]
    sent = bundle["entry"][1]["resource"]
    assert sent["id"] == task["id"] and sent["owner"]["reference"] == kommun
    put = [r for r in receiver.received if r.path.startswith("/hooks/ka-classic")]
    assert [(r.method, r.path) for r in put] == [("PUT", f"/hooks/ka-classic/Task/{task['id']}")]
    assert put[0].json()["status"] == "requested"
    assert put[0].headers["content-type"] == "application/fhir+json"
    # municipality B: its handshake, nothing of A's handover in any form
    to_b = [r for r in receiver.received if r.path.startswith("/hooks/kb")]
    assert [status_of(r.json())["type"] for r in to_b] == ["handshake"]
    assert task["id"] not in " ".join(r.body.decode() for r in to_b)


def _topic(receiver: Receiver) -> list[Received]:
    return [
        r
        for r in receiver.received
        if r.path == "/hooks/ka-topic" and status_of(r.json())["type"] == "event-notification"
    ]
