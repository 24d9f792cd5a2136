"""`make bench`: seed stores, start real servers, measure, and write docs/performance.md.

Environment: BENCH_SIZE (resources seeded, default 100000), BENCH_SECONDS (per scenario, default 10),
BENCH_CLIENTS (concurrent clients, default 8), BENCH_WORKERS (server processes, default 2),
BENCH_POSTGRES_URL (default the local test server; set it empty to skip PostgreSQL), BENCH_PARTS (default
`store,adapters,hl7`: leave out `adapters` or `hl7` to re-run only the store, keeping the sections of the
parts left out from docs/performance.md as they are); the adapter benchmarks' sizes: see
bench/adapter_report.py."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from bench import REPO_ROOT, municipality
from bench.adapter_report import adapter_sections, carried, mllp_section
from bench.load import Request as LoadRequest
from bench.load import Result, measure
from bench.municipality import Municipality
from bench.seed import ORGANIZATIONS, clear, seed
from bench.serving import Memory, free_port, wait_ready, worker_memory
from gateway.config import Settings
from gateway.model.types import dumps
from gateway.security.cli import DEMO_CLIENT_ID, seed_demo
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine

SIZE = int(os.environ.get("BENCH_SIZE", "100000"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
LOAD = os.getloadavg()  # at the start: what else the machine was doing
PARTS = set(os.environ.get("BENCH_PARTS", "store,adapters,hl7").split(","))
GATEWAY = str(Path(sys.executable).parent / "gateway")
BENCH_KEY = REPO_ROOT / "var" / "bench-client.jwk.json"
# The installation's key secret of the benchmarks' servers (with auth on and PostgreSQL the gateway does
# not start without one); a GATEWAY_KEY_SECRET in the environment comes first.
BENCH_KEY_SECRET = "the benchmarks' installation key secret, never a real one"


@dataclass
class Run:
    backend: str
    seeded: int = 0
    seed_seconds: float = 0.0
    results: list[Result] = field(default_factory=list)
    secure: list[Result] = field(default_factory=list)
    memory: list[Memory] = field(default_factory=list)  # each worker's, after the run
    # The organisation policy's cost: (region-wide, municipality) per scenario.
    municipality: Municipality | None = None
    by_organisation: list[tuple[Result, Result]] = field(default_factory=list)


def scenarios(patients: int) -> list[tuple[str, LoadRequest]]:
    rng = random.Random(11)
    statuses = ["requested", "accepted"]

    def task_body(n: int) -> bytes:
        return dumps(
            {
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "for": {"reference": f"Patient/pat-{rng.randrange(patients)}"},
                "owner": {"reference": f"Organization/org-{n % ORGANIZATIONS}"},
            }
        ).encode()

    def update(n: int) -> tuple[str, str, bytes]:
        # seeded Task n has status STATUSES[n % 5]: update only open ones (terminal states are final)
        target = rng.randrange(max(1, patients // 5)) * 5 + rng.randrange(3)
        body = dumps(
            {
                "resourceType": "Task",
                "id": f"task-{target}",
                "status": statuses[n % 2],
                "intent": "order",
                "for": {"reference": f"Patient/pat-{target}"},
                "owner": {"reference": f"Organization/org-{target % ORGANIZATIONS}"},
            }
        ).encode()
        return "PUT", f"/fhir/Task/task-{target}", body

    return [
        ("read Patient by id", lambda n: ("GET", f"/fhir/Patient/pat-{rng.randrange(patients)}", None)),
        ("create Task", lambda n: ("POST", "/fhir/Task", task_body(n))),
        ("update Task", update),
        (
            "search Task?owner=X&status=requested",
            lambda n: (
                "GET",
                f"/fhir/Task?owner=Organization/org-{rng.randrange(ORGANIZATIONS)}&status=requested",
                None,
            ),
        ),
        (
            "search DeviceRequest?patient=Y&_revinclude=Provenance:target",
            lambda n: (
                "GET",
                f"/fhir/DeviceRequest?patient=pat-{rng.randrange(patients)}&_revinclude=Provenance:target",
                None,
            ),
        ),
    ]


def bench_backend(backend: str, url: str, schema: str) -> Run:
    run = Run(backend)
    settings = Settings(database_url=url, database_schema=schema)
    engine = make_engine(url, schema)
    migrate.upgrade(engine)
    services = Services.build(settings, engine=engine)
    clear(services)
    started = time.perf_counter()
    run.seeded = seed(services, SIZE)
    run.seed_seconds = time.perf_counter() - started
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))
    engine.dispose()
    print(f"[{backend}] seeded {run.seeded} in {run.seed_seconds:.0f}s", flush=True)
    patients = (run.seeded - ORGANIZATIONS) // 4
    base_env = {**os.environ, "DATABASE_URL": url, "DATABASE_SCHEMA": schema}
    with serving({**base_env, "GATEWAY_AUTH": "off", "GATEWAY_AUDIT": "off"}) as base:
        for name, make in scenarios(patients):
            run.results.append(report_line(backend, measure(base, name, make, CLIENTS, SECONDS)))
        run.memory = worker_memory(current_server_pid())
    # The same reads and searches with security on: a SMART token, scope checks and the audit trail.
    # The client is region-wide, so the organisation policy's relationship queries are not in these figures;
    # then the municipality's reads and searches, as the region-wide client and as the municipality.
    engine = make_engine(url, schema)
    seed_demo(engine, BENCH_KEY)
    # its patients as the store holds them now: the creates and updates above relate organisations too
    organisation = run.municipality = municipality.find(engine)
    municipality.register(engine, BENCH_KEY, organisation)
    engine.dispose()
    secure_env = {
        **base_env,
        "GATEWAY_AUTH": "on",
        "GATEWAY_AUDIT": "on",
        "GATEWAY_REGION_CLIENTS": DEMO_CLIENT_ID,
    }
    with serving(secure_env) as base:
        headers = {"Authorization": f"Bearer {municipality.token(base, BENCH_KEY, DEMO_CLIENT_ID)}"}
        for name, make in scenarios(patients):
            if name.startswith(("read", "search")):
                result = measure(base, f"{name} (auth + audit on)", make, CLIENTS, SECONDS, headers=headers)
                run.secure.append(report_line(backend, result))

        def measured(name: str, make: LoadRequest, headers: dict[str, str], expect: int | None) -> Result:
            result = measure(base, name, make, CLIENTS, SECONDS, headers=headers, expect=expect)
            return report_line(backend, result)

        run.by_organisation = municipality.run(base, BENCH_KEY, DEMO_CLIENT_ID, organisation, measured)
    return run


_SERVER: list[subprocess.Popen[bytes]] = []


@contextmanager
def serving(env: dict[str, str], workers: int = WORKERS) -> Iterator[str]:
    """A `gateway serve` process with this environment (and the base URL it serves at); yields that URL
    without /fhir."""
    port = free_port()
    server = subprocess.Popen(
        [GATEWAY, "serve", "--port", str(port), "--workers", str(workers), "--no-upgrade"],
        env={
            "GATEWAY_KEY_SECRET": BENCH_KEY_SECRET,
            **env,
            "GATEWAY_BASE_URL": f"http://127.0.0.1:{port}/fhir",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _SERVER.append(server)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(30)
        _SERVER.remove(server)


def current_server_pid() -> int:
    return _SERVER[-1].pid


def report_line(backend: str, result: Result) -> Result:
    print(
        f"[{backend}] {result.name}: {result.per_second:.0f}/s p50 {result.p50_ms:.1f} ms "
        f"p95 {result.p95_ms:.1f} ms errors {result.errors}",
        flush=True,
    )
    return result


def bench_bare() -> Result:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.bare:app",
            "--port",
            str(port),
            "--workers",
            str(WORKERS),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=REPO_ROOT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/fhir/Patient/x", server)
        return measure(
            f"http://127.0.0.1:{port}",
            "bare FastAPI read",
            lambda n: ("GET", "/fhir/Patient/x", None),
            CLIENTS,
            SECONDS,
        )
    finally:
        server.terminate()
        server.wait(30)


def postgres_schema() -> str | None:
    if not POSTGRES:
        return None
    try:
        admin = create_engine(POSTGRES)
        with admin.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS gateway_bench CASCADE"))
            connection.execute(text("CREATE SCHEMA gateway_bench"))
        admin.dispose()
    except Exception as error:  # no server: report and go on with SQLite
        print(f"PostgreSQL skipped: {error}", flush=True)
        return None
    return "gateway_bench"


def report(runs: list[Run], bare: Result) -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        line.split(":", 1)[1].strip()
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    lines = [
        "# Performance",
        "",
        "Generated by `make bench` (bench/run.py). Figures are measured, not asserted anywhere in tests.",
        "",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {os.cpu_count()} cores ({cpu}), {memory} RAM, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- Server: `gateway serve --workers {WORKERS}` (uvicorn); load: {CLIENTS} concurrent keep-alive "
        f"clients, {SECONDS:.0f} s per scenario after 1 s warm-up.",
        "- The load generator (bench/load.py: HTTP/1.1 over asyncio streams) runs on the same 2 cores as",
        "  the server and the database, so it takes CPU from them: every figure is a lower bound for the",
        "  server alone.",
        f"- Load average (1 min) before the benchmark started: {LOAD[0]:.1f} (other processes on the same "
        f"cores), at its end: {os.getloadavg()[0]:.1f}.",
        f"- Ceiling: a bare FastAPI endpoint served the same way answered **{bare.per_second:.0f} req/s** "
        f"(p50 {bare.p50_ms:.1f} ms, p95 {bare.p95_ms:.1f} ms).",
        "",
    ]
    for run in runs:
        lines += [
            f"## {run.backend}: {run.seeded:,} resources seeded ({run.seeded / run.seed_seconds:.0f}/s bulk)",
            "",
            "| scenario | req/s | ratio to bare | p50 ms | p95 ms | errors |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in run.results:
            ratio = r.per_second / bare.per_second if bare.per_second else 0
            lines.append(
                f"| {r.name} | {r.per_second:.0f} | {ratio:.2f} | {r.p50_ms:.1f} | {r.p95_ms:.1f} "
                f"| {r.errors} |"
            )
        memory = "; ".join(str(each) for each in run.memory) or "n/a"
        lines += [
            "",
            f"Each worker's memory after the run, MiB: {memory} (RSS counts the pages of files it maps,",
            "SQLite's memory-mapped database too; private: what only it holds, bench/serving.py `Memory`).",
            "",
        ]
        if run.secure:
            lines += [
                "The cost of security (SMART token, scope checks, AuditEvent per access; a region-wide",
                "client, so without the organisation policy's relationship queries), same store:",
                "",
                "| scenario | auth off req/s | auth + audit on req/s | ratio | p95 ms on | errors on |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            plain = {r.name: r for r in run.results}
            for r in run.secure:
                off = plain.get(r.name.removesuffix(" (auth + audit on)"))
                if off is None:
                    continue
                ratio = r.per_second / off.per_second if off.per_second else 0
                lines.append(
                    f"| {off.name} | {off.per_second:.0f} | {r.per_second:.0f} | {ratio:.2f} "
                    f"| {r.p95_ms:.1f} | {r.errors} |"
                )
            lines.append("")
        if run.municipality is not None and run.by_organisation:
            lines += municipality.section(run.municipality, run.by_organisation)
    return "\n".join(lines)


def main() -> None:
    runs = []
    sqlite_path = REPO_ROOT / "var" / "bench.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
    runs.append(bench_backend("SQLite", f"sqlite:///{sqlite_path}", ""))
    schema = postgres_schema()
    if schema:
        runs.append(bench_backend("PostgreSQL", POSTGRES, schema))
    bare = bench_bare()
    print(f"bare: {bare.per_second:.0f}/s", flush=True)
    postgres = POSTGRES if schema else None
    existing = REPO_ROOT / "docs" / "performance.md"
    before = existing.read_text() if existing.exists() else ""
    adapters = adapter_sections(postgres) if "adapters" in PARTS else carried(before, "## Adapters")
    mllp = mllp_section(postgres) if "hl7" in PARTS else carried(before, "## HL7 v2 over MLLP")
    text_out = "\n".join([report(runs, bare), *adapters, *mllp])
    analysis = ""
    if "<!-- analysis -->" in before:
        analysis = before.split("<!-- analysis -->", 1)[1]
    existing.write_text(text_out + "\n<!-- analysis -->" + analysis)
    print(f"wrote {existing}")


if __name__ == "__main__":
    main()
