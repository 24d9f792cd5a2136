"""Patient/{id}/$everything as organisation-scoped clients see it: the compartment plus Device and Task,
what they reference and their Provenance, as a search by the same client shows it; an unrelated
organisation gets the 404 of an unknown patient; paging by `_count` and by the response limit; the
R4 parameters; one AuditEvent naming the patient."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.services import Services
from tests.security.conftest import bearer, register
from tests.security.test_organisation_policy import World, ref

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
EXTRA: list[dict[str, Any]] = [
    {
        "resourceType": "Provenance",
        "id": "provA",
        "target": [ref("Task/tA")],
        "recorded": "2026-01-02T10:00:00Z",
        "agent": [{"who": ref("Organization/orgA")}],
    },
    {"resourceType": "Binary", "id": "rawA", "contentType": "text/plain", "data": "aGVq"},
    {
        "resourceType": "Observation",
        "id": "obsOld",
        "status": "final",
        "code": {"text": "vikt"},
        "subject": ref("Patient/pa"),
        "performer": [ref("PractitionerRole/roleA")],
        "effectiveDateTime": "2001-05-01",
    },
]


@pytest.fixture
def world(secure_services: Services, secure_client: TestClient) -> World:
    found = World(secure_services, secure_client)
    for resource in EXTRA:
        found.put(resource)
    return found


def everything(world: World, headers: dict[str, str], query: str = "", patient: str = "pa") -> Any:
    response = world.client.get(f"/fhir/Patient/{patient}/$everything{query}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def shown(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if mode is None or e["search"]["mode"] == mode
    }


def next_link(bundle: dict[str, Any]) -> str | None:
    found = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
    return found[0].replace("http://testserver", "") if found else None


def all_pages(world: World, headers: dict[str, str], query: str) -> list[dict[str, Any]]:
    pages = [everything(world, headers, query)]
    while (nxt := next_link(pages[-1])) is not None:
        response = world.client.get(nxt, headers=headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        assert len(pages) < 50
    return pages


MEMBERS_FOR_A = {
    "Patient/pa",
    "Task/tA",
    "ServiceRequest/srA",
    "Observation/obsLinked",
    "Observation/obsA",
    "Observation/obsOld",
    "Flag/flagA",
}


def test_what_the_organisation_sees_and_nothing_else(world: World) -> None:
    """Kommun A sees pa's compartment as its searches do (obsHidden not), with what it references (the
    role, the organisations, the practitioner is two steps away) and the Task's Provenance; the region
    sees obsHidden too; no AuditEvent or Binary either way."""
    bundle = everything(world, world.a)
    assert bundle["type"] == "searchset"
    assert shown(bundle, "match") == MEMBERS_FOR_A
    assert bundle["total"] == len(MEMBERS_FOR_A)
    included = shown(bundle, "include")
    assert {"Organization/orgA", "Organization/orgB", "PractitionerRole/roleA"} <= included
    assert "Provenance/provA" in included
    assert not {r for r in included if r.split("/")[0] in ("AuditEvent", "Binary")}
    searched = world.client.get("/fhir/Observation?subject=Patient/pa", headers=world.a).json()
    assert {f"Observation/{e['resource']['id']}" for e in searched["entry"]} == {
        r for r in MEMBERS_FOR_A if r.startswith("Observation/")
    }
    region = everything(world, world.region)
    assert shown(region, "match") == MEMBERS_FOR_A | {"Observation/obsHidden"}


def test_unrelated_organisation_gets_the_404_of_an_unknown_patient(world: World) -> None:
    hidden = world.client.get("/fhir/Patient/pa/$everything", headers=world.b)
    unknown = world.client.get("/fhir/Patient/px/$everything", headers=world.b)
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.text.replace("pa", "px") == unknown.text
    for query in ("?_count=1", "?_type=Observation", "?_since=2000-01-01"):
        hidden = world.client.get(f"/fhir/Patient/pa/$everything{query}", headers=world.nobody)
        assert hidden.status_code == 404, hidden.text


def test_count_pages_link_by_next_and_cover_everything_once(world: World) -> None:
    pages = all_pages(world, world.a, "?_count=2")
    assert len(pages) == 4
    matches = [shown(p, "match") for p in pages]
    assert all(len(m) <= 2 for m in matches)
    assert set().union(*matches) == MEMBERS_FOR_A
    assert sum(len(m) for m in matches) == len(MEMBERS_FOR_A)
    assert "total" not in pages[0]
    # a cursor is bound to the client and the request: another client's use of it is a 400
    nxt = next_link(pages[0])
    assert nxt is not None
    assert world.client.get(nxt, headers=world.region).status_code == 400
    other = nxt.replace("$everything?", "$everything?_type=Task&")
    assert world.client.get(other, headers=world.a).status_code == 400


def test_without_count_the_response_limit_cuts_pages(secure_services: Services, world: World) -> None:
    """GATEWAY_MAX_RESPONSE_RESOURCES=8: pages of what fits, linked by `next`, together all of it."""
    settings = secure_services.settings.replace(max_response_resources=8)
    built = Services.build(settings, engine=secure_services.engine)
    try:
        with TestClient(create_app(settings, services=built)) as small:
            world.client = small
            pages = all_pages(world, world.a, "")
    finally:
        built.close()
    assert len(pages) > 1
    assert set().union(*(shown(p, "match") for p in pages)) == MEMBERS_FOR_A
    assert all(len(p.get("entry", [])) <= 8 for p in pages)


def test_parameters(world: World) -> None:
    typed = everything(world, world.a, "?_type=Observation,Flag")
    assert shown(typed) == {r for r in MEMBERS_FOR_A if r.split("/")[0] in ("Observation", "Flag")}
    dated = everything(world, world.a, "?start=2020-01-01")
    assert "Observation/obsOld" not in shown(dated, "match")
    assert "Observation/obsA" in shown(dated, "match")  # no care date: kept
    assert "Observation/obsOld" in shown(everything(world, world.a, "?end=2002"), "match")
    assert shown(everything(world, world.a, "?_since=2999-01-01"), "match") == set()
    for query, name in (("?_type=Nothing", "_type"), ("?_count=0", "_count"), ("?start=yesterday", "start")):
        response = world.client.get(f"/fhir/Patient/pa/$everything{query}", headers=world.a)
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["expression"] == [name]


def test_one_audit_event_names_the_patient(audited_services: Services, audited_client: TestClient) -> None:
    world = World(audited_services, audited_client)
    everything(world, world.a)
    assert audited_services.audit is not None
    audited_services.audit.flush()
    auditor = register(audited_services, "gateway/audit.read", region=True)
    token = bearer(auditor.token(audited_client, "gateway/audit.read"))
    audited_services.audit.flush()
    found = audited_client.get("/fhir/AuditEvent?patient=Patient/pa&_count=500", headers=token).json()
    events = [
        e["resource"] for e in found.get("entry", []) if e["resource"]["subtype"][0]["code"] == "everything"
    ]
    assert len(events) == 1
    whats = {entity["what"]["reference"] for entity in events[0]["entity"] if "what" in entity}
    assert "Patient/pa" in whats and "Task/tA" in whats


RAW = "https://fhir.home-device-gateway.se/StructureDefinition/raw-input"
DEVICE_OF_PA: dict[str, Any] = {
    "resourceType": "Device",
    "id": "devPa",
    "status": "active",
    "owner": ref("Organization/orgB"),
    "patient": ref("Patient/pa"),
    "extension": [{"url": RAW, "valueReference": ref("Binary/rawA")}],
}
NAMING_RAW: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "obsRaw",
    "status": "final",
    "code": {"text": "puls"},
    "subject": ref("Patient/pa"),
    "extension": [{"url": RAW, "valueReference": ref("Binary/rawA")}],
}


def test_a_device_of_the_patient_is_a_member_a_binary_it_names_is_not(world: World) -> None:
    """Device is a member by `patient` (the R4 compartment has no Device), shown to the region and to the
    related organisation A though another unit owns it; the raw-input Binary that the Device and an
    Observation of the patient reference is never included, though the region may read it."""
    world.put(DEVICE_OF_PA)
    world.put(NAMING_RAW)
    assert world.client.get("/fhir/Binary/rawA", headers=world.region).status_code == 200
    region = everything(world, world.region)
    assert {"Device/devPa", "Observation/obsRaw"} <= shown(region, "match")
    assert "Binary/rawA" not in shown(region)
    related = everything(world, world.a)
    assert shown(related, "match") == MEMBERS_FOR_A | {"Device/devPa"}  # obsRaw: as obsHidden
    assert "Binary/rawA" not in shown(related)
    assert "Organization/orgB" in shown(related, "include")  # the Device's owner
    assert shown(everything(world, world.a, "?_type=Device")) == {"Device/devPa"}
    assert "Binary/rawA" not in shown(everything(world, world.region, "?_type=Device,Binary"))


def test_an_audit_event_naming_the_patient_is_not_a_member(
    audited_services: Services, audited_client: TestClient
) -> None:
    """After an access to pa is audited (an AuditEvent whose entity names Patient/pa, found by an
    AuditEvent search), $everything by a reader that may read AuditEvents still holds none."""
    world = World(audited_services, audited_client)
    auditor = register(audited_services, "system/*.cruds gateway/audit.read", region=True)
    token = bearer(auditor.token(audited_client, "system/*.cruds gateway/audit.read"))
    everything(world, token)
    assert audited_services.audit is not None
    audited_services.audit.flush()
    found = audited_client.get("/fhir/AuditEvent?patient=Patient/pa&_count=500", headers=token).json()
    audits = {f"AuditEvent/{e['resource']['id']}" for e in found.get("entry", [])}
    assert audits
    for query in ("", "?_type=AuditEvent,Patient"):
        bundle = everything(world, token, query)
        assert "Patient/pa" in shown(bundle, "match")
        assert not [r for r in shown(bundle) if r.startswith("AuditEvent/")], query


def test_without_count_the_response_bytes_limit_cuts_pages_holding_each_member_once(
    secure_services: Services, world: World
) -> None:
    """GATEWAY_MAX_RESPONSE_BYTES small enough that pa's record (as A sees it) does not fit one answer:
    pages of what fits (a page past it would be a 400), linked by `next`, together every member exactly
    once; under the default limit, the same record is one Bundle."""
    whole = everything(world, world.a)
    assert "next" not in {link["relation"] for link in whole["link"]}
    settings = secure_services.settings.replace(max_response_bytes=1500)
    built = Services.build(settings, engine=secure_services.engine)
    try:
        with TestClient(create_app(settings, services=built)) as small:
            world.client = small
            pages = all_pages(world, world.a, "")
    finally:
        built.close()
    assert len(pages) > 2
    members = [m for p in pages for m in shown(p, "match")]
    assert sorted(members) == sorted(MEMBERS_FOR_A)  # each once
    assert all("total" not in p for p in pages)
    assert shown(whole, "match") == MEMBERS_FOR_A
