"""The matcher's memo of what names each subscriber's organisation (gateway/subscriptions/matcher.py): kept
between runs, dropped whenever something that names an organisation changed, in any process's matcher.
A match missed on a stale memo would be lost for good."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import select, text, update

from gateway.store.repository import R
from gateway.store.tables import SubscriptionEvent
from gateway.subscriptions import criteria
from gateway.subscriptions.matcher import _LOCK_KEY, Matcher
from tests.api.helpers import HSA
from tests.security.conftest import bearer
from tests.subscriptions.conftest import World, ref, register_notifying, subscription

MUNICIPALITY = "system/Task.rs system/Patient.rs system/Subscription.cruds"


def subscribe_c(world: World) -> str:
    client = register_notifying(world.services, "SE-C", [world.endpoint])
    headers = bearer(client.token(world.api, MUNICIPALITY))
    response = world.api.post("/fhir/Subscription", json=subscription(world.endpoint), headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def matched(world: World, sub_id: str) -> list[str]:
    events = SubscriptionEvent.__table__
    with world.services.engine.connect() as connection:
        rows = connection.execute(
            select(events.c.res_id).where(events.c.sub_id == sub_id).order_by(events.c.number)
        )
        return [str(row[0]) for row in rows]


def test_a_change_another_process_matched_drops_every_matchers_memo(manual: World) -> None:
    sub_id = subscribe_c(manual)
    topics = manual.services.topics
    first, second = Matcher(manual.services, topics), Matcher(manual.services, topics)
    manual.task("t0", "orgA", "pa")
    while first.run_once():  # its memo: SE-C names nothing yet
        pass
    manual.put(
        {"resourceType": "Organization", "id": "orgC", "identifier": [{"system": HSA, "value": "SE-C"}]}
    )
    manual.task("t1", "orgC", "pa")
    while second.run_once():  # takes the Organization's row: the mark rises
        pass
    manual.task("t2", "orgC", "pa")
    while first.run_once():  # its memo is stale: it must find SE-C anew
        pass
    assert matched(manual, sub_id) == ["t1", "t2"]


def test_a_task_taken_before_its_organization_still_matches(manual: World) -> None:
    sub_id = subscribe_c(manual)
    matcher = Matcher(manual.services, manual.services.topics)
    manual.task("t0", "orgA", "pa")
    while matcher.run_once():
        pass
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Task",
                    "id": "t1",
                    "status": "requested",
                    "intent": "order",
                    "for": ref("Patient/pa"),
                    "owner": ref("Organization/orgC"),
                },
                "request": {"method": "PUT", "url": "Task/t1"},
            },
            {
                "resource": {
                    "resourceType": "Organization",
                    "id": "orgC",
                    "identifier": [{"system": HSA, "value": "SE-C"}],
                },
                "request": {"method": "PUT", "url": "Organization/orgC"},
            },
        ],
    }
    response = manual.api.post("/fhir", json=bundle, headers=manual.region)
    assert response.status_code == 200, response.text
    while matcher.run_once(batch=1):  # the Task's row alone, its Organization's still in the outbox
        pass
    assert matched(manual, sub_id) == ["t1"]


def test_each_subscription_gets_its_own_matches_across_groups_and_id_chunks(
    manual: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subscriptions' queries asked together (criteria.matching: groups of GROUP, ids in chunks of
    MAX_IDS) and the reference prefilter, with every form of a reference value."""
    monkeypatch.setattr(criteria, "GROUP", 2)
    monkeypatch.setattr(criteria, "MAX_IDS", 1)
    base = manual.services.settings.base_url.rstrip("/")
    forms = {
        "type-id": "Task?owner=Organization/orgA",
        "bare": "Task?owner=orgA",
        "url": f"Task?owner={base}/Organization/orgA",
        "typed": "Task?owner:Organization=orgA&status=requested",
        "either": "Task?owner=Organization/orgB,Organization/orgA",
        "plain": "Task?status=requested",
    }
    subs = {}
    for name, criteria_ in forms.items():
        body = subscription(manual.endpoint, criteria_)
        response = manual.api.post("/fhir/Subscription", json=body, headers=manual.a)
        assert response.status_code == 201, response.text
        subs[name] = str(response.json()["id"])
    response = manual.api.post(
        "/fhir/Subscription",
        json=subscription(manual.endpoint, "Task?owner=Organization/orgA"),
        headers=manual.b,
    )
    b_sub = str(response.json()["id"])
    matcher = Matcher(manual.services, manual.services.topics)
    for n in range(3):
        manual.task(f"a{n}", "orgA", "pa")
        manual.task(f"b{n}", "orgB", "pb")
    while matcher.run_once():
        pass
    for name, sub_id in subs.items():  # A sees its own Tasks only
        assert matched(manual, sub_id) == ["a0", "a1", "a2"], name
    assert matched(manual, b_sub) == []  # B does not see A's Tasks, whatever its criteria


