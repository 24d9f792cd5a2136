"""Sizing (issue 20): requests/s, latency and memory of `gateway serve --workers N` for N = 1, 2, 4 on
PostgreSQL, with auth and audit on as a region runs it (a region-wide client's SMART token).

`python -m bench.processes` seeds BENCH_SIZE resources (default 100000) into the schema `gateway_bench`
of BENCH_POSTGRES_URL, then measures read, create and search for BENCH_SECONDS each at every process
count, BENCH_CLIENTS concurrent clients; prints a Markdown table for docs/performance.md and
docs/deployment.md. The load generator runs on the same machine: on 2 cores, 4 processes compete with it."""

from __future__ import annotations

import os
import time

from sqlalchemy import text

from bench import municipality
from bench.load import measure
from bench.run import (
    BENCH_KEY,
    CLIENTS,
    POSTGRES,
    SECONDS,
    SIZE,
    current_server_pid,
    postgres_schema,
    scenarios,
    serving,
)
from bench.seed import ORGANIZATIONS, clear, seed
from bench.serving import worker_memory
from gateway.config import Settings
from gateway.security.cli import DEMO_CLIENT_ID, seed_demo
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine

PROCESSES = tuple(int(n) for n in os.environ.get("BENCH_PROCESSES", "1,2,4").split(","))
MEASURED = ("read Patient by id", "create Task", "search Task?owner=X&status=requested")


def main() -> None:
    schema = postgres_schema()
    if schema is None:
        raise SystemExit("bench.processes needs PostgreSQL (BENCH_POSTGRES_URL)")
    engine = make_engine(POSTGRES, schema)
    migrate.upgrade(engine)
    services = Services.build(Settings(database_url=POSTGRES, database_schema=schema), engine=engine)
    clear(services)
    started = time.perf_counter()
    seeded = seed(services, SIZE)
    print(f"seeded {seeded} in {time.perf_counter() - started:.0f}s", flush=True)
    with engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    seed_demo(engine, BENCH_KEY)
    engine.dispose()
    patients = (seeded - ORGANIZATIONS) // 4
    env = {
        **os.environ,
        "DATABASE_URL": POSTGRES,
        "DATABASE_SCHEMA": schema,
        "GATEWAY_AUTH": "on",
        "GATEWAY_AUDIT": "on",
        "GATEWAY_REGION_CLIENTS": DEMO_CLIENT_ID,
        "GATEWAY_NOTIFY": "off",
        "GATEWAY_SCHEDULE_SECONDS": "0",
    }
    rows = [
        "| processes | "
        + " | ".join(f"{name} (req/s, p95 ms)" for name in MEASURED)
        + " | memory (MiB, all: RSS / private) |",
        "|---|" + "---|" * len(MEASURED) + "---|",
    ]
    for processes in PROCESSES:
        with serving(env, processes) as base:
            access = municipality.token(base, BENCH_KEY, DEMO_CLIENT_ID, "system/*.cruds")
            headers = {"Authorization": f"Bearer {access}"}
            cells = []
            for name, make in scenarios(patients):
                if name not in MEASURED:
                    continue
                result = measure(base, name, make, CLIENTS, SECONDS, headers=headers)
                print(
                    f"[{processes}] {name}: {result.per_second:.0f}/s p95 {result.p95_ms:.0f} ms "
                    f"errors {result.errors}",
                    flush=True,
                )
                if result.errors:
                    raise SystemExit(f"{name}: {result.errors} errors with {processes} processes")
                cells.append(f"{result.per_second:.0f}, {result.p95_ms:.0f}")
            workers = worker_memory(current_server_pid())
            rss, private = sum(w.rss for w in workers), sum(w.private for w in workers)
            rows.append(f"| {processes} | " + " | ".join(cells) + f" | {rss:.0f} / {private:.0f} |")
    print(
        f"\nBENCH_SIZE={SIZE}, {CLIENTS} clients, {SECONDS:.0f} s each, load before {os.getloadavg()[0]:.1f}"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
