"""Issue 21's benchmark with wrk, side by side: `python -m bench.wrk` (never in `make test`).

Seeds BENCH_SIZE resources (default 10000) into the schema BENCH_SCHEMA (default `gateway_wrk`, dropped
and made anew) of BENCH_POSTGRES_URL, starts `gateway serve --workers BENCH_WORKERS` with auth and audit on
(A) and the bare FastAPI ceiling app (bench/bare.py, B) the same way, and runs every scenario of
bench/wrk/ with `wrk -t1 -c8 --latency -d BENCH_SECONDS` in the order A B A B, as the region-wide client
and as a municipality's client (bench/municipality.py's organisation, here with create scopes too).
Each run fails when any answer is not 2xx. With BENCH_SIZES (Patients, e.g. `10000,20000,30000`) it
then seeds each size anew and runs the two searches at each, to show how their rate follows the store's
size. Prints Markdown for docs/performance.md. Needs Debian's wrk (`apt-get install wrk`)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from bench import REPO_ROOT, municipality
from bench.run import BENCH_KEY, POSTGRES, WORKERS, current_server_pid, serving
from bench.seed import ORGANIZATIONS, STATUSES, clear, family, gender, seed
from bench.serving import free_port, wait_ready
from bench.wrk_output import WrkResult, parse
from bench.wrk_report import Memory, Row, Series, report, sizes_table
from gateway.config import Settings
from gateway.security import store
from gateway.security.cli import DEMO_CLIENT_ID, public_jwks, seed_demo
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine

SIZE = int(os.environ.get("BENCH_SIZE", "10000"))
SIZES = [int(n) for n in os.environ.get("BENCH_SIZES", "").split(",") if n.strip()]
SECONDS = float(os.environ.get("BENCH_SECONDS", "10"))
SCHEMA = os.environ.get("BENCH_SCHEMA", "gateway_wrk")
PARTS = set(os.environ.get("BENCH_WRK_PARTS", "side,sizes").split(","))
WARM_UP_SECONDS = 2.0
SCRIPTS = REPO_ROOT / "bench" / "wrk"
MUNICIPALITY_CLIENT = "bench-wrk-municipality"
SCOPES = "system/*.cruds"


@dataclass(frozen=True)
class Scenario:
    name: str
    script: str
    search: bool


# Reads and searches first: the creates add Patients and Tasks the searches would then find too.
SCENARIOS = [
    Scenario("read Patient by id", "read_patient.lua", False),
    Scenario("search `Patient?family&gender&_count=10`", "search_patient.lua", True),
    Scenario("search `Task?owner&status&_count=10`", "search_task.lua", True),
    Scenario("create Patient", "create_patient.lua", False),
    Scenario("create Task", "create_task.lua", False),
]


@dataclass(frozen=True)
class Client:
    name: str
    client_id: str
    data: Path  # the values files the scripts draw from


def wrk(base: str, script: str, client: Client, token: str, seconds: float) -> WrkResult:
    """One wrk run of `script` against `base`, the token in the Authorization header."""
    command = ["wrk", "-t1", "-c8", "--latency", "-d", f"{seconds:g}s", "-s", str(SCRIPTS / script)]
    command += ["-H", f"Authorization: Bearer {token}", base]
    done = subprocess.run(
        command,
        env={**os.environ, "WRK_DATA": str(client.data)},
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"wrk {script} failed ({done.returncode}): {done.stderr.strip()}")
    return parse(done.stdout)


def write_values(folder: Path, patients: list[int], owners: list[str], task_owner: str | None) -> None:
    """The values files of a client's scripts: patient ids it reads, (family, gender) of those patients
    it searches and creates, (owner, status) of its Task searches, (patient, owner) of its new Tasks
    (`task_owner`, else an owner drawn from `owners`)."""
    rng = random.Random(21)
    folder.mkdir(parents=True, exist_ok=True)
    drawn = [rng.choice(patients) for _ in range(2000)]

    def lines(name: str, values: list[str]) -> None:
        (folder / name).write_text("".join(f"{value}\n" for value in values), encoding="utf-8")

    lines("patients.txt", [f"pat-{n}" for n in drawn])
    lines("families.txt", [f"{family(n)}\t{gender(n)}" for n in drawn])
    open_states = STATUSES[:3]  # requested, accepted, in-progress
    lines("owners.txt", [f"{rng.choice(owners)}\t{rng.choice(open_states)}" for _ in range(2000)])
    lines("tasks.txt", [f"pat-{n}\t{task_owner or rng.choice(owners)}" for n in drawn])


def prepare(resources: int, data: Path) -> tuple[int, list[Client], municipality.Municipality]:
    """A store of about `resources` seeded resources, analysed, with the region-wide demo client and the
    municipality's client; their values files under `data`. Returns the Patients seeded."""
    engine = make_engine(POSTGRES, SCHEMA)
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE'))
        connection.execute(text(f'CREATE SCHEMA "{SCHEMA}"'))
    migrate.upgrade(engine)
    services = Services.build(Settings(database_url=POSTGRES, database_schema=SCHEMA), engine=engine)
    clear(services)
    started = time.perf_counter()
    seeded = seed(services, resources)
    with engine.begin() as connection:  # this schema's tables only: a database-wide ANALYZE would lock
        # other schemas' tables, and deadlock with another benchmark or test dropping its schema
        names = connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :schema"), {"schema": SCHEMA}
        ).scalars()
        for name in list(names):
            connection.execute(text(f'ANALYZE "{SCHEMA}"."{name}"'))
    print(f"seeded {seeded} in {time.perf_counter() - started:.0f}s", flush=True)
    seed_demo(engine, BENCH_KEY)
    found = municipality.find(engine)
    if store.get_client(engine, MUNICIPALITY_CLIENT) is None:
        jwks = public_jwks(json.loads(BENCH_KEY.read_text(encoding="utf-8")))
        name = f"Bench wrk municipality {found.organization}"
        store.add_client(engine, name, found.hsa, jwks, [SCOPES], MUNICIPALITY_CLIENT)
    engine.dispose()
    patients = (seeded - ORGANIZATIONS) // 4
    every_owner = [f"Organization/org-{k}" for k in range(ORGANIZATIONS)]
    own = f"Organization/{found.organization}"
    region = Client("region-wide", DEMO_CLIENT_ID, data / "region")
    municipal = Client(f"municipality ({found.organization})", MUNICIPALITY_CLIENT, data / "municipality")
    write_values(region.data, list(range(patients)), every_owner, None)
    write_values(municipal.data, [int(p.removeprefix("pat-")) for p in found.patients], [own], own)
    return patients, [region, municipal], found


