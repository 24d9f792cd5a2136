"""The organisation policy (policy/access.yaml), case by case: one organisation's client never sees another's
data, through any interaction; what it may write; protected identities masked; hostile search values."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection

from gateway.adapters.mapping import luhn_digit
from gateway.errors import FhirError, unprocessable
from gateway.hooks import Principal, RequestContext
from gateway.pipeline import UnitOfWork
from gateway.services import Services
from tests.api.helpers import HSA, PNR, patient
from tests.security.conftest import bearer, organisation_policy, register

ALL = "system/*.cruds"
LABELS = "http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel"


def pnr(serial: int) -> str:
    """A fictitious personnummer (1912-12-xx) with a correct Luhn digit."""
    body = f"121212{serial:03d}"
    return f"19{body}{luhn_digit(body)}"


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


@pytest.fixture
def org_services(secure_services: Services) -> Services:
    """Auth and the organisation policy on (its default)."""
    return secure_services


@pytest.fixture
def org_client(secure_client: TestClient) -> TestClient:
    return secure_client


class World:
    """Two organisations, A and B, their people and patients, seeded by the region-wide client."""

    def __init__(self, services: Services, client: TestClient) -> None:
        self.client = client
        region = register(services, ALL, org="SE-REGION")
        organisation_policy(services).region_clients = frozenset({region.client_id})
        self.region = bearer(region.token(client, ALL))
        self.a = bearer(register(services, ALL, org="SE-A").token(client, ALL))
        self.b = bearer(register(services, ALL, org="SE-B").token(client, ALL))
        self.nobody = bearer(register(services, ALL, org="SE-UNKNOWN").token(client, ALL))
        for resource in self.resources():
            self.put(resource)

    def put(self, resource: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        response = self.client.put(url, json=resource, headers=headers or self.region)
        assert response.status_code in (200, 201), response.text

    def resources(self) -> list[dict[str, Any]]:
        obs = {"resourceType": "Observation", "status": "final", "code": {"text": "puls"}}
        return [
            {"resourceType": "Organization", "id": "orgA", "identifier": [{"system": HSA, "value": "SE-A"}]},
            {"resourceType": "Organization", "id": "orgB", "identifier": [{"system": HSA, "value": "SE-B"}]},
            {"resourceType": "Practitioner", "id": "pracA"},
            {
                "resourceType": "PractitionerRole",
                "id": "roleA",
                "organization": ref("Organization/orgA"),
                "practitioner": ref("Practitioner/pracA"),
            },
            patient(pnr(1), id="pa"),
            patient(pnr(2), id="pb", family="Bsson"),
            patient(pnr(3), id="pc"),
            patient(pnr(4), id="pd"),
            patient(pnr(5), id="pe"),
            patient(
                pnr(6),
                id="pp",
                family="Skyddad",
                address=[{"city": "Hemlig"}],
                telecom=[{"system": "phone", "value": "070-0000000"}],
                meta={"security": [{"system": LABELS, "code": "sekretessmarkering"}]},
            ),
            patient(
                pnr(7),
                id="pq",
                family="Folkbokford",
                meta={"security": [{"system": LABELS, "code": "skyddadFolkbokforing"}]},
            ),
            # A: a Task it requests and owns for pa, pointing one level down at srA and obsLinked
            {**obs, "id": "obsLinked", "subject": ref("Patient/pa")},
            {**obs, "id": "obsHidden", "subject": ref("Patient/pa")},
            {
                "resourceType": "ServiceRequest",
                "id": "srA",
                "status": "active",
                "intent": "order",
                "subject": ref("Patient/pa"),
            },
            {
                "resourceType": "Task",
                "id": "tA",
                "status": "requested",
                "intent": "order",
                "for": ref("Patient/pa"),
                "requester": ref("Organization/orgA"),
                "owner": ref("Organization/orgA"),
                "focus": ref("ServiceRequest/srA"),
                "input": [{"type": {"text": "mätning"}, "valueReference": ref("Observation/obsLinked")}],
            },
            {**obs, "id": "obsA", "subject": ref("Patient/pa"), "performer": [ref("PractitionerRole/roleA")]},
            # B: provided pb's Encounter, with its Observation
            {
                "resourceType": "Encounter",
                "id": "encB",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": ref("Patient/pb"),
                "serviceProvider": ref("Organization/orgB"),
            },
            {**obs, "id": "obsB", "subject": ref("Patient/pb"), "performer": [ref("Organization/orgB")]},
            # A shared Task: B requests, A owns, for pc
            {
                "resourceType": "Task",
                "id": "tShared",
                "status": "requested",
                "intent": "order",
                "for": ref("Patient/pc"),
                "requester": ref("Organization/orgB"),
                "owner": ref("Organization/orgA"),
                "description": "rengöring",
            },
            # A is on pd's CarePlan's CareTeam (by its PractitionerRole)
            {
                "resourceType": "CareTeam",
                "id": "ctA",
                "participant": [{"member": ref("PractitionerRole/roleA")}],
            },
            {
                "resourceType": "CarePlan",
                "id": "cpD",
                "status": "active",
                "intent": "plan",
                "subject": ref("Patient/pd"),
                "careTeam": [ref("CareTeam/ctA")],
            },
            # A owns a Device at pe; A's prescriber requests a device for the protected patients
            {
                "resourceType": "Device",
                "id": "devA",
                "owner": ref("Organization/orgA"),
                "patient": ref("Patient/pe"),
            },
            {
                "resourceType": "DeviceRequest",
                "id": "drP",
                "status": "active",
                "intent": "order",
                "codeCodeableConcept": {"text": "syrgas"},
                "subject": ref("Patient/pp"),
                "requester": ref("PractitionerRole/roleA"),
            },
            {
                "resourceType": "DeviceRequest",
                "id": "drQ",
                "status": "active",
                "intent": "order",
                "codeCodeableConcept": {"text": "rullstol"},
                "subject": ref("Patient/pq"),
                "performer": ref("Organization/orgA"),
            },
            # a Communication about B's patient, addressed to A's practitioner
            {
                "resourceType": "Communication",
                "id": "comA",
                "status": "completed",
                "subject": ref("Patient/pb"),
                "recipient": [ref("Practitioner/pracA")],
            },
            {
                "resourceType": "Communication",
                "id": "comB",
                "status": "completed",
                "subject": ref("Patient/pb"),
                "recipient": [ref("Organization/orgB")],
            },
            # the risk flag of pa, by B: visible to every organisation related to pa
            {
                "resourceType": "Flag",
                "id": "flagA",
                "status": "active",
                "code": {"text": "hög risk"},
                "subject": ref("Patient/pa"),
                "author": ref("Organization/orgB"),
            },
            {
                "resourceType": "Flag",
                "id": "flagB",
                "status": "active",
                "code": {"text": "hög risk"},
                "subject": ref("Patient/pb"),
            },
        ]


DIRECTORY = {
    "Organization/orgA",
    "Organization/orgB",
    "Practitioner/pracA",
    "PractitionerRole/roleA",
}
SEEN_BY_A = DIRECTORY | {
    "Patient/pa",
    "Patient/pc",
    "Patient/pd",
    "Patient/pe",
    "Patient/pp",
    "Patient/pq",
    "Task/tA",
    "Task/tShared",
    "ServiceRequest/srA",
    "Observation/obsLinked",
    "Observation/obsA",
    "CareTeam/ctA",
    "CarePlan/cpD",
    "Device/devA",
    "DeviceRequest/drP",
    "DeviceRequest/drQ",
    "Communication/comA",
    "Flag/flagA",
}
SEEN_BY_B = DIRECTORY | {
    "Patient/pb",
    "Patient/pc",
    "Encounter/encB",
    "Observation/obsB",
    "Task/tShared",
    "Communication/comB",
    "Flag/flagB",
}
TYPES = [
    "Patient",
    "Task",
    "ServiceRequest",
    "Observation",
    "Encounter",
    "CareTeam",
    "CarePlan",
    "Device",
    "DeviceRequest",
    "Communication",
    "Flag",
    "Organization",
    "Practitioner",
    "PractitionerRole",
]


@pytest.fixture
def world(org_services: Services, org_client: TestClient) -> World:
    return World(org_services, org_client)


def everything(world: World) -> set[str]:
    found = set()
    for res_type in TYPES:
        bundle = world.client.get(f"/fhir/{res_type}?_count=1000", headers=world.region).json()
        found |= {f"{res_type}/{e['resource']['id']}" for e in bundle.get("entry", [])}
    return found


def matches(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if "resource" in e
        and e["resource"]["resourceType"] != "OperationOutcome"
        and (mode is None or e.get("search", {}).get("mode") == mode)
    }


def test_read_vread_and_history_follow_the_relationships(world: World) -> None:
    every = everything(world)
    assert every >= SEEN_BY_A | SEEN_BY_B
    for who, seen in ((world.a, SEEN_BY_A), (world.b, SEEN_BY_B), (world.nobody, DIRECTORY)):
        for target in sorted(every):
            expected = 200 if target in seen else 404
            assert world.client.get(f"/fhir/{target}", headers=who).status_code == expected, target
            assert world.client.get(f"/fhir/{target}/_history/1", headers=who).status_code == expected, target
            assert world.client.get(f"/fhir/{target}/_history", headers=who).status_code == expected, target


def test_hidden_reads_as_unknown(world: World) -> None:
    hidden = world.client.get("/fhir/Observation/obsB", headers=world.a)
    unknown = world.client.get("/fhir/Observation/no-such-id", headers=world.a)
    assert hidden.status_code == unknown.status_code == 404
    assert "obsB" in hidden.text and "no-such-id" in unknown.text  # only the id asked for is echoed
    assert "Bsson" not in hidden.text and "orgB" not in hidden.text


def test_search_and_type_history_filter(world: World) -> None:
    for who, seen in ((world.a, SEEN_BY_A), (world.b, SEEN_BY_B), (world.nobody, DIRECTORY)):
        for res_type in TYPES:
            expected = {t for t in seen if t.startswith(res_type + "/")}
            bundle = world.client.get(f"/fhir/{res_type}?_total=accurate", headers=who).json()
            assert matches(bundle) == expected, res_type
            if "total" in bundle:
                assert bundle["total"] == len(expected)
            posted = world.client.post(f"/fhir/{res_type}/_search", headers=who).json()
            assert matches(posted) == expected, res_type
            history = world.client.get(f"/fhir/{res_type}/_history", headers=who).json()
            assert {f"{res_type}/{e['resource']['id']}" for e in history["entry"]} == expected


def test_include_and_revinclude_filter(world: World) -> None:
    tasks = world.client.get("/fhir/Task?_include=Task:patient&_include=Task:focus", headers=world.b).json()
    assert matches(tasks) == {"Task/tShared", "Patient/pc"}
    obs = world.client.get(
        "/fhir/Patient?_id=pa,pb&_revinclude=Observation:subject&_revinclude=Flag:subject", headers=world.a
    ).json()
    assert matches(obs, "match") == {"Patient/pa"}
    assert matches(obs, "include") == {"Observation/obsLinked", "Observation/obsA", "Flag/flagA"}
    encounters = world.client.get("/fhir/Observation?_include=Observation:subject", headers=world.b).json()
    assert matches(encounters) == {"Observation/obsB", "Patient/pb"}


def test_transaction_and_batch_entries(world: World) -> None:
    gets = [
        {"request": {"method": "GET", "url": "Patient/pb"}},
        {"request": {"method": "GET", "url": "Patient/pa"}},
        {"request": {"method": "GET", "url": "Observation/obsB/_history/1"}},
        {"request": {"method": "GET", "url": "Observation?subject=Patient/pb"}},
        {"request": {"method": "GET", "url": "Observation?_include=Observation:subject"}},
    ]
    batch = {"resourceType": "Bundle", "type": "batch", "entry": gets}
    answer = world.client.post("/fhir", json=batch, headers=world.a).json()
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses[0].startswith("404") and statuses[1].startswith("200") and statuses[2].startswith("404")
    assert matches(answer["entry"][3]["resource"]) == set()
    assert matches(answer["entry"][4]["resource"]) == {
        "Observation/obsLinked",
        "Observation/obsA",
        "Patient/pa",
    }
    assert "Bsson" not in str(answer)
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": gets[:1]}
    refused = world.client.post("/fhir", json=transaction, headers=world.a)
    assert refused.status_code == 404
    # a transaction writing to another organisation's resource is rolled back
    write = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": ref("Patient/pa"),
                },
                "request": {"method": "POST", "url": "Observation"},
            },
            {"request": {"method": "DELETE", "url": "Observation/obsB"}},
        ],
    }
    assert world.client.post("/fhir", json=write, headers=world.a).status_code == 404
    assert world.client.get("/fhir/Observation/obsB", headers=world.b).status_code == 200


def test_conditional_create_and_update_on_a_hidden_match(world: World) -> None:
    body = patient(pnr(2), family="Dubblett")
    created = world.client.post(
        "/fhir/Patient", json=body, headers={**world.a, "If-None-Exist": f"identifier={PNR}|{pnr(2)}"}
    )
    assert created.status_code == 403
    outcome = created.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "pb" not in created.text and "Bsson" not in created.text
    updated = world.client.put(f"/fhir/Patient?identifier={PNR}|{pnr(2)}", json=body, headers=world.a)
    assert updated.status_code == 403 and "Bsson" not in updated.text
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": body,
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={PNR}|{pnr(2)}"},
            }
        ],
    }
    refused = world.client.post("/fhir", json=transaction, headers=world.a)
    assert refused.status_code == 403 and "Bsson" not in refused.text
    # its own patient's match is used, not duplicated
    mine = world.client.post(
        "/fhir/Patient",
        json=patient(pnr(1)),
        headers={**world.a, "If-None-Exist": f"identifier={PNR}|{pnr(1)}"},
    )
    assert mine.status_code == 200 and mine.json()["id"] == "pa"


def test_writes(world: World) -> None:
    c, a, b = world.client, world.a, world.b
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "vikt"}}
    assert (
        c.post("/fhir/Observation", json={**obs, "subject": ref("Patient/pa")}, headers=a).status_code == 201
    )
    assert (
        c.post("/fhir/Observation", json={**obs, "subject": ref("Patient/pb")}, headers=a).status_code == 403
    )
    # a Task it requests makes no relationship: not even with a Patient it made in an earlier request
    # (one made in the same transaction counts: test_a_transaction_sees_the_relationships_it_makes)
    new = c.post("/fhir/Patient", json=patient(pnr(8)), headers=a)
    assert new.status_code == 201
    pid = new.json()["id"]
    assert c.get(f"/fhir/Patient/{pid}", headers=a).status_code == 404
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "for": ref(f"Patient/{pid}")}
    assert c.post("/fhir/Task", json=task, headers=a).status_code == 403
    mine = {**task, "requester": ref("Organization/orgA")}
    assert c.post("/fhir/Task", json=mine, headers=a).status_code == 403
    assert c.get(f"/fhir/Patient/{pid}", headers=a).status_code == 404
    # for no patient, a Task it requests is its own
    assert c.post("/fhir/Task", json={**mine, "for": None}, headers=a).status_code == 201
    # update or delete only what it authored, requested or owns
    linked = c.get("/fhir/Observation/obsLinked", headers=a).json()
    assert (
        c.put("/fhir/Observation/obsLinked", json={**linked, "status": "amended"}, headers=a).status_code
        == 403
    )
    assert c.delete("/fhir/Observation/obsLinked", headers=a).status_code == 403
    own = c.get("/fhir/Task/tA", headers=a).json()
    assert c.put("/fhir/Task/tA", json={**own, "description": "ny"}, headers=a).status_code == 200
    assert c.put("/fhir/Task/tA", json={**own, "description": "B"}, headers=b).status_code == 404
    assert c.delete("/fhir/Observation/obsB", headers=a).status_code == 404
    assert c.get("/fhir/Observation/obsB", headers=b).status_code == 200
    performed = c.get("/fhir/Observation/obsA", headers=a).json()
    assert (
        c.put("/fhir/Observation/obsA", json={**performed, "status": "amended"}, headers=a).status_code == 403
    )
    # the owner of a Task changes only status, businessStatus, statusReason and output
    shared = c.get("/fhir/Task/tShared", headers=a).json()
    started = {**shared, "status": "in-progress", "businessStatus": {"text": "påbörjad"}}
    assert c.put("/fhir/Task/tShared", json=started, headers=a).status_code == 200
    shared = c.get("/fhir/Task/tShared", headers=a).json()
    refused = c.put("/fhir/Task/tShared", json={**shared, "description": "annat"}, headers=a)
    assert refused.status_code == 403 and "description" in refused.text
    assert c.delete("/fhir/Task/tShared", headers=a).status_code == 403
    patch = [{"op": "add", "path": "/priority", "value": "urgent"}]
    patched = c.patch(
        "/fhir/Task/tShared", json=patch, headers={**a, "Content-Type": "application/json-patch+json"}
    )
    assert patched.status_code == 403
    assert c.put("/fhir/Task/tShared", json={**shared, "description": "annat"}, headers=b).status_code == 200
    # directory: readable by all, written only for itself
    role = {"resourceType": "PractitionerRole", "organization": ref("Organization/orgB")}
    assert c.post("/fhir/PractitionerRole", json=role, headers=a).status_code == 403
    mine = {**role, "organization": ref("Organization/orgA")}
    assert c.post("/fhir/PractitionerRole", json=mine, headers=a).status_code == 201


def test_exempt_clients_and_unknown_organisation(org_services: Services, world: World) -> None:
    policy = organisation_policy(org_services)
    hidden = {"resourceType": "Observation", "id": "x", "subject": ref("Patient/pb")}
    for client_id in ("adapter:hl7v2", "adapter:bestallningsportalen", "cli"):
        assert policy.can_read(RequestContext(Principal(client_id=client_id)), hidden)
    assert not policy.can_read(RequestContext(Principal(client_id="someone", organization="SE-A")), hidden)
    assert not policy.can_read(RequestContext(Principal(client_id="someone")), hidden)
    assert everything(world) >= SEEN_BY_A | SEEN_BY_B  # the region-wide client sees all


def test_relations_are_computed_once_per_request(org_services: Services, world: World) -> None:
    policy = organisation_policy(org_services)
    context = RequestContext(Principal(client_id="someone", organization="SE-A"))
    calls = 0
    original = policy._compute

    def counting(connection: Connection, hsa: str) -> Any:
        nonlocal calls
        calls += 1
        return original(connection, hsa)

    policy._compute = counting  # type: ignore[method-assign]
    for target in ("pa", "pb", "pc", "pd", "pe"):
        policy.can_read(context, {"resourceType": "Patient", "id": target})
    assert calls == 1
    assert policy.relations(context).patients == {"pa", "pc", "pd", "pe", "pp", "pq"}


def test_a_transaction_sees_the_relationships_it_makes(world: World) -> None:
    """A Patient the client creates in a transaction is one it may write for in that transaction (no one
    else's data is about it); the Task it requests for it then relates it, for the later entries too."""
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "requester": ref("Organization/orgA"),
    }
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "puls"}}
    new = "urn:uuid:7d0c6c55-0000-4000-8000-000000000001"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": new, "resource": patient(pnr(9)), "request": {"method": "POST", "url": "Patient"}},
            {"resource": {**task, "for": ref(new)}, "request": {"method": "POST", "url": "Task"}},
            {"resource": {**obs, "subject": ref(new)}, "request": {"method": "POST", "url": "Observation"}},
            {"resource": patient(pnr(10), id="pnew"), "request": {"method": "PUT", "url": "Patient/pnew"}},
            # entries run DELETE, POST, PUT, GET: these PUTs follow the Patient's, in order
            {
                "resource": {
                    **obs,
                    "id": "onew",
                    "subject": ref("Patient/pnew"),
                    "performer": [ref("Organization/orgA")],
                },
                "request": {"method": "PUT", "url": "Observation/onew"},
            },
            {
                "resource": {**task, "id": "tnew", "for": ref("Patient/pnew")},
                "request": {"method": "PUT", "url": "Task/tnew"},
            },
            {"request": {"method": "GET", "url": "Patient/pnew"}},
            {"request": {"method": "GET", "url": "Observation?subject=Patient/pnew"}},
        ],
    }
    answer = world.client.post("/fhir", json=bundle, headers=world.a)
    assert answer.status_code == 200, answer.text
    entries = answer.json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["201"] * 6 + ["200"] * 2
    assert entries[6]["resource"]["id"] == "pnew"
    assert matches(entries[7]["resource"]) == {"Observation/onew"}
    assert world.client.get("/fhir/Patient/pnew", headers=world.a).status_code == 200
    assert world.client.get("/fhir/Patient/pnew", headers=world.b).status_code == 404


