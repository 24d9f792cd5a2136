"""Protected identities (HL7 Sweden security labels sekretessmarkering, skyddadFolkbokforing): served without
name, address, telecom (and the other masked elements) to every client the policy does not explicitly
allow, in every response that carries the Patient."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.hooks import Principal, RequestContext
from gateway.services import Services
from tests.api.helpers import PNR, patient
from tests.conftest import Database
from tests.security.conftest import bearer, organisation_policy, register
from tests.security.test_organisation_policy import ALL, World, pnr


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
        assert "Skyddad" not in read.text and "Hemlig" not in read.text and "070-0000000" not in read.text
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
        "Patient?name:contains=kydd",
        "Patient?given=Tolvan",
        "Patient?address=Hemlig",
        "Patient?family=Skyddad&_sort=family",
        "Patient?_id=pp&phone=070-0000000",
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
    policy.identities.unmasked_clients = policy.identities.unmasked_clients | {allowed.client_id}
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
    policy.identities.rules = type(policy.rules)(
        **{**policy.rules.__dict__, "unmasked_organizations": frozenset({"SE-ALLOWED"})}
    )
    assert policy.mask(allowed_org, labelled) is labelled


PROTECTED = {
    "security": [
        {"system": "http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel", "code": "sekretessmarkering"}
    ]
}
# Whole values: a fragment such as "070-" can occur inside a random UUID.
SECRET = ("Skyddad", "Hemlig", "070-0000000", "070-1111111", "Nyskyddad")


def assert_nothing_secret(text: str) -> None:
    for value in SECRET:
        assert value not in text, value


def protected_patient(serial: int, **extra: Any) -> dict[str, Any]:
    return patient(
        pnr(serial),
        family="Nyskyddad",
        address=[{"city": "Hemlig"}],
        telecom=[{"system": "phone", "value": "070-1111111"}],
        meta=PROTECTED,
        **extra,
    )


def test_create_update_and_patch_responses_masked(seeded: Seeded) -> None:
    c, region = seeded.client, seeded.world.region
    for prefer in ({}, {"Prefer": "return=representation"}):
        created = c.post("/fhir/Patient", json=protected_patient(40 + len(prefer)), headers=region | prefer)
        assert created.status_code == 201, created.text
        assert_masked(created.json())
        assert_nothing_secret(created.text)
        new_id = created.json()["id"]
        full = protected_patient(40 + len(prefer), id=new_id, gender="female")
        updated = c.put(f"/fhir/Patient/{new_id}", json=full, headers=region | prefer)
        assert updated.status_code == 200, updated.text
        assert_masked(updated.json())
        assert_nothing_secret(updated.text)
        operations = [{"op": "replace", "path": "/gender", "value": "other"}]
        patch_headers = region | prefer | {"Content-Type": "application/json-patch+json"}
        patched = c.patch(f"/fhir/Patient/{new_id}", content=json.dumps(operations), headers=patch_headers)
        assert patched.status_code == 200, patched.text
        assert patched.json()["gender"] == "other"
        assert_masked(patched.json())
        assert_nothing_secret(patched.text)
    # the stored resource keeps what the response hides
    stored = seeded.services.write_path.run(
        RequestContext(Principal(client_id="cli")),
        lambda uow: uow.repository.current("Patient", new_id),
        write=False,
    )
    assert stored is not None and "Nyskyddad" in stored.content


def test_conditional_create_and_update_on_a_protected_match_masked(seeded: Seeded) -> None:
    c, world = seeded.client, seeded.world
    condition = f"identifier={PNR}|{pnr(6)}"
    for who in (world.a, world.region):
        matched = c.post(
            "/fhir/Patient", json=patient(pnr(6), family="Annan"), headers=who | {"If-None-Exist": condition}
        )
        assert matched.status_code == 200, matched.text
        assert matched.json()["id"] == "pp"
        assert_masked(matched.json())
        assert_nothing_secret(matched.text)
    full = c.get("/fhir/Patient/pp", headers=world.region).json()
    assert "name" not in full
    stored = protected_patient(6, id="pp", name=[{"family": "Skyddad"}])
    updated = c.put(f"/fhir/Patient?{condition}", json=stored, headers=world.region)
    assert updated.status_code == 200, updated.text
    assert_masked(updated.json())
    assert_nothing_secret(updated.text)


def test_transaction_and_batch_write_entries_masked(seeded: Seeded) -> None:
    c, world = seeded.client, seeded.world
    for kind in ("transaction", "batch"):
        serial = 50 if kind == "transaction" else 51
        bundle = {
            "resourceType": "Bundle",
            "type": kind,
            "entry": [
                {
                    "fullUrl": f"urn:uuid:00000000-0000-0000-0000-0000000000{serial}",
                    "resource": protected_patient(serial),
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "resource": patient(pnr(6), family="Annan"),
                    "request": {
                        "method": "POST",
                        "url": "Patient",
                        "ifNoneExist": f"identifier={PNR}|{pnr(6)}",
                    },
                },
                {
                    "resource": protected_patient(7, id="pq"),
                    "request": {"method": "PUT", "url": "Patient/pq"},
                },
                {
                    "resource": {
                        "resourceType": "Binary",
                        "contentType": "application/json-patch+json",
                        "data": base64.b64encode(
                            json.dumps([{"op": "add", "path": "/gender", "value": "male"}]).encode()
                        ).decode(),
                    },
                    "request": {"method": "PATCH", "url": "Patient/pp"},
                },
            ],
        }
        answer = c.post("/fhir", json=bundle, headers=world.region)
        assert answer.status_code == 200, answer.text
        entries = answer.json()["entry"]
        assert [e["response"]["status"][:3] for e in entries] == ["201", "200", "200", "200"], kind
        for item in entries:
            assert_masked(item["resource"])
        assert_nothing_secret(answer.text)
        assert "Folkbokford" not in answer.text


def ids(bundle: dict[str, Any]) -> list[str]:
    return [
        e["resource"]["id"] for e in bundle.get("entry", []) if e["resource"]["resourceType"] == "Patient"
    ]


def cursor_text(url: str) -> str:
    """What a cursor carries, as text: it is sealed, so nothing of it reads (docs/security.md)."""
    token = url.split("_cursor=")[1].split("&", maxsplit=1)[0]
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("latin-1")


@pytest.mark.parametrize("key", ["family", "name", "address", "address-city", "telecom", "phone"])
def test_sort_by_a_masked_parameter_treats_masked_as_valueless(seeded: Seeded, key: str) -> None:
    c, world = seeded.client, seeded.world
    ascending = ids(c.get(f"/fhir/Patient?_sort={key}", headers=world.a).json())
    descending = ids(c.get(f"/fhir/Patient?_sort=-{key}", headers=world.a).json())
    assert set(ascending) == {"pa", "pc", "pd", "pe", "pp", "pq"}, (ascending, descending)
    # no value sorts first ascending and last descending, in the order of storage, whatever the name
    assert ascending.index("pp") < ascending.index("pq")
    assert descending.index("pp") < descending.index("pq")
    if key in ("family", "name"):  # unmasked, Folkbokford would come before Skyddad, and after descending
        assert ascending[:2] == ["pp", "pq"], (ascending, descending)
        assert descending[-2:] == ["pp", "pq"]
    paged = c.get(f"/fhir/Patient?_sort={key}&_count=1", headers=world.a).json()
    following = next(link["url"] for link in paged["link"] if link["relation"] == "next")
    assert "skyddad" not in cursor_text(following).lower()


def test_sort_unmasked_for_an_allowed_client(seeded: Seeded) -> None:
    org_services, c = seeded.services, seeded.client
    allowed = register(org_services, ALL, org="SE-A")
    policy = organisation_policy(org_services)
    policy.identities.unmasked_clients = policy.identities.unmasked_clients | {allowed.client_id}
    headers = bearer(allowed.token(c, ALL))
    ascending = ids(c.get("/fhir/Patient?_sort=family", headers=headers).json())
    assert ascending[:2] == ["pq", "pp"]  # Folkbokford, Skyddad, then the Tolvanssons


def test_summary_count_counts_only_what_is_shown(seeded: Seeded) -> None:
    c, world = seeded.client, seeded.world
    for query, who, expected in (
        ("Patient?name=Skyddad&_summary=count", world.a, 0),
        ("Patient?family=Folkbokford&_summary=count", world.region, 0),
        ("Patient?_summary=count", world.a, 6),
        ("Patient?_summary=count", world.b, 2),
        ("Observation?_summary=count", world.nobody, 0),
        ("Patient?_summary=count", world.region, 7),
    ):
        bundle = c.get(f"/fhir/{query}", headers=who).json()
        assert bundle["total"] == expected, query
        assert "entry" not in bundle


def test_contained_protected_patients_masked(seeded: Seeded) -> None:
    """A labelled Patient contained in another resource is served masked as a stored one is."""
    world = seeded.world
    observation = {
        "resourceType": "Observation",
        "id": "obs-contained",
        "status": "final",
        "code": {"text": "anhörig"},
        "subject": {"reference": "Patient/pa"},
        "performer": [{"reference": "#kin"}],
        "contained": [protected_patient(901, id="kin")],
    }
    world.put(observation)
    read = world.client.get("/fhir/Observation/obs-contained", headers=world.region)
    assert read.status_code == 200
    [kin] = read.json()["contained"]
    assert_masked(kin)
    assert_nothing_secret(read.text)
    found = world.client.get("/fhir/Observation?_id=obs-contained", headers=world.region)
    assert_nothing_secret(found.text)
    policy = organisation_policy(seeded.services)
    kin_stored = protected_patient(901, id="kin")
    stored = {**observation, "contained": [kin_stored]}
    assert policy.mask(RequestContext(Principal(client_id="x", organization="SE-A")), stored) is not stored
    assert kin_stored["name"]  # the stored resource is not changed
