"""Subscriptions' cost and delivery (issue 17): `python -m bench.subscriptions`.

In one process, auth and the organisation policy on, through the write path (no HTTP in front): 100
municipalities (an Organization, a registered client with a notify endpoint) each with an active
topic-based subscription (handover-task, id-only) evaluated as its client; handover Tasks written by a
region-wide client, each owned by one municipality, so each event matches one subscription.

- writes: handover Tasks created one after another, a second, with the outbox replaced by nothing
  (`none`), with the outbox and no subscription (`outbox`), and with the 100 subscriptions and the
  deliverer running (`subscribed`);
- delivery: Tasks written at BENCH_RATE a second for BENCH_SECONDS; the receiver (another process)
  notes when each event arrives; events delivered a second and commit → receiver's 200, p50/p95;
- region: a region-wide client's updates and deletes a second, with and without the Subscription
  ownership condition in its policy (`SubscriptionOwners`, before issue 17 it was not there).

Environment: BENCH_SUBS (100), BENCH_RATE (50), BENCH_SECONDS (10), BENCH_WRITES (300 per mode),
BENCH_ENDPOINTS (`each`: every municipality its own receiving endpoint, a port of the receiver, so the
per-endpoint cap applies to each; `one`: all share one, as before 2026-12-07),
SUBS_URL (a database URL; default a fresh SQLite file), SUBS_SCHEMA (PostgreSQL: made anew)."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.common import body_of, migrated
from gateway.config import Settings
from gateway.hooks import NoNotify, Principal, RequestContext
from gateway.security import store as clients
from gateway.security.all_of import AllOf
from gateway.services import Services
from gateway.subscriptions.delivery import Deliverer
from gateway.subscriptions.outbox import Outbox
from gateway.subscriptions.registration import notify_rows

SUBS = int(os.environ.get("BENCH_SUBS", "100"))
RATE = float(os.environ.get("BENCH_RATE", "50"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
WRITES = int(os.environ.get("BENCH_WRITES", "300"))
ENDPOINTS = os.environ.get("BENCH_ENDPOINTS", "each")  # each: one per municipality; one: all share one
HSA = "urn:oid:1.2.752.29.4.19"
BASE = "https://fhir.home-device-gateway.se"
HANDOVER = {"coding": [{"system": f"{BASE}/CodeSystem/care-transition-task", "code": "handover"}]}
TOPIC = f"{BASE}/SubscriptionTopic/handover-task"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
REGION = Principal(client_id="bench-region", organization="SE-REGION", scopes=frozenset({"system/*.cruds"}))


def receiver(count: int, log: str, ports: str) -> None:
    """The receiver (run as `python -m bench.subscriptions receive COUNT FILE PORTS`): listens on COUNT
    ports (each municipality its own endpoint, as they would be; written to PORTS), notes each event."""
    import uvicorn

    sink = Path(log).open("a", buffering=1)  # noqa: SIM115 (open for the receiver's life)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await body_of(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        now = time.time()
        for parameter in json.loads(body)["entry"][0]["resource"]["parameter"]:
            if parameter["name"] == "notification-event":
                for part in parameter["part"]:
                    if part["name"] == "focus":
                        sink.write(f"{now} {part['valueReference']['reference'].rsplit('/', 1)[1]}\n")

    sockets = []
    for _ in range(count):
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        sockets.append(listening)
    Path(ports).write_text(" ".join(str(s.getsockname()[1]) for s in sockets))
    uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off")).run(sockets=sockets)


def settings() -> Settings:
    url, schema = migrated("SUBS", "subscriptions")
    return Settings(
        database_url=url,
        database_schema=schema,
        auth=True,
        audit=False,
        base_url="http://bench.example/fhir",
        region_clients=(REGION.client_id,),
        allow_http_loopback=True,
        notify=False,
        notify_poll_seconds=0.2,
    )


def as_(services: Services, principal: Principal, work: Callable[[Any], Any]) -> Any:
    context = RequestContext(principal=principal, base_url=services.settings.base_url)
    return services.write_path.run(context, work)


def create(services: Services, principal: Principal, resource: dict[str, Any]) -> str:
    path = services.write_path
    result = as_(services, principal, lambda uow: path.create(uow, resource))
    return str(result.stored.res_id)


def put(services: Services, resource: dict[str, Any]) -> None:
    path = services.write_path
    as_(services, REGION, lambda uow: path.update(uow, resource["resourceType"], resource["id"], resource))


def remove(services: Services, res_type: str, res_id: str) -> None:
    path = services.write_path
    as_(services, REGION, lambda uow: path.delete(uow, res_type, res_id))


def task(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": HANDOVER,
        "for": {"reference": "Patient/p1"},
        "owner": {"reference": f"Organization/o{n % SUBS}"},
    }


def world(services: Services, endpoints: list[str]) -> None:
    """The Patient, the municipalities and their subscriptions (active: no handshake waited for)."""
    path = services.write_path
    as_(
        services,
        REGION,
        lambda uow: path.update(uow, "Patient", "p1", {"resourceType": "Patient", "id": "p1"}),
    )
    for i in range(SUBS):
        org = {
            "resourceType": "Organization",
            "id": f"o{i}",
            "identifier": [{"system": HSA, "value": f"SE-K{i}"}],
        }
        put(services, org)
        scopes = ["system/Task.rs", "system/Subscription.cruds"]
        endpoint = endpoints[i % len(endpoints)]
        rows = notify_rows([endpoint], [])
        clients.add_client(
            services.engine, f"kommun {i}", f"SE-K{i}", {"keys": []}, scopes, f"k{i}", notify=rows
        )
        principal = Principal(client_id=f"k{i}", organization=f"SE-K{i}", scopes=frozenset(scopes))
        content = {"url": BACKPORT + "backport-payload-content", "valueCode": "id-only"}
        sub = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "Överlämningar",
            "criteria": TOPIC,
            "channel": {
                "type": "rest-hook",
                "endpoint": endpoint,
                "payload": "application/fhir+json",
                "_payload": {"extension": [content]},
            },
        }
        create(services, principal, sub)


def writes(services: Services, count: int, offset: int) -> tuple[float, list[tuple[str, float]]]:
    """Handover Tasks created one after another: a second, and (id, commit time) of each."""
    done = []
    started = time.perf_counter()
    for n in range(offset, offset + count):
        done.append((create(services, REGION, task(n)), time.time()))
    return count / (time.perf_counter() - started), done


def region_changes(services: Services, count: int) -> float:
    """A region-wide client's updates and deletes (one of each per Task), a second."""
    made = [create(services, REGION, task(n)) for n in range(count)]
    started = time.perf_counter()
    for res_id in made:
        body = {**task(0), "id": res_id, "status": "accepted"}
        put(services, body)
        remove(services, "Task", res_id)
    return 2 * count / (time.perf_counter() - started)


