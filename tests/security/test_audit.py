"""AuditEvent on every access: each interaction leaves its AuditEvent, a patient's access log is one search,
AuditEvents cannot be changed (405), a full audit queue fails closed (503), refused tokens and rolled-back
writes are audited; a batch command's full queue waits instead."""

from __future__ import annotations

import base64
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from gateway.app import create_app
from gateway.hooks import AccessRecord, Principal, RequestContext
from gateway.security import store
from gateway.security.audit import AuditQueue
from gateway.security.purpose import ACT_REASON
from gateway.services import Services
from gateway.store.tables import Resource
from tests.conftest import Database
from tests.security.conftest import RegisteredClient, bearer, new_key, organisation_policy, register

ORG = "SE2321000016-AUDIT"
PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Loggad"}]}


def _build(database: Database, **overrides: Any) -> Services:
    database.clear()
    return Services.build(database.settings(auth=True, audit=True, **overrides), engine=database.engine)


@pytest.fixture
def audited(audited_services: Services) -> Services:
    return audited_services


@pytest.fixture
def client(audited_client: TestClient) -> TestClient:
    return audited_client


@pytest.fixture
def worker(audited: Services) -> RegisteredClient:
    return register(audited, "system/*.cruds", org=ORG, region=True)


def _sink(services: Services) -> AuditQueue:
    assert services.audit is not None
    return services.audit


def _log(services: Services, client: TestClient, query: str) -> list[dict[str, Any]]:
    """The AuditEvents a search finds, once every queued record is stored."""
    _sink(services).flush()
    auditor = register(services, "gateway/audit.read", region=True)
    token = auditor.token(client, "gateway/audit.read")
    _sink(services).flush()
    response = client.get(f"/fhir/AuditEvent?{query}&_count=500", headers=bearer(token))
    assert response.status_code == 200, response.text
    return [entry["resource"] for entry in response.json().get("entry", [])]


def _subtype(event: dict[str, Any]) -> str:
    code: str = event["subtype"][0]["code"]
    return code


def _patch(path: str, value: str) -> list[dict[str, Any]]:
    return [{"op": "replace", "path": path, "value": value}]