def test_a_client_cannot_relate_itself_to_a_patient(world: World) -> None:
    """Naming a patient and itself in a resource of its own (a Task it requests and owns, a DeviceRequest
    it prescribes) does not make another organisation's patient its own: refused, in any form."""
    c, b = world.client, world.b
    assert c.get("/fhir/Patient/pa", headers=b).status_code == 404
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": ref("Patient/pa"),
        "requester": ref("Organization/orgB"),
        "owner": ref("Organization/orgB"),
    }
    request = {
        "resourceType": "DeviceRequest",
        "status": "active",
        "intent": "order",
        "codeCodeableConcept": {"text": "rollator"},
        "subject": ref("Patient/pa"),
        "requester": ref("Organization/orgB"),
    }
    assert c.post("/fhir/Task", json=task, headers=b).status_code == 403
    assert c.post("/fhir/DeviceRequest", json=request, headers=b).status_code == 403
    assert c.put("/fhir/Task/mine", json={**task, "id": "mine"}, headers=b).status_code == 403
    # nor by turning a resource of its own into one for that patient
    own = {**task, "for": ref("Patient/pb")}
    created = c.post("/fhir/Task", json=own, headers=b)
    assert created.status_code == 201
    moved = {**created.json(), "for": ref("Patient/pa")}
    assert c.put(f"/fhir/Task/{moved['id']}", json=moved, headers=b).status_code == 403
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(pnr(11)), "request": {"method": "POST", "url": "Patient"}},
            {"resource": task, "request": {"method": "POST", "url": "Task"}},
        ],
    }
    assert c.post("/fhir", json=bundle, headers=b).status_code == 403
    assert c.get("/fhir/Patient/pa", headers=b).status_code == 404


