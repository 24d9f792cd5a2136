"""The query plans of the searches users and the benchmark run most (issue 21), on PostgreSQL: each search
served in process as the region-wide client and as a municipality's client (its every query carries the
organisation's visibility condition), its page query captured and run under EXPLAIN (ANALYZE, BUFFERS),
written as Markdown for docs/performance.md.

    python -m bench.plans [--database-url URL] [--schema S] [--size N] [--base N] [--out FILE]

The schema is seeded (bench/plans_store.py: bench/seed.py's resources, a Communication and an AuditEvent
per patient) when it holds no resources: BENCH_SIZE (100,000 unless given) of them, or `--base` of them
copied in SQL up to the size (1,000,000 seeded one by one takes over an hour). The same searches
and the index each must use are what tests/search_plans/ checks on 20,000 resources in `make test`."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi.testclient import TestClient
from joserfc.jwk import ECKey
from sqlalchemy import Connection, Engine, event

from bench.plans_store import ORGANIZATION, prepare, sample
from gateway.app import create_app
from gateway.config import Settings
from gateway.model.types import Json
from gateway.security import store
from gateway.security.cli import assertion
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine

BASE = "http://plans.test/fhir"
KEY_SECRET = "the search plans' installation key secret, never a real one"
REGION, MUNICIPALITY = "plans-region", "plans-municipality"


@dataclass(frozen=True)
class Search:
    name: str
    path: str
    indexes: frozenset[str]  # the page query uses one of these (Index Scan, Index Only or Bitmap)


def searches(values: dict[str, str]) -> list[Search]:
    """The searches, with the values of a `sample` patient; the municipality's own organisation as owner
    and recipient."""
    pid, family, given = values["patient"], values["family"], values["given"]
    org = f"Organization/org-{ORGANIZATION}"
    prefix = frozenset({"ix_string_prefix"})
    token = frozenset({"ix_token_code_rid"})
    # by the target: its rows in `rid` order, or (param, target) when migration 0010's statistics on
    # (type, param, target_type) make that look cheaper
    reference = frozenset({"ix_reference_lookup_rid", "ix_reference_param_target"})
    return [
        Search("Patient by name", f"Patient?name={family}", prefix),
        Search("Patient by family", f"Patient?family={family}", prefix),
        Search("Patient by given", f"Patient?given={given}&_count=10", prefix),
        Search(
            "Patient by birthdate",
            f"Patient?birthdate={values['birthdate']}",
            frozenset({"ix_date_lookup", "ix_date_rid"}),
        ),
        # one in three Patients: walking them in `rid` order from the token index, or the Patients in
        # `rid` order probing each one's gender, both stop after the page
        Search("Patient by gender", "Patient?gender=female&_count=10", token | {"ix_token_rid"}),
        Search("Patient by identifier", f"Patient?identifier={values['identifier']}", token),
        Search(
            "Patient by family and gender",
            f"Patient?family={family}&gender={values['gender']}&_count=10",
            prefix,
        ),
        Search("Task by owner and status", f"Task?owner={org}&status=requested&_count=10", reference),
        Search(
            "Task by patient and code", f"Task?patient=Patient/{pid}&code={values['task_code']}", reference
        ),
        # the deadlines of a few days: from the date index, or walking the Tasks in `rid` order to the
        # page's end, whichever the planner expects to be cheaper
        Search(
            "Task by due", "Task?due=lt2026-01-03&_count=10", frozenset({"ix_date_lookup", "ix_date_rid"})
        ),
        Search(
            "DeviceRequest by patient, _revinclude Provenance",
            f"DeviceRequest?patient=Patient/{pid}&_revinclude=Provenance:target",
            reference,
        ),
        Search(
            "Communication by recipient and _lastUpdated",
            f"Communication?recipient={org}&_lastUpdated=ge2026-01-01&_count=10",
            reference,
        ),
        Search(
            "AuditEvent by patient and date", f"AuditEvent?patient=Patient/{pid}&date=ge2026-01-01", reference
        ),
    ]


def settings(url: str, schema: str) -> Settings:
    return Settings(
        database_url=url,
        database_schema=schema,
        base_url=BASE,
        audit=False,
        region_clients=(REGION,),
        key_secret=KEY_SECRET,
        notify=False,
        schedule_seconds=0.0,
        export_poll_seconds=0.0,
    )


class Clients:
    """The region-wide client and the municipality's, registered in the schema, with their tokens."""

    def __init__(self, engine: Engine, client: TestClient) -> None:
        self.headers: dict[str, dict[str, str]] = {}
        for client_id, organisation in (
            (REGION, "SE2321000016-REGION"),
            (MUNICIPALITY, f"SE2321000016-{ORGANIZATION:04d}"),
        ):
            key = ECKey.generate_key("P-384", auto_kid=True)
            private = key.as_dict(private=True) | {"kid": key.kid, "alg": "ES384"}
            jwks = {"keys": [key.as_dict(private=False) | {"kid": key.kid}]}
            if store.get_client(engine, client_id) is not None:
                store.remove_client(engine, client_id)
            store.add_client(
                engine, client_id, organisation, jwks, ["system/*.rs", "gateway/audit.read"], client_id
            )
            form = {
                "grant_type": "client_credentials",
                "scope": "system/*.rs gateway/audit.read",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": assertion(client_id, private, f"{BASE.removesuffix('/fhir')}/auth/token"),
            }
            answer = client.post("/auth/token", data=form)
            answer.raise_for_status()
            self.headers[client_id] = {"Authorization": f"Bearer {answer.json()['access_token']}"}