def test_each_interaction_leaves_its_audit_event(
    audited: Services, client: TestClient, worker: RegisteredClient
) -> None:
    headers = bearer(worker.token(client, "system/*.cruds"))
    assert client.put("/fhir/Patient/p1", json=PATIENT, headers=headers).status_code == 201
    assert client.put("/fhir/Patient/p1", json=PATIENT, headers=headers).status_code == 200  # unchanged
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": "Patient/p1"},
    }
    created = client.post("/fhir/Task", json=task, headers=headers)
    assert created.status_code == 201
    task_id = created.json()["id"]
    assert client.get(f"/fhir/Task/{task_id}", headers=headers).status_code == 200
    assert client.get(f"/fhir/Task/{task_id}/_history/1", headers=headers).status_code == 200
    assert client.get(f"/fhir/Task/{task_id}/_history", headers=headers).status_code == 200
    assert client.get("/fhir/Task?patient=Patient/p1", headers=headers).status_code == 200
    patched = client.patch(
        f"/fhir/Task/{task_id}",
        json=_patch("/status", "accepted"),
        headers=headers | {"Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "GET", "url": "Patient/p1"}}],
    }
    assert client.post("/fhir", json=bundle, headers=headers).status_code == 200
    assert client.delete(f"/fhir/Task/{task_id}", headers=headers).status_code == 200
    assert client.get("/fhir/Patient/unknown", headers=headers).status_code == 404

    log = _log(audited, client, "patient=Patient/p1")
    seen = [(_subtype(e), e["action"]) for e in log]
    for expected in [
        ("update", "C"),  # PUT that created Patient/p1
        ("update", "U"),  # the unchanged replay is audited too
        ("create", "C"),
        ("read", "R"),
        ("vread", "R"),
        ("history", "R"),
        ("search", "E"),
        ("delete", "D"),
    ]:
        assert expected in seen, (expected, seen)
    assert ("patch", "U") in seen  # a JSON Patch is audited as what it is, not as a read and an update
    assert seen.count(("read", "R")) >= 2  # read, the transaction's GET entry
    for event in log:
        assert event["outcome"] == "0"
        assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"
        client_agent, org_agent = event["agent"][0], event["agent"][1]
        assert client_agent["altId"] == worker.client_id
        assert client_agent["network"]["address"] == "testclient"
        assert org_agent["who"]["identifier"]["value"] == ORG
        whats = [entity.get("what", {}).get("reference") for entity in event["entity"]]
        assert "Patient/p1" in whats
    search = next(e for e in log if _subtype(e) == "search")
    query = next(entity for entity in search["entity"] if "query" in entity)
    assert base64.b64decode(query["query"]).decode() == "patient=Patient/p1"
    assert f"Task/{task_id}" in [entity.get("what", {}).get("reference") for entity in search["entity"]]

    missing = _log(audited, client, "entity=Patient/unknown")
    assert [(_subtype(e), e["outcome"], e["outcomeDesc"][:3]) for e in missing] == [("read", "4", "404")]
    assert len(_log(audited, client, "agent-name=nobody")) == 0
    assert _log(audited, client, f"altid={worker.client_id}&action=D")


def test_audit_events_cannot_be_changed(
    audited: Services, client: TestClient, worker: RegisteredClient
) -> None:
    headers = bearer(worker.token(client, "system/*.cruds"))
    client.get("/fhir/Patient/p1", headers=headers)
    event = _log(audited, client, "outcome=4")[0]
    url = f"/fhir/AuditEvent/{event['id']}"
    assert client.put(url, json=event, headers=headers).status_code == 405
    assert client.delete(url, headers=headers).status_code == 405
    patch_headers = headers | {"Content-Type": "application/json-patch+json"}
    assert client.patch(url, json=_patch("/outcome", "0"), headers=patch_headers).status_code == 405
    assert client.post("/fhir/AuditEvent", json=event, headers=headers).status_code == 405
    for method, entry_url in [("PUT", f"AuditEvent/{event['id']}"), ("DELETE", f"AuditEvent/{event['id']}")]:
        entry: dict[str, Any] = {"request": {"method": method, "url": entry_url}}
        if method == "PUT":
            entry["resource"] = event
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
        assert client.post("/fhir", json=bundle, headers=headers).status_code == 405
    unchanged = _log(audited, client, f"_id={event['id']}")
    assert unchanged == [event]


def test_audit_event_writes_are_refused_with_auth_off(database: Database) -> None:
    services = Services.build(database.settings(audit=True), engine=database.engine)
    try:
        with TestClient(create_app(services.settings, services=services)) as client:
            event = {"resourceType": "AuditEvent", "id": "x"}
            assert client.put("/fhir/AuditEvent/x", json=event).status_code == 405
            assert client.post("/fhir/AuditEvent", json=event).status_code == 405
            assert client.delete("/fhir/AuditEvent/x").status_code == 405
    finally:
        services.close()


def test_a_full_queue_fails_closed(database: Database) -> None:
    """A read waits for its AuditEvent to be stored before its answer leaves: with the writer held, the
    answer is a 503 once the wait runs out, and while the queue is full, at once."""
    services = _build(database, audit_queue_size=1, audit_wait_seconds=0.3)
    try:
        with TestClient(create_app(services.settings, services=services)) as client:
            worker = register(services, "system/*.cruds", org=ORG, region=True)
            headers = bearer(worker.token(client, "system/*.cruds"))
            sink = _sink(services)
            sink.flush()
            statuses = []
            with sink.paused():
                for _ in range(4):
                    response = client.get("/fhir/Patient?name=x", headers=headers)
                    statuses.append(response.status_code)
                    assert response.json()["resourceType"] == "OperationOutcome"
            assert statuses == [503] * 4
            sink.flush()
            assert client.get("/fhir/Patient?name=x", headers=headers).status_code == 200
    finally:
        services.close()


def test_a_batch_commands_full_queue_waits_for_the_writer_and_loses_nothing(database: Database) -> None:
    """`gateway import`/`load` (Settings.for_batch): nobody to refuse, so a full queue blocks the command
    until the writer has made room, instead of failing it; every record is stored."""
    database.clear()
    services = Services.build(
        database.settings(audit=True, audit_queue_size=2).for_batch(), engine=database.engine
    )
    sink = _sink(services)
    context = RequestContext(principal=Principal(client_id="cli"), base_url="http://test/fhir")
    recorded: list[int] = []

    def record_five() -> None:
        for n in range(5):
            sink.record(AccessRecord("import", None, [], 200, context, f"batch record {n}"))
            recorded.append(n)

    try:
        with sink.paused():
            filler = threading.Thread(target=record_five)
            filler.start()
            filler.join(timeout=0.5)
            assert filler.is_alive() and len(recorded) < 5, "waiting while the writer is held"
        filler.join(timeout=10)
        assert recorded == [0, 1, 2, 3, 4]
        sink.flush()
        with database.engine.connect() as connection:
            details = [
                row[0]
                for row in connection.execute(
                    select(Resource.content).where(Resource.res_type == "AuditEvent")
                )
            ]
        assert sum("batch record" in content for content in details) == 5
    finally:
        services.close()


def test_a_refused_token_is_audited(audited: Services, client: TestClient, worker: RegisteredClient) -> None:
    assert client.get("/fhir/Patient/p1", headers=bearer("not-a-token")).status_code == 401
    assert client.get("/fhir/Patient/p1").status_code == 401
    read_only = worker.token(client, "system/Task.r")
    assert client.get("/fhir/Patient/p1", headers=bearer(read_only)).status_code == 403
    refused = _log(audited, client, "entity=Patient/p1&outcome=4")
    found = sorted((e["outcomeDesc"][:3], e["agent"][0]["altId"]) for e in refused)
    assert found == [("401", "anonymous"), ("401", "anonymous"), ("403", worker.client_id)]


def test_a_rolled_back_transaction_is_audited(
    audited: Services, client: TestClient, worker: RegisteredClient
) -> None:
    headers = bearer(worker.token(client, "system/*.cruds"))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "PUT", "url": "Patient/p9"}, "resource": {**PATIENT, "id": "p9"}},
            {
                # PUTs run in order: after Patient/p9 is written, this one fails (no version 5 of Task/t9).
                # (An invalid resource would not do: entries are validated before anything is written.)
                "request": {"method": "PUT", "url": "Task/t9", "ifMatch": 'W/"5"'},
                "resource": {"resourceType": "Task", "id": "t9", "status": "requested", "intent": "order"},
            },
        ],
    }
    response = client.post("/fhir", json=bundle, headers=headers)
    assert response.status_code >= 400
    assert client.get("/fhir/Patient/p9", headers=headers).status_code == 404
    log = _log(audited, client, "patient=Patient/p9")
    writes = [e for e in log if _subtype(e) == "update"]
    assert len(writes) == 1
    assert writes[0]["outcome"] == "4"
    assert writes[0]["outcomeDesc"] == f"{response.status_code} rolled back"


