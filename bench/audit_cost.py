"""The durable audit trail's cost, where it goes (issue 15): `python -m bench.audit_cost [MODE ...]`.

Seeds a store, then serves it once per mode (`off`: auth and audit off; `auth`: auth on, audit off;
`audit`: both on; default `off auth audit off auth audit`, A B C A B C) and reads Patients by id as the
region-wide demo client. For each run: requests a second, latency, and the server's CPU time per request
split into its workers' main threads (the event loop: the requests) and their other threads (the audit
writer), read from /proc, so a busy machine shows in the rates more than in the CPU split.

Environment: BENCH_SIZE (resources seeded, default 20000), BENCH_SECONDS (default 10), BENCH_CLIENTS
(keep-alive clients, default 8), BENCH_WORKERS (default 2), AUDIT_COST_URL (a database URL; default a
fresh SQLite file), AUDIT_COST_SCHEMA (PostgreSQL: the schema, dropped and made anew)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sqlalchemy import text

from bench import municipality
from bench import run as bench_run
from bench.load import measure
from bench.seed import ORGANIZATIONS, seed
from gateway.config import Settings
from gateway.security.cli import DEMO_CLIENT_ID, seed_demo
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine

SIZE = int(os.environ.get("BENCH_SIZE", "20000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))
MODES = {"off": ("off", "off"), "auth": ("on", "off"), "audit": ("on", "on")}
TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(server: int) -> dict[str, float]:
    """CPU seconds so far of the server's workers' threads, as `main` (each worker's event loop) and
    `other` (its audit writer), summed over the workers (or the server itself when it has none)."""
    pgrep = ["pgrep", "-P", str(server)]  # exits 1 when the server has no workers
    listed = subprocess.run(pgrep, check=False, capture_output=True, text=True).stdout.split()
    totals = {"main": 0.0, "other": 0.0}
    for pid in listed or [str(server)]:
        for task in Path(f"/proc/{pid}/task").iterdir():
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            totals["main" if task.name == pid else "other"] += (int(fields[11]) + int(fields[12])) / TICK
    return totals


def store() -> tuple[str, str, int]:
    """A seeded store: its URL, schema and the number of Patients."""
    url = os.environ.get("AUDIT_COST_URL") or f"sqlite:///{tempfile.mkdtemp()}/audit-cost.db"
    schema = os.environ.get("AUDIT_COST_SCHEMA", "")
    if schema:
        with make_engine(url, "").begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(url, schema)
    migrate.upgrade(engine)
    seeded = seed(Services.build(Settings(database_url=url, database_schema=schema), engine=engine), SIZE)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    seed_demo(engine, bench_run.BENCH_KEY)
    engine.dispose()
    return url, schema, (seeded - ORGANIZATIONS) // 4


def main(modes: list[str]) -> None:
    url, schema, patients = store()
    read = dict(bench_run.scenarios(patients))["read Patient by id"]
    base_env = {
        **os.environ,
        "DATABASE_URL": url,
        "DATABASE_SCHEMA": schema,
        "GATEWAY_REGION_CLIENTS": DEMO_CLIENT_ID,
    }
    print(
        f"{url.split(':')[0]}, {SIZE} resources, {bench_run.WORKERS} workers, {CLIENTS} clients, "
        f"{SECONDS:.0f} s"
    )
    for mode in modes:
        auth, audit = MODES[mode]
        with bench_run.serving({**base_env, "GATEWAY_AUTH": auth, "GATEWAY_AUDIT": audit}) as base:
            headers = {}
            if auth == "on":
                token = municipality.token(base, bench_run.BENCH_KEY, DEMO_CLIENT_ID)
                headers = {"Authorization": f"Bearer {token}"}
            server = bench_run.current_server_pid()
            measure(base, mode, read, CLIENTS, 2.0, headers=headers)  # warm up
            before = thread_cpu(server)
            result = measure(base, mode, read, CLIENTS, SECONDS, warmup=0.0, headers=headers)
            after = thread_cpu(server)
            served = max(1.0, result.per_second * SECONDS)
            main_ms, other_ms = (1000 * (after[k] - before[k]) / served for k in ("main", "other"))
            print(
                f"{mode:6s} {result.per_second:6.0f} req/s  p50 {result.p50_ms:5.1f} ms  "
                f"p95 {result.p95_ms:5.1f} ms  errors {result.errors}  CPU/request: requests "
                f"{main_ms:.2f} ms, audit writer {other_ms:.2f} ms  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main(sys.argv[1:] or ["off", "auth", "audit", "off", "auth", "audit"])
