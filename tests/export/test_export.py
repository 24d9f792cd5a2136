"""Bulk `$export` end to end over HTTP with auth on and organisation-scoped clients: the kick-off, the
status URL, the NDJSON files; an export shows a client what its searches show it (masked alike) and
nothing else; another client's job is a 404 at every URL; `_type`, `_since`, `_typeFilter`, Patient
level, cancel, expiry, a dead worker's job taken over, and the bad parameters."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.cli import app
from gateway.export import jobs
from gateway.export.worker import Worker
from gateway.search.dates import utc_now
from gateway.security.store import set_client_active
from gateway.services import Services
from tests.conftest import Database
from tests.security.conftest import bearer, register
from tests.security.test_organisation_policy import World

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture
def world(secure_services: Services, secure_client: TestClient) -> World:
    return World(secure_services, secure_client)


def kick_off(world: World, who: dict[str, str], query: str = "", path: str = "$export") -> str:
    response = world.client.get(f"/fhir/{path}{query}", headers={**who, **ASYNC})
    assert response.status_code == 202, response.text
    location = str(response.headers["Content-Location"])
    assert location.startswith("http://testserver/fhir/$export-status/")
    return location.replace("http://testserver", "")


def finish(services: Services) -> None:
    Worker(services).run_once()


def manifest(world: World, who: dict[str, str], status_url: str) -> dict[str, Any]:
    response = world.client.get(status_url, headers=who)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def exported(world: World, who: dict[str, str], body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every resource of every file, by `Type/id` (each once)."""
    found: dict[str, dict[str, Any]] = {}
    for item in body["output"]:
        response = world.client.get(item["url"].replace("http://testserver", ""), headers=who)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert len(lines) == item["count"]
        for resource in lines:
            assert resource["resourceType"] == item["type"]
            key = f"{resource['resourceType']}/{resource['id']}"
            assert key not in found, f"{key} exported twice"
            found[key] = resource
    return found


def searched(world: World, who: dict[str, str], res_type: str) -> dict[str, dict[str, Any]]:
    bundle = world.client.get(f"/fhir/{res_type}?_count=1000", headers=who).json()
    return {f"{res_type}/{e['resource']['id']}": e["resource"] for e in bundle.get("entry", [])}


def export_all(
    world: World, services: Services, who: dict[str, str], query: str = "", path: str = "$export"
) -> tuple[str, dict[str, Any], dict[str, dict[str, Any]]]:
    status_url = kick_off(world, who, query, path)
    finish(services)
    body = manifest(world, who, status_url)
    return status_url, body, exported(world, who, body)


def test_an_export_shows_what_the_clients_searches_show(secure_services: Services, world: World) -> None:
    status_url = kick_off(world, world.a)
    waiting = world.client.get(status_url, headers=world.a)
    assert waiting.status_code == 202
    assert "X-Progress" in waiting.headers and waiting.headers["Retry-After"]
    finish(secure_services)
    body = manifest(world, world.a, status_url)
    assert body["requiresAccessToken"] is True
    assert body["request"] == "http://testserver/fhir/$export"
    assert body["error"] == [] and body["transactionTime"]
    found = exported(world, world.a, body)
    types = {item["type"] for item in body["output"]}
    assert "AuditEvent" not in types and "Binary" not in types
    for res_type in ("Patient", "Observation", "Task", "Organization", "DeviceRequest", "Communication"):
        expected = searched(world, world.a, res_type)
        assert {k: v for k, v in found.items() if k.startswith(f"{res_type}/")} == expected, res_type
    assert "Observation/obsA" in found and "Patient/pa" in found
    assert "Observation/obsHidden" not in found and "Observation/obsB" not in found
    # the protected patient is exported masked, as its read shows it
    assert found["Patient/pp"] == world.client.get("/fhir/Patient/pp", headers=world.a).json()
    assert "name" not in found["Patient/pp"]


def test_an_unrelated_organisation_exports_none_of_it(secure_services: Services, world: World) -> None:
    _, _, for_a = export_all(world, secure_services, world.a)
    _, _, for_nobody = export_all(world, secure_services, world.nobody)
    private = {
        k for k in for_a if k.split("/")[0] not in ("Organization", "Practitioner", "PractitionerRole")
    }
    assert private and not private & set(for_nobody)
    assert {k.split("/")[0] for k in for_nobody} <= {"Organization", "Practitioner", "PractitionerRole"}


