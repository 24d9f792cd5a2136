"""Two `gateway serve` processes on one PostgreSQL (tests/deploy/two_gateways.py), sent to at once:
token requests, concurrent conditional creates and updates, `If-Match` updates, the same order file and
register export, the HL7 messages of the same stays on both MLLP listeners. Nothing is lost or doubled,
every token verifies at the other process (the keys live in the database), a page link of one is followed
at the other, a disabled client is refused by both, and every request and every version written has its
audit record.

What must run once has tests of its own: migrations (tests/deploy/test_migrations_at_once.py, and both
processes here start on an empty schema), the first signing key and rotations
(tests/security/test_signing_keys_at_once.py), the scheduler's jobs (tests/schedule/test_passes.py), the
matcher and deliveries (tests/subscriptions/test_matcher.py, test_processes.py); docs/operations.md,
"Several processes on one database"."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import httpx

from gateway.adapters.hl7v2.ack import read_ack
from gateway.security import store
from gateway.security.scopes import ADAPTER_BESTALLNINGSPORTALEN, ADAPTER_DEVICE_REGISTER
from tests.adapters.test_bestallningsportalen import golden
from tests.adapters.test_device_register import HEADER, row_of
from tests.adapters.test_hl7v2_messages import adt
from tests.adapters.test_hl7v2_mllp import exchange
from tests.api.helpers import HSA, PNR, patient
from tests.deploy.two_gateways import (
    BASE_URL,
    HOSPITAL_CLIENT,
    HOSPITAL_HSA,
    Client,
    Gateway,
    Gateways,
    gateways_fixture,  # noqa: F401 (the `gateways` fixture)
)
from tests.security.test_organisation_policy import pnr

T = TypeVar("T")
Both = tuple[Gateway, Gateway]
AT_ONCE = 8  # concurrent requests per process in each race
MUNICIPALITY = "SE2120001100-SOC1"
PORTAL = "bestallningsportalen:BP"  # the golden orders' portal
ORDERS = "/adapters/bestallningsportalen/orders"
RECORDS = "/adapters/device-register/records?mode=delta"
SESAM = "device-register:SESAM@SE2321000016-MAH1"  # the golden register rows' register and owner
REGISTER_ROWS = ["01", "02", "03", "04", "05", "08", "09"]  # 06 and 07 are another register's: one unit each
GOLDEN_ORDERS = ["01", "02", "03", "04", "05"]  # six order lines between them
VISITS = ["V2026-001", "V2026-002", "V2026-003"]


def race(calls: list[Callable[[], T]]) -> list[T]:
    """All `calls` at once, released together by a barrier; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait(timeout=60)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


class Requests:
    """The requests made, by client and audit subtype, to hold the audit trail against."""

    def __init__(self) -> None:
        self.made: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    def count(self, client: Client | str, kind: str, number: int = 1) -> None:
        who = client if isinstance(client, str) else client.client_id
        with self.lock:
            self.made[(who, kind)] += number


