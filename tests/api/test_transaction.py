"""transaction and batch (POST [base] with a Bundle), against the R4 processing rules."""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi.testclient import TestClient
from httpx import Response

from gateway.app import create_app
from gateway.services import Services
from tests.api.helpers import PNR, create, patient, task
from tests.conftest import Database

TASK_ID = "urn:example:task-id"
P = "urn:uuid:4f6a3c1e-0000-4000-8000-000000000001"
T = "urn:uuid:4f6a3c1e-0000-4000-8000-000000000002"
V = "urn:uuid:4f6a3c1e-0000-4000-8000-000000000003"


def entry(
    method: str,
    url: str,
    resource: dict[str, Any] | None = None,
    full_url: str | None = None,
    **request: str,
) -> dict[str, Any]:
    item: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        item["resource"] = resource
    if full_url is not None:
        item["fullUrl"] = full_url
    return item


def submit(client: TestClient, *entries: dict[str, Any], kind: str = "transaction") -> Response:
    bundle = {"resourceType": "Bundle", "type": kind, "entry": list(entries)}
    response: Response = client.post("/fhir", json=bundle)
    return response


def ok(response: Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "Bundle"
    entries: list[dict[str, Any]] = body["entry"]
    return entries


def provenance(*targets: str) -> dict[str, Any]:
    return {
        "resourceType": "Provenance",
        "target": [{"reference": t} for t in targets],
        "recorded": "2024-05-01T10:00:00+02:00",
        "agent": [{"who": {"reference": "Organization/kommun-1"}}],
    }


def with_identifier(resource: dict[str, Any], value: str) -> dict[str, Any]:
    return {**resource, "identifier": [{"system": TASK_ID, "value": value}]}


def history_total(client: TestClient, res_type: str) -> int:
    return len(client.get(f"/fhir/{res_type}/_history").json().get("entry", []))


def binary_patch(operations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(json.dumps(operations).encode()).decode(),
    }


def outcome_of(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body


# -- transaction ----------------------------------------------------------------------------------------


def test_urn_uuid_references_are_resolved_across_entries(client: TestClient) -> None:
    # The Provenance comes first and refers forward to entries that are created after it.
    entries = ok(
        submit(
            client,
            entry("POST", "Provenance", provenance(P, T), V),
            entry("POST", "Task", task("x", subject=P), T),
            entry("POST", "Patient", patient(), P),
        )
    )
    assert [e["response"]["status"] for e in entries] == ["201 Created"] * 3
    prov, tsk, pat = (e["resource"] for e in entries)
    assert [e["resource"]["resourceType"] for e in entries] == ["Provenance", "Task", "Patient"]
    for e in entries:
        resource = e["resource"]
        assert e["fullUrl"].endswith(f"/fhir/{resource['resourceType']}/{resource['id']}")
        assert e["response"]["location"].endswith(f"{resource['resourceType']}/{resource['id']}/_history/1")
        assert e["response"]["etag"] == 'W/"1"'
        assert e["response"]["lastModified"] == resource["meta"]["lastUpdated"]
    assert tsk["for"]["reference"] == f"Patient/{pat['id']}"
    assert [t["reference"] for t in prov["target"]] == [f"Patient/{pat['id']}", f"Task/{tsk['id']}"]
    stored = client.get(f"/fhir/Provenance/{prov['id']}").json()
    assert [t["reference"] for t in stored["target"]] == [f"Patient/{pat['id']}", f"Task/{tsk['id']}"]
    assert client.get(f"/fhir/Task?patient={pat['id']}").json()["entry"][0]["resource"]["id"] == tsk["id"]


def test_response_bundle_type_and_order(client: TestClient) -> None:
    client.put("/fhir/Patient/gone", json=patient(id="gone"))
    client.put("/fhir/Patient/kept", json=patient("201212121212", id="kept"))
    response = submit(
        client,
        entry("GET", "Patient/kept"),
        entry("PUT", "Patient/kept", patient("201212121212", id="kept", family="Ny")),
        entry("DELETE", "Patient/gone"),
        entry("POST", "Patient", patient()),  # takes the identifier the DELETE frees
    )
    body = response.json()
    assert body["type"] == "transaction-response"
    entries = ok(response)
    assert [e["response"]["status"] for e in entries] == ["200 OK", "200 OK", "200 OK", "201 Created"]
    # GET runs last: it sees the update made by the PUT listed after it
    assert entries[0]["resource"]["name"][0]["family"] == "Ny"
    assert entries[0]["response"]["etag"] == 'W/"2"'
    assert entries[1]["response"]["etag"] == 'W/"2"'
    assert entries[1]["response"]["location"].endswith("Patient/kept/_history/2")
    assert "resource" not in entries[2]
    assert client.get("/fhir/Patient/gone").status_code == 410
    # deleting something absent is not an error
    assert ok(submit(client, entry("DELETE", "Patient/never-was")))[0]["response"]["status"].startswith("204")


def test_processing_order_delete_post_put_get(client: TestClient) -> None:
    old = create(client, patient())
    # The POST reuses the identifier of the Patient the DELETE removes: this only works if the DELETE
    # runs first. The search (GET) is listed first but runs last and sees the new Patient.
    entries = ok(
        submit(
            client,
            entry("GET", f"Patient?identifier={PNR}|191212121212"),
            entry("PUT", "Task/t1", task("x", subject=P, id="t1")),
            entry("POST", "Patient", patient(family="Ny"), P),
            entry("DELETE", f"Patient/{old['id']}"),
        )
    )
    new_id = entries[2]["resource"]["id"]
    searchset = entries[0]["resource"]
    assert searchset["type"] == "searchset"
    assert [e["resource"]["id"] for e in searchset["entry"]] == [new_id]
    assert entries[1]["resource"]["for"]["reference"] == f"Patient/{new_id}"
    assert entries[3]["response"]["status"] == "200 OK"


def test_invalid_entry_fails_the_whole_transaction(client: TestClient) -> None:
    response = submit(
        client,
        entry("POST", "Patient", patient(), P),
        entry("POST", "Task", task("x", status="bogus", subject=P)),
    )
    outcome = outcome_of(response, 400)
    issue = outcome["issue"][0]
    assert "Bundle.entry[1]" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[1].resource.status"]
    assert history_total(client, "Patient") == 0
    assert history_total(client, "Task") == 0


def test_failure_after_earlier_writes_rolls_everything_back(client: TestClient) -> None:
    client.put("/fhir/Patient/p1", json=patient(id="p1"))
    response = submit(
        client,
        entry("POST", "Patient", patient("201212121212")),
        entry("PUT", "Patient/p1", patient(id="p1", family="Ny"), ifMatch='W/"7"'),
    )
    outcome = outcome_of(response, 412)
    assert "Bundle.entry[1]" in outcome["issue"][0]["diagnostics"]
    assert history_total(client, "Patient") == 1
    # a failing read fails the transaction too
    response = submit(client, entry("POST", "Patient", patient("201212121212")), entry("GET", "Patient/nope"))
    assert "Bundle.entry[1]" in outcome_of(response, 404)["issue"][0]["diagnostics"]
    assert history_total(client, "Patient") == 1


def test_malformed_transactions_are_refused(client: TestClient) -> None:
    unresolved = submit(client, entry("POST", "Task", task("x", subject=P)))
    assert "Bundle.entry[0]" in outcome_of(unresolved, 400)["issue"][0]["diagnostics"]
    no_request = client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": patient()}]}
    )
    assert outcome_of(no_request, 400)["issue"][0]["expression"] == ["Bundle.entry[0].request"]
    wrong_type = submit(client, entry("POST", "Task", patient()))
    assert "Bundle.entry[0]" in outcome_of(wrong_type, 400)["issue"][0]["diagnostics"]
    same_full_url = submit(
        client,
        entry("POST", "Patient", patient(), P),
        entry("POST", "Patient", patient("201212121212"), P),
    )
    assert "Bundle.entry[1]" in outcome_of(same_full_url, 400)["issue"][0]["diagnostics"]
    client.put("/fhir/Patient/p1", json=patient(id="p1"))
    overlap = submit(
        client,
        entry("PUT", "Patient/p1", patient(id="p1", family="Ny")),
        entry("DELETE", "Patient/p1"),
    )
    assert outcome_of(overlap, 400)
    assert client.get("/fhir/Patient/p1").json()["meta"]["versionId"] == "1"
    assert outcome_of(client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"}), 400)
    assert history_total(client, "Task") == 0
    assert history_total(client, "Patient") == 1


def test_conditional_create_inside_a_transaction(client: TestClient) -> None:
    condition = f"identifier={PNR}|191212121212"

    def run() -> Response:
        return submit(
            client,
            entry("POST", "Patient", patient(), P, ifNoneExist=condition),
            entry("POST", "Task", task("x", subject=P)),
        )

    first = ok(run())
    assert [e["response"]["status"] for e in first] == ["201 Created", "201 Created"]
    pid = first[0]["resource"]["id"]
    second = ok(run())
    assert second[0]["response"]["status"] == "200 OK"
    assert second[0]["resource"]["id"] == pid
    assert second[0]["response"]["etag"] == 'W/"1"'
    assert second[1]["resource"]["for"]["reference"] == f"Patient/{pid}"
    assert history_total(client, "Patient") == 1
    # several matches: 412 naming the entry, nothing stored
    create(client, patient("201212121212"))
    several = submit(
        client,
        entry("POST", "Task", task("x")),
        entry("POST", "Patient", patient("199001011239"), ifNoneExist="family=Tolvansson"),
    )
    outcome = outcome_of(several, 412)
    assert "Bundle.entry[1]" in outcome["issue"][0]["diagnostics"]
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1]"]
    assert history_total(client, "Task") == 2


def test_conditional_update_inside_a_transaction(client: TestClient) -> None:
    url = f"Patient?identifier={PNR}|191212121212"
    first = ok(
        submit(
            client,
            entry("PUT", url, patient(), P),
            entry("POST", "Task", task("x", subject=P)),
        )
    )
    assert first[0]["response"]["status"] == "201 Created"
    pid = first[0]["resource"]["id"]
    assert first[1]["resource"]["for"]["reference"] == f"Patient/{pid}"
    second = ok(submit(client, entry("PUT", url, patient(family="Ny"))))
    assert second[0]["response"]["status"] == "200 OK"
    assert second[0]["resource"]["id"] == pid
    assert second[0]["response"]["etag"] == 'W/"2"'
    assert second[0]["response"]["location"].endswith(f"Patient/{pid}/_history/2")
    # the body's id must not contradict the match
    clash = submit(client, entry("PUT", url, patient(id="other")))
    assert "Bundle.entry[0]" in outcome_of(clash, 400)["issue"][0]["diagnostics"]
    create(client, patient("201212121212", family="Ny"))
    several = submit(client, entry("PUT", "Patient?family=Ny", patient("199001011239")))
    assert "Bundle.entry[0]" in outcome_of(several, 412)["issue"][0]["diagnostics"]
    assert history_total(client, "Patient") == 3


def test_conditional_references(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    reference = f"Patient?identifier={PNR}|191212121212"
    entries = ok(submit(client, entry("POST", "Task", task("x", subject=reference))))
    assert entries[0]["resource"]["for"]["reference"] == f"Patient/{pid}"
    missing = submit(
        client,
        entry("POST", "Task", task("x", subject=f"Patient?identifier={PNR}|201212121212")),
    )
    assert "Bundle.entry[0]" in outcome_of(missing, 412)["issue"][0]["diagnostics"]
    create(client, patient("201212121212"))
    several = submit(client, entry("POST", "Task", task("x", subject="Patient?family=Tolv")))
    assert outcome_of(several, 412)
    assert history_total(client, "Task") == 1


def test_conditional_reference_to_a_resource_created_in_the_same_transaction(client: TestClient) -> None:
    reference = f"Patient?identifier={PNR}|191212121212"
    entries = ok(
        submit(
            client,
            entry("POST", "Task", task("x", subject=reference)),
            entry("PUT", reference, patient()),
        )
    )
    assert entries[0]["resource"]["for"]["reference"] == f"Patient/{entries[1]['resource']['id']}"


def test_patch_entries_carry_json_patch_in_a_binary(client: TestClient) -> None:
    tid = create(client, task("p1"))["id"]
    ops: list[dict[str, Any]] = [
        {"op": "replace", "path": "/status", "value": "accepted"},
        {"op": "add", "path": "/focus", "value": {"reference": P}},
    ]
    entries = ok(
        submit(
            client,
            entry("PATCH", f"Task/{tid}", binary_patch(ops)),
            entry("POST", "Patient", patient(), P),
        )
    )
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[0]["response"]["etag"] == 'W/"2"'
    patched = client.get(f"/fhir/Task/{tid}").json()
    assert patched["status"] == "accepted"
    assert patched["focus"]["reference"] == f"Patient/{entries[1]['resource']['id']}"
    bad = [{"op": "replace", "path": "/status", "value": "nonsense"}]
    response = submit(client, entry("PATCH", f"Task/{tid}", binary_patch(bad)))
    assert "Bundle.entry[0]" in outcome_of(response, 400)["issue"][0]["diagnostics"]
    not_binary = submit(client, entry("PATCH", f"Task/{tid}", {"resourceType": "Parameters"}))
    assert outcome_of(not_binary, 400)
    assert client.get(f"/fhir/Task/{tid}").json()["meta"]["versionId"] == "2"


def test_replaying_a_conditional_transaction_changes_nothing(client: TestClient) -> None:
    def run() -> list[dict[str, Any]]:
        return ok(
            submit(
                client,
                entry(
                    "POST",
                    "Patient",
                    patient(),
                    P,
                    ifNoneExist=f"identifier={PNR}|191212121212",
                ),
                entry(
                    "POST",
                    "Task",
                    with_identifier(task("x", subject=P), "t-1"),
                    T,
                    ifNoneExist=f"identifier={TASK_ID}|t-1",
                ),
                entry("PUT", f"Task?identifier={TASK_ID}|t-2", with_identifier(task("x"), "t-2")),
                entry("PUT", "Provenance/prov-1", {**provenance(P, T), "id": "prov-1"}, V),
            )
        )

    first = run()
    assert [e["response"]["status"] for e in first] == ["201 Created"] * 4
    second = run()
    assert [e["response"]["status"] for e in second] == ["200 OK"] * 4
    assert [e["resource"]["id"] for e in second] == [e["resource"]["id"] for e in first]
    assert [e["response"]["etag"] for e in second] == ['W/"1"'] * 4
    assert history_total(client, "Patient") == 1
    assert history_total(client, "Task") == 2
    assert history_total(client, "Provenance") == 1


def test_entry_limit(database: Database) -> None:
    database.clear()
    services = Services.build(database.settings(max_bundle_entries=3), engine=database.engine)
    with TestClient(create_app(services.settings, services=services)) as client:
        four = [entry("POST", "Patient", patient(pnr)) for pnr in ("1", "2", "3", "4")]
        outcome_of(submit(client, *four), 413)
        outcome_of(submit(client, *four, kind="batch"), 413)
        assert history_total(client, "Patient") == 0
        assert len(ok(submit(client, *four[:3]))) == 3


# -- batch ----------------------------------------------------------------------------------------------


def test_batch_entries_are_independent(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    response = submit(
        client,
        entry("POST", "Patient", patient("201212121212")),
        entry("POST", "Task", task(pid, status="bogus")),
        entry("GET", "Patient/nope"),
        entry("GET", f"Patient/{pid}"),
        entry("POST", "Task", task("x", subject=P)),
        {"resource": patient()},
        entry("POST", "Patient", patient(), ifNoneExist=f"identifier={PNR}|191212121212"),
        kind="batch",
    )
    assert response.json()["type"] == "batch-response"
    entries = ok(response)
    statuses = [e["response"]["status"] for e in entries]
    assert statuses[0] == "201 Created"
    assert statuses[1].startswith("400")
    assert statuses[2].startswith("404")
    assert statuses[3] == "200 OK"
    assert statuses[4].startswith("400")
    assert statuses[5].startswith("400")
    assert statuses[6] == "200 OK"
    assert entries[6]["resource"]["id"] == pid
    for failed in (1, 2, 4, 5):
        outcome = entries[failed]["response"]["outcome"]
        assert outcome["resourceType"] == "OperationOutcome"
        assert f"Bundle.entry[{failed}]" in outcome["issue"][0]["diagnostics"]
    assert entries[1]["response"]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[1].resource.status"]
    assert entries[0]["response"]["location"].endswith("/_history/1")
    assert entries[3]["resource"]["id"] == pid
    assert history_total(client, "Patient") == 2
    assert history_total(client, "Task") == 0


def test_the_same_condition_twice_creates_one_resource(client: TestClient) -> None:
    condition = f"identifier={PNR}|191212121212"
    entries = ok(
        submit(
            client,
            entry("POST", "Patient", patient(), P, ifNoneExist=condition),
            entry("POST", "Patient", patient(), T, ifNoneExist=condition),
            entry("POST", "Task", task("x", subject=T)),
        )
    )
    assert [e["response"]["status"] for e in entries] == ["201 Created", "200 OK", "201 Created"]
    pid = entries[0]["resource"]["id"]
    assert entries[1]["resource"]["id"] == pid
    assert entries[2]["resource"]["for"]["reference"] == f"Patient/{pid}"
    assert history_total(client, "Patient") == 1


def test_conditional_patch_and_vread_inside_a_transaction(client: TestClient) -> None:
    tid = create(client, with_identifier(task("p1"), "t-1"))["id"]
    ops = [{"op": "replace", "path": "/status", "value": "accepted"}]
    entries = ok(
        submit(
            client,
            entry("GET", f"Task/{tid}/_history/1"),
            entry("PATCH", f"Task?identifier={TASK_ID}|t-1", binary_patch(ops)),
        )
    )
    assert entries[0]["resource"]["status"] == "requested"
    assert entries[0]["response"]["etag"] == 'W/"1"'
    assert entries[1]["resource"]["id"] == tid
    assert entries[1]["resource"]["status"] == "accepted"
    missing = submit(client, entry("PATCH", f"Task?identifier={TASK_ID}|t-9", binary_patch(ops)))
    assert "Bundle.entry[0]" in outcome_of(missing, 404)["issue"][0]["diagnostics"]


def test_an_identifier_already_taken_fails_the_transaction(client: TestClient) -> None:
    create(client, patient())
    response = submit(
        client,
        entry("POST", "Organization", {"resourceType": "Organization"}),
        entry("POST", "Patient", patient()),
    )
    assert "Bundle.entry[1]" in outcome_of(response, 409)["issue"][0]["diagnostics"]
    assert history_total(client, "Organization") == 0


def test_the_base_without_a_trailing_slash_takes_bundles(client: TestClient) -> None:
    """`POST [base]` as FHIR clients send it (`…/fhir`, no slash) is processed, not redirected."""
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [entry("POST", "Patient", patient())]}
    response = client.post("/fhir", json=bundle, follow_redirects=False)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "batch-response"
