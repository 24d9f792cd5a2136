"""The planner's statistics beside a large audit trail (issue 21): `python -m bench.audit_stats`.

Seeds a PostgreSQL schema with clinical resources (bench/seed.py) and many more AuditEvents, written
through the audit trail's own insert (gateway/store/audit_log.py: the resource, version and index rows the
audit writer stores) from the AuditEvents the gateway makes of a mix of reads, searches and creates by a
region-wide and a municipality client (gateway/security/audit_event.py). Then, per statistics setting,
ANALYZE and EXPLAIN ANALYZE the index lookups of the most common searches: the planner's estimate of rows
beside the rows found, and the time of the search's query shape (`rid IN (…) AND EXISTS (…) ORDER BY rid
LIMIT 11`).

    python -m bench.audit_stats [--database-url URL] [--schema S] [--size N] [--audits N] [--no-seed]
        [--settings none,target,extended]

`none`: no statistics objects and the default statistics target (as before migration 0010); `target`:
the index tables' `res_type`, `param` and code columns at statistics target 1000, no statistics objects;
`extended`: the statistics objects of migration 0010 (gateway/store/statistics.py)."""

from __future__ import annotations

import argparse
import importlib
import random
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from bench.seed import ORGANIZATIONS, seed
from gateway.config import Settings
from gateway.hooks import AccessRecord, Principal, RequestContext
from gateway.model.types import Json
from gateway.search.dates import utc_now
from gateway.security.audit_event import audit_event
from gateway.services import Services
from gateway.store import audit_log, migrate
from gateway.store.database import make_engine

# migration 0010's statistics objects: (name, table, columns)
STATISTICS: tuple[tuple[str, str, tuple[str, ...]], ...] = importlib.import_module(
    "gateway.store.migrations.versions.0010_planner_statistics"
).STATISTICS
# the columns the per-column statistics target raises
TARGET_COLUMNS = {
    "idx_token": ("res_type", "param", "code"),
    "idx_string": ("res_type", "param", "value_folded"),
    "idx_reference": ("res_type", "param", "target_type", "target_id"),
}
INDEX_TABLES = ("idx_token", "idx_string", "idx_reference", "idx_date", "idx_number", "idx_uri")
URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BATCH = 2000
REGION = Principal("demo-client", None, None, frozenset({"system/*.rs"}))
MUNICIPALITY = Principal("bench-municipality", "SE2321000016-0007", None, frozenset({"system/*.rs"}))

# (name, what it shows the estimate of): the index lookups of the searches the issue names
PROBES: list[tuple[str, str]] = [
    (
        "Patient gender=female",
        "SELECT rid FROM idx_token WHERE res_type = 'Patient' AND param = 'gender' AND code = 'female'",
    ),
    (
        "Patient family=efternamn12",
        "SELECT rid FROM idx_string WHERE res_type = 'Patient' AND param = 'family' "
        "AND value_folded LIKE 'efternamn12%'",
    ),
    (
        "Task status=requested",
        "SELECT rid FROM idx_token WHERE res_type = 'Task' AND param = 'status' AND code = 'requested'",
    ),
    (
        "Task owner=Organization/org-7",
        "SELECT rid FROM idx_reference WHERE res_type = 'Task' AND param = 'owner' "
        "AND target_type = 'Organization' AND target_id = 'org-7'",
    ),
    (
        "AuditEvent patient=Patient/pat-5",
        "SELECT rid FROM idx_reference WHERE res_type = 'AuditEvent' AND param = 'patient' "
        "AND target_type = 'Patient' AND target_id = 'pat-5'",
    ),
]
# The searches' query shape (gateway/search/query.py): one parameter's rows, the other tested per row.
SEARCHES: list[tuple[str, str]] = [
    (
        "Patient?family=efternamn12&gender=female",
        "SELECT r.rid FROM resource r WHERE r.res_type = 'Patient' AND r.deleted = false "
        "AND r.rid IN (SELECT rid FROM idx_string WHERE res_type = 'Patient' AND param = 'family' "
        "AND value_folded LIKE 'efternamn12%') AND EXISTS (SELECT 1 FROM idx_token t WHERE t.rid = r.rid "
        "AND t.res_type = 'Patient' AND t.param = 'gender' AND t.code = 'female') ORDER BY r.rid LIMIT 11",
    ),
    (
        "Task?owner=Organization/org-7&status=requested",
        "SELECT r.rid FROM resource r WHERE r.res_type = 'Task' AND r.deleted = false "
        "AND r.rid IN (SELECT rid FROM idx_reference WHERE res_type = 'Task' AND param = 'owner' "
        "AND target_type = 'Organization' AND target_id = 'org-7') AND EXISTS (SELECT 1 FROM idx_token t "
        "WHERE t.rid = r.rid AND t.res_type = 'Task' AND t.param = 'status' AND t.code = 'requested') "
        "ORDER BY r.rid LIMIT 11",
    ),
]