def test_two_processes_on_one_database_lose_and_double_nothing(gateways: Gateways) -> None:
    both = (first, _second) = tuple(gateways.start(2))  # both migrate the empty schema at once
    assert len(both) == 2
    made = Requests()
    municipality = gateways.add_client("system/Patient.cruds system/Task.cruds", org=MUNICIPALITY)
    portal = gateways.register(ADAPTER_BESTALLNINGSPORTALEN, org="SE2321000016-PORTAL", sources=(PORTAL,))
    register = gateways.register(ADAPTER_DEVICE_REGISTER, org="SE2321000016-MAH1", sources=(SESAM,))
    hospital = gateways.register(
        "gateway/adapter.hl7v2 system/*.cruds",
        org=HOSPITAL_HSA,
        sources=(f"hl7v2:{HOSPITAL_HSA}",),
        client_id=HOSPITAL_CLIENT,
    )

    # another organisation's client: its searches make the processes keep what names its organisation
    # (gateway/security/organisation.py), not the municipality's, whose Organization is registered next
    neighbour = gateways.add_client("system/Patient.rs", org="SE2120001200-SOC2")

    tokens_at_once(gateways, neighbour, both, made)
    unit_id = municipality_unit(hospital, first)
    conditional_creates(municipality, both, made)
    conditional_updates(gateways, hospital, both)
    if_match_updates(municipality, unit_id, both, made)
    same_orders(gateways, portal, both, made)
    same_register_rows(gateways, register, both, made)
    same_stays(gateways, both, made)
    pages_across(municipality, both, made)
    disabled_everywhere(gateways, neighbour, both, made)
    assert gateways.twins() == []  # nothing made twice under two ids

    gateways.stop()  # SIGTERM: each process stores its queued audit records before it ends
    events = gateways.audit_events()
    for client in (neighbour, municipality, portal, register, hospital):
        made.count(client, "token", client.token_requests)
    # the replayed assertion's refusal names no client: it proved none
    made.count(neighbour, "token", -1)
    made.count("anonymous", "token")
    # every request has its record: each of the REST clients', and each
    # `import` and `token` request of the adapters' clients
    audited = Counter((agent_id(event), event["subtype"][0]["code"]) for event in events)
    tracked = {neighbour.client_id, municipality.client_id, "anonymous"}
    found = {k: n for k, n in audited.items() if k[0] in tracked or k[1] in ("import", "token")}
    assert found == dict(made.made)
    # and every version written (by REST, the adapters and their reactions) is named by a successful
    # access's record
    recorded = {
        entity["what"]["reference"]
        for event in events
        if event["outcome"] == "0"
        for entity in event.get("entity", [])
        if "reference" in entity.get("what", {})
    }
    assert gateways.versions() - recorded == set()


def agent_id(event: dict[str, Any]) -> str:
    for agent in event["agent"]:
        identifier = agent.get("who", {}).get("identifier", {})
        if identifier.get("system") == "urn:gateway:client-id":
            return str(identifier["value"])
    return ""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tokens_at_once(gateways: Gateways, client: Client, both: Both, made: Requests) -> None:
    """Token requests at both at once, on a database without a signing key yet: one key is made, and
    every token is good at both processes. The same assertion sent to both is taken once (its jti is
    remembered in the database)."""
    answers = race([partial(client.ask, g) for g in both for _ in range(AT_ONCE)])
    assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers]
    assert len(store.all_keys(gateways.engine)) == 1  # the first signing key, made by one process
    tokens = [str(a.json()["access_token"]) for a in answers]
    checks = race(
        [partial(httpx.get, f"{g.server.base_url}/Patient", headers=bearer(t)) for t in tokens for g in both]
    )
    made.count(client, "search", len(checks))
    refused = [c.text for c in checks if c.status_code != 200]
    assert not refused, refused
    assertion = client.assertion()
    replays = race([partial(client.ask, g, assertion) for g in both])
    assert sorted(r.status_code for r in replays) == [200, 401], [r.text for r in replays]


def municipality_unit(region: Client, first: Gateway) -> str:
    """The municipality's Organization as the region registers it, before the municipality's first FHIR
    request (a process keeps what names an organisation for a few seconds, ACTORS_SECONDS); its id."""
    unit = {"resourceType": "Organization", "identifier": [{"system": HSA, "value": MUNICIPALITY}]}
    answer = httpx.post(f"{first.server.base_url}/Organization", json=unit, headers=region.headers(first, 0))
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def conditional_creates(client: Client, both: Both, made: Requests) -> None:
    """The same If-None-Exist create at both processes at once: one 201, the others 200 with its id."""
    for serial in range(1, 4):
        body = patient(pnr(serial), family=f"Samtidig{serial}")
        condition = {"If-None-Exist": f"identifier={PNR}|{pnr(serial)}"}
        answers = race(
            [
                partial(
                    httpx.post,
                    f"{g.server.base_url}/Patient",
                    json=body,
                    headers=client.headers(g, i) | condition,
                    timeout=60,
                )
                for i, g in enumerate(both)
                for _ in range(AT_ONCE)
            ]
        )
        made.count(client, "create", len(answers))
        statuses = Counter(a.status_code for a in answers)
        assert statuses == {201: 1, 200: len(answers) - 1}, [a.text for a in answers]
        assert len({a.json()["id"] for a in answers}) == 1
        found = httpx.get(
            f"{both[1].server.base_url}/Patient",
            params={"identifier": f"{PNR}|{pnr(serial)}"},
            headers=client.headers(both[1], 1),
        ).json()
        made.count(client, "search")
        assert found["total"] == 1


