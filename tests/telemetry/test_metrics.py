"""GET /metrics (docs/operations.md, Metrics): the request counters and durations by interaction, type and
status, the write path's steps, the pool; never an id, a query string or a client's text as a label; the
scope `gateway/metrics` with auth on; under `gateway serve --workers 2` the workers' counts summed, on the
main port and on GATEWAY_METRICS_PORT (no token, localhost)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.services import Services
from gateway.telemetry.requests import classify
from tests.api.helpers import patient
from tests.conftest import Database
from tests.interop.conftest import GATEWAY, Server, _environment, _free_port, _stop, _wait_ready
from tests.security.conftest import bearer, register

SAMPLE = re.compile(r"^(gateway_\w+)(?:\{([^}]*)\})? ([0-9.e+-]+)$")


def samples(text: str, name: str) -> dict[str, float]:
    """The samples of one metric: labels text → value."""
    found = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and match.group(1) == name:
            found[match.group(2) or ""] = float(match.group(3))
    return found


def count(text: str, interaction: str, res_type: str, status: int) -> float:
    labels = f'interaction="{interaction}",status="{status}",type="{res_type}"'
    return samples(text, "gateway_http_requests_total").get(labels, 0.0)


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/fhir/Patient/abc-123", ("read", "Patient", "/fhir/{type}/{id}")),
        ("GET", "/fhir/Patient/abc/_history/2", ("vread", "Patient", "/fhir/{type}/{id}/_history/{vid}")),
        ("GET", "/fhir/Patient", ("search-type", "Patient", "/fhir/{type}")),
        ("POST", "/fhir/Task/_search", ("search-type", "Task", "/fhir/{type}/_search")),
        ("POST", "/fhir/Task", ("create", "Task", "/fhir/{type}")),
        ("PUT", "/fhir/Task/x", ("update", "Task", "/fhir/{type}/{id}")),
        ("PATCH", "/fhir/Task/x", ("patch", "Task", "/fhir/{type}/{id}")),
        ("DELETE", "/fhir/Task/x", ("delete", "Task", "/fhir/{type}/{id}")),
        ("GET", "/fhir/Task/x/_history", ("history-instance", "Task", "/fhir/{type}/{id}/_history")),
        ("GET", "/fhir/Task/_history", ("history-type", "Task", "/fhir/{type}/_history")),
        ("GET", "/fhir/Patient/p1/$everything", ("operation", "Patient", "/fhir/{type}/{id}/$everything")),
        ("GET", "/fhir/Patient/p1/$191212121212", ("operation", "Patient", "/fhir/{type}/{id}/$operation")),
        ("GET", "/fhir/$export", ("operation", "none", "/fhir/$export")),
        ("GET", "/fhir/Patient/$export", ("operation", "Patient", "/fhir/{type}/$export")),
        ("GET", "/fhir/$191212121212/x", ("operation", "none", "/fhir/$operation")),
        ("GET", "/fhir/Patient/$Tolvan", ("operation", "Patient", "/fhir/{type}/$operation")),
        ("GET", "/fhir/Patient/a/b/c/d", ("other", "Patient", "/fhir/{type}/...")),
        ("POST", "/fhir", ("transaction", "none", "/fhir")),
        ("GET", "/fhir/metadata", ("metadata", "none", "/fhir/metadata")),
        ("GET", "/fhir/Tolvansson/191212121212", ("read", "none", "/fhir/{type}/{id}")),
        ("POST", "/adapters/hl7v2", ("adapter", "none", "/adapters/hl7v2")),
        ("POST", "/adapters/191212121212", ("adapter", "none", "/adapters/{name}")),
        ("POST", "/auth/token", ("token", "none", "/auth/token")),
        ("GET", "/auth/Tolvan", ("auth", "none", "/auth/...")),
        ("GET", "/readyz", ("probe", "none", "/readyz")),
        ("GET", "/191212121212", ("other", "none", "other")),
    ],
)
def test_a_request_is_classified_by_its_shape_never_its_values(
    method: str, path: str, expected: tuple[str, str, str]
) -> None:
    assert classify(method, path) == expected


def test_metrics_count_requests_without_ids_or_query_strings(client: TestClient) -> None:
    before = client.get("/metrics").text
    created = client.post("/fhir/Patient", json=patient("191212121212", "Tolvansson", "Tolvan"))
    assert created.status_code == 201
    pid = created.json()["id"]
    assert client.get(f"/fhir/Patient/{pid}").status_code == 200
    assert client.get("/fhir/Patient?name=Tolvansson&identifier=191212121212").status_code == 200
    assert client.get("/fhir/Tolvansson/191212121212").status_code == 404
    batch = {"resourceType": "Bundle", "type": "batch", "entry": []}
    assert client.post("/fhir", json=batch).status_code == 200
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    for interaction, res_type, status in [
        ("create", "Patient", 201),
        ("read", "Patient", 200),
        ("search-type", "Patient", 200),
        ("read", "none", 404),
        ("batch", "none", 200),
    ]:
        assert count(text, interaction, res_type, status) == count(before, interaction, res_type, status) + 1
    for step in ("validate", "authorize", "store", "index", "audit"):
        assert samples(text, "gateway_write_step_duration_seconds_count")[f'step="{step}"'] >= 1
    assert samples(text, "gateway_db_pool_size")[""] > 0
    for secret in (pid, "191212121212", "Tolvansson", "Tolvan", "identifier="):
        assert secret not in text


def test_metrics_need_the_scope_with_auth_on(secure_services: Services, secure_client: TestClient) -> None:
    assert secure_client.get("/metrics").status_code == 401
    reader = register(secure_services, "system/*.cruds")
    refused = secure_client.get("/metrics", headers=bearer(reader.token(secure_client, "system/*.cruds")))
    assert refused.status_code == 403
    assert "gateway_" not in refused.text
    scraper = register(secure_services, "gateway/metrics")
    allowed = secure_client.get("/metrics", headers=bearer(scraper.token(secure_client, "gateway/metrics")))
    assert allowed.status_code == 200
    assert "gateway_http_requests_total" in allowed.text


def test_workers_are_summed_on_the_main_port_and_the_metrics_port(database: Database, tmp_path: Path) -> None:
    """Two workers: the counts of both on either port, the pool gauges of the live ones only (a killed
    worker's are dropped once its replacement starts), the multiprocess directory removed at exit."""
    database.clear()
    port, metrics_port = _free_port(), _free_port()
    env = {**_environment(database), "GATEWAY_METRICS_PORT": str(metrics_port), "TMPDIR": str(tmp_path)}
    command = [str(GATEWAY), "serve", "--port", str(port), "--workers", "2", "--no-upgrade"]
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sink)
    server = Server(f"http://127.0.0.1:{port}/fhir", process, log)
    capacity = database.engine.pool.size() + database.engine.pool._max_overflow  # type: ignore[attr-defined]
    try:
        _wait_ready(server)
        [made] = list(tmp_path.glob("gateway-metrics-*"))
        for _ in range(20):  # new connections each: whichever worker takes them, the sum is 20
            assert httpx.get(f"{server.base_url}/Patient/none-such", timeout=10).status_code == 404
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert count(scraped, "read", "Patient", 404) == 20
        main = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert main.status_code == 200 and count(main.text, "read", "Patient", 404) == 20
        assert pool_size(metrics_port, 2 * capacity) == 2 * capacity  # once both workers have started
        workers = live_workers(made)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)  # uvicorn starts another; that one marks the dead one
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = live_workers(made)
            if len(now) == 2 and workers[0] not in now:
                break
            time.sleep(0.2)
        _wait_ready(server)
        assert (
            pool_size(metrics_port, 2 * capacity) == 2 * capacity
        )  # not 3: the dead worker's no longer counts
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert count(scraped, "read", "Patient", 404) == 20  # the dead worker's counts stay
    finally:
        _stop(process)
    assert process.returncode == 0, server.log_since(0)
    assert not list(tmp_path.glob("gateway-metrics-*"))  # removed at exit


def pool_size(port: int, expected: float) -> float:
    """gateway_db_pool_size once it is `expected` (the workers' start-ups are done), or after 30 s."""
    deadline = time.monotonic() + 30
    found = 0.0
    while time.monotonic() < deadline:
        scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        found = samples(scraped, "gateway_db_pool_size").get("", 0.0)
        if found == expected:
            break
        time.sleep(0.2)
    return found


def live_workers(directory: Path) -> list[int]:
    """The processes whose `livesum` gauges count (files not yet removed as dead)."""
    return sorted(int(p.stem.rsplit("_", 1)[-1]) for p in directory.glob("gauge_livesum_*.db"))
