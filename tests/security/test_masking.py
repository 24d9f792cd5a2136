"""Protected identities (HL7 Sweden security labels sekretessmarkering, skyddadFolkbokforing): served without
name, address, telecom (and the other masked elements) to every client the policy does not explicitly
allow, in every response that carries the Patient."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.hooks import Principal, RequestContext
from gateway.services import Services
from tests.conftest import Database
from tests.security.conftest import bearer, register
from tests.security.test_organisation_policy import ALL, World, organisation_policy


@dataclass
class Seeded:
    services: Services
    client: TestClient
    world: World


@pytest.fixture
def seeded(database: Database) -> Iterator[Seeded]:
    database.clear()
    services = Services.build(database.settings(auth=True, organisation_policy=True), engine=database.engine)
    with TestClient(create_app(services.settings, services=services)) as client:
        yield Seeded(services, client, World(services, client))
    services.close()


HIDDEN = ("name", "address", "telecom", "photo", "contact", "text")


def assert_masked(resource: dict[str, Any]) -> None:
    assert resource["resourceType"] == "Patient"
    for element in HIDDEN:
        assert element not in resource, element
    assert {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "REDACTED",
    } in resource["meta"]["security"]
    assert resource["identifier"]  # the identity itself is not hidden, only how to find the person


def patients_in(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for item in bundle.get("entry", []):
        resource = item.get("resource", {})
        if resource.get("resourceType") == "Patient":
            found[resource["id"]] = resource
        elif resource.get("resourceType") == "Bundle":
            found.update(patients_in(resource))
    return found


def test_read_vread_history_masked(seeded: Seeded) -> None:
    world = seeded.world
    c, a = world.client, world.a
    for pid in ("pp", "pq"):
        read = c.get(f"/fhir/Patient/{pid}", headers=a)
        assert read.status_code == 200
        assert_masked(read.json())
        assert "Skyddad" not in read.text and "Hemlig" not in read.text and "070-" not in read.text
        assert_masked(c.get(f"/fhir/Patient/{pid}/_history/1", headers=a).json())
        history = c.get(f"/fhir/Patient/{pid}/_history", headers=a).json()
        assert_masked(history["entry"][0]["resource"])
    plain = c.get("/fhir/Patient/pa", headers=a).json()
    assert plain["name"][0]["family"] == "Tolvansson"
    assert "security" not in plain.get("meta", {})
    type_history = c.get("/fhir/Patient/_history", headers=a)
    assert "Skyddad" not in type_history.text and "Folkbokford" not in type_history.text


def test_search_include_and_bundles_masked(seeded: Seeded) -> None:
    world = seeded.world
    c, a = world.client, world.a
    search = c.get("/fhir/Patient", headers=a)
    found = patients_in(search.json())
    assert {"pp", "pq", "pa"} <= set(found)
    assert_masked(found["pp"])
    assert_masked(found["pq"])
    assert "name" in found["pa"]
    included = c.get("/fhir/DeviceRequest?_include=DeviceRequest:subject", headers=a)
    assert {"pp", "pq"} == set(patients_in(included.json()))
    for resource in patients_in(included.json()).values():
        assert_masked(resource)
    revincluded = c.get("/fhir/Patient?_id=pp&_revinclude=DeviceRequest:subject", headers=a).json()
    assert_masked(patients_in(revincluded)["pp"])
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": "Patient/pp"}},
            {"request": {"method": "GET", "url": "Patient?_id=pq"}},
        ],
    }
    answer = c.post("/fhir", json=batch, headers=a)
    assert answer.status_code == 200
    assert "Skyddad" not in answer.text and "Folkbokford" not in answer.text
    assert_masked(answer.json()["entry"][0]["resource"])


def test_search_cannot_confirm_a_hidden_name(seeded: Seeded) -> None:
    world = seeded.world
    c, a = world.client, world.a
    for query in (
        "Patient?name=Skyddad",
        "Patient?family=Skyddad",
        "Patient?address-city=Hemlig",
        "Patient?phone=070-0000000",
        "Patient?telecom=070-0000000",
        "Patient?name:exact=Skyddad",
        "DeviceRequest?subject:Patient.name=Skyddad",
    ):
        bundle = c.get(f"/fhir/{query}", headers=a).json()
        assert "pp" not in patients_in(bundle), query
        assert not [e for e in bundle.get("entry", []) if e["resource"]["resourceType"] == "DeviceRequest"], (
            query
        )
    assert c.get(
        "/fhir/Patient?identifier=" + "http://electronichealth.se/identifier/personnummer|", headers=a
    )
    assert "pp" in patients_in(c.get("/fhir/Patient?_id=pp", headers=a).json())


def test_only_explicitly_allowed_clients_see_the_identity(seeded: Seeded) -> None:
    org_services, org_client, world = seeded.services, seeded.client, seeded.world
    # the region-wide client is exempt from the organisation rules, but not allowed protected identities
    assert_masked(org_client.get("/fhir/Patient/pp", headers=world.region).json())
    allowed = register(org_services, ALL, org="SE-A")
    policy = organisation_policy(org_services)
    policy.unmasked_clients = policy.unmasked_clients | {allowed.client_id}
    headers = bearer(allowed.token(org_client, ALL))
    shown = org_client.get("/fhir/Patient/pp", headers=headers).json()
    assert shown["name"][0]["family"] == "Skyddad"
    assert shown["address"][0]["city"] == "Hemlig"
    found = org_client.get("/fhir/Patient?name=Skyddad", headers=headers).json()
    assert "pp" in patients_in(found)


def test_mask_unit(seeded: Seeded) -> None:
    org_services = seeded.services
    policy = organisation_policy(org_services)
    context = RequestContext(Principal(client_id="x", organization="SE-A"))
    labelled = {
        "resourceType": "Patient",
        "id": "p",
        "name": [{"family": "N"}],
        "meta": {
            "security": [
                {
                    "system": "http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel",
                    "code": "sekretessmarkering",
                }
            ]
        },
    }
    masked = policy.mask(context, labelled)
    assert "name" not in masked and labelled["name"]  # the stored resource is not changed
    other_system = {**labelled, "meta": {"security": [{"system": "urn:other", "code": "sekretessmarkering"}]}}
    assert policy.mask(context, other_system) is other_system
    observation = {"resourceType": "Observation", "id": "o", "meta": labelled["meta"]}
    assert policy.mask(context, observation) is observation
    allowed_org = RequestContext(Principal(client_id="x", organization="SE-ALLOWED"))
    policy.rules = type(policy.rules)(
        **{**policy.rules.__dict__, "unmasked_organizations": frozenset({"SE-ALLOWED"})}
    )
    assert policy.mask(allowed_org, labelled) is labelled