@dataclass
class Captured:
    sql: str
    parameters: Any


class Capture:
    """The statements a request runs; `page` is its search's page query (the one with ORDER BY … LIMIT)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[Captured] = []
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(
        self, connection: Connection, cursor: Any, sql: str, parameters: Any, context: Any, many: bool
    ) -> None:
        self.statements.append(Captured(sql, parameters))

    def remove(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)

    def page(self) -> Captured:
        found = [s for s in self.statements if "ORDER BY" in s.sql and "LIMIT" in s.sql]
        if not found:
            raise RuntimeError("the request ran no page query")
        return found[0]


def explain(engine: Engine, statement: Captured, analyze: bool) -> dict[str, Any]:
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    with engine.connect() as connection:
        row = connection.exec_driver_sql(f"EXPLAIN ({options}) {statement.sql}", statement.parameters).one()
    found = row[0]
    plan: dict[str, Any] = (json.loads(found) if isinstance(found, str) else found)[0]
    return plan


def indexes_used(node: dict[str, Any]) -> set[str]:
    """The indexes a plan reads (Index Scan, Index Only Scan, Bitmap Index Scan), subplans included."""
    found = {str(node["Index Name"])} if "Index Name" in node else set()
    for child in node.get("Plans", []):
        found |= indexes_used(child)
    return found


def text_plan(engine: Engine, statement: Captured) -> list[str]:
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            f"EXPLAIN (ANALYZE, BUFFERS) {statement.sql}", statement.parameters
        ).all()
    return [str(row[0]) for row in rows]


def served(
    engine: Engine, client: TestClient, clients: Clients, values: dict[str, str], repeat: int = 1
) -> Iterator[tuple[Search, str, Captured, Json, float]]:
    """Each search served as the region-wide client and as the municipality's: the search, who asked
    (`region`, `municipality`), its page query, the answer and the best of `repeat` times."""
    capture = Capture(engine)
    try:
        for search in searches(values):
            for client_id, who in ((REGION, "region"), (MUNICIPALITY, "municipality")):
                wall = []
                for _ in range(repeat):
                    capture.statements.clear()
                    begun = time.perf_counter()
                    response = client.get(f"/fhir/{search.path}", headers=clients.headers[client_id])
                    wall.append(time.perf_counter() - begun)
                    response.raise_for_status()
                yield search, who, capture.page(), response.json(), min(wall)
    finally:
        capture.remove()


def cell(text: str) -> str:
    """`text` in a Markdown table cell: its `|` (a token's system|code) escaped, or it splits the cell."""
    return text.replace("|", "\\|")


def run(url: str, schema: str, size: int, base: int = 0, repeat: int = 5) -> list[str]:
    engine = make_engine(url, schema)
    with engine.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    migrate.upgrade(engine)
    services = Services.build(settings(url, schema), engine=engine)
    held = prepare(engine, services, size, base)
    values = sample(engine)
    lines = [
        f"{held:,} resources, PostgreSQL "
        f"{engine.dialect.server_version_info}, after ANALYZE; times: the page query's execution time "
        f"(EXPLAIN ANALYZE, best of {repeat}) and the whole request in process (best of {repeat}).",
        "",
        "| search | client | rows | page query ms | request ms | buffers | indexes |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    details: list[str] = []
    app = create_app(settings(url, schema), services=services)
    with TestClient(app, base_url="http://plans.test") as client:
        clients = Clients(engine, client)
        for search, who, page, response, wall in served(engine, client, clients, values, repeat):
            plans = [explain(engine, page, True) for _ in range(repeat)]
            best = min(plans, key=lambda p: float(p["Execution Time"]))
            top = best["Plan"]
            buffers = int(top.get("Shared Hit Blocks", 0)) + int(top.get("Shared Read Blocks", 0))
            lines.append(
                f"| `{cell(search.path)}` | {who} | {len(response.get('entry', []))} | "
                f"{float(best['Execution Time']):.2f} | {wall * 1000:.1f} | {buffers:,} | "
                f"{', '.join(sorted(indexes_used(top)))} |"
            )
            details += [f"`{search.path}` as the {who} client:", "", "```"]
            details += [*text_plan(engine, page), "```", ""]
    services.close()
    return [*lines, "", "<details><summary>The plans</summary>", "", *details, "</details>"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "GATEWAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--size", type=int, default=int(os.environ.get("BENCH_SIZE", "100000")))
    parser.add_argument("--schema", default="")
    parser.add_argument("--base", type=int, default=0, help="seed this many, copy them up to --size")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    schema = args.schema or f"plans_{args.size // 1000}k"
    report = "\n".join(run(args.database_url, schema, args.size, args.base))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
