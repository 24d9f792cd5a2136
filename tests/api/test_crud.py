"""read, vread, create, update, patch, delete and the HTTP details around them."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.helpers import PNR, create, patient, task


def test_create_assigns_id_version_and_headers(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json=patient())
    assert response.status_code == 201
    body = response.json()
    assert body["meta"]["versionId"] == "1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert "last-modified" in response.headers
    assert response.headers["content-type"].startswith("application/fhir+json")


def test_read_returns_what_was_stored(client: TestClient) -> None:
    created = create(client, patient(given="Åsa"))
    response = client.get(f"/fhir/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'


def test_unknown_id_and_unsupported_type_are_404_outcomes(client: TestClient) -> None:
    missing = client.get("/fhir/Patient/does-not-exist")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    unsupported = client.get("/fhir/Medication/1")
    assert unsupported.status_code == 404
    assert "not supported" in unsupported.json()["issue"][0]["diagnostics"]


def test_invalid_resource_names_the_field(client: TestClient) -> None:
    response = client.post("/fhir/Patient", json={"resourceType": "Patient", "birthDate": "1912-13-45"})
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Patient.birthDate"]


def test_required_binding_is_checked(client: TestClient) -> None:
    response = client.post("/fhir/Task", json={"resourceType": "Task", "status": "bogus", "intent": "order"})
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Task.status"]


def test_reference_target_type_is_checked(client: TestClient) -> None:
    bad = task("x", owner="Encounter/e1")
    response = client.post("/fhir/Task", json=bad)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["Task.owner.reference"]


def test_type_and_id_must_match_url(client: TestClient) -> None:
    assert client.post("/fhir/Task", json=patient()).status_code == 400
    body = patient(id="a")
    assert client.put("/fhir/Patient/b", json=body).status_code == 400
    assert client.put("/fhir/Patient/bad$id", json=patient(id="bad$id")).status_code == 400


def test_update_with_client_id_creates_then_updates(client: TestClient) -> None:
    first = client.put("/fhir/Patient/p1", json=patient(id="p1"))
    assert first.status_code == 201
    changed = patient(id="p1", family="Ändrad")
    second = client.put("/fhir/Patient/p1", json=changed)
    assert second.status_code == 200
    assert second.json()["meta"]["versionId"] == "2"
    assert client.get("/fhir/Patient/p1/_history/1").json()["name"][0]["family"] == "Tolvansson"


def test_identical_update_creates_no_new_version(client: TestClient) -> None:
    client.put("/fhir/Patient/p1", json=patient(id="p1"))
    again = client.put("/fhir/Patient/p1", json=patient(id="p1"))
    assert again.status_code == 200
    assert again.json()["meta"]["versionId"] == "1"
    history = client.get("/fhir/Patient/p1/_history").json()
    assert len(history["entry"]) == 1


def test_if_match_guards_against_stale_updates(client: TestClient) -> None:
    client.put("/fhir/Patient/p1", json=patient(id="p1"))
    client.put("/fhir/Patient/p1", json=patient(id="p1", family="Två"))
    stale = client.put("/fhir/Patient/p1", json=patient(id="p1", family="Tre"), headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    fresh = client.put("/fhir/Patient/p1", json=patient(id="p1", family="Tre"), headers={"If-Match": 'W/"2"'})
    assert fresh.status_code == 200


def test_prefer_return(client: TestClient) -> None:
    minimal = client.post("/fhir/Patient", json=patient(), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert "location" in minimal.headers
    outcome = client.post(
        "/fhir/Patient", json=patient("201212121212"), headers={"Prefer": "return=OperationOutcome"}
    )
    assert outcome.json()["resourceType"] == "OperationOutcome"


def test_conditional_create(client: TestClient) -> None:
    condition = {"If-None-Exist": f"identifier={PNR}|191212121212"}
    first = client.post("/fhir/Patient", json=patient(), headers=condition)
    assert first.status_code == 201
    second = client.post("/fhir/Patient", json=patient(), headers=condition)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    client.post("/fhir/Patient", json=patient("201212121212", family="Tolvansson"))
    several = client.post(
        "/fhir/Patient", json=patient("199001011239"), headers={"If-None-Exist": "family=Tolvansson"}
    )
    assert several.status_code == 412


def test_conditional_create_with_an_or_list_of_identifiers_finds_the_stored_one(client: TestClient) -> None:
    """`identifier=a,b` is an OR list (not one value with a comma): the stored Patient matches."""
    first = client.post("/fhir/Patient", json=patient())
    condition = {"If-None-Exist": f"identifier={PNR}|201212121212,{PNR}|191212121212"}
    again = client.post("/fhir/Patient", json=patient(), headers=condition)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_conditional_update_on_identifier(client: TestClient) -> None:
    url = f"/fhir/Patient?identifier={PNR}|191212121212"
    created = client.put(url, json=patient())
    assert created.status_code == 201
    updated = client.put(url, json=patient(family="Ny"))
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"


def test_duplicate_identifier_is_refused_by_the_database(client: TestClient) -> None:
    create(client, patient())
    duplicate = client.post("/fhir/Patient", json=patient(family="Annan"))
    assert duplicate.status_code == 409


def test_json_patch(client: TestClient) -> None:
    created = create(client, task("p1"))
    ops = [{"op": "replace", "path": "/status", "value": "accepted"}]
    headers = {"Content-Type": "application/json-patch+json"}
    response = client.patch(
        f"/fhir/Task/{created['id']}", content=__import__("json").dumps(ops), headers=headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    assert response.json()["meta"]["versionId"] == "2"
    bad = [{"op": "replace", "path": "/status", "value": "nonsense"}]
    rejected = client.patch(
        f"/fhir/Task/{created['id']}", content=__import__("json").dumps(bad), headers=headers
    )
    assert rejected.status_code == 400
    stale = client.patch(
        f"/fhir/Task/{created['id']}",
        content=__import__("json").dumps(ops),
        headers={**headers, "If-Match": 'W/"1"'},
    )
    assert stale.status_code == 412


def test_delete_is_a_versioned_tombstone(client: TestClient) -> None:
    created = create(client, patient())
    deleted = client.delete(f"/fhir/Patient/{created['id']}")
    assert deleted.status_code == 200
    assert client.get(f"/fhir/Patient/{created['id']}").status_code == 410
    assert client.get(f"/fhir/Patient/{created['id']}/_history/1").status_code == 200
    assert client.get(f"/fhir/Patient/{created['id']}/_history/2").status_code == 410
    assert client.get(f"/fhir/Patient?_id={created['id']}").json().get("entry") is None
    # the identifier is free again
    assert client.post("/fhir/Patient", json=patient()).status_code == 201


def test_xml_is_not_acceptable(client: TestClient) -> None:
    assert client.get("/fhir/metadata", headers={"Accept": "application/fhir+xml"}).status_code == 406
    assert client.get("/fhir/metadata?_format=xml").status_code == 406
    assert client.get("/fhir/metadata?_format=json").status_code == 200


def test_body_size_limit(client: TestClient) -> None:
    limit = client.app.state.services.settings.max_body_bytes  # type: ignore[attr-defined]
    big = patient(text={"status": "generated", "div": "<div>" + "x" * limit + "</div>"})
    assert client.post("/fhir/Patient", json=big).status_code == 413


def test_errors_never_leak_stack_traces(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient", content=b"{not json", headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 400
    assert "Traceback" not in response.text


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
