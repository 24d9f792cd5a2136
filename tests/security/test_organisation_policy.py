"""The organisation policy (policy/access.yaml), case by case: one organisation's client never sees another's
data, through any interaction; what it may write; protected identities masked; hostile search values."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import Connection

from gateway.adapters.mapping import luhn_digit
from gateway.errors import FhirError, unprocessable
from gateway.hooks import Principal, RequestContext
from gateway.pipeline import UnitOfWork
from gateway.security import organisation
from gateway.services import Services
from gateway.store import relations
from gateway.store.relations import Actors
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


def assert_same(hidden: Response, unknown: Response, hidden_value: str, unknown_value: str) -> None:
    """The answers about something hidden and something that does not exist differ only in the value the
    client itself gave."""
    assert hidden.status_code == unknown.status_code, (hidden.text, unknown.text)
    assert hidden.text.replace(hidden_value, unknown_value) == unknown.text


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
    # deleting another organisation's resource in a transaction deletes nothing, answered as for an id
    # that does not exist
    answers = []
    for target in ("Observation/obsB", "Observation/finns-inte"):
        write = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "DELETE", "url": target}}],
        }
        answer = world.client.post("/fhir", json=write, headers=world.a)
        assert answer.status_code == 200
        answers.append(answer.json()["entry"])
    assert answers[0] == answers[1]
    assert world.client.get("/fhir/Observation/obsB", headers=world.b).status_code == 200


def test_conditional_create_and_update_on_a_hidden_match(world: World) -> None:
    """A patient identity (personnummer) held by a Patient the client may not read is the named
    exception: 409 `duplicate`, in Swedish, without the Patient's id or content, whichever way it is
    asked (If-None-Exist, conditional update, ifNoneExist, a conditional reference, a plain create)."""
    body = patient(pnr(2), family="Dubblett")
    condition = f"identifier={PNR}|{pnr(2)}"
    answers = [
        world.client.post("/fhir/Patient", json=body, headers={**world.a, "If-None-Exist": condition}),
        world.client.put(f"/fhir/Patient?{condition}", json=body, headers=world.a),
        world.client.post("/fhir/Patient", json=body, headers=world.a),
    ]
    entries: list[dict[str, Any]] = [
        {"resource": body, "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition}},
        {
            "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}},
            "request": {"method": "POST", "url": "Observation"},
        },
    ]
    entries[1]["resource"]["subject"] = ref(f"Patient?{condition}")
    for entry in entries:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
        answers.append(world.client.post("/fhir", json=bundle, headers=world.a))
    for answer in answers:
        assert answer.status_code == 409, answer.text
        [issue] = answer.json()["issue"]
        assert issue["code"] == "duplicate" and "delas inte" in issue["diagnostics"]
        assert "pb" not in answer.text and "Bsson" not in answer.text
    # its own patient's match is used, not duplicated
    mine = world.client.post(
        "/fhir/Patient",
        json=patient(pnr(1)),
        headers={**world.a, "If-None-Exist": f"identifier={PNR}|{pnr(1)}"},
    )
    assert mine.status_code == 200 and mine.json()["id"] == "pa"
    # other criteria match only what it may read: a hidden match is no match, and creates nothing by PUT
    assert world.client.put("/fhir/Patient?family=Bsson", json=body, headers=world.a).status_code == 404
    assert world.client.put("/fhir/Patient?family=Finnsinte", json=body, headers=world.a).status_code == 404


def test_writes(world: World) -> None:
    c, a, b = world.client, world.a, world.b
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "vikt"}}
    assert (
        c.post("/fhir/Observation", json={**obs, "subject": ref("Patient/pa")}, headers=a).status_code == 201
    )
    hidden = c.post("/fhir/Observation", json={**obs, "subject": ref("Patient/pb")}, headers=a)
    unknown = c.post("/fhir/Observation", json={**obs, "subject": ref("Patient/px")}, headers=a)
    assert_same(hidden, unknown, "Patient/pb", "Patient/px")
    assert hidden.status_code == 422
    # a Patient it registers itself is its patient (its identity is known nowhere else: a duplicate is
    # refused), and so what it writes for that patient; B does not see it
    new = c.post("/fhir/Patient", json=patient(pnr(8)), headers=a)
    assert new.status_code == 201
    pid = new.json()["id"]
    assert c.get(f"/fhir/Patient/{pid}", headers=a).status_code == 200
    assert c.get(f"/fhir/Patient/{pid}", headers=b).status_code == 404
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "for": ref(f"Patient/{pid}")}
    mine = {**task, "requester": ref("Organization/orgA")}
    assert c.post("/fhir/Task", json=mine, headers=a).status_code == 201
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
    hidden = c.delete("/fhir/Observation/obsB", headers=a)
    assert_same(hidden, c.delete("/fhir/Observation/x", headers=a), "Observation/obsB", "Observation/x")
    assert hidden.status_code == 200
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
    write_path = org_services.write_path
    every = frozenset({ALL})
    for client_id in ("adapter:hl7v2", "adapter:bestallningsportalen", "cli"):
        context = RequestContext(Principal(client_id=client_id, scopes=every))
        assert write_path.can_read(context, "Observation", "obsB")
    a = RequestContext(Principal(client_id="someone", organization="SE-A", scopes=every))
    assert not write_path.can_read(a, "Observation", "obsB")
    nobody = RequestContext(Principal(client_id="someone", scopes=every))
    assert not write_path.can_read(nobody, "Observation", "obsB")
    assert write_path.can_read(nobody, "Organization", "orgB")  # master data
    assert everything(world) >= SEEN_BY_A | SEEN_BY_B  # the region-wide client sees all


def test_who_it_is_is_found_once_per_request(
    org_services: Services, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    original = relations.find_actors

    def counting(connection: Connection, hsa: str, system: str) -> Actors:
        nonlocal calls
        calls += 1
        return original(connection, hsa, system)

    monkeypatch.setattr(organisation, "find_actors", counting)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "GET", "url": f"Patient/{p}"}} for p in ("pa", "pc", "pd", "pe")],
    }
    assert world.client.post("/fhir", json=bundle, headers=world.a).status_code == 200
    assert calls == 1


def test_a_transaction_sees_the_relationships_it_makes(world: World) -> None:
    """A Patient the client registers in a transaction is its patient from then on, for the later entries
    of that transaction too (a Task it requests, an Observation it makes, a search); references to what
    the transaction makes under a urn:uuid need not be readable by it (the Observation names no one)."""
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "requester": ref("Organization/orgA"),
    }
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "puls"}}
    new, observation = "urn:uuid:7d0c6c55-0000-4000-8000-000000000001", "urn:uuid:7d0c6c55-0000-4000-8000-2"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": new, "resource": patient(pnr(9)), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {**task, "for": ref(new), "focus": ref(observation)},
                "request": {"method": "POST", "url": "Task"},
            },
            {
                "fullUrl": observation,
                "resource": {**obs, "subject": ref(new)},
                "request": {"method": "POST", "url": "Observation"},
            },
            {"request": {"method": "GET", "url": "Task?requester=Organization/orgA"}},
        ],
    }
    answer = world.client.post("/fhir", json=bundle, headers=world.a)
    assert answer.status_code == 200, answer.text
    entries = answer.json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["201"] * 3 + ["200"]
    pid = entries[0]["resource"]["id"]
    assert f"Task/{entries[1]['resource']['id']}" in matches(entries[3]["resource"])
    assert world.client.get(f"/fhir/Patient/{pid}", headers=world.a).status_code == 200
    assert world.client.get(f"/fhir/Patient/{pid}", headers=world.b).status_code == 404


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
    # the patient is hidden from it: a reference to it answers as one to a patient that does not exist
    assert c.post("/fhir/Task", json=task, headers=b).status_code == 422
    assert c.post("/fhir/DeviceRequest", json=request, headers=b).status_code == 422
    assert c.put("/fhir/Task/mine", json={**task, "id": "mine"}, headers=b).status_code == 404
    # nor by turning a resource of its own into one for that patient
    own = {**task, "for": ref("Patient/pb")}
    created = c.post("/fhir/Task", json=own, headers=b)
    assert created.status_code == 201
    moved = {**created.json(), "for": ref("Patient/pa")}
    assert c.put(f"/fhir/Task/{moved['id']}", json=moved, headers=b).status_code == 422
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(pnr(11)), "request": {"method": "POST", "url": "Patient"}},
            {"resource": task, "request": {"method": "POST", "url": "Task"}},
        ],
    }
    assert c.post("/fhir", json=bundle, headers=b).status_code == 422
    assert c.get("/fhir/Patient/pa", headers=b).status_code == 404


def test_a_deleted_id_is_not_taken_over(world: World) -> None:
    """Only region-wide clients and the gateway's own writers create by PUT: a client cannot take over
    the id of a deleted Patient (what others wrote about it may still name it), nor of a deleted
    CareTeam another organisation's CarePlan still names; it gets the 404 of an unknown id."""
    c = world.client
    assert c.delete("/fhir/Patient/pe", headers=world.region).status_code in (200, 204)
    assert c.delete("/fhir/CareTeam/ctA", headers=world.region).status_code in (200, 204)
    team: dict[str, Any] = {"resourceType": "CareTeam", "participant": [{"member": ref("Organization/orgB")}]}
    for res_type, res_id, body in (("Patient", "pe", patient(pnr(5))), ("CareTeam", "ctA", team)):
        taken = c.put(f"/fhir/{res_type}/{res_id}", json={**body, "id": res_id}, headers=world.b)
        unknown = c.put(f"/fhir/{res_type}/{res_id}x", json={**body, "id": res_id + "x"}, headers=world.b)
        assert_same(taken, unknown, f"{res_type}/{res_id}", f"{res_type}/{res_id}x")
        assert taken.status_code == 404
    assert c.get("/fhir/Patient/pd", headers=world.b).status_code == 404


def test_relationships_of_a_rolled_back_unit_of_work_are_forgotten(
    org_services: Services, world: World
) -> None:
    write_path = org_services.write_path
    context = RequestContext(Principal(client_id="someone", organization="SE-A", scopes=frozenset({ALL})))
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "requester": ref("Organization/orgA"),
    }
    made: list[str] = []

    def related_then_refused(uow: UnitOfWork) -> None:
        created = write_path.create(uow, patient(pnr(12)))  # its own patient from now on
        made.append(created.stored.res_id)
        write_path.create(uow, {**task, "for": ref(f"Patient/{made[0]}")})
        assert write_path.can_read(uow.context, "Patient", made[0])  # within its transaction
        raise unprocessable("refused after the write")

    with pytest.raises(FhirError):
        write_path.run(context, related_then_refused)
    assert not write_path.run(context, lambda uow: write_path.can_read(uow.context, "Patient", made[0]))
    with pytest.raises(FhirError) as refused:  # nor is the Patient A's any more: it was rolled back
        write_path.run(
            context, lambda uow: write_path.create(uow, {**task, "for": ref(f"Patient/{made[0]}")})
        )
    assert refused.value.status == 422


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