def test_a_deleted_patient_made_again_is_not_new(world: World) -> None:
    """A Patient id stored before (deleted since) is not a new patient: what others wrote about it may
    still be there, so a client re-creating it does not become related to it."""
    c = world.client
    assert c.delete("/fhir/Patient/pe", headers=world.region).status_code in (200, 204)
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "for": ref("Patient/pe")}
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(pnr(5), id="pe"), "request": {"method": "PUT", "url": "Patient/pe"}},
            {
                "resource": {**task, "requester": ref("Organization/orgB")},
                "request": {"method": "POST", "url": "Task"},
            },
        ],
    }
    assert c.post("/fhir", json=bundle, headers=world.b).status_code == 403


def test_relationships_of_a_rolled_back_unit_of_work_are_forgotten(
    org_services: Services, world: World
) -> None:
    policy = organisation_policy(org_services)
    write_path = org_services.write_path
    context = RequestContext(Principal(client_id="someone", organization="SE-A", scopes=frozenset({ALL})))
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": ref("Patient/pb"),
        "requester": ref("Organization/orgA"),
    }
    fresh = {**patient(pnr(12)), "id": "pfresh"}

    def related_then_refused(uow: UnitOfWork) -> None:
        assert not policy.can_read(uow.context, fresh)
        write_path.update(uow, "Patient", "pfresh", fresh)  # new: A may write for it in this unit
        write_path.create(uow, {**task, "for": ref("Patient/pfresh")})
        assert policy.can_read(uow.context, fresh)  # the pending Task counts within its transaction
        raise unprocessable("refused after the write")

    with pytest.raises(FhirError):
        write_path.run(context, related_then_refused)
    assert not write_path.run(context, lambda uow: policy.can_read(uow.context, fresh), write=False)
    with pytest.raises(FhirError) as refused:  # nor is the Patient new to A any more: it was rolled back
        write_path.run(context, lambda uow: write_path.create(uow, {**task, "for": ref("Patient/pfresh")}))
    assert refused.value.status == 403


