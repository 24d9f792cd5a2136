"""The HL7 aim of issue 16 as one run's ratio: the gateway's CPU per HL7 v2 message, the parse excluded,
against its CPU per order of Beställningsportalen, both per resource version written.

    python -m bench.hl7v2_ratio [--rounds 6] [--orders 50] [--messages 50] [--single 20] [--audit on|off]

One `gateway serve --workers 1` process (auth off, audit as `--audit`) runs the REST entrance and the
MLLP listener (GATEWAY_MLLP_PORT) with one parse process (GATEWAY_MLLP_PARSE_PROCESSES=1), on the
database at DATABASE_URL (default: a fresh SQLite file; a PostgreSQL URL: a fresh schema, dropped
afterwards). After a warm-up round that is not counted, each round sends, one after the other:
`--orders` new orders in one request (the adapter writes them in chunks of 50, as through REST and the
CLI), `--messages` HL7 messages (A01 + A03 pairs of distinct new patients, one MLLP connection, each
ACK awaited) and `--single` new orders each in its own request (a chunk of one, as a message is; 0: none).
Phases interleave so that what else runs on the machine weighs on all of them alike. A phase's CPU is
user + system time from /proc, read once the server has gone idle after the phase's last answer: the
server process's own (its threads: the write path, the audit writer) and, apart, its children's (the
parse process: the message's parse, which the aim leaves out; the earlier messages of a stay are read
back in the server process and count). The resource versions a phase wrote (AuditEvents apart) are
counted in the database. The aim: CPU per message without the parse ≤ 1.5 × CPU per order of as many
resource versions (the order's CPU per version times the message's versions)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, text

from bench.adapters_orders import orders
from bench.hl7v2_mllp import client, cpu_seconds, messages
from bench.serving import free_port, wait_ready
from gateway.store import migrate
from gateway.store.database import make_engine

AIM = 1.5
GATEWAY = str(Path(sys.executable).parent / "gateway")
ORDERS_PATH = "/adapters/bestallningsportalen/orders"


@dataclass
class Phase:
    name: str
    unit: str
    count: int = 0
    cpu: float = 0.0  # seconds, the server process's own
    parse: float = 0.0  # seconds, its children's (the parse process)
    versions: int = 0  # resource versions written, AuditEvents apart
    audit_events: int = 0
    wall: float = 0.0

    def add(
        self, count: int, cpu: tuple[float, float], versions: int, audit_events: int, wall: float
    ) -> None:
        self.count += count
        self.cpu += cpu[0]
        self.parse += cpu[1]
        self.versions += versions
        self.audit_events += audit_events
        self.wall += wall

    @property
    def ms(self) -> float:
        return self.cpu / self.count * 1000 if self.count else 0.0

    @property
    def total_ms(self) -> float:
        return (self.cpu + self.parse) / self.count * 1000 if self.count else 0.0

    @property
    def parse_ms(self) -> float:
        return self.parse / self.count * 1000 if self.count else 0.0

    @property
    def per_version_ms(self) -> float:
        return (self.cpu + self.parse) / self.versions * 1000 if self.versions else 0.0

    @property
    def versions_each(self) -> float:
        return self.versions / self.count if self.count else 0.0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http: str
    mllp: int
    phases: dict[str, Phase] = field(default_factory=dict)

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of the server process itself and of its children."""
        every = cpu_seconds(self.process.pid)
        own = own_seconds(self.process.pid)
        return own, every - own

    def idle(self, quiet: float = 0.002, step: float = 0.25) -> tuple[float, float]:
        """The process's CPU seconds once it has gone idle (less than `quiet` s of CPU in `step` s, twice
        running): what it still does for a phase after its last answer (commits, audit) counts in it."""
        last, still = self.cpu(), 0
        while still < 2:
            time.sleep(step)
            now = self.cpu()
            still = still + 1 if sum(now) - sum(last) < quiet else 0
            last = now
        return last


def own_seconds(pid: int) -> float:
    """User + system CPU seconds of the process itself, its threads included (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(url: str, schema: str, audit: str) -> Server:
    port, mllp = free_port(), free_port()
    env = dict(
        os.environ,
        DATABASE_URL=url,
        DATABASE_SCHEMA=schema,
        GATEWAY_AUTH="off",
        GATEWAY_AUDIT=audit,
        GATEWAY_MLLP_PORT=str(mllp),
        GATEWAY_MLLP_PARSE_PROCESSES="1",
        GATEWAY_BASE_URL=f"http://127.0.0.1:{port}/fhir",
    )
    command = [GATEWAY, "serve", "--port", str(port), "--workers", "1", "--no-upgrade"]
    log = tempfile.NamedTemporaryFile(prefix="hl7v2_ratio-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    print(f"server log: {log.name}", flush=True)
    wait_ready(f"http://127.0.0.1:{port}/readyz", process)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", mllp), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return Server(process, f"http://127.0.0.1:{port}", mllp)


def counts(engine: Engine) -> tuple[int, int]:
    """Resource versions stored: all but AuditEvents, and AuditEvents."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT res_type = 'AuditEvent', count(*) FROM resource_version "
                "GROUP BY res_type = 'AuditEvent'"
            )
        ).all()
    found = {bool(kind): int(n) for kind, n in rows}
    return found.get(False, 0), found.get(True, 0)


