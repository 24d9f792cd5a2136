"""Where one request's time goes in SQL: the request served in process (auth and the organisation policy
on, audit off) as a bench client, every statement it runs timed, and the query plans of the slowest
(PostgreSQL: EXPLAIN (ANALYZE, BUFFERS); SQLite: EXPLAIN QUERY PLAN), with the same parameters.

    python -m bench.explain [--database-url URL] [--schema S] [--client ID] [--plans N] PATH [PATH ...]

PATH as the FHIR API takes it (`Task?owner=Organization/org-7&status=requested`). The client is the
municipality bench/run.py registers (bench-municipality) unless given (`demo-client`: the region-wide one);
run it on a store `make bench` left (var/bench.db, the schema gateway_bench)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Connection, event

from bench import REPO_ROOT
from bench.municipality import CLIENT_ID
from bench.run import BENCH_KEY_SECRET
from gateway.app import create_app
from gateway.config import Settings
from gateway.security.cli import DEMO_CLIENT_ID, assertion
from gateway.services import Services
from gateway.store.database import make_engine

BASE = "http://bench.test/fhir"
KEY = REPO_ROOT / "var" / "bench-client.jwk.json"


@dataclass
class Statement:
    sql: str
    parameters: Any
    seconds: float


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=f"sqlite:///{REPO_ROOT / 'var' / 'bench.db'}")
    parser.add_argument("--schema", default="")
    parser.add_argument("--client", default=CLIENT_ID)
    parser.add_argument("--plans", type=int, default=2, help="plans of the N slowest statements")
    parser.add_argument("--repeat", type=int, default=5, help="times each request runs (the last is shown)")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    engine = make_engine(args.database_url, args.schema)
    settings = Settings(
        database_url=args.database_url,
        database_schema=args.schema,
        base_url=BASE,
        audit=False,
        region_clients=(DEMO_CLIENT_ID,),
        key_secret=BENCH_KEY_SECRET,  # auth on: on PostgreSQL the gateway does not start without one
    )
    services = Services.build(settings, engine=engine)
    statements: list[Statement] = []
    started: dict[int, float] = {}

    @event.listens_for(engine, "before_cursor_execute")
    def before(
        connection: Connection, cursor: Any, sql: str, parameters: Any, context: Any, many: bool
    ) -> None:
        started[id(cursor)] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def after(
        connection: Connection, cursor: Any, sql: str, parameters: Any, context: Any, many: bool
    ) -> None:
        statements.append(Statement(sql, parameters, time.perf_counter() - started.pop(id(cursor), 0.0)))

    private = json.loads(KEY.read_text(encoding="utf-8"))
    with TestClient(create_app(settings, services=services), base_url="http://bench.test") as client:
        form = {
            "grant_type": "client_credentials",
            "scope": "system/*.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(args.client, private, f"{BASE.removesuffix('/fhir')}/auth/token"),
        }
        answer = client.post("/auth/token", data=form)
        answer.raise_for_status()
        headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        for path in args.paths:
            for _ in range(args.repeat):
                statements.clear()
                begun = time.perf_counter()
                response = client.get(f"/fhir/{path}", headers=headers)
                wall = time.perf_counter() - begun
            sql = sum(s.seconds for s in statements)
            print(f"\n== {path} as {args.client}: {response.status_code}, {wall * 1000:.1f} ms")
            print(f"   {len(statements)} statements, {sql * 1000:.1f} ms in SQL")
            for s in statements:
                print(f"   {s.seconds * 1000:7.2f} ms  {' '.join(s.sql.split())[:150]}")
            for s in sorted(statements, key=lambda s: s.seconds, reverse=True)[: args.plans]:
                print(f"\n-- {s.seconds * 1000:.2f} ms:\n{s.sql}\n-- parameters: {s.parameters}")
                for line in plan(engine.dialect.name, s, services):
                    print(f"   {line}")
    services.close()


def plan(dialect: str, statement: Statement, services: Services) -> list[str]:
    explain = "EXPLAIN (ANALYZE, BUFFERS) " if dialect == "postgresql" else "EXPLAIN QUERY PLAN "
    with services.engine.connect() as connection:
        rows = connection.exec_driver_sql(explain + statement.sql, statement.parameters).all()
    if dialect == "postgresql":
        return [str(row[0]) for row in rows]
    depth: dict[int, int] = {0: -1}  # SQLite: (id, parent, notused, detail), children after parents
    lines = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append(f"{'  ' * depth[node]}{detail}")
    return lines


if __name__ == "__main__":
    main()