def main() -> None:
    if sys.argv[1:2] == ["receive"]:
        receiver(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    config = settings()
    services = Services.build(config)
    folder = Path(tempfile.mkdtemp())
    log, ports = folder / "received.txt", folder / "ports.txt"
    log.touch()
    count = SUBS if ENDPOINTS == "each" else 1
    receiving = subprocess.Popen(
        [sys.executable, "-m", "bench.subscriptions", "receive", str(count), str(log), str(ports)]
    )
    while not ports.exists() or not ports.read_text():
        time.sleep(0.1)
    world(services, [f"http://127.0.0.1:{port}/hooks/" for port in ports.read_text().split()])
    print(
        f"{services.engine.dialect.name}: {SUBS} municipalities subscribed, {count} receiving endpoint(s), "
        f"CPUs {os.cpu_count()}, load {os.getloadavg()[0]:.1f}"
    )
    outbox = services.hooks.notify
    services.hooks.notify = NoNotify()
    rate_none, _ = writes(services, WRITES, 0)
    services.hooks.notify = outbox
    with services.engine.begin() as connection:  # nobody subscribed: the outbox only
        connection.execute(text("UPDATE subscription_state SET status = 'off'"))
    deliverer = Deliverer(services).start()
    rate_outbox, _ = writes(services, WRITES, WRITES)
    with services.engine.begin() as connection:
        connection.execute(text("UPDATE subscription_state SET status = 'active'"))
        connection.execute(text("UPDATE subscription_state SET acked = last_number"))
    time.sleep(1.0)
    rate_subscribed, _ = writes(services, WRITES, 2 * WRITES)
    time.sleep(3.0)  # the deliverer catches up before the paced run
    print(
        f"writes/s: no outbox {rate_none:.1f}, outbox {rate_outbox:.1f}, outbox + {SUBS} subscriptions "
        f"and deliverer {rate_subscribed:.1f}"
    )
    # paced: BENCH_RATE events a second
    log.write_text("")
    committed: dict[str, float] = {}
    started = time.time()
    n = 3 * WRITES
    while time.time() - started < SECONDS:
        _, done = writes(services, 1, n)
        committed.update(done)
        n += 1
        time.sleep(max(0.0, started + (n - 3 * WRITES) / RATE - time.time()))
    written = time.time() - started
    deadline = time.time() + 60
    arrived: dict[str, float] = {}
    while time.time() < deadline and len(arrived) < len(committed):
        for line in log.read_text().splitlines():
            at, res_id = line.split()
            if res_id in committed:
                arrived.setdefault(res_id, float(at))
        time.sleep(0.5)
    latencies = sorted(arrived[k] - committed[k] for k in arrived) or [float("nan")]
    last = max(arrived.values()) if arrived else started
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[int(len(latencies) * 0.95) - 1] * 1000
    print(
        f"paced {len(committed) / written:.1f} events/s for {written:.0f} s: "
        f"{len(arrived)}/{len(committed)} delivered, {len(arrived) / (last - started):.1f} delivered/s, "
        f"commit → 200 p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    deliverer.stop()
    services.hooks.notify = outbox if isinstance(outbox, Outbox) else NoNotify()
    after = region_changes(services, WRITES // 2)
    policy = services.hooks.policy
    assert isinstance(policy, AllOf)
    services.hooks.policy = AllOf(*[p for p in policy.policies if type(p).__name__ != "SubscriptionOwners"])
    before = region_changes(services, WRITES // 2)
    services.hooks.policy = policy
    again = region_changes(services, WRITES // 2)
    print(
        f"region-wide updates+deletes/s: with ownership condition {after:.1f} / {again:.1f}, "
        f"without {before:.1f}"
    )
    print(f"load after: {os.getloadavg()[0]:.1f}")
    receiving.terminate()
    receiving.wait()
    services.close()


if __name__ == "__main__":
    main()