@contextmanager
def ceiling() -> Iterator[tuple[str, int]]:
    """The bare FastAPI app (bench/bare.py), served as the gateway is: its base URL and pid."""
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "bench.bare:app", "--port", str(port)),
            *("--workers", str(WORKERS), "--log-level", "warning", "--no-access-log"),
        ],
        cwd=REPO_ROOT,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/fhir/Patient/x", server)
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        server.terminate()
        server.wait(30)


def gateway_env() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": POSTGRES,
        "DATABASE_SCHEMA": SCHEMA,
        "GATEWAY_AUTH": "on",
        "GATEWAY_AUDIT": "on",
        "GATEWAY_REGION_CLIENTS": DEMO_CLIENT_ID,
        "GATEWAY_NOTIFY": "off",
        "GATEWAY_SCHEDULE_SECONDS": "0",
    }


def side_by_side(clients: list[Client], gateway_memory: Memory, ceiling_memory: Memory) -> list[Row]:
    """Every scenario for every client, A B A B: the gateway (auth and audit on), then the ceiling."""
    rows = []
    with serving(gateway_env()) as gateway, ceiling() as (bare, bare_pid):
        gateway_pid = current_server_pid()
        for scenario in SCENARIOS:
            for client in clients:

                def token(client: Client = client) -> str:  # fresh for each run: they last 300 s
                    return municipality.token(gateway, BENCH_KEY, client.client_id, SCOPES)

                load_before = os.getloadavg()[0]
                wrk(gateway, scenario.script, client, token(), WARM_UP_SECONDS)
                wrk(bare, scenario.script, client, token(), WARM_UP_SECONDS)
                row = Row(scenario.name, client.name, load_before=load_before)
                for _ in range(2):
                    row.gateway.append(wrk(gateway, scenario.script, client, token(), SECONDS))
                    gateway_memory.sample(gateway_pid)
                    row.ceiling.append(wrk(bare, scenario.script, client, token(), SECONDS))
                    ceiling_memory.sample(bare_pid)
                row.load_after = os.getloadavg()[0]
                print(row.line(), flush=True)
                rows.append(row)
    return rows


def by_size(data: Path) -> list[Series]:
    """The two searches at each size of BENCH_SIZES (Patients), each store seeded anew: gateway only,
    twice each."""
    series = []
    for patients in SIZES:
        seeded, clients, _ = prepare(patients * 4 + ORGANIZATIONS, data / f"size-{patients}")
        with serving(gateway_env()) as gateway:
            for scenario in (s for s in SCENARIOS if s.search):
                for client in clients:
                    access = municipality.token(gateway, BENCH_KEY, client.client_id, SCOPES)
                    wrk(gateway, scenario.script, client, access, WARM_UP_SECONDS)
                    runs = []
                    for _ in range(2):
                        access = municipality.token(gateway, BENCH_KEY, client.client_id, SCOPES)
                        runs.append(wrk(gateway, scenario.script, client, access, SECONDS))
                    item = Series(seeded, scenario.name, client.name, runs)
                    print(item.line(), flush=True)
                    series.append(item)
    return series


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("bench.wrk needs wrk on the PATH: `apt-get install wrk` (Debian's package)")
    if not POSTGRES:
        raise SystemExit("bench.wrk needs PostgreSQL: set BENCH_POSTGRES_URL")
    load_start = os.getloadavg()
    data = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
    failed = False
    if "side" in PARTS:
        patients, clients, found = prepare(SIZE, data)
        gateway_memory, ceiling_memory = Memory(), Memory()
        rows = side_by_side(clients, gateway_memory, ceiling_memory)
        print()
        print(
            report(
                rows,
                size=SIZE,
                patients=patients,
                organisation=found.organization,
                related=len(found.patients),
                seconds=SECONDS,
                workers=WORKERS,
                load=(load_start[0], os.getloadavg()[0]),
                memory=(gateway_memory, ceiling_memory),
            )
        )
        failed = any(row.failed for row in rows)
    if "sizes" in PARTS and SIZES:
        load_sizes = os.getloadavg()[0]
        series = by_size(data)
        print()
        print(sizes_table(series, SECONDS, (load_sizes, os.getloadavg()[0])))
        failed = failed or any(item.failed for item in series)
    if failed:
        raise SystemExit("some runs had answers other than 2xx: see the table")


if __name__ == "__main__":
    main()