def test_a_transaction_is_one_audit_event_per_interaction_and_patient(
    audited: Services, client: TestClient, worker: RegisteredClient
) -> None:
    headers = bearer(worker.token(client, "system/*.cruds"))

    def task(patient: str) -> dict[str, Any]:
        return {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "for": {"reference": patient},
        }

    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "PUT", "url": "Patient/p7"}, "resource": {**PATIENT, "id": "p7"}},
            {"request": {"method": "PUT", "url": "Patient/p8"}, "resource": {**PATIENT, "id": "p8"}},
            {"request": {"method": "POST", "url": "Task"}, "resource": task("Patient/p7")},
            {"request": {"method": "POST", "url": "Task"}, "resource": task("Patient/p7")},
            {"request": {"method": "POST", "url": "Task"}, "resource": task("Patient/p8")},
        ],
    }
    response = client.post("/fhir", json=bundle, headers=headers)
    assert response.status_code == 200, response.text
    tasks = [e["response"]["location"].split("/")[1] for e in response.json()["entry"][2:]]
    log = _log(audited, client, "patient=Patient/p7")
    assert sorted((_subtype(e), e["action"]) for e in log) == [("create", "C"), ("update", "C")]
    created = next(e for e in log if _subtype(e) == "create")
    whats = [entity["what"]["reference"] for entity in created["entity"]]
    # one event, p7's resources only, each write naming the version it stored
    assert whats == ["Patient/p7", f"Task/{tasks[0]}/_history/1", f"Task/{tasks[1]}/_history/1"]
    other = _log(audited, client, "patient=Patient/p8")
    assert sorted(_subtype(e) for e in other) == ["create", "update"]
    assert all("Patient/p7" not in str(e["entity"]) for e in other), "another patient's event is its own"
    for task_id in tasks:  # each resource's own access log still finds it
        assert [_subtype(e) for e in _log(audited, client, f"entity=Task/{task_id}")] == ["create"]


def test_purpose_of_event_is_the_clients_purpose_of_use(database: Database) -> None:
    services = _build(database, client_purposes=("billing-client=HPAYMT",))
    try:
        with TestClient(create_app(services.settings, services=services)) as client:
            key = new_key("ES384")
            jwks = {"keys": [key.as_dict(private=False) | {"kid": key.kid}]}
            store.add_client(services.engine, "billing", ORG, jwks, ["system/*.cruds"], "billing-client")
            billing = RegisteredClient("billing-client", key, "ES384")
            policy = organisation_policy(services)  # both write the same Patient: region-wide
            policy.region_clients = policy.region_clients | {"billing-client"}
            treating = register(services, "system/*.cruds", org=ORG, region=True)
            for who in (billing, treating):
                headers = bearer(who.token(client, "system/*.cruds"))
                assert client.put("/fhir/Patient/p1", json=PATIENT, headers=headers).status_code in (200, 201)
            purposes = {
                event["agent"][0]["altId"]: event["purposeOfEvent"]
                for event in _log(services, client, "patient=Patient/p1")
            }
            assert purposes["billing-client"] == [
                {"coding": [{"system": ACT_REASON, "code": "HPAYMT", "display": "healthcare payment"}]}
            ]
            assert purposes[treating.client_id][0]["coding"][0]["code"] == "TREAT"
    finally:
        services.close()


def test_an_unknown_client_purpose_stops_start_up(database: Database) -> None:
    services = _build(database, client_purposes=("c1=SHOPPING",))
    try:
        with pytest.raises(ValueError, match="PurposeOfUse"):
            create_app(services.settings, services=services)
    finally:
        services.close()