def post_orders(http: httpx.Client, base: str, items: list[dict[str, object]]) -> None:
    body = "\n".join(json.dumps(order) for order in items).encode()
    answer = http.post(base + ORDERS_PATH, content=body, headers={"Content-Type": "application/x-ndjson"})
    answer.raise_for_status()
    bad = [
        e["response"]["status"]
        for e in answer.json()["entry"]
        if e["response"]["status"][:3] not in ("200", "201")
    ]
    if bad:
        raise RuntimeError(f"orders refused: {bad[:3]}")


def measured(server: Server, engine: Engine, phase: Phase, count: int, work: object) -> None:
    assert callable(work)
    versions, events = counts(engine)
    own, children = server.idle()
    started = time.perf_counter()
    work()
    wall = time.perf_counter() - started
    own_after, children_after = server.idle()
    cpu = (own_after - own, children_after - children)
    versions_after, events_after = counts(engine)
    phase.add(count, cpu, versions_after - versions, events_after - events, wall)


def one_round(
    server: Server, engine: Engine, http: httpx.Client, args: argparse.Namespace, phases: dict[str, Phase]
) -> None:
    """One round's phases."""
    tag = uuid.uuid4().hex[:6]
    batch = list(orders(args.orders, f"R{tag}"))
    hl7 = messages(args.messages, f"R{tag}")
    singles = list(orders(args.single, f"S{tag}"))

    def one_by_one() -> None:
        for order in singles:
            post_orders(http, server.http, [order])

    measured(server, engine, phases["orders"], len(batch), lambda: post_orders(http, server.http, batch))
    measured(server, engine, phases["hl7"], len(hl7), lambda: client(server.mllp, hl7, []))
    if singles:
        measured(server, engine, phases["single"], len(singles), one_by_one)


def database(url: str) -> tuple[str, str]:
    if not url.startswith("postgresql"):
        return url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}", ""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with create_engine(url).begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    return url, schema


def run(args: argparse.Namespace) -> dict[str, object]:
    url, schema = database(os.environ.get("DATABASE_URL", ""))
    engine = make_engine(url, schema)
    try:
        migrate.upgrade(engine)
        server = start(url, schema, args.audit)
        phases = {
            "orders": Phase(f"orders, {args.orders} a request", "order"),
            "hl7": Phase("HL7 v2 messages over MLLP", "message"),
            "single": Phase("orders, one a request", "order"),
        }
        try:
            with httpx.Client(timeout=600) as http:
                for number in range(args.rounds + 1):
                    # round 0 warms the server up and is not counted
                    target = {k: Phase(p.name, p.unit) for k, p in phases.items()} if number == 0 else phases
                    one_round(server, engine, http, args, target)
                    if number:
                        shown = ", ".join(f"{k} {p.ms:.1f} ms" for k, p in phases.items() if p.count)
                        print(f"round {number}: {shown}", flush=True)
        finally:
            server.process.terminate()
            server.process.wait(60)
        return report(engine, args, phases)
    finally:
        engine.dispose()
        if schema:
            with create_engine(url).begin() as connection:
                connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))


def report(engine: Engine, args: argparse.Namespace, phases: dict[str, Phase]) -> dict[str, object]:
    hl7, batch, single = phases["hl7"], phases["orders"], phases["single"]
    print(f"database {engine.dialect.name}, audit {args.audit}, load average {os.getloadavg()[0]:.1f}")
    for phase in phases.values():
        if phase.count:
            print(
                f"  {phase.name}: {phase.total_ms:.1f} ms CPU a {phase.unit} ({phase.count}; the parse "
                f"process {phase.parse_ms:.1f}), {phase.versions_each:.1f} resource versions a {phase.unit} "
                f"({phase.per_version_ms:.2f} ms each), "
                f"{phase.audit_events / phase.count:.1f} AuditEvents a {phase.unit}, "
                f"{phase.count / phase.wall:.0f} {phase.unit}s/s"
            )
    print(f"  a message without its parse: {hl7.ms:.1f} ms")
    result: dict[str, object] = {
        "database": engine.dialect.name,
        "audit": args.audit,
        "parse_ms": hl7.parse_ms,
        "hl7_ms": hl7.total_ms,
        "hl7_versions": hl7.versions_each,
        "hl7_without_parse_ms": hl7.ms,
    }
    for key, phase in (("orders", batch), ("single", single)):
        if not phase.count:
            continue
        same = phase.per_version_ms * hl7.versions_each  # an order of as many resources as a message
        ratio = hl7.ms / same if same else 0.0
        print(
            f"  ratio to {phase.name}: {ratio:.2f} (an order of {hl7.versions_each:.1f} versions: "
            f"{same:.1f} ms; aim ≤ {AIM})"
        )
        result |= {f"{key}_ms": phase.total_ms, f"{key}_versions": phase.versions_each, f"ratio_{key}": ratio}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--orders", type=int, default=50)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--audit", choices=("on", "off"), default="on")
    args = parser.parse_args()
    print("RESULT " + json.dumps(run(args)))


if __name__ == "__main__":
    main()