def test_another_clients_job_is_not_found_at_any_url(secure_services: Services, world: World) -> None:
    status_url, body, _ = export_all(world, secure_services, world.a)
    file_url = body["output"][0]["url"].replace("http://testserver", "")
    job_id = status_url.rsplit("/", 1)[1]
    unknown_status = status_url.replace(job_id, jobs.new_job_id())
    unknown_file = file_url.replace(job_id, jobs.new_job_id())
    for who in (world.b, world.nobody, world.region):
        for url, unknown in ((status_url, unknown_status), (file_url, unknown_file)):
            theirs, nothing = world.client.get(url, headers=who), world.client.get(unknown, headers=who)
            assert theirs.status_code == nothing.status_code == 404
            assert theirs.text == nothing.text
        cancelled = world.client.delete(status_url, headers=who)
        assert cancelled.status_code == 404
        assert cancelled.text == world.client.delete(unknown_status, headers=who).text
    assert manifest(world, world.a, status_url) == body  # still there for its own client
    assert world.client.get(status_url).status_code == 401  # and never without a token
    assert world.client.get(file_url).status_code == 401


def test_type_since_and_type_filter(secure_services: Services, world: World) -> None:
    _, body, found = export_all(world, secure_services, world.a, "?_type=Observation,Patient")
    assert {item["type"] for item in body["output"]} == {"Observation", "Patient"}
    assert {k for k in found if k.startswith("Observation/")} == set(searched(world, world.a, "Observation"))
    _, body, found = export_all(world, secure_services, world.a, "?_since=2999-01-01T00:00:00Z")
    assert body["output"] == [] and found == {}
    query = "?_type=Observation&_typeFilter=" + "Observation%3Fperformer%3DPractitionerRole/roleA"
    _, _, found = export_all(world, secure_services, world.a, query)
    assert set(found) == {"Observation/obsA"}
    two = "&_typeFilter=Observation%3F_id%3DobsLinked"
    _, _, found = export_all(world, secure_services, world.region, query + two)
    assert set(found) == {"Observation/obsA", "Observation/obsLinked"}
    _, _, found = export_all(world, secure_services, world.a, "?_outputFormat=ndjson&_type=Task")
    assert set(found) == set(searched(world, world.a, "Task"))


def test_patient_level_exports_the_compartments(secure_services: Services, world: World) -> None:
    _, body, found = export_all(world, secure_services, world.a, path="Patient/$export")
    assert body["request"] == "http://testserver/fhir/Patient/$export"
    types = {k.split("/")[0] for k in found}
    assert "Organization" not in types and "PractitionerRole" not in types
    assert {"Patient/pa", "Observation/obsA", "Task/tA"} <= set(found)
    assert "Observation/obsHidden" not in found


def test_scopes_decide_the_types(secure_services: Services, world: World) -> None:
    scope = "system/Observation.rs"
    narrow = bearer(register(secure_services, scope, org="SE-A").token(world.client, scope))
    _, body, found = export_all(world, secure_services, narrow)
    assert {item["type"] for item in body["output"]} == {"Observation"}
    assert set(found) == set(searched(world, world.a, "Observation"))
    refused = world.client.get("/fhir/$export?_type=Patient", headers={**narrow, **ASYNC})
    assert refused.status_code == 403, refused.text


def test_cancel_deletes_the_job_and_its_output(secure_services: Services, world: World) -> None:
    status_url, _, _ = export_all(world, secure_services, world.a)
    job_id = status_url.rsplit("/", 1)[1]
    assert world.client.delete(status_url, headers=world.a).status_code == 202
    assert world.client.get(status_url, headers=world.a).status_code == 404
    assert world.client.delete(status_url, headers=world.a).status_code == 404
    with secure_services.engine.connect() as connection:
        assert jobs.output_rows(connection, job_id) == 0
    # cancelled before the worker came to it: nothing is made
    waiting = kick_off(world, world.a)
    assert world.client.delete(waiting, headers=world.a).status_code == 202
    assert Worker(secure_services).run_once() == 0


def test_too_many_exports_at_once_are_refused(world: World) -> None:
    """GATEWAY_EXPORT_JOBS_PER_CLIENT (4): a fifth waiting export is 429; a cancel makes room; another
    client is not counted against it."""
    waiting = [kick_off(world, world.a) for _ in range(4)]
    refused = world.client.get("/fhir/$export", headers={**world.a, **ASYNC})
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert refused.json()["issue"][0]["code"] == "throttled"
    kick_off(world, world.b)
    assert world.client.delete(waiting[0], headers=world.a).status_code == 202
    kick_off(world, world.a)