def conditional_updates(gateways: Gateways, region: Client, both: Both) -> None:
    """The same conditional update (`PUT Patient?identifier=…`, which creates when nothing matches) at
    both processes at once, by a region-wide client: one 201, the others update it (200)."""
    before = gateways.counts().get("Patient", 0)
    body = patient(pnr(40), family="Villkorlig")
    url = f"/Patient?identifier={PNR}|{pnr(40)}"
    answers = race(
        [
            partial(
                httpx.put, f"{g.server.base_url}{url}", json=body, headers=region.headers(g, i), timeout=60
            )
            for i, g in enumerate(both)
            for _ in range(AT_ONCE)
        ]
    )
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {201: 1, 200: len(answers) - 1}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert gateways.counts()["Patient"] == before + 1


def if_match_updates(client: Client, unit_id: str, both: Both, made: Requests) -> None:
    """Rounds of `If-Match` updates of one Task at both processes at once: one wins each version, the
    others get 412; every winner's change is a version of its own (no lost update)."""
    base = both[0].server.base_url
    subject = httpx.post(f"{base}/Patient", json=patient(pnr(10)), headers=client.headers(both[0], 0))
    assert subject.status_code == 201, subject.text

    def task(description: str) -> dict[str, Any]:
        return {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "description": description,
            "for": {"reference": f"Patient/{subject.json()['id']}"},
            "requester": {"reference": f"Organization/{unit_id}"},
        }

    created = httpx.post(f"{base}/Task", json=task("första"), headers=client.headers(both[0], 0))
    made.count(client, "create", 2)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    winners = []
    for version in range(1, 5):
        answers = race(
            [
                partial(
                    httpx.put,
                    f"{both[k % 2].server.base_url}/Task/{task_id}",
                    json=task(f"version {version + 1} av skrivare {k}") | {"id": task_id},
                    headers=client.headers(both[k % 2], k % 2) | {"If-Match": f'W/"{version}"'},
                    timeout=60,
                )
                for k in range(2 * AT_ONCE)
            ]
        )
        made.count(client, "update", len(answers))
        statuses = Counter(a.status_code for a in answers)
        assert statuses == {200: 1, 412: len(answers) - 1}, [a.text for a in answers]
        [winner] = [a.json() for a in answers if a.status_code == 200]
        assert winner["meta"]["versionId"] == str(version + 1)
        winners.append(winner["description"])
    history = httpx.get(f"{base}/Task/{task_id}/_history", headers=client.headers(both[0], 0)).json()
    made.count(client, "history")
    assert [e["resource"]["description"] for e in reversed(history["entry"])] == ["första", *winners]


def same_orders(gateways: Gateways, portal: Client, both: Both, made: Requests) -> None:
    """The same file of orders posted to both processes at once, twice each: one set of resources."""
    orders = [golden(name) for name in GOLDEN_ORDERS]
    answers = race(
        [
            partial(httpx.post, f"{g.origin}{ORDERS}", json=orders, headers=portal.headers(g, i), timeout=120)
            for i, g in enumerate(both)
            for _ in range(2)
        ]
    )
    made.count(portal, "import", len(answers))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        statuses = [e["response"]["status"] for e in answer.json()["entry"]]
        assert all(s.startswith(("200", "201")) for s in statuses), answer.text[:3000]
    counts = gateways.counts()
    assert counts["DeviceRequest"] == 6, counts  # the five orders' six lines
    again = httpx.post(
        f"{both[1].origin}{ORDERS}", json=orders, headers=portal.headers(both[1], 1), timeout=120
    )
    made.count(portal, "import")
    assert again.status_code == 200
    assert gateways.counts() == counts  # the same file once more changes nothing