HOSTILE = [
    "' OR '1'='1",
    "1; DROP TABLE resource; --",
    "%",
    "_",
    "\\",
    "*",
    "Patient/pb",
    "pb",
    "orgB",
    "<script>alert(1)</script>",
    "ge2020-01-01'--",
    "x" * 3000,
    "Δ\u200b\U0001f600",
    "|",
    "$",
    ",,,",
    "urn:oid:1.2.752.29.4.19|SE-B",
]
PARAMETERS = [
    ("Patient", "name"),
    ("Patient", "family"),
    ("Patient", "identifier"),
    ("Patient", "birthdate"),
    ("Patient", "_id"),
    ("Patient", "_lastUpdated"),
    ("Patient", "_profile"),
    ("Patient", "general-practitioner"),
    ("Observation", "subject"),
    ("Observation", "subject:Patient.name"),
    ("Observation", "code"),
    ("Observation", "value-quantity"),
    ("Observation", "date"),
    ("Observation", "performer"),
    ("Task", "owner"),
    ("Task", "requester:identifier"),
    ("RiskAssessment", "probability"),
    ("Patient", "_has:Observation:subject:performer"),
    ("Patient", "_sort"),
    ("Patient", "_count"),
    ("Observation", "_include"),
]


def test_hostile_search_values_are_data(world: World) -> None:
    for res_type, name in PARAMETERS:
        for value in HOSTILE:
            response = world.client.get(f"/fhir/{res_type}", params={name: value}, headers=world.a)
            assert response.status_code in (200, 400), (res_type, name, value, response.text)
            if response.status_code == 200:
                assert matches(response.json()) <= SEEN_BY_A, (res_type, name, value)
            assert "Bsson" not in response.text
    assert world.client.get("/fhir/Patient/pb", headers=world.b).status_code == 200  # nothing dropped
