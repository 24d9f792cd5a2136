"""The access log loses nothing (issue 15, docs/security.md, Audit): a write's AuditEvents commit with it,
every other record is stored before its answer leaves, every interaction is audited as what it is,
`gateway audit verify` proves the log complete and finds what was deleted or changed, `gateway audit
archive` is the one way out, and a server killed with SIGKILL mid-way has recorded every answer it gave."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select, update

from gateway.search.dates import utc_now
from gateway.security.audit_cli import archive, verify
from gateway.services import Services
from gateway.store.tables import AuditBatch, Resource
from tests.api.helpers import patient, task
from tests.conftest import Database
from tests.interop.conftest import GATEWAY, Server, _environment, _free_port, _stop, _wait_ready
from tests.security.conftest import bearer, register

ALL = "system/*.cruds gateway/audit.read"
PATCH = {"Content-Type": "application/json-patch+json"}


def stored_events(services: Services) -> list[dict[str, Any]]:
    """The AuditEvents in the database now, without waiting for the audit writer."""
    with services.engine.connect() as connection:
        rows = connection.execute(select(Resource.content).where(Resource.res_type == "AuditEvent"))
        return [json.loads(content) for content in rows.scalars()]


def naming(events: list[dict[str, Any]], reference: str, code: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in events
        if any(str(x.get("what", {}).get("reference", "")).startswith(reference) for x in e.get("entity", []))
        and (code is None or e["subtype"][0]["code"] == code)
    ]


@pytest.fixture
def region(audited_services: Services, audited_client: TestClient) -> dict[str, str]:
    return bearer(register(audited_services, ALL, region=True).token(audited_client, ALL))


def test_records_are_stored_before_the_answer(
    audited_services: Services, audited_client: TestClient, region: dict[str, str]
) -> None:
    """No flush: what the answer came back for is in the database already."""
    created = audited_client.post("/fhir/Patient", json=patient(), headers=region)
    assert created.status_code == 201
    pid = created.json()["id"]
    [write] = naming(stored_events(audited_services), f"Patient/{pid}/_history/1", "create")
    assert write["outcome"] == "0"
    assert audited_client.get(f"/fhir/Patient/{pid}", headers=region).status_code == 200
    assert naming(stored_events(audited_services), f"Patient/{pid}", "read")
    assert audited_client.get("/fhir/Patient/finns-inte", headers=region).status_code == 404
    assert naming(stored_events(audited_services), "Patient/finns-inte", "read")[0]["outcome"] == "4"


def test_each_interaction_is_audited_as_what_it_is(
    audited_services: Services, audited_client: TestClient, region: dict[str, str]
) -> None:
    c = audited_client
    pid = c.post("/fhir/Patient", json=patient(), headers=region).json()["id"]
    tid = c.post("/fhir/Task", json=task(pid), headers=region).json()["id"]
    refused = c.patch(
        f"/fhir/Task/{tid}",
        json=[{"op": "test", "path": "/status", "value": "x"}],
        headers={**region, **PATCH},
    )
    assert refused.status_code == 422
    [failed] = naming(stored_events(audited_services), f"Task/{tid}", "patch")
    assert failed["outcome"] == "4" and failed["outcomeDesc"].startswith("422")
    assert not naming(stored_events(audited_services), f"Task/{tid}", "read")  # not a read
    done = c.patch(
        f"/fhir/Task/{tid}",
        json=[{"op": "replace", "path": "/status", "value": "accepted"}],
        headers={**region, **PATCH},
    )
    assert done.status_code == 200
    assert naming(stored_events(audited_services), f"Task/{tid}/_history/2", "patch")
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Task/finns-inte"}}],
    }
    assert (
        c.post("/fhir", json=batch, headers=region).json()["entry"][0]["response"]["status"].startswith("404")
    )
    assert naming(stored_events(audited_services), "Task/finns-inte", "read")[0]["outcome"] == "4"
    tokens = [e for e in stored_events(audited_services) if e["subtype"][0]["code"] == "token"]
    assert tokens and all(e["outcome"] == "0" and e["agent"][0]["altId"] != "anonymous" for e in tokens)


def test_verify_proves_the_log_complete_and_finds_what_was_changed(
    audited_services: Services, audited_client: TestClient, region: dict[str, str]
) -> None:
    c = audited_client
    for n in range(3):
        pid = c.post("/fhir/Patient", json=patient(f"19121212{n:04d}"), headers=region).json()["id"]
        assert c.get(f"/fhir/Patient/{pid}", headers=region).status_code == 200
    assert audited_services.audit is not None
    audited_services.audit.flush()
    clean = verify(audited_services, None)
    assert clean.problems == [] and clean.versions == 3 and clean.batches >= 3
    # a batch's AuditEvent changed behind the gateway's back
    with audited_services.engine.begin() as connection:
        ids = connection.execute(select(AuditBatch.events).order_by(AuditBatch.number).limit(1)).scalar_one()
        first = json.loads(ids)[0]
        connection.execute(
            update(Resource).where(Resource.res_id == first).values(content='{"resourceType":"AuditEvent"}')
        )
    assert any("was changed" in p for p in verify(audited_services, None).problems)
    # a batch deleted from the middle of the chain
    with audited_services.engine.begin() as connection:
        connection.execute(delete(AuditBatch).where(AuditBatch.number == 2))
    assert any("are missing" in p for p in verify(audited_services, None).problems)
    # a write's AuditEvent deleted
    events = stored_events(audited_services)
    [write] = [e for e in events if e.get("subtype", [{}])[0].get("code") == "create"][:1]
    with audited_services.engine.begin() as connection:
        connection.execute(delete(Resource).where(Resource.res_id == write["id"]))
    assert any("has no AuditEvent" in p for p in verify(audited_services, None).problems)


def test_archive_is_the_one_way_out(
    audited_services: Services, audited_client: TestClient, region: dict[str, str], tmp_path: Path
) -> None:
    c = audited_client
    pid = c.post("/fhir/Patient", json=patient(), headers=region).json()["id"]
    assert c.get(f"/fhir/Patient/{pid}", headers=region).status_code == 200
    assert audited_services.audit is not None
    audited_services.audit.flush()
    before = len(stored_events(audited_services))
    count, digest = archive(audited_services, utc_now(), tmp_path / "audit.ndjson")
    assert count == before and len((tmp_path / "audit.ndjson").read_text().splitlines()) == count
    left = stored_events(audited_services)
    assert [e["subtype"][0]["code"] for e in left] == ["archive"] and digest in left[0]["outcomeDesc"]
    assert verify(audited_services, None).problems == []
    assert c.delete(f"/fhir/AuditEvent/{left[0]['id']}", headers=region).status_code == 405


@pytest.fixture
def server(database: Database, tmp_path: Path) -> Iterator[Server]:
    """`gateway serve` (auth off, audit on) to be killed."""
    database.clear()
    env = {**_environment(database), "GATEWAY_AUDIT": "on"}
    port = _free_port()
    command = [str(GATEWAY), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-upgrade"]
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sink)
    found = Server(f"http://127.0.0.1:{port}/fhir", process, log)
    try:
        _wait_ready(found)
        yield found
    finally:
        _stop(process)


def test_a_server_killed_mid_way_recorded_every_answer_it_gave(
    database: Database, server: Server, tmp_path: Path
) -> None:
    answered: list[tuple[str, str]] = []  # (interaction, Type/id) of every 2xx a client got
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=server.base_url, timeout=5) as http:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    made = http.post("/Patient", json=patient(f"1912{n:08d}"))
                    if made.status_code == 201:
                        answered.append(("create", f"Patient/{made.json()['id']}"))
                        if http.get(f"/Patient/{made.json()['id']}").status_code == 200:
                            answered.append(("read", f"Patient/{made.json()['id']}"))
                except httpx.TransportError:
                    return

    workers = [threading.Thread(target=client) for _ in range(3)]
    for worker in workers:
        worker.start()
    while len(answered) < 40:
        threading.Event().wait(0.05)
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    stop.set()
    for worker in workers:
        worker.join()
    services = Services.build(database.settings(audit=False), engine=database.engine)
    found = verify(services, None)
    assert [p for p in found.problems if "has no AuditEvent" in p] == []
    events = stored_events(services)
    for interaction, reference in answered:
        assert naming(events, reference, interaction), (interaction, reference)
