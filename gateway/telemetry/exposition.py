"""Where the metrics are read: `GET /metrics` on the main port (scope `gateway/metrics` with auth on) and,
with GATEWAY_METRICS_PORT, a port of their own without a token for the scraper, bound to
GATEWAY_METRICS_HOST (127.0.0.1 unless set). Under `gateway serve --workers N` the workers' values are
summed from PROMETHEUS_MULTIPROC_DIR, which `serve` sets up (`prepare_multiprocess`) and every worker
keeps tidy (`forget_dead_processes`)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    start_http_server,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from starlette.requests import Request
from starlette.responses import Response

from gateway.telemetry.metrics import multiprocess_dir

log = logging.getLogger("gateway.telemetry")
ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"


def registry() -> CollectorRegistry:
    """What a scrape reads: this process's registry, or every worker's files in multiprocess mode."""
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    summed = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(summed, path=directory)  # type: ignore[no-untyped-call]
    return summed


def render() -> bytes:
    return generate_latest(registry())


async def metrics(_request: Request) -> Response:
    """GET /metrics: the Prometheus text format."""
    return Response(render(), media_type=CONTENT_TYPE_LATEST)


def serve_port(host: str, port: int) -> Any:
    """The metrics on a port of their own (a thread of this process); the server, to shut it down."""
    server, _thread = start_http_server(port, addr=host, registry=registry())
    log.info("metrics served on http://%s:%d/metrics without a token (GATEWAY_METRICS_PORT)", host, port)
    return server


def prepare_multiprocess() -> Path | None:
    """Before several workers start: PROMETHEUS_MULTIPROC_DIR as the operator set it, emptied of a previous
    run's files, else a fresh temporary directory (removed by `remove_multiprocess`). Returns the temporary
    directory, or None when the operator's is used."""
    given = multiprocess_dir()
    if given is not None:
        directory = Path(given)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
        os.environ[ENVIRONMENT] = str(directory)
        return None
    made = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))
    os.environ[ENVIRONMENT] = str(made)
    return made


def remove_multiprocess(made: Path | None) -> None:
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)


def forget_dead_processes(also: int | None = None) -> None:
    """Mark the workers that are gone as dead (their `live` gauges no longer count): every process with
    files in the directory that no longer runs, and `also` (a worker ending)."""
    directory = multiprocess_dir()
    if directory is None:
        return
    pids = set()
    for path in Path(directory).glob("*.db"):
        tail = path.stem.rsplit("_", 1)[-1]
        if tail.isdigit():
            pids.add(int(tail))
    for pid in sorted(pids):
        if pid == also or not _alive(pid):
            prometheus_multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        # a zombie (a worker ended, not yet reaped by its parent) no longer serves
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[-1][:1]
        return status != "Z"
    return True
