"""Delivery by real `gateway serve` processes: one killed with SIGKILL in the middle of deliveries loses
nothing once another is started (a duplicate only with the same event number), and two processes on one
PostgreSQL deliver each of 500 events exactly once per subscription. The test process writes (auth on,
organisation-scoped clients) and receives; the servers only deliver."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.subscriptions.resource import STATE
from tests.conftest import BASE_URL, Database
from tests.interop.conftest import GATEWAY, Server, _environment, _free_port, _stop, _wait_ready
from tests.subscriptions.conftest import World, ref, subscription
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_topics import BACKPORT, HANDOVER, status_of, topic_subscription

TASK_CODE = {
    "coding": [
        {
            "system": f"{HANDOVER.split('/SubscriptionTopic')[0]}/CodeSystem/care-transition-task",
            "code": "handover",
        }
    ]
}


class Servers:
    """`gateway serve` processes delivering (auth on, http to loopback allowed, short intervals)."""

    def __init__(self, database: Database, tmp_path: Path) -> None:
        self.database, self.tmp_path = database, tmp_path
        self.running: list[Server] = []

    def start(self, **env: str) -> Server:
        environment = {
            **_environment(self.database),
            "GATEWAY_AUTH": "on",
            "GATEWAY_BASE_URL": BASE_URL,
            "GATEWAY_NOTIFY": "on",
            "GATEWAY_ALLOW_HTTP_LOOPBACK": "on",
            "GATEWAY_NOTIFY_POLL_SECONDS": "0.1",
            "GATEWAY_NOTIFY_RETRY_CAP": "0.5",
            "GATEWAY_NOTIFY_TIMEOUT": "2",
            **env,
        }
        port = _free_port()
        command = [str(GATEWAY), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-upgrade"]
        log = self.tmp_path / f"serve-{len(self.running)}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=sink)
        server = Server(f"http://127.0.0.1:{port}/fhir", process, log)
        self.running.append(server)
        _wait_ready(server)
        return server

    def stop(self) -> None:
        for server in self.running:
            _stop(server.process)


@pytest.fixture
def servers(database: Database, tmp_path: Path) -> Iterator[Servers]:
    started = Servers(database, tmp_path)
    yield started
    started.stop()


def until(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def subscribe(world: World, body: dict[str, Any]) -> str:
    response = world.api.post("/fhir/Subscription", json=body, headers=world.a)
    assert response.status_code == 201, response.text
    sub_id = str(response.json()["id"])
    until(
        lambda: world.api.get(f"/fhir/Subscription/{sub_id}", headers=world.a).json()["status"] == "active",
        20,
        "the subscription did not become active",
    )
    return sub_id


def handovers(world: World, ids: list[str], per_bundle: int = 100) -> None:
    """Handover Tasks for municipality A, written by the region in transactions of `per_bundle`."""
    for start in range(0, len(ids), per_bundle):
        entries = [
            {
                "resource": {
                    "resourceType": "Task",
                    "id": task_id,
                    "status": "requested",
                    "intent": "order",
                    "code": TASK_CODE,
                    "for": ref("Patient/pa"),
                    "owner": ref("Organization/orgA"),
                },
                "request": {"method": "PUT", "url": f"Task/{task_id}"},
            }
            for task_id in ids[start : start + per_bundle]
        ]
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        answer = world.api.post("/fhir", json=bundle, headers=world.region)
        assert answer.status_code == 200, answer.text[:2000]


def topic_events(receiver: Receiver, path: str) -> list[tuple[int, str | None]]:
    return [
        event for r in list(receiver.received) if r.path == path for event in status_of(r.json())["events"]
    ]


def classic_paths(receiver: Receiver, path: str) -> list[str]:
    return [r.path.removeprefix(path) for r in list(receiver.received) if r.path.startswith(path + "/")]


def one_at_a_time(content: str = "id-only") -> dict[str, Any]:
    body = topic_subscription("", content)
    body["channel"]["extension"] = [{"url": BACKPORT + "backport-max-count", "valuePositiveInt": 1}]
    return body


def test_a_server_killed_mid_delivery_loses_nothing(
    manual: World, receiver: Receiver, servers: Servers
) -> None:
    world = manual
    lease = {"GATEWAY_NOTIFY_LEASE_SECONDS": "3"}
    first = servers.start(**lease)
    topic = one_at_a_time()
    topic["channel"]["endpoint"] = receiver.base + "topic"
    subscribe(world, topic)
    subscribe(
        world,
        subscription(
            receiver.base + "classic", "Task?owner=Organization/orgA", payload="application/fhir+json"
        ),
    )
    receiver.delay = 0.03  # a receiver that takes its time: the kill comes in the middle
    ids = [f"k{n:03d}" for n in range(40)]
    handovers(world, ids, per_bundle=10)
    until(lambda: len(topic_events(receiver, "/hooks/topic")) >= 8, 30, "no deliveries before the kill")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    before = len(topic_events(receiver, "/hooks/topic"))
    assert before < len(ids), "everything was delivered before the kill"
    servers.start(**lease)
    until(
        lambda: (
            {n for n, _ in topic_events(receiver, "/hooks/topic")} == set(range(1, len(ids) + 1))
            and set(classic_paths(receiver, "/hooks/classic")) == {f"/Task/{i}" for i in ids}
        ),
        60,
        "the restarted server did not deliver the rest",
    )
    got = topic_events(receiver, "/hooks/topic")
    expected = {n + 1: f"http://testserver/fhir/Task/{task_id}" for n, task_id in enumerate(ids)}
    assert all(focus == expected[number] for number, focus in got)  # a duplicate is the same event
    firsts = list(dict.fromkeys(number for number, _ in got))
    assert firsts == sorted(firsts)  # in order
    assert len(got) - len(ids) <= 1  # at most the one in flight at the kill sent again
    paths = list(dict.fromkeys(classic_paths(receiver, "/hooks/classic")))
    assert paths == [f"/Task/{i}" for i in ids]


def test_two_servers_on_postgresql_deliver_each_event_once_per_subscription(
    database: Database, manual: World, receiver: Receiver, servers: Servers
) -> None:
    if database.backend != "postgresql":
        pytest.skip("on SQLite one process delivers (docs/fhir/subscriptions.md)")
    world = manual
    servers.start()
    servers.start()
    paths = ("ids", "full", "empty", "fives")  # topic-based: the classic form's one request an event
    for path, content in zip(paths, ("id-only", "full-resource", "empty", "id-only"), strict=True):
        body = topic_subscription(receiver.base + path, content)
        if path == "fives":
            body["channel"]["extension"] = [{"url": BACKPORT + "backport-max-count", "valuePositiveInt": 5}]
        subscribe(world, body)
    ids = [f"e{n:03d}" for n in range(500)]
    owners: set[str] = set()
    handovers(world, ids)

    def done() -> bool:
        with world.services.engine.connect() as connection:
            owners.update(str(o) for (o,) in connection.execute(select(STATE.c.lease_owner)) if o)
        return all(len({n for n, _ in topic_events(receiver, f"/hooks/{p}")}) == len(ids) for p in paths)

    until(done, 60, "not everything was delivered")
    time.sleep(0.5)  # anything sent twice has arrived
    for path in paths:
        numbers = Counter(n for n, _ in topic_events(receiver, f"/hooks/{path}"))
        assert sorted(numbers) == list(range(1, len(ids) + 1)) and set(numbers.values()) == {1}, path
    assert len({owner.split(":")[1] for owner in owners}) == 2, owners  # both processes delivered


def test_gateway_notify_delivers_on_its_own_and_stops_on_sigterm(
    database: Database, manual: World, receiver: Receiver, tmp_path: Path
) -> None:
    """`gateway notify`: the deliverer as a process of its own (beside servers run with GATEWAY_NOTIFY
    off); SIGTERM stops it after the round in progress, exit 0."""
    world = manual
    environment = {
        **_environment(database),
        "GATEWAY_AUTH": "on",
        "GATEWAY_BASE_URL": BASE_URL,
        "GATEWAY_ALLOW_HTTP_LOOPBACK": "on",
        "GATEWAY_NOTIFY_POLL_SECONDS": "0.1",
        "GATEWAY_NOTIFY_TIMEOUT": "2",
    }
    log = tmp_path / "notify.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(GATEWAY), "notify"], env=environment, stdout=subprocess.DEVNULL, stderr=sink
        )
    try:
        subscribe(world, topic_subscription(receiver.base + "alone", "id-only"))
        handovers(world, ["n1", "n2"])
        until(
            lambda: [n for n, _ in topic_events(receiver, "/hooks/alone")] == [1, 2], 30, "nothing delivered"
        )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        _stop(process)
    assert "delivering subscriptions' notifications" in log.read_text(encoding="utf-8")