def test_output_expires_and_is_deleted(secure_services: Services, world: World) -> None:
    status_url, body, _ = export_all(world, secure_services, world.a)
    job_id = status_url.rsplit("/", 1)[1]
    with jobs.writing(secure_services.engine) as connection:
        connection.execute(update(jobs.JOB).where(jobs.JOB.c.job_id == job_id).values(expires_at=utc_now()))
    assert world.client.get(status_url, headers=world.a).status_code == 404
    url = body["output"][0]["url"].replace("http://testserver", "")
    assert world.client.get(url, headers=world.a).status_code == 404
    assert Worker(secure_services).clean() == 1
    with secure_services.engine.connect() as connection:
        assert jobs.output_rows(connection, job_id) == 0
        assert connection.execute(select(func.count()).select_from(jobs.JOB)).scalar_one() == 0


class Dies(Exception):
    """Not an Exception the worker catches: the process ends where it stands."""


def test_a_dead_workers_job_is_taken_over(secure_services: Services, world: World) -> None:
    settings = secure_services.settings.replace(export_chunk_resources=2, export_file_resources=3)
    small = Services.build(settings, engine=secure_services.engine)
    _, _, whole = export_all(world, small, world.a)
    status_url = kick_off(world, world.a)

    class Dying(Worker):
        chunks = 0

        def _lines(self, context: Any, rows: list[Any]) -> tuple[list[str], list[str]]:
            Dying.chunks += 1
            if Dying.chunks == 4:
                raise KeyboardInterrupt  # a BaseException: the worker dies mid-job
            return super()._lines(context, rows)

    with pytest.raises(KeyboardInterrupt):
        Dying(small, "dead-worker").run_once()
    assert world.client.get(status_url, headers=world.a).status_code == 202
    assert Worker(small).run_once() == 0  # its lease holds: nobody takes the job yet
    with jobs.writing(small.engine) as connection:
        connection.execute(update(jobs.JOB).values(lease_until=utc_now()))
    assert Worker(small, "heir").run_once() == 1
    body = manifest(world, world.a, status_url)
    assert all(item["count"] <= 3 for item in body["output"])
    assert exported(world, world.a, body) == whole


