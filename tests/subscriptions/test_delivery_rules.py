"""The deliverer's rules, driven round by round: undelivered past the maximum age → `error`; a lease
held by a live process is left alone and an expired one taken over; at most
GATEWAY_NOTIFY_ENDPOINT_CONCURRENCY deliveries to one endpoint at a time; `gateway subscriptions
list|status|retry`; `off` once the client is disabled or the subscription's `end` passed; events purged
past their retention; an event whose resource the subscriber no longer reads sent without it."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update
from typer.testing import CliRunner

from gateway.cli import app as cli
from gateway.search.dates import utc_now
from gateway.security import store
from gateway.store.repository import Repository
from gateway.store.tables import ClientNotify
from gateway.subscriptions.delivery import Deliverer
from gateway.subscriptions.matcher import EVENTS
from gateway.subscriptions.resource import STATE, timeout_of
from gateway.subscriptions.resource import TIMEOUT as BACKPORT_TIMEOUT
from tests.conftest import Database
from tests.subscriptions.conftest import World, subscription
from tests.subscriptions.receiver import Receiver


def drive(deliverers: list[Deliverer], done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not done in time"
        for deliverer in deliverers:
            deliverer.step()
        time.sleep(0.05)


def state(world: World, sub_id: str) -> dict[str, object]:
    with world.services.engine.connect() as connection:
        row = connection.execute(select(STATE).where(STATE.c.sub_id == sub_id)).one()
    return dict(row._mapping)


def active(
    world: World, deliverer: Deliverer, receiver: Receiver, path: str = "tasks", **channel: Any
) -> str:
    body = subscription(receiver.base + path, payload="application/fhir+json", **channel)
    response = world.api.post("/fhir/Subscription", json=body, headers=world.a)
    assert response.status_code == 201, response.text
    sub_id = str(response.json()["id"])
    drive([deliverer], lambda: state(world, sub_id)["status"] == "active")
    return sub_id


def test_undelivered_past_the_maximum_age_is_an_error_and_retry_starts_again(
    manual: World, deliverer: Deliverer, receiver: Receiver, database: Database
) -> None:
    world = manual
    sub_id = active(world, deliverer, receiver)
    receiver.status = 503
    world.task("t1", "orgA", "pa")
    drive([deliverer], lambda: int(state(world, sub_id)["attempts"] or 0) >= 1)  # type: ignore[call-overload]
    assert state(world, sub_id)["status"] == "active"
    days = world.services.settings.notify_max_age_days + 1
    with world.services.engine.begin() as connection:  # the event has waited longer than the maximum age
        connection.execute(update(EVENTS).values(occurred_at=utc_now() - timedelta(days=days)))
        connection.execute(update(STATE).values(retry_at=None))
    drive([deliverer], lambda: state(world, sub_id)["status"] == "error")
    read = world.api.get(f"/fhir/Subscription/{sub_id}", headers=world.a).json()
    assert read["status"] == "error" and read["error"].startswith("undelivered since")
    assert [r.path for r in receiver.received] == []
    # the operator looks, then starts it again: the event is delivered, in error nothing was
    env = database.environment()
    listed = CliRunner().invoke(cli, ["subscriptions", "list"], env=env)
    assert listed.exit_code == 0 and f"sub_id={sub_id}" in listed.output and "status=error" in listed.output
    shown = CliRunner().invoke(cli, ["subscriptions", "status", sub_id], env=env)
    assert shown.exit_code == 0 and "undelivered since" in shown.output and "last_number=1" in shown.output
    assert CliRunner().invoke(cli, ["subscriptions", "status", "finns-inte"], env=env).exit_code == 1
    receiver.status = 200
    retried = CliRunner().invoke(cli, ["subscriptions", "retry", sub_id], env=env)
    assert retried.exit_code == 0, retried.output
    drive([deliverer], lambda: len(receiver.received) == 1)
    assert receiver.received[0].path == "/hooks/tasks/Task/t1"
    assert world.api.get(f"/fhir/Subscription/{sub_id}", headers=world.a).json()["status"] == "active"
    world.api.put(
        f"/fhir/Subscription/{sub_id}",
        json={**world.api.get(f"/fhir/Subscription/{sub_id}", headers=world.a).json(), "status": "off"},
        headers=world.a,
    )
    refused = CliRunner().invoke(cli, ["subscriptions", "retry", sub_id], env=env)
    assert refused.exit_code == 1 and "off" in refused.output


def test_a_live_lease_is_left_alone_and_an_expired_one_taken_over(
    manual: World, deliverer: Deliverer, receiver: Receiver
) -> None:
    world = manual
    sub_id = active(world, deliverer, receiver)
    with world.services.engine.begin() as connection:  # another process holds it, then dies
        lease = {"lease_owner": "other-host:4711:dead", "lease_until": utc_now() + timedelta(seconds=60)}
        connection.execute(update(STATE).where(STATE.c.sub_id == sub_id).values(**lease))
    world.task("t1", "orgA", "pa")
    taker = Deliverer(world.services)
    try:
        for _ in range(10):
            taker.step()
            time.sleep(0.05)
        assert receiver.received == [] and state(world, sub_id)["lease_owner"] == "other-host:4711:dead"
        with world.services.engine.begin() as connection:  # its lease runs out
            connection.execute(update(STATE).values(lease_until=utc_now() - timedelta(seconds=1)))
        drive([taker], lambda: len(receiver.received) == 1)
    finally:
        taker.stop()
    assert receiver.received[0].path == "/hooks/tasks/Task/t1"
    drive([taker], lambda: state(world, sub_id)["acked"] == 1 and state(world, sub_id)["lease_owner"] is None)


def test_a_lease_taken_over_is_not_updated_by_its_former_holder(
    manual: World, deliverer: Deliverer, receiver: Receiver
) -> None:
    """A delivery slower than its lease: the process that took the subscription over owns its state."""
    world = manual
    sub_id = active(world, deliverer, receiver)
    lease = {"lease_owner": "other-host:4711:live", "lease_until": utc_now() + timedelta(seconds=60)}
    with world.services.engine.begin() as connection:
        connection.execute(update(STATE).where(STATE.c.sub_id == sub_id).values(**lease))
        row = connection.execute(select(STATE).where(STATE.c.sub_id == sub_id)).one()
    before = state(world, sub_id)
    deliverer._failed(row, "timeout")
    deliverer._release(sub_id, retry=True)
    assert state(world, sub_id) == before


def test_at_most_the_endpoint_cap_delivers_to_one_endpoint_at_once(
    manual: World, deliverer: Deliverer, receiver: Receiver
) -> None:
    world = manual
    cap = world.services.settings.notify_endpoint_concurrency
    subs = [active(world, deliverer, receiver, f"s{n}") for n in range(cap + 3)]
    other = Receiver().start()  # another endpoint, not held up by the slow one's queue
    try:
        with world.services.engine.begin() as connection:
            row = {"client_id": world.a_client.client_id, "kind": "endpoint", "value": other.base}
            connection.execute(insert(ClientNotify), row)
        active(world, deliverer, other, "fast")
        receiver.delay = 0.4
        world.task("t1", "orgA", "pa")
        started = time.monotonic()
        drive([deliverer], lambda: len(other.received) == 1)
        assert other.received[0].path == "/hooks/fast/Task/t1"
        assert len(receiver.received) < len(subs)  # the slow endpoint's queue did not hold it up
        drive([deliverer], lambda: len(receiver.received) == len(subs))
        assert receiver.most_inflight == cap
        assert time.monotonic() - started >= 0.4 * -(-len(subs) // cap) - 0.1
        assert sorted(r.path for r in receiver.received) == sorted(
            f"/hooks/s{n}/Task/t1" for n in range(len(subs))
        )
    finally:
        other.stop()


def test_backport_timeout_fails_a_slow_attempt_within_the_ceiling(
    manual: World, deliverer: Deliverer, receiver: Receiver
) -> None:
    world = manual
    ceiling = world.services.settings.notify_timeout  # 2 s here
    wait = {"url": BACKPORT_TIMEOUT, "valueUnsignedInt": 1}
    assert timeout_of(subscription("x", extension=[wait]), ceiling) == 1.0
    assert timeout_of(subscription("x", extension=[wait | {"valueUnsignedInt": 60}]), ceiling) == ceiling
    assert timeout_of(subscription("x"), ceiling) == ceiling
    for refused in ({"valueUnsignedInt": 0}, {"valueString": "1"}):
        body = subscription(receiver.base + "x", extension=[{"url": BACKPORT_TIMEOUT, **refused}])
        assert world.api.post("/fhir/Subscription", json=body, headers=world.a).status_code == 422
    quick = active(world, deliverer, receiver, "quick", extension=[wait])
    patient = active(world, deliverer, receiver, "patient")  # GATEWAY_NOTIFY_TIMEOUT: 2 s
    receiver.delay = 1.5
    world.task("t1", "orgA", "pa")
    drive([deliverer], lambda: state(world, patient)["acked"] == 1, timeout=15)
    drive([deliverer], lambda: int(str(state(world, quick)["attempts"])) >= 1)
    assert "no answer" in str(state(world, quick)["reason"])
    assert state(world, quick)["acked"] == 0


def test_a_subscription_of_a_disabled_client_goes_off_and_gets_nothing(
    manual: World, deliverer: Deliverer, receiver: Receiver
) -> None:
    """R4: the server turns a subscription `off` when it will send no more; a client disabled (or
    removed) after subscribing is sent nothing from then on, and its subscription says why."""
    world = manual
    sub_id = active(world, deliverer, receiver)
    assert store.set_client_active(world.services.engine, world.a_client.client_id, False)
    world.task("t1", "orgA", "pa")
    drive([deliverer], lambda: state(world, sub_id)["status"] == "off")
    assert state(world, sub_id)["reason"] == "client disabled or removed"
    deliverer.step()
    assert receiver.received == []
    with world.services.engine.connect() as connection:
        stored = Repository(connection).current("Subscription", sub_id)
    assert stored is not None and stored.json()["status"] == "off"


def test_a_subscription_whose_end_passed_goes_off_and_gets_nothing(
    manual: World, deliverer: Deliverer, receiver: Receiver
) -> None:
    world = manual
    end = utc_now() + timedelta(seconds=2)
    body = subscription(receiver.base + "ending", payload="application/fhir+json")
    body["end"] = end.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    response = world.api.post("/fhir/Subscription", json=body, headers=world.a)
    assert response.status_code == 201, response.text
    sub_id = str(response.json()["id"])
    drive([deliverer], lambda: state(world, sub_id)["status"] == "active")
    time.sleep(max(0.0, (end - utc_now()).total_seconds()) + 0.2)
    world.task("t1", "orgA", "pa")
    drive([deliverer], lambda: state(world, sub_id)["status"] == "off")
    assert state(world, sub_id)["reason"] == "end passed"
    assert world.api.get(f"/fhir/Subscription/{sub_id}", headers=world.a).json()["status"] == "off"
    assert receiver.received == []


def test_events_past_their_retention_are_purged(
    manual: World, deliverer: Deliverer, receiver: Receiver
) -> None:
    """`$events` keeps GATEWAY_NOTIFY_RETENTION_DAYS of events; older ones are deleted by the deliverer
    (at most every few minutes), the newer ones kept."""
    world = manual
    sub_id = active(world, deliverer, receiver)
    world.task("t1", "orgA", "pa")
    world.task("t2", "orgA", "pa")
    drive([deliverer], lambda: state(world, sub_id)["acked"] == 2)
    days = world.services.settings.notify_retention_days + 1
    with world.services.engine.begin() as connection:
        connection.execute(
            update(EVENTS)
            .where(EVENTS.c.sub_id == sub_id, EVENTS.c.number == 1)
            .values(occurred_at=utc_now() - timedelta(days=days))
        )
    deliverer.purged = 0.0  # the last purge long ago
    deliverer.step()
    with world.services.engine.connect() as connection:
        kept = connection.execute(select(EVENTS.c.number).where(EVENTS.c.sub_id == sub_id)).scalars().all()
    assert kept == [2]


def test_an_event_whose_resource_the_subscriber_no_longer_reads_goes_without_it(
    manual: World, deliverer: Deliverer, receiver: Receiver
) -> None:
    """Each event is rendered when it is sent, through the subscriber's read policy: a Task the subscriber
    could read when it matched, but not when it is sent, goes as the empty notification (its number
    acknowledged, nothing of the resource in it)."""
    world = manual
    sub_id = active(world, deliverer, receiver)
    receiver.status = 503
    world.task("t1", "orgA", "pb")  # matched: A owns it
    drive([deliverer], lambda: int(state(world, sub_id)["attempts"] or 0) >= 1)  # type: ignore[call-overload]
    world.task("t1", "orgB", "pb")  # handed to B: A reads it no more (nor the patient, B's)
    assert world.api.get("/fhir/Task/t1", headers=world.a).status_code == 404
    receiver.status = 200
    drive([deliverer], lambda: state(world, sub_id)["acked"] == 1)
    assert [(r.method, r.path, r.body) for r in receiver.received] == [("POST", "/hooks/tasks", b"")]