def same_register_rows(gateways: Gateways, register: Client, both: Both, made: Requests) -> None:
    """The same register export posted to both processes at once, twice each: one Device per unit."""
    export = ("\n".join([HEADER, *(row_of(name) for name in REGISTER_ROWS)]) + "\n").encode()
    csv = {"Content-Type": "text/csv"}
    answers = race(
        [
            partial(
                httpx.post,
                f"{g.origin}{RECORDS}",
                content=export,
                headers=register.headers(g, i) | csv,
                timeout=120,
            )
            for i, g in enumerate(both)
            for _ in range(2)
        ]
    )
    made.count(register, "import", len(answers))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        statuses = [e["response"]["status"] for e in answer.json()["entry"]]
        assert all(s.startswith(("200", "201")) for s in statuses), answer.text[:3000]
    counts = gateways.counts()
    assert counts["Device"] == len(REGISTER_ROWS), counts
    again = httpx.post(
        f"{both[1].origin}{RECORDS}", content=export, headers=register.headers(both[1], 1) | csv
    )
    made.count(register, "import")
    assert again.status_code == 200
    assert gateways.counts() == counts  # the same export once more changes nothing


def same_stays(gateways: Gateways, both: Both, made: Requests) -> None:
    """The HL7 messages of three stays, each message sent to both MLLP listeners at once (a sender that
    fails over and sends again): one Encounter per stay; all of them once more change nothing (no Task
    or anything else twice)."""
    sent: list[bytes] = []
    for trigger, moment, extra in (
        ("A01", "20261120081500", {}),
        ("A08", "20261121081500", {}),
        ("A03", "20261127120000", {"discharged": "20261127110000"}),
    ):
        messages = [
            adt(trigger, f"{trigger}-{visit}", visit=visit, pnr=pnr(20 + n), sent=moment, **extra)
            for n, visit in enumerate(VISITS)
        ]
        acks = race([partial(exchange, g.mllp_port, [m]) for m in messages for g in both])
        made.count(HOSPITAL_CLIENT, "import", len(acks))
        assert [read_ack(a)[0] for [a] in acks] == ["AA"] * len(acks), acks
        sent.extend(messages)
    counts = gateways.counts()
    assert counts["Encounter"] == len(VISITS), counts
    assert counts.get("Task", 0) > 0, counts  # the discharges' care-transition Tasks
    again = exchange(both[1].mllp_port, sent)
    made.count(HOSPITAL_CLIENT, "import", len(again))
    assert [read_ack(a)[0] for a in again] == ["AA"] * len(sent)
    assert gateways.counts() == counts


def pages_across(client: Client, both: Both, made: Requests) -> None:
    """A page link one process made is followed at the other (cursors are signed with the shared key
    secret, and name the base URL clients see, not the process)."""
    first = httpx.get(
        f"{both[0].server.base_url}/Patient", params={"_count": "1"}, headers=client.headers(both[0], 0)
    ).json()
    [link] = [link["url"] for link in first["link"] if link["relation"] == "next"]
    assert link.startswith(BASE_URL)
    following = httpx.get(
        both[1].server.base_url + link.removeprefix(BASE_URL), headers=client.headers(both[1], 1)
    )
    made.count(client, "search", 2)
    assert following.status_code == 200, following.text
    [shown] = [e["resource"]["id"] for e in following.json()["entry"]]
    assert shown != first["entry"][0]["resource"]["id"]


def disabled_everywhere(gateways: Gateways, client: Client, both: Both, made: Requests) -> None:
    """A client disabled (`gateway clients disable`) has its tokens refused by both processes within
    GATEWAY_CLIENT_STATUS_SECONDS (5 s)."""
    tokens = [client.headers(gateway, index) for index, gateway in enumerate(both)]
    gateways.cli("clients", "disable", client.client_id)
    disabled = time.monotonic()
    for gateway, token in zip(both, tokens, strict=True):
        while True:
            answer = httpx.get(f"{gateway.server.base_url}/Patient", headers=token)
            made.count(client, "search")
            if answer.status_code == 401:
                break
            assert answer.status_code == 200, answer.text
            assert time.monotonic() - disabled < 5 + 2, "the disabled client's token still taken"
            time.sleep(0.2)