def test_bad_parameters_name_the_parameter(world: World) -> None:
    cases = [
        ("?_type=Nothing", "_type"),
        ("?_since=yesterday", "_since"),
        ("?_outputFormat=text/csv", "_outputFormat"),
        ("?_typeFilter=Observation%3Fnonsense%3D1", "_typeFilter"),
        ("?_typeFilter=Observation", "_typeFilter"),
        ("?_typeFilter=Observation%3F_include%3DObservation:subject", "_typeFilter"),
        ("?_type=Patient&_typeFilter=Observation%3Fstatus%3Dfinal", "_typeFilter"),
        ("?_elements=id", "_elements"),
        ("?patient=Patient/pa", "patient"),
    ]
    for query, name in cases:
        response = world.client.get(f"/fhir/$export{query}", headers={**world.a, **ASYNC})
        assert response.status_code == 400, (query, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
        assert response.json()["issue"][0]["expression"] == [name], query
    lenient = {**world.a, **ASYNC, "Prefer": "respond-async, handling=lenient"}
    assert world.client.get("/fhir/$export?_elements=id", headers=lenient).status_code == 202
    patient_level = world.client.get("/fhir/Patient/$export?_type=Organization", headers={**world.a, **ASYNC})
    assert patient_level.status_code == 400 and patient_level.json()["issue"][0]["expression"] == ["_type"]
    for headers, name in (
        ({"Accept": "application/fhir+json"}, "Prefer"),
        ({"Prefer": "respond-async", "Accept": "text/html"}, "Accept"),
    ):
        response = world.client.get("/fhir/$export", headers={**world.a, **headers})
        assert response.status_code == 400 and response.json()["issue"][0]["expression"] == [name]
    for path in ("/fhir/$export", "/fhir/Patient/$export"):
        posted = world.client.post(path, json={"resourceType": "Parameters"}, headers={**world.a, **ASYNC})
        assert posted.status_code == 405, posted.text
    group = world.client.get("/fhir/Group/g1/$export", headers={**world.a, **ASYNC})
    assert group.status_code == 501
    assert "Group is not a type this server serves" in group.json()["issue"][0]["diagnostics"]


def test_one_audit_event_per_export_and_per_patient(
    audited_services: Services, audited_client: TestClient
) -> None:
    world = World(audited_services, audited_client)
    _, _, found = export_all(world, audited_services, world.a)
    assert audited_services.audit is not None
    audited_services.audit.flush()
    auditor = register(audited_services, "gateway/audit.read", region=True)
    token = bearer(auditor.token(audited_client, "gateway/audit.read"))
    audited_services.audit.flush()
    patients = {k for k in found if k.startswith("Patient/")}
    assert {"Patient/pa", "Patient/pc"} <= patients
    for patient in patients:
        bundle = audited_client.get(f"/fhir/AuditEvent?patient={patient}&_count=500", headers=token).json()
        events = [
            e["resource"]
            for e in bundle.get("entry", [])
            if e["resource"]["subtype"][0]["code"] == "export" and e["resource"]["outcome"] == "0"
        ]
        assert len(events) == 1, patient
    everything = audited_client.get("/fhir/AuditEvent?_count=1000", headers=token).json()
    descriptions = [
        e["resource"].get("outcomeDesc", "")
        for e in everything.get("entry", [])
        if e["resource"]["subtype"][0]["code"] == "export"
    ]
    assert any("kick-off" in d for d in descriptions)
    assert any("resources of" in d for d in descriptions)


def test_the_capability_statement_lists_the_operations(world: World) -> None:
    served = world.client.get("/fhir/metadata").json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in served["instantiates"]
    rest = served["rest"][0]
    assert {o["name"]: o["definition"] for o in rest["operation"]}["export"].endswith("/export")
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert any(o["definition"].endswith("/patient-export") for o in patient["operation"])


def test_gateway_export_run_once(database: Database, secure_services: Services, world: World) -> None:
    status_url = kick_off(world, world.a, "?_type=Observation")
    env = {**database.environment(), "GATEWAY_AUTH": "on", "GATEWAY_BASE_URL": "http://testserver/fhir"}
    result = CliRunner().invoke(app, ["export", "run-once"], env=env)
    assert result.exit_code == 0, result.output
    assert "export jobs finished: 1" in result.output
    found = exported(world, world.a, manifest(world, world.a, status_url))
    assert set(found) == set(searched(world, world.a, "Observation"))


def test_serve_runs_the_worker(secure_services: Services) -> None:
    """`gateway serve`'s lifespan starts the worker (GATEWAY_EXPORT_POLL_SECONDS): a job finishes without
    anyone running a pass."""
    settings = secure_services.settings.replace(export_poll_seconds=0.1)
    served = Services.build(settings, engine=secure_services.engine)
    try:
        with TestClient(create_app(settings, services=served)) as client:
            world = World(served, client)
            status_url = kick_off(world, world.a, "?_type=Patient")
            deadline = time.monotonic() + 20
            while (answer := client.get(status_url, headers=world.a)).status_code == 202:
                assert time.monotonic() < deadline, "the worker of serve made no export"
                time.sleep(0.05)
            assert answer.status_code == 200, answer.text
            assert set(exported(world, world.a, answer.json())) == set(searched(world, world.a, "Patient"))
    finally:
        served.close()


def test_a_stopping_worker_gives_its_job_up_at_once(secure_services: Services, world: World) -> None:
    """On shutdown (SIGTERM) the worker stops after the chunk in progress and gives up its lease, so
    another process goes on with the job from there at once, not after the lease would have run out."""
    settings = secure_services.settings.replace(export_chunk_resources=2)
    small = Services.build(settings, engine=secure_services.engine)
    _, _, whole = export_all(world, small, world.a)
    status_url = kick_off(world, world.a)
    stopping = threading.Event()

    class Stopped(Worker):
        def _lines(self, context: Any, rows: list[Any]) -> tuple[list[str], list[str]]:
            stopping.set()  # SIGTERM arrives while the first chunk is made
            return super()._lines(context, rows)

    assert Stopped(small, "stopping", stopping).run_once() == 0
    with small.engine.connect() as connection:
        job = connection.execute(jobs.select_job(status_url.rsplit("/", 1)[1])).one()
    assert job.status == jobs.RUNNING and job.lease_until is None and job.exported == 2
    assert Worker(small, "next").run_once() == 1
    assert exported(world, world.a, manifest(world, world.a, status_url)) == whole


def test_a_disabled_clients_job_reads_nothing_more(secure_services: Services, world: World) -> None:
    """A client disabled after its kick-off: the worker reads nothing more as it; the job fails and
    goes with its output at the next clean."""
    status_url = kick_off(world, world.a)
    job_id = status_url.rsplit("/", 1)[1]
    with secure_services.engine.connect() as connection:
        client_id = connection.execute(
            select(jobs.JOB.c.client_id).where(jobs.JOB.c.job_id == job_id)
        ).scalar_one()
    assert set_client_active(secure_services.engine, client_id, False)
    assert Worker(secure_services).run_once() == 0
    with secure_services.engine.connect() as connection:
        assert jobs.output_rows(connection, job_id) == 0
        status = connection.execute(select(jobs.JOB.c.status).where(jobs.JOB.c.job_id == job_id)).scalar_one()
    assert status == jobs.FAILED
    assert Worker(secure_services).clean() == 1
