"""Bulk `$export` (docs/fhir/export.md): resources per second of the export worker over a store of
BENCH_SIZE resources (bench.seed: Organizations, Patients, Tasks, DeviceRequests, Provenance), for a
region-wide client (every resource) and for a municipality's client (its related patients only: the
organisation's visibility in every query), with the audit trail on (one AuditEvent per patient); then
the files read back as a download streams them (a stored chunk at a time), with the peak of Python
memory it took.

    EXPORT_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test EXPORT_SCHEMA=bench_export \\
        .venv/bin/python -m bench.export
    .venv/bin/python -m bench.export          # SQLite in a temporary directory

Environment: BENCH_SIZE (default 100000). Prints a `RESULT {json}` line; not part of `make test`."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from typing import Any

from bench.common import migrated
from bench.municipality import find
from bench.seed import seed
from gateway.config import Settings
from gateway.export import jobs
from gateway.export.parameters import SYSTEM, ExportParameters
from gateway.export.worker import Worker
from gateway.hooks import Principal, RequestContext
from gateway.model.types import SUPPORTED_TYPES
from gateway.services import Services

SIZE = int(os.environ.get("BENCH_SIZE", "100000"))
BASE = "http://bench.invalid/fhir"
REGION_CLIENT = "bench-region"
SCOPES = frozenset({"system/*.rs"})


def settings() -> Settings:
    url, schema = migrated("EXPORT", "export")
    return Settings(
        database_url=url,
        database_schema=schema,
        auth=True,
        audit=True,
        notify=False,
        schedule_seconds=0.0,
        export_poll_seconds=0.0,
        base_url=BASE,
        region_clients=(REGION_CLIENT,),
    )


def queue(services: Services, principal: Principal) -> str:
    """A system-level export of every type but AuditEvent and Binary, as the kick-off would make it."""
    types = [t for t in SUPPORTED_TYPES if t not in ("AuditEvent", "Binary")]
    context = RequestContext(principal=principal, base_url=BASE)
    parameters = ExportParameters(SYSTEM, types).to_json()
    job = jobs.new_job(context, f"{BASE}/$export", parameters, 24.0)
    with jobs.writing(services.engine) as connection:
        jobs.create(connection, job)
    return job.job_id


def timed_export(services: Services, principal: Principal) -> dict[str, Any]:
    job_id = queue(services, principal)
    started = time.perf_counter()
    Worker(services).run_once()
    seconds = time.perf_counter() - started
    with services.engine.connect() as connection:
        job = connection.execute(jobs.select_job(job_id)).one()
    exported = int(job.exported)
    files = json.loads(job.progress)["files"]
    read = timed_download(services, job_id, [int(f["number"]) for f in files])
    return {
        "resources": exported,
        "files": len(files),
        "seconds": round(seconds, 2),
        "resources_per_second": round(exported / seconds) if seconds else None,
        "download": read,
    }


def timed_download(services: Services, job_id: str, numbers: list[int]) -> dict[str, Any]:
    """Every file read as `$export-file` streams it: one stored chunk at a time."""
    tracemalloc.start()
    started = time.perf_counter()
    size = 0
    for number in numbers:
        with services.engine.connect() as connection:
            parts = jobs.parts(connection, job_id, number)
        for part in parts:
            with services.engine.connect() as connection:
                content = jobs.part_content(connection, job_id, number, part)
            size += len((content or "").encode("utf-8"))
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "megabytes": round(size / 1e6, 1),
        "megabytes_per_second": round(size / 1e6 / seconds, 1) if seconds else None,
        "peak_python_megabytes": round(peak / 1e6, 1),
    }


def main() -> None:
    config = settings()
    services = Services.build(config)
    started = time.perf_counter()
    seeded = seed(services, SIZE)
    seed_seconds = time.perf_counter() - started
    municipality = find(services.engine)
    region = timed_export(services, Principal(client_id=REGION_CLIENT, scopes=SCOPES))
    municipal = timed_export(
        services, Principal(client_id="bench-municipality", organization=municipality.hsa, scopes=SCOPES)
    )
    services.close()
    result = {
        "database": "postgresql" if config.database_url.startswith("postgresql") else "sqlite",
        "resources": seeded,
        "seed_seconds": round(seed_seconds, 1),
        "chunk": config.export_chunk_resources,
        "region": region,
        "municipality": municipal | {"related_patients": municipality.related},
    }
    print("RESULT " + json.dumps(result))
    print(
        f"export ({result['database']}, {seeded} resources stored, audit on): region-wide "
        f"{region['resources_per_second']} resources/s ({region['resources']} in {region['seconds']} s); "
        f"one municipality its {municipal['resources']} resources in {municipal['seconds']} s (all "
        f"{seeded} examined: {round(seeded / municipal['seconds']) if municipal['seconds'] else None}/s); "
        f"download {region['download']['megabytes_per_second']} MB/s, peak "
        f"{region['download']['peak_python_megabytes']} MB"
    )


if __name__ == "__main__":
    main()