def access_records(count: int, patients: int, seed_: int = 11) -> Iterator[AccessRecord]:
    """`count` accesses in the mix of the issue's benchmark: reads of Patients by id, Patient and Task
    searches, Patient and Task creates, by the region-wide and the municipality client."""
    rng = random.Random(seed_)
    for _ in range(count):
        principal = REGION if rng.random() < 0.5 else MUNICIPALITY
        n = rng.randrange(patients)
        pid = f"pat-{n}"
        kind = rng.random()
        if kind < 0.4:
            context = RequestContext(principal, "http://bench.test/fhir", "127.0.0.1")
            yield AccessRecord("read", "Patient", [pid], 200, context, patients=[f"Patient/{pid}"])
        elif kind < 0.6:
            query = f"Patient?family=Efternamn{n % 5000}&gender=female&_count=10"
            context = RequestContext(principal, "http://bench.test/fhir", "127.0.0.1", query)
            yield AccessRecord("search", "Patient", [pid], 200, context, patients=[f"Patient/{pid}"])
        elif kind < 0.8:
            query = f"Task?owner=Organization/org-{n % ORGANIZATIONS}&status=requested&_count=10"
            context = RequestContext(principal, "http://bench.test/fhir", "127.0.0.1", query)
            tasks = [f"task-{rng.randrange(patients)}" for _ in range(3)]
            yield AccessRecord("search", "Task", tasks, 200, context)
        else:
            context = RequestContext(principal, "http://bench.test/fhir", "127.0.0.1")
            res_type = "Task" if kind < 0.9 else "Patient"
            new = f"new-{rng.getrandbits(48):x}"
            yield AccessRecord(
                "create", res_type, [new], 201, context, patients=[f"Patient/{pid}"],
                versions={f"{res_type}/{new}": 1},
            )  # fmt: skip


def add_audit_events(services: Services, count: int, patients: int) -> int:
    """`count` AuditEvents stored as the audit writer stores them, in batches."""
    now = utc_now() - timedelta(hours=1)
    written = 0
    events: list[Json] = []
    for record in access_records(count, patients):
        events.append(audit_event(record, now))
        if len(events) >= BATCH:
            with services.engine.begin() as connection:
                written += len(audit_log.insert_events(connection, services.extractor, events, now))
            events = []
    if events:
        with services.engine.begin() as connection:
            written += len(audit_log.insert_events(connection, services.extractor, events, now))
    return written


def make_store(url: str, schema: str, size: int, audits: int) -> Engine:
    with make_engine(url, "").begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(url, schema)
    migrate.upgrade(engine)
    services = Services.build(Settings(database_url=url, database_schema=schema), engine=engine)
    started = time.perf_counter()
    seeded = seed(services, size)
    print(f"seeded {seeded} clinical resources in {time.perf_counter() - started:.0f} s", flush=True)
    started = time.perf_counter()
    added = add_audit_events(services, audits, (seeded - ORGANIZATIONS) // 4)
    print(f"stored {added} AuditEvents in {time.perf_counter() - started:.0f} s", flush=True)
    return engine


def apply(connection: Connection, setting: str) -> None:
    """Statistics as `setting` says, then ANALYZE."""
    for name, table, columns in STATISTICS:
        connection.execute(text(f"DROP STATISTICS IF EXISTS {name}"))
        if setting == "extended":
            listed = ", ".join(columns)
            connection.execute(text(f"CREATE STATISTICS {name} (dependencies, mcv) ON {listed} FROM {table}"))
    target = 1000 if setting == "target" else -1
    for table, columns in TARGET_COLUMNS.items():
        for column in columns:
            connection.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} SET STATISTICS {target}"))
    analyze(connection)


def analyze(connection: Connection) -> None:
    """ANALYZE the tables a search reads (this schema's only: a bare ANALYZE takes every schema's)."""
    for table in ("resource", *INDEX_TABLES):
        connection.execute(text(f"ANALYZE {table}"))


def explain(connection: Connection, sql: str) -> tuple[float, float, float]:
    """(estimated rows, actual rows, ms) of the statement's top node, run three times (the last kept)."""
    plan: dict[str, Any] = {}
    for _ in range(3):
        plan = connection.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")).scalar_one()[0]
    top = plan["Plan"]
    return float(top["Plan Rows"]), float(top["Actual Rows"]), float(plan["Execution Time"])


def report(engine: Engine, setting: str) -> None:
    with engine.begin() as connection:
        apply(connection, setting)
    with engine.connect() as connection:
        counts = connection.execute(
            text("SELECT res_type = 'AuditEvent', count(*) FROM resource GROUP BY 1 ORDER BY 1")
        ).all()
        print(f"\n[{setting}] resources (clinical, audit): {[int(c) for _, c in counts]}")
        for name, sql in PROBES + SEARCHES:
            estimate, actual, ms = explain(connection, sql)
            print(f"  {name:48s} estimate {estimate:8.0f}  actual {actual:8.0f}  {ms:8.2f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=URL)
    parser.add_argument("--schema", default="auditstats_mix")
    parser.add_argument("--size", type=int, default=50_000, help="clinical resources seeded")
    parser.add_argument("--audits", type=int, default=250_000, help="AuditEvents stored")
    parser.add_argument("--no-seed", action="store_true", help="measure the schema as it is")
    parser.add_argument("--add-audits", type=int, default=0, help="with --no-seed: store more first")
    parser.add_argument("--settings", default="none,target,extended,none")
    args = parser.parse_args()
    engine = (
        make_engine(args.database_url, args.schema)
        if args.no_seed
        else make_store(args.database_url, args.schema, args.size, args.audits)
    )
    if args.no_seed and args.add_audits:
        with engine.connect() as connection:
            patients = connection.execute(
                text("SELECT count(*) FROM resource WHERE res_type = 'Patient'")
            ).scalar_one()
        services = Services.build(
            Settings(database_url=args.database_url, database_schema=args.schema), engine=engine
        )
        print(f"stored {add_audit_events(services, args.add_audits, patients)} more AuditEvents")
    for setting in args.settings.split(","):
        report(engine, setting)


if __name__ == "__main__":
    main()