def test_rows_another_matcher_recorded_first_are_not_numbered_twice(
    manual: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two matchers read the same rows (on SQLite nothing but the delete keeps them apart): the second to
    record finds them gone and records nothing."""
    body = subscription(manual.endpoint, "Task?status=requested")
    response = manual.api.post("/fhir/Subscription", json=body, headers=manual.a)
    sub_id = str(response.json()["id"])
    first, second = (
        Matcher(manual.services, manual.services.topics),
        Matcher(manual.services, manual.services.topics),
    )
    manual.task("a1", "orgA", "pa")
    record = first._record

    def overtaken(rows: Any, matches: Any) -> None:
        assert second.run_once() >= 1  # the other matcher takes and records the same rows meanwhile
        record(rows, matches)

    monkeypatch.setattr(first, "_record", overtaken)
    if manual.services.engine.dialect.name == "postgresql":  # there the lock keeps the second out
        monkeypatch.setattr("gateway.subscriptions.matcher._alone", _always)
    assert first.run_once() == 0
    assert matched(manual, sub_id) == ["a1"]


@contextmanager
def _always(connection: Any) -> Iterator[bool]:
    yield True


def test_a_subscription_whose_criteria_no_longer_read_does_not_stop_the_others(manual: World) -> None:
    body = subscription(manual.endpoint, "Task?status=requested")
    broken, working = (
        str(manual.api.post("/fhir/Subscription", json=body, headers=manual.a).json()["id"]) for _ in range(2)
    )
    named = (R.c.res_type == "Subscription", R.c.res_id == broken)
    with manual.services.engine.begin() as connection:  # a value its parameter does not read
        stored = connection.execute(select(R.c.content).where(*named)).scalar_one()
        content = json.loads(stored) | {"criteria": "Task?authored-on=inte-ett-datum"}
        connection.execute(update(R).where(*named).values(content=json.dumps(content)))
    matcher = Matcher(manual.services, manual.services.topics)
    manual.task("a1", "orgA", "pa")
    while matcher.run_once():
        pass
    assert matched(manual, working) == ["a1"] and matched(manual, broken) == []


def test_a_matcher_of_another_schema_does_not_keep_this_one_out(manual: World) -> None:
    """Advisory locks are per database: gateways in separate schemas of one database (DATABASE_SCHEMA, and
    the test sessions running side by side) each have their own matcher lock."""
    if manual.services.engine.dialect.name != "postgresql":
        pytest.skip("the matcher's lock is PostgreSQL's advisory lock")
    body = subscription(manual.endpoint, "Task?status=requested")
    sub_id = str(manual.api.post("/fhir/Subscription", json=body, headers=manual.a).json()["id"])
    matcher = Matcher(manual.services, manual.services.topics)
    manual.task("a1", "orgA", "pa")
    key = f"{_LOCK_KEY}, hashtext(:schema)"
    with manual.services.engine.connect() as other:
        other.execute(text(f"SELECT pg_advisory_lock({key})"), {"schema": "another_gateway"})
        while matcher.run_once():
            pass
        assert matched(manual, sub_id) == ["a1"]
        other.execute(text(f"SELECT pg_advisory_unlock({key})"), {"schema": "another_gateway"})
        other.execute(text(f"SELECT pg_advisory_lock({_LOCK_KEY}, hashtext(current_schema()))"))
        manual.task("a2", "orgA", "pa")
        assert matcher.run_once() == 0  # its own schema's matcher runs: this one waits its turn
        other.execute(text(f"SELECT pg_advisory_unlock({_LOCK_KEY}, hashtext(current_schema()))"))
    while matcher.run_once():
        pass
    assert matched(manual, sub_id) == ["a1", "a2"]
