"""Search as FHIR R4 defines it (https://hl7.org/fhir/R4/search.html), through the HTTP API: parameter
types and modifiers, chaining, result parameters, paging, includes and the handling of what the server
does not understand. Resources get fixed ids (PUT) so that expectations read as sets of ids."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from gateway.search.engine import binding_of
from gateway.services import Services
from tests.api.helpers import PNR, ids, patient, task

BASE = "http://testserver/fhir"
TAGS = "http://example.org/fhir/tags"
SECURITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
PROFILE = "http://example.org/fhir/StructureDefinition/home-patient"
HSA = "urn:oid:1.2.752.29.4.19"
DEVICE_CODES = "http://snomed.info/sct"
TASK_CODES = "http://example.org/fhir/task-code"

Params = list[tuple[str, str]] | str


# -- helpers ---------------------------------------------------------------------------------------


def put(client: TestClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def search(client: TestClient, res_type: str, params: Params = "", **headers: str) -> dict[str, Any]:
    if isinstance(params, str):
        response = client.get(f"/fhir/{res_type}" + (f"?{params}" if params else ""), headers=headers)
    else:
        response = client.get(f"/fhir/{res_type}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return body


def found(client: TestClient, res_type: str, params: Params = "") -> set[str]:
    return set(ids(search(client, res_type, params)))


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((item["url"] for item in bundle.get("link", []) if item["relation"] == relation), None)


def follow(client: TestClient, url: str) -> dict[str, Any]:
    assert url.startswith(BASE + "/")
    response = client.get(url)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def person(res_id: str, pnr: str, family: str, given: str, **extra: Any) -> dict[str, Any]:
    return patient(pnr, family, given, id=res_id, **extra)


def organization(res_id: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": res_id, "name": name, **extra}


def device_request(res_id: str, subject: str = "Patient/p1", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "DeviceRequest",
        "id": res_id,
        "status": "active",
        "intent": "order",
        "codeCodeableConcept": {"coding": [{"system": DEVICE_CODES, "code": "706180003"}]},
        "subject": {"reference": subject},
        **extra,
    }


def provenance(res_id: str, *targets: str, recorded: str = "2024-05-10T10:00:00+02:00") -> dict[str, Any]:
    return {
        "resourceType": "Provenance",
        "id": res_id,
        "target": [{"reference": target} for target in targets],
        "recorded": recorded,
        "agent": [{"who": {"reference": "Organization/org1"}}],
    }


@pytest.fixture
def people(client: TestClient) -> None:
    """Three patients and an organization: enough to tell the string and token matches apart."""
    put(client, organization("org1", "Kommun Ett", alias=["Hemtjänsten Norr"]))
    put(
        client,
        person(
            "p1",
            "191212121212",
            "Tolvansson",
            "Åsa",
            birthDate="1912-12-12",
            gender="female",
            active=True,
            managingOrganization={"reference": "Organization/org1"},
            meta={
                "tag": [{"system": TAGS, "code": "pilot"}],
                "security": [{"system": SECURITY, "code": "R"}],
                "profile": [PROFILE],
            },
        ),
    )
    put(
        client,
        person(
            "p2",
            "201212121212",
            "Svensson",
            "Sven",
            birthDate="1980-05-10",
            gender="male",
            active=False,
            meta={"tag": [{"system": TAGS, "code": "regular"}]},
        ),
    )
    put(
        client,
        {
            "resourceType": "Patient",
            "id": "p3",
            "identifier": [{"value": "local-1"}],
            "name": [{"family": "Öberg", "given": ["Anna-Lena"]}],
        },
    )


# -- token -----------------------------------------------------------------------------------------


def test_token_system_and_code_matches_identifier(client: TestClient, people: None) -> None:
    assert found(client, "Patient", f"identifier={PNR}|191212121212") == {"p1"}
    assert found(client, "Patient", f"identifier={PNR}|local-1") == set()
    assert found(client, "Patient", "identifier=http://other.example|191212121212") == set()


def test_token_bare_code_matches_any_system(client: TestClient, people: None) -> None:
    assert found(client, "Patient", "identifier=191212121212") == {"p1"}
    assert found(client, "Patient", "identifier=local-1") == {"p3"}


def test_token_pipe_code_matches_only_values_without_system(client: TestClient, people: None) -> None:
    assert found(client, "Patient", "identifier=|local-1") == {"p3"}
    assert found(client, "Patient", "identifier=|191212121212") == set()


def test_token_system_pipe_matches_every_code_in_the_system(client: TestClient, people: None) -> None:
    assert found(client, "Patient", f"identifier={PNR}|") == {"p1", "p2"}


def test_token_comma_is_or_and_repeats_are_and(client: TestClient, people: None) -> None:
    assert found(client, "Patient", "identifier=191212121212,local-1") == {"p1", "p3"}
    assert found(client, "Patient", "identifier=191212121212&identifier=local-1") == set()
    assert found(client, "Patient", f"identifier={PNR}|&gender=male") == {"p2"}


def test_token_not_excludes_matches_and_keeps_resources_without_a_value(
    client: TestClient, people: None
) -> None:
    assert found(client, "Patient", f"identifier:not={PNR}|191212121212") == {"p2", "p3"}
    assert found(client, "Patient", "gender:not=male") == {"p1", "p3"}
    assert found(client, "Patient", "gender:not=male,female") == {"p3"}


def test_token_on_code_and_boolean_elements(client: TestClient, people: None) -> None:
    assert found(client, "Patient", "gender=female") == {"p1"}
    assert found(client, "Patient", "active=true") == {"p1"}
    assert found(client, "Patient", "active=false") == {"p2"}


def test_token_on_task_status_and_codeable_concept(client: TestClient) -> None:
    code = {"coding": [{"system": TASK_CODES, "code": "install"}], "text": "Installera larm"}
    put(client, task("p1", id="t1", status="requested", code=code))
    put(client, task("p1", id="t2", status="accepted", code={"coding": [{"code": "install"}]}))
    put(client, task("p1", id="t3", status="completed"))
    assert found(client, "Task", "status=requested") == {"t1"}
    assert found(client, "Task", "status=requested,accepted") == {"t1", "t2"}
    assert found(client, "Task", "status:not=completed") == {"t1", "t2"}
    assert found(client, "Task", f"code={TASK_CODES}|install") == {"t1"}
    assert found(client, "Task", "code=install") == {"t1", "t2"}
    assert found(client, "Task", "code=|install") == {"t2"}
    assert found(client, "Task", f"code={TASK_CODES}|") == {"t1"}
    assert found(client, "Task", "code:not=install") == {"t3"}
    assert found(client, "Task", "code=Installera") == set()  # the text is not a code


def test_token_on_device_request_code_choice(client: TestClient) -> None:
    put(client, device_request("dr1"))
    other = {"coding": [{"system": DEVICE_CODES, "code": "469512007"}]}
    put(client, device_request("dr2", codeCodeableConcept=other))
    assert found(client, "DeviceRequest", f"code={DEVICE_CODES}|706180003") == {"dr1"}
    assert found(client, "DeviceRequest", "code=469512007") == {"dr2"}
    assert found(client, "DeviceRequest", f"code:not={DEVICE_CODES}|706180003") == {"dr2"}


def test_token_is_case_sensitive_on_codes(client: TestClient, people: None) -> None:
    assert found(client, "Patient", "gender=FEMALE") == set()


# -- string ----------------------------------------------------------------------------------------


def test_string_default_is_case_insensitive_starts_with(client: TestClient, people: None) -> None:
    assert found(client, "Patient", "name=tolv") == {"p1"}
    assert found(client, "Patient", "name=TOLVANSSON") == {"p1"}
    assert found(client, "Patient", "family=sven") == {"p2"}
    assert found(client, "Patient", "name=vansson") == set()  # not at the start


def test_string_default_is_accent_insensitive(client: TestClient, people: None) -> None:
    assert found(client, "Patient", "name=Asa") == {"p1"}
    assert found(client, "Patient", "given=asa") == {"p1"}
    assert found(client, "Patient", "given=ÅSA") == {"p1"}
    assert found(client, "Patient", "family=oberg") == {"p3"}
    assert found(client, "Patient", "family=Öberg") == {"p3"}


def test_string_name_covers_family_and_given(client: TestClient, people: None) -> None:
    assert found(client, "Patient", "name=anna") == {"p3"}
    assert found(client, "Patient", "name=anna-lena") == {"p3"}
    assert found(client, "Patient", "given=tolvansson") == set()
    assert found(client, "Patient", "name=sv,tolv") == {"p1", "p2"}


def test_string_exact_matches_whole_value_with_case_and_accents(client: TestClient, people: None) -> None:
    assert found(client, "Patient", "given:exact=Åsa") == {"p1"}
    assert found(client, "Patient", "given:exact=Asa") == set()
    assert found(client, "Patient", "given:exact=åsa") == set()
    assert found(client, "Patient", "family:exact=Tolv") == set()


def test_string_contains_matches_anywhere(client: TestClient, people: None) -> None:
    assert found(client, "Patient", "family:contains=VANS") == {"p1"}
    assert found(client, "Patient", "name:contains=ss") == {"p1", "p2"}
    assert found(client, "Patient", "name:contains=lena") == {"p3"}


def test_string_on_organization_name_and_alias(client: TestClient, people: None) -> None:
    put(client, organization("org2", "Region Syd"))
    assert found(client, "Organization", "name=kommun") == {"org1"}
    assert found(client, "Organization", "name=hemtjansten") == {"org1"}
    assert found(client, "Organization", "name=region%20syd") == {"org2"}
    assert found(client, "Organization", "name:contains=syd") == {"org2"}


# -- reference -------------------------------------------------------------------------------------


@pytest.fixture
def tasks(client: TestClient, people: None) -> None:
    put(client, {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Läkare"}]})
    put(client, task("p1", id="t1", owner="Organization/org1"))
    put(client, task("p2", id="t2", owner="Practitioner/pr1"))
    unowned = task("p3", id="t3")
    del unowned["owner"]
    put(client, unowned)


def test_reference_by_type_and_id(client: TestClient, tasks: None) -> None:
    assert found(client, "Task", "patient=Patient/p1") == {"t1"}
    assert found(client, "Task", "subject=Patient/p2") == {"t2"}
    assert found(client, "Task", "owner=Organization/org1") == {"t1"}
    assert found(client, "Task", "owner=Practitioner/org1") == set()


def test_reference_by_bare_id(client: TestClient, tasks: None) -> None:
    assert found(client, "Task", "patient=p1") == {"t1"}
    assert found(client, "Task", "owner=pr1") == {"t2"}
    assert found(client, "Task", "patient=p1,p2") == {"t1", "t2"}


def test_reference_type_modifier(client: TestClient, tasks: None) -> None:
    assert found(client, "Task", "owner:Organization=org1") == {"t1"}
    assert found(client, "Task", "owner:Practitioner=org1") == set()
    assert found(client, "Task", "owner:Practitioner=pr1") == {"t2"}


def test_reference_by_full_url_on_this_server(client: TestClient, tasks: None) -> None:
    assert found(client, "Task", f"patient={BASE}/Patient/p1") == {"t1"}
    assert found(client, "Task", f"owner={BASE}/Organization/org1") == {"t1"}
    assert found(client, "Task", "patient=http://elsewhere.example/fhir/Patient/p1") == set()


def test_reference_stored_as_full_url_on_this_server_is_local(client: TestClient, people: None) -> None:
    put(client, task("p1", id="t9", subject=f"{BASE}/Patient/p1"))
    assert found(client, "Task", "patient=Patient/p1") == {"t9"}
    assert found(client, "Task", "patient=p1") == {"t9"}
    assert found(client, "Task", f"subject={BASE}/Patient/p1") == {"t9"}


def test_reference_to_another_server_is_not_local(client: TestClient, people: None) -> None:
    elsewhere = "http://elsewhere.example/fhir/Patient/p1"
    put(client, task("p1", id="t8", subject=elsewhere))
    put(client, task("p1", id="t9"))
    assert found(client, "Task", "patient=p1") == {"t9"}
    assert found(client, "Task", "patient=Patient/p1") == {"t9"}
    assert found(client, "Task", f"patient={elsewhere}") == {"t8"}
    assert found(client, "Task", f"patient.identifier={PNR}|191212121212") == {"t9"}
    bundle = search(client, "Task", "_id=t8&_include=Task:patient")
    assert ids(bundle, "include") == []
    bundle = search(client, "Patient", "_id=p1&_revinclude=Task:patient")
    assert ids(bundle, "include") == ["t9"]


def test_reference_many_values_are_ored_whatever_their_form(client: TestClient, tasks: None) -> None:
    """Several values: local `Type/id` ones are matched together per type, the others one by one."""
    assert found(client, "Task", "owner=Organization/org1,Practitioner/pr1") == {"t1", "t2"}
    assert found(client, "Task", "owner=Organization/org1,Organization/nothing") == {"t1"}
    assert found(client, "Task", "owner=Practitioner/org1,Practitioner/nothing") == set()
    assert found(client, "Task", f"owner=pr1,{BASE}/Organization/org1") == {"t1", "t2"}
    assert found(client, "Task", "owner:Organization=Organization/org1,Practitioner/pr1") == {"t1"}
    assert found(client, "Task", "patient=Patient/p1/_history/1,Patient/p2") == {"t1", "t2"}
    elsewhere = "http://elsewhere.example/fhir/Patient/p3"
    put(client, task("p3", id="t7", subject=elsewhere))
    assert found(client, "Task", f"patient=Patient/p1,{elsewhere}") == {"t1", "t7"}


def test_reference_to_a_version_matches_the_resource(client: TestClient, tasks: None) -> None:
    assert found(client, "Task", "patient=Patient/p1/_history/1") == {"t1"}


def test_reference_missing(client: TestClient, tasks: None) -> None:
    assert found(client, "Task", "owner:missing=true") == {"t3"}
    assert found(client, "Task", "owner:missing=false") == {"t1", "t2"}


def test_reference_unknown_type_modifier_is_an_error(client: TestClient, tasks: None) -> None:
    assert client.get("/fhir/Task?owner:Nonsense=org1").status_code == 400
    assert client.get(f"/fhir/Task?owner:identifier={HSA}|x").status_code == 400


def test_chained_reference_by_identifier(client: TestClient, tasks: None) -> None:
    assert found(client, "Task", f"patient.identifier={PNR}|191212121212") == {"t1"}
    assert found(client, "Task", "patient.identifier=local-1") == {"t3"}
    assert found(client, "Task", "patient.name=asa") == {"t1"}
    assert found(client, "Task", "owner:Organization.name=kommun") == {"t1"}
    assert found(client, "Task", "owner:Practitioner.name=kommun") == set()


def test_chained_reference_keeps_the_inner_modifier(client: TestClient, tasks: None) -> None:
    assert found(client, "Task", "patient.given:exact=Åsa") == {"t1"}
    assert found(client, "Task", "patient.given:exact=Asa") == set()
    assert found(client, "Task", "patient.gender:not=female") == {"t2", "t3"}


def test_chained_reference_with_type_modifier(client: TestClient, people: None) -> None:
    put(client, device_request("dr1", subject="Patient/p1"))
    put(client, device_request("dr2", subject="Patient/p2"))
    pnr = f"{PNR}|201212121212"
    assert found(client, "DeviceRequest", f"subject:Patient.identifier={pnr}") == {"dr2"}
    assert found(client, "DeviceRequest", f"patient.identifier={pnr}") == {"dr2"}
    assert found(client, "DeviceRequest", "subject:Patient.birthdate=1912") == {"dr1"}


def test_chained_reference_ignores_deleted_targets(client: TestClient, tasks: None) -> None:
    assert client.delete("/fhir/Task/t1").status_code == 200
    assert client.delete("/fhir/Patient/p2").status_code == 200
    assert found(client, "Task", f"patient.identifier={PNR}|") == set()


def test_chaining_more_than_one_level_or_a_non_reference_is_an_error(client: TestClient) -> None:
    assert client.get("/fhir/Task?patient.organization.name=x").status_code == 400
    assert client.get("/fhir/Task?status.code=x").status_code == 400
    assert client.get("/fhir/Task?patient.nonsense=x").status_code == 400


# -- date ------------------------------------------------------------------------------------------


@pytest.fixture
def authored(client: TestClient) -> None:
    """Requests authored on the day before, on, and the day after 2024-05-10 (Europe/Stockholm), one
    long ago and one with no date at all."""
    put(client, device_request("before", authoredOn="2024-05-09T12:00:00Z"))
    put(client, device_request("on", authoredOn="2024-05-10T10:00:00+02:00"))
    put(client, device_request("after", authoredOn="2024-05-11"))
    put(client, device_request("old", authoredOn="2019-01-01T00:00:00Z"))
    put(client, device_request("undated"))


# Each prefix against the day 2024-05-10: `eq` the search range contains the stored one, `ne` it does
# not, `gt`/`lt` the stored range reaches past the end/before the start, `ge`/`le` either of those or
# contained, `sa`/`eb` it lies wholly after/before, `ap` within 10% of the distance from now.
PREFIXES_ON_A_DAY = [
    ("2024-05-10", {"on"}),
    ("eq2024-05-10", {"on"}),
    ("ne2024-05-10", {"before", "after", "old"}),
    ("gt2024-05-10", {"after"}),
    ("lt2024-05-10", {"before", "old"}),
    ("ge2024-05-10", {"on", "after"}),
    ("le2024-05-10", {"before", "on", "old"}),
    ("sa2024-05-10", {"after"}),
    ("eb2024-05-10", {"before", "old"}),
    ("ap2024-05-10", {"before", "on", "after"}),
]

# Search values of every precision, against stored values of second and day precision.
PRECISIONS = [
    ("2024", {"before", "on", "after"}),
    ("2024-05", {"before", "on", "after"}),
    ("2024-05-10T10:00", {"on"}),
    ("2024-05-10T10:00:00+02:00", {"on"}),
    ("2024-05-10T08:00:00Z", {"on"}),
    ("2024-05-10T08:00:00.000Z", set()),  # finer than the stored second: does not contain it
    ("2024-05-10T09:00", set()),
    ("2024-05-11T10:00", set()),  # a minute cannot contain a whole stored day
    ("gt2024-05-11T10:00", {"after"}),  # the stored day reaches past that minute
    ("lt2024-05-11T10:00", {"before", "on", "after", "old"}),
    ("ne2024-05", {"old"}),
    ("gt2024-05-10T08:00:00Z", {"after"}),
    ("ge2024-05-10T08:00:00Z", {"on", "after"}),
    ("2024-04,2019", {"old"}),
]


def test_date_prefixes_on_a_day(client: TestClient, authored: None) -> None:
    for value, expected in PREFIXES_ON_A_DAY:
        assert found(client, "DeviceRequest", [("authored-on", value)]) == expected, value


def test_date_precision_of_search_and_stored_values(client: TestClient, authored: None) -> None:
    for value, expected in PRECISIONS:
        assert found(client, "DeviceRequest", [("authored-on", value)]) == expected, value


def test_date_on_birthdate(client: TestClient, people: None) -> None:
    assert found(client, "Patient", "birthdate=1912-12-12") == {"p1"}
    assert found(client, "Patient", "birthdate=1912") == {"p1"}
    assert found(client, "Patient", "birthdate=1912-12-13") == set()
    assert found(client, "Patient", "birthdate=lt1950") == {"p1"}
    assert found(client, "Patient", "birthdate=ge1980-05-10") == {"p2"}
    assert found(client, "Patient", "birthdate=1912-12-12T10:00") == set()


def test_date_on_period_closed(client: TestClient) -> None:
    period = {"start": "2024-05-01", "end": "2024-05-31"}
    put(client, task("p1", id="t1", executionPeriod=period))
    put(client, task("p1", id="t2"))
    assert found(client, "Task", "period=2024-05") == {"t1"}
    assert found(client, "Task", "period=2024") == {"t1"}
    assert found(client, "Task", "period=2024-05-15") == set()  # the day does not contain the period
    assert found(client, "Task", "period=ne2024-05-15") == {"t1"}
    assert found(client, "Task", "period=gt2024-05-15") == {"t1"}
    assert found(client, "Task", "period=lt2024-05-15") == {"t1"}
    assert found(client, "Task", "period=ge2024-06-01") == set()
    assert found(client, "Task", "period=le2024-04-30") == set()
    assert found(client, "Task", "period=sa2024-04-30") == {"t1"}
    assert found(client, "Task", "period=sa2024-05-01") == set()
    assert found(client, "Task", "period=eb2024-06-01") == {"t1"}
    assert found(client, "Task", "period=eb2024-05-31") == set()
    assert found(client, "Task", "period:missing=true") == {"t2"}


def test_date_on_encounter_period_with_open_end(client: TestClient) -> None:
    encounter = {
        "resourceType": "Encounter",
        "id": "e1",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
        "period": {"start": "2024-05-01T08:00:00+02:00"},
    }
    put(client, encounter)
    assert found(client, "Encounter", "date=gt2090") == {"e1"}
    assert found(client, "Encounter", "date=ge2024-05-01") == {"e1"}
    assert found(client, "Encounter", "date=2024-05") == set()  # an open period is not contained
    assert found(client, "Encounter", "date=lt2024-05-01") == set()
    assert found(client, "Encounter", "date=le2024-05-01") == set()  # nothing before it, not contained
    assert found(client, "Encounter", "date=le2024-05-02") == {"e1"}
    assert found(client, "Encounter", "date=sa2024-04-30") == {"e1"}
    assert found(client, "Encounter", "date=eb2090") == set()
    assert found(client, "Encounter", "date=ne2024-05") == {"e1"}


def test_date_on_last_updated(client: TestClient, people: None) -> None:
    stamp = client.get("/fhir/Patient/p2").json()["meta"]["lastUpdated"]
    assert found(client, "Patient", [("_lastUpdated", stamp)]) == {"p2"}
    assert "p2" in found(client, "Patient", [("_lastUpdated", f"ge{stamp}")])
    assert "p2" in found(client, "Patient", [("_lastUpdated", f"le{stamp}")])
    assert "p2" not in found(client, "Patient", [("_lastUpdated", f"gt{stamp}")])
    assert "p2" not in found(client, "Patient", [("_lastUpdated", f"lt{stamp}")])
    assert "p2" not in found(client, "Patient", [("_lastUpdated", f"ne{stamp}")])
    assert found(client, "Patient", "_lastUpdated=gt2000-01-01") == {"p1", "p2", "p3"}
    assert found(client, "Patient", "_lastUpdated=lt2000-01-01") == set()
    assert found(client, "Patient", "_lastUpdated=sa2000&_lastUpdated=eb2999") == {"p1", "p2", "p3"}


def test_date_on_last_updated_sees_updates(client: TestClient, people: None) -> None:
    stamp = client.get("/fhir/Patient/p3").json()["meta"]["lastUpdated"]
    put(client, person("p2", "201212121212", "Svensson", "Sven", birthDate="1980-05-11"))
    assert found(client, "Patient", [("_lastUpdated", f"gt{stamp}")]) == {"p2"}


def test_date_extreme_years_do_not_fail(client: TestClient) -> None:
    put(client, device_request("first", authoredOn="0001-01-01"))
    put(client, device_request("last", authoredOn="9999-12-31T23:59:59Z"))
    assert found(client, "DeviceRequest", "authored-on=0001") == {"first"}
    assert found(client, "DeviceRequest", "authored-on=9999") == {"last"}
    assert found(client, "DeviceRequest", "authored-on=ap9999") == {"last"}
    assert found(client, "DeviceRequest", "authored-on=ap0001") == {"first"}
    assert found(client, "DeviceRequest", "authored-on=gt9999") == set()


def test_date_invalid_value_is_a_400(client: TestClient) -> None:
    for value in ("2024-13", "yesterday", "2024-02-30", "gt", "2024-05-10T25:00"):
        response = client.get("/fhir/DeviceRequest", params={"authored-on": value})
        assert response.status_code == 400, value
        assert response.json()["resourceType"] == "OperationOutcome"


# -- number ----------------------------------------------------------------------------------------


def test_number_precision_and_prefixes(client: TestClient) -> None:
    for res_id, probability in (("r1", 0.24), ("r2", 0.3), ("r3", 0.7)):
        put(
            client,
            {
                "resourceType": "RiskAssessment",
                "id": res_id,
                "status": "final",
                "subject": {"reference": "Patient/p1"},
                "prediction": [{"probabilityDecimal": probability}],
            },
        )
    assert found(client, "RiskAssessment", "probability=0.3") == {"r2"}  # [0.25, 0.35)
    assert found(client, "RiskAssessment", "probability=0.24") == {"r1"}
    assert found(client, "RiskAssessment", "probability=0.2") == {"r1"}  # [0.15, 0.25)
    assert found(client, "RiskAssessment", "probability=0.4") == set()
    assert found(client, "RiskAssessment", "probability=gt0.3") == {"r3"}
    assert found(client, "RiskAssessment", "probability=ge0.3") == {"r2", "r3"}
    assert found(client, "RiskAssessment", "probability=lt0.3") == {"r1"}
    assert found(client, "RiskAssessment", "probability=ne0.3") == {"r1", "r3"}
    for value in ("abc", "NaN", "sNaN", "Infinity", "1e999999999", "1e-999999999"):
        response = client.get("/fhir/RiskAssessment", params={"probability": value})
        assert response.status_code in (200, 400), value
        if response.status_code == 200:
            assert ids(response.json()) == []


# -- :missing --------------------------------------------------------------------------------------


def test_missing_on_each_type(client: TestClient, people: None) -> None:
    assert found(client, "Patient", "birthdate:missing=true") == {"p3"}
    assert found(client, "Patient", "birthdate:missing=false") == {"p1", "p2"}
    assert found(client, "Patient", "gender:missing=true") == {"p3"}
    assert found(client, "Patient", "organization:missing=false") == {"p1"}
    assert found(client, "Patient", "name:missing=false") == {"p1", "p2", "p3"}
    assert found(client, "Patient", "_profile:missing=false") == {"p1"}
    assert found(client, "Patient", "_tag:missing=true") == {"p3"}


def test_missing_takes_only_true_or_false(client: TestClient) -> None:
    assert client.get("/fhir/Patient?gender:missing=maybe").status_code == 400


# -- the meta parameters -------------------------------------------------------------------------


def test_id(client: TestClient, people: None) -> None:
    assert found(client, "Patient", "_id=p1") == {"p1"}
    assert found(client, "Patient", "_id=p1,p3") == {"p1", "p3"}
    assert found(client, "Patient", "_id=P1") == set()
    assert found(client, "Patient", "_id=org1") == set()


def test_tag_security_and_profile(client: TestClient, people: None) -> None:
    assert found(client, "Patient", f"_tag={TAGS}|pilot") == {"p1"}
    assert found(client, "Patient", "_tag=regular") == {"p2"}
    assert found(client, "Patient", f"_tag={TAGS}|") == {"p1", "p2"}
    assert found(client, "Patient", f"_tag:not={TAGS}|pilot") == {"p2", "p3"}
    assert found(client, "Patient", f"_security={SECURITY}|R") == {"p1"}
    assert found(client, "Patient", "_security=N") == set()
    assert found(client, "Patient", f"_profile={PROFILE}") == {"p1"}
    assert found(client, "Patient", "_profile=http://example.org/fhir/StructureDefinition/other") == set()
    assert found(client, "Patient", "_profile:below=http://example.org/fhir/StructureDefinition/") == {"p1"}


def test_deleted_resources_are_not_found(client: TestClient, people: None) -> None:
    assert client.delete("/fhir/Patient/p1").status_code == 200
    assert found(client, "Patient", "name=asa") == set()
    assert found(client, "Patient", "_id=p1") == set()
    assert found(client, "Patient", "gender:not=male") == {"p3"}


# -- _count, _sort and paging ----------------------------------------------------------------------

FAMILIES = ["Ek", "Al", "Gran", "Björk", "Asp", "Lind", "Ceder"]


@pytest.fixture
def trees(client: TestClient) -> list[str]:
    """Seven patients with families and birth dates in different orders; returns ids in write order."""
    written = []
    for i, family in enumerate(FAMILIES):
        pnr = f"19{50 + i}0101000{i}"
        put(client, person(f"tree{i}", pnr, family, "Test", birthDate=f"19{50 + (i * 3) % 7}-01-01"))
        written.append(f"tree{i}")
    return written


def walk(client: TestClient, first: dict[str, Any]) -> list[list[str]]:
    pages, bundle = [ids(first)], first
    while (url := link(bundle, "next")) is not None:
        bundle = follow(client, url)
        pages.append(ids(bundle))
        assert len(pages) < 50
    return pages


def test_count_limits_the_page_and_next_links_walk_every_match_once(
    client: TestClient, trees: list[str]
) -> None:
    pages = walk(client, search(client, "Patient", "_count=3"))
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [i for page in pages for i in page] == trees  # default order: the order of creation


def test_sort_by_string_ascending_and_descending(client: TestClient, trees: list[str]) -> None:
    ascending = [i for page in walk(client, search(client, "Patient", "_sort=family&_count=2")) for i in page]
    names = [FAMILIES[int(i.removeprefix("tree"))] for i in ascending]
    assert names == sorted(FAMILIES)
    descending = [
        i for page in walk(client, search(client, "Patient", "_sort=-family&_count=3")) for i in page
    ]
    assert descending == list(reversed(ascending))


def test_sort_by_date_and_then_by_string(client: TestClient, trees: list[str]) -> None:
    bundle = search(client, "Patient", "_sort=birthdate,family")
    years = [client.get(f"/fhir/Patient/{i}").json()["birthDate"] for i in ids(bundle)]
    assert years == sorted(years)
    bundle = search(client, "Patient", "_sort=-birthdate&_count=4")
    pages = walk(client, bundle)
    years = [client.get(f"/fhir/Patient/{i}").json()["birthDate"] for page in pages for i in page]
    assert years == sorted(years, reverse=True) and len(years) == 7


def test_sort_by_last_updated(client: TestClient, trees: list[str]) -> None:
    put(client, person("tree0", "1950010100000", "Ek", "Uppdaterad", birthDate="1950-01-01"))
    oldest_first = [
        i for page in walk(client, search(client, "Patient", "_sort=_lastUpdated&_count=3")) for i in page
    ]
    assert oldest_first == [*trees[1:], "tree0"]
    newest_first = ids(search(client, "Patient", "_sort=-_lastUpdated"))
    assert newest_first == list(reversed(oldest_first))


def test_sort_puts_resources_without_the_value_in_a_stable_place(
    client: TestClient, trees: list[str]
) -> None:
    put(client, {"resourceType": "Patient", "id": "nameless"})
    result = ids(search(client, "Patient", "_sort=family"))
    assert len(result) == 8 and "nameless" in result
    assert result == ids(search(client, "Patient", "_sort=family"))


def test_previous_links_walk_back_to_the_first_page(client: TestClient, trees: list[str]) -> None:
    forward = walk(client, search(client, "Patient", "_sort=family&_count=3"))
    bundle = search(client, "Patient", "_sort=family&_count=3")
    assert link(bundle, "previous") is None
    while (url := link(bundle, "next")) is not None:
        bundle = follow(client, url)
    backward = [ids(bundle)]
    while (url := link(bundle, "previous")) is not None:
        bundle = follow(client, url)
        backward.append(ids(bundle))
    assert list(reversed(backward)) == forward


def test_links_keep_the_search_and_self_describes_it(client: TestClient, trees: list[str]) -> None:
    bundle = search(client, "Patient", "family=a,b,c&_sort=family&_count=1")
    assert query_of(link(bundle, "self") or "") == {"family": ["a,b,c"], "_sort": ["family"], "_count": ["1"]}
    next_url = link(bundle, "next") or ""
    assert next_url.startswith(f"{BASE}/Patient?")
    assert query_of(next_url)["family"] == ["a,b,c"] and query_of(next_url)["_sort"] == ["family"]
    pages = walk(client, bundle)
    assert [len(page) for page in pages] == [1, 1, 1, 1]


def test_paging_stays_correct_while_resources_are_created_and_updated(
    client: TestClient, trees: list[str]
) -> None:
    bundle = search(client, "Patient", "_count=3")
    seen = list(ids(bundle))
    # An update of a resource already seen and of one not yet seen, and two new resources.
    put(client, person("tree0", "1950010100000", "Ek", "Ändrad", birthDate="1950-01-01"))
    put(client, person("tree5", "1955010100005", "Lind", "Ändrad", birthDate="1951-01-01"))
    put(client, person("new1", "200001010001", "Ny", "Ett"))
    bundle = follow(client, link(bundle, "next") or "")
    seen += ids(bundle)
    put(client, person("new2", "200001010002", "Ny", "Två"))
    client.delete("/fhir/Patient/new1")
    while (url := link(bundle, "next")) is not None:
        bundle = follow(client, url)
        seen += ids(bundle)
    assert len(seen) == len(set(seen))
    assert set(trees) <= set(seen)
    assert "new2" in seen and "new1" not in seen


def test_sorted_paging_stays_correct_while_resources_are_created_and_updated(
    client: TestClient, trees: list[str]
) -> None:
    bundle = search(client, "Patient", "_sort=family&_count=2")
    seen = list(ids(bundle))  # Al, Asp
    put(client, person("aa", "200001010003", "Aa", "Först"))  # sorts before the cursor: not seen
    put(client, person("zz", "200001010004", "Zorn", "Sist"))  # sorts after: seen once
    put(client, person("tree3", "1953010100003", "Björk", "Ändrad", birthDate="1953-01-01"))
    while (url := link(bundle, "next")) is not None:
        bundle = follow(client, url)
        seen += ids(bundle)
        put(client, person("tree4", "1954010100004", "Asp", "Igen", birthDate="1954-01-01"))
    assert len(seen) == len(set(seen))
    assert set(trees) | {"zz"} == set(seen)


def test_count_is_capped_and_must_be_a_number(client: TestClient, trees: list[str]) -> None:
    assert len(ids(search(client, "Patient", "_count=100000"))) == 7
    assert client.get("/fhir/Patient?_count=abc").status_code == 400
    assert client.get("/fhir/Patient?_count=-1").status_code == 400
    zero = search(client, "Patient", "_count=0&_total=accurate")
    assert ids(zero) == [] and zero["total"] == 7


def test_sort_by_unknown_or_reference_parameter_is_an_error(client: TestClient) -> None:
    assert client.get("/fhir/Patient?_sort=nonsense").status_code == 400
    assert client.get("/fhir/Patient?_sort=organization").status_code == 400


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def sealed(services: Services, values: list[Any], sort: str) -> str:
    """A cursor sealed as the server seals them, for this client (anonymous: auth off) and search."""
    request = services.searcher.parse("Patient", [("_sort", sort)])
    request.cursor_binding = "anonymous"
    return services.searcher.cursors.seal(values, False, binding_of(request))


def test_a_tampered_cursor_is_a_400(services: Services, client: TestClient, trees: list[str]) -> None:
    tampered = [
        "garbage",
        "e30",
        cursor_of({"b": False, "v": ["b", 0]}),  # well formed, but not sealed by the server
        sealed(services, [1], "family"),  # too few keys
        sealed(services, [{"x": 1}, 1], "family"),
        sealed(services, ["al", "1"], "family"),  # rid must be a number
        sealed(services, ["al", 1e30], "family"),  # out of a rid's range
        sealed(services, ["al", True], "family"),
        sealed(services, ["a\u0000", 1], "family"),
        sealed(services, ["b", 0], "birthdate"),  # sealed for another search
    ]
    for cursor in tampered:
        assert client.get("/fhir/Patient", params={"_sort": "family", "_cursor": cursor}).status_code == 400
    for cursor in (
        sealed(services, [1, 1], "birthdate"),
        sealed(services, ["2024-01-01T00:00+01:00", 1], "birthdate"),
    ):
        assert (
            client.get("/fhir/Patient", params={"_sort": "birthdate", "_cursor": cursor}).status_code == 400
        )
    fine = client.get(
        "/fhir/Patient", params={"_sort": "family", "_cursor": sealed(services, ["b", 0], "family")}
    )
    assert fine.status_code == 200
    assert [FAMILIES[int(i.removeprefix("tree"))] for i in ids(fine.json())] == [
        "Björk",
        "Ceder",
        "Ek",
        "Gran",
        "Lind",
    ]


def test_a_cursor_shows_nothing_of_what_it_holds(client: TestClient, trees: list[str]) -> None:
    """The sort values of the last row served are sealed: the cursor is no JSON, names no family."""
    first = client.get("/fhir/Patient", params={"_sort": "family", "_count": "2"}).json()
    cursor = parse_qs(
        urlsplit(next(link["url"] for link in first["link"] if link["relation"] == "next")).query
    )["_cursor"][0]
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    assert b"{" not in raw[:1] and not any(name.lower().encode() in raw.lower() for name in FAMILIES)
    follow = client.get("/fhir/Patient", params={"_sort": "family", "_count": "2", "_cursor": cursor})
    assert follow.status_code == 200 and len(ids(follow.json())) == 2


# -- _include and _revinclude ----------------------------------------------------------------------


def test_include_adds_referenced_resources_once(client: TestClient, tasks: None) -> None:
    bundle = search(client, "Task", "_include=Task:owner&_include=Task:patient")
    assert set(ids(bundle)) == {"t1", "t2", "t3"}
    assert set(ids(bundle, "include")) == {"org1", "pr1", "p1", "p2", "p3"}
    modes = [e["search"]["mode"] for e in bundle["entry"]]
    assert modes == sorted(modes, key=lambda mode: mode != "match")  # matches first
    included = [e for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert all(
        e["fullUrl"] == f"{BASE}/{e['resource']['resourceType']}/{e['resource']['id']}" for e in included
    )


def test_include_with_target_type(client: TestClient, tasks: None) -> None:
    bundle = search(client, "Task", "_include=Task:owner:Organization")
    assert ids(bundle, "include") == ["org1"]
    bundle = search(client, "Task", "_id=t1&_include=Task:owner:Practitioner")
    assert ids(bundle) == ["t1"] and ids(bundle, "include") == []


def test_include_only_follows_the_matches_on_this_page(client: TestClient, tasks: None) -> None:
    bundle = search(client, "Task", "_id=t2&_include=Task:owner")
    assert ids(bundle, "include") == ["pr1"]


def test_include_skips_deleted_targets(client: TestClient, tasks: None) -> None:
    client.delete("/fhir/Organization/org1")
    bundle = search(client, "Task", "_id=t1&_include=Task:owner")
    assert ids(bundle, "include") == []


def test_revinclude_adds_referring_resources(client: TestClient, tasks: None) -> None:
    put(client, provenance("prov1", "Patient/p1", "Task/t1"))
    put(client, provenance("prov2", "Task/t2"))
    bundle = search(client, "Patient", "_id=p1&_revinclude=Provenance:target")
    assert ids(bundle) == ["p1"] and ids(bundle, "include") == ["prov1"]
    bundle = search(client, "Task", "_revinclude=Provenance:target")
    assert set(ids(bundle, "include")) == {"prov1", "prov2"}
    bundle = search(client, "Task", "_id=t3&_revinclude=Provenance:target")
    assert ids(bundle, "include") == []


def test_include_iterate_follows_included_resources(client: TestClient, tasks: None) -> None:
    put(client, provenance("prov1", "Task/t1"))
    plain = search(client, "Provenance", "_include=Provenance:target&_include=Task:owner")
    assert ids(plain, "include") == ["t1"]  # Task:owner applies to matches (Provenances) only
    iterated = search(client, "Provenance", "_include=Provenance:target&_include:iterate=Task:owner")
    assert set(ids(iterated, "include")) == {"t1", "org1"}
    two_levels = search(
        client,
        "Provenance",
        "_include=Provenance:target&_include:iterate=Task:patient&_include:iterate=Patient:organization",
    )
    assert set(ids(two_levels, "include")) == {"t1", "p1", "org1"}


def test_revinclude_iterate(client: TestClient, tasks: None) -> None:
    put(client, provenance("prov1", "Task/t1"))
    bundle = search(
        client, "Patient", "_id=p1&_revinclude=Task:patient&_revinclude:iterate=Provenance:target"
    )
    assert set(ids(bundle, "include")) == {"t1", "prov1"}


def test_include_of_an_unknown_parameter_is_an_error(client: TestClient) -> None:
    assert client.get("/fhir/Task?_include=Task:nonsense").status_code == 400
    assert client.get("/fhir/Task?_include=Task:status").status_code == 400
    assert client.get("/fhir/Task?_include=nonsense").status_code == 400


# -- _summary, _total, _elements -------------------------------------------------------------------


def test_summary_count_returns_only_the_total(client: TestClient, people: None) -> None:
    bundle = search(client, "Patient", "_summary=count")
    assert bundle["total"] == 3 and "entry" not in bundle
    assert search(client, "Patient", "_summary=count&gender=female")["total"] == 1


def test_total_accurate_counts_every_match_not_the_page(client: TestClient, trees: list[str]) -> None:
    bundle = search(client, "Patient", "_total=accurate&_count=2")
    assert bundle["total"] == 7 and len(ids(bundle)) == 2
    follow_up = follow(client, link(bundle, "next") or "")
    assert follow_up["total"] == 7
    assert search(client, "Patient", "_total=accurate&family=gran")["total"] == 1
    assert client.get("/fhir/Patient?_total=sometimes").status_code == 400


def test_elements_subsets_matches_and_marks_them(client: TestClient, people: None) -> None:
    bundle = search(client, "Patient", "_id=p1&_elements=name,gender")
    resource = bundle["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "name", "gender"}
    tags = resource["meta"]["tag"]
    assert {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "SUBSETTED",
    } in tags
    assert {"system": TAGS, "code": "pilot"} in tags
    assert query_of(link(bundle, "self") or "")["_elements"] == ["name,gender"]


# -- unknown parameters and handling ---------------------------------------------------------------


def test_unknown_parameter_is_ignored_and_reported_under_lenient_handling(
    client: TestClient, people: None
) -> None:
    bundle = search(client, "Patient", "family=tolv&nonsense=1&_has:Task:patient:status=x")
    assert ids(bundle) == ["p1"]
    self_query = query_of(link(bundle, "self") or "")
    assert self_query == {"family": ["tolv"]}
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcomes) == 1
    outcome = outcomes[0]["resource"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] in ("warning", "information")
    assert "nonsense" in outcome["issue"][0]["diagnostics"]
    lenient = search(client, "Patient", "nonsense=1", Prefer="handling=lenient")
    assert set(ids(lenient)) == {"p1", "p2", "p3"}


def test_unknown_parameter_is_a_400_under_strict_handling(client: TestClient, people: None) -> None:
    response = client.get("/fhir/Patient?family=tolv&nonsense=1", headers={"Prefer": "handling=strict"})
    assert response.status_code == 400
    assert "nonsense" in response.json()["issue"][0]["diagnostics"]
    fine = client.get("/fhir/Patient?family=tolv", headers={"Prefer": "handling=strict"})
    assert fine.status_code == 200 and ids(fine.json()) == ["p1"]


def test_unsupported_modifier_is_a_400(client: TestClient) -> None:
    assert client.get("/fhir/Patient?family:below=x").status_code == 400
    assert client.get("/fhir/Patient?gender:text=x").status_code == 400
    assert client.get("/fhir/Patient?birthdate:exact=2024").status_code == 400


def test_format_and_pretty_are_accepted(client: TestClient, people: None) -> None:
    bundle = search(client, "Patient", "_format=json&_pretty=true&family=tolv")
    assert ids(bundle) == ["p1"] and "entry" in bundle
    assert not any(e["search"]["mode"] == "outcome" for e in bundle["entry"])


# -- POST _search ----------------------------------------------------------------------------------


def test_post_search_with_a_form_body_equals_get(client: TestClient, tasks: None) -> None:
    query = [
        ("patient.identifier", f"{PNR}|191212121212"),
        ("_include", "Task:owner"),
        ("status", "requested"),
    ]
    got = search(client, "Task", query)
    response = client.post("/fhir/Task/_search", data=dict(query))
    assert response.status_code == 200, response.text
    posted = response.json()
    assert ids(posted) == ids(got) == ["t1"]
    assert ids(posted, "include") == ids(got, "include") == ["org1"]
    assert query_of(link(posted, "self") or "") == query_of(link(got, "self") or "")


def test_post_search_combines_url_and_body_parameters(client: TestClient, people: None) -> None:
    response = client.post("/fhir/Patient/_search?gender=female", data={"name": "tolv"})
    assert response.status_code == 200 and ids(response.json()) == ["p1"]
    response = client.post("/fhir/Patient/_search?gender=male", data={"name": "tolv"})
    assert response.status_code == 200 and ids(response.json()) == []


def test_post_search_pages_like_get(client: TestClient, trees: list[str]) -> None:
    response = client.post("/fhir/Patient/_search", data={"_count": "4", "_sort": "-family"})
    assert response.status_code == 200
    pages = walk(client, response.json())
    assert [i for page in pages for i in page] == ids(search(client, "Patient", "_sort=-family"))


def test_post_search_refuses_other_bodies(client: TestClient) -> None:
    response = client.post("/fhir/Patient/_search", json={"name": "x"})
    assert response.status_code in (400, 415)


# -- hostile values --------------------------------------------------------------------------------

HOSTILE = [
    "'",
    '"',
    "%",
    "_",
    "\\",
    "%'--",
    "' OR '1'='1",
    "'; DROP TABLE resource; --",
    "x') UNION SELECT content FROM resource --",
    "$1 ? :x",
    "a|b|c",
    "\u2028🙂",
    "x" * 5000,
    "ö" * 3000,
]
HOSTILE_PARAMS = {
    "Patient": [
        "name",
        "name:exact",
        "name:contains",
        "identifier",
        "gender",
        "_id",
        "_tag",
        "_profile",
        "_profile:below",
        "organization",
        "organization:Organization",
        "organization.name",
        "organization.identifier",
        "birthdate",
        "_lastUpdated",
    ],
    "Task": ["subject", "owner:Organization.name"],
    "RiskAssessment": ["probability"],
}
RESULT_PARAMS = ["_sort", "_include", "_revinclude", "_count", "_elements", "_summary", "_total", "_cursor"]


def test_hostile_values_are_data_in_every_parameter_type(client: TestClient, people: None) -> None:
    """Quotes, LIKE wildcards, backslashes, SQL and very long values find nothing and break nothing:
    the answer is a Bundle without matches, or a 400 where the value cannot be of the type."""
    for res_type, names in HOSTILE_PARAMS.items():
        for name in names:
            for value in HOSTILE:
                for sent in (value, f"zz,{PNR}|{value}"):
                    response = client.get(f"/fhir/{res_type}", params={name: sent})
                    assert response.status_code in (200, 400), (name, sent, response.text[:300])
                    body = response.json()
                    if response.status_code == 200:
                        assert ids(body) == [], (name, sent)
                    else:
                        assert body["resourceType"] == "OperationOutcome"
    assert found(client, "Patient", "") == {"p1", "p2", "p3"}
    assert found(client, "Patient", f"identifier:not={HOSTILE[7]}") == {"p1", "p2", "p3"}


def test_hostile_values_in_result_parameters_and_names(client: TestClient, people: None) -> None:
    for value in HOSTILE:
        for name in RESULT_PARAMS:
            response = client.get("/fhir/Patient", params={name: value})
            assert response.status_code in (200, 400), (name, value, response.text[:300])
            assert response.json()["resourceType"] in ("Bundle", "OperationOutcome")
        response = client.get("/fhir/Patient", params={value: "x"})
        assert response.status_code in (200, 400), (value, response.text[:300])
    assert found(client, "Patient", "") == {"p1", "p2", "p3"}


def test_nul_characters_are_refused_or_match_nothing(client: TestClient, people: None) -> None:
    for name in ("name", "name:exact", "identifier", "_id", "organization", "birthdate", "_profile"):
        response = client.get("/fhir/Patient", params={name: "a\x00b"})
        assert response.status_code in (200, 400), (name, response.text[:300])
        if response.status_code == 200:
            assert ids(response.json()) == []


def test_values_with_wildcard_characters_match_literally(client: TestClient) -> None:
    put(client, person("w1", "1", "100% O'Brien_x", "Back\\slash"))
    put(client, person("w2", "2", "100 Obrienx", "Backslash"))
    assert found(client, "Patient", [("family", "100%")]) == {"w1"}
    assert found(client, "Patient", [("family", "100% o'brien_")]) == {"w1"}
    assert found(client, "Patient", [("family:contains", "_")]) == {"w1"}
    assert found(client, "Patient", [("family:contains", "%")]) == {"w1"}
    assert found(client, "Patient", [("family:exact", "100% O'Brien_x")]) == {"w1"}
    assert found(client, "Patient", [("given", "back\\")]) == {"w1"}
    assert found(client, "Patient", [("given", "back\\slash")]) == {"w1"}
    assert found(client, "Patient", [("given:contains", "\\")]) == {"w1"}
    assert found(client, "Patient", [("given", "back")]) == {"w1", "w2"}


def test_escaped_commas_and_pipes_in_values(client: TestClient) -> None:
    put(client, person("c1", "1", "Berg, von", "Eva"))
    put(client, person("c2", "2", "Berg", "Eva"))
    put(client, person("c3", "a|b", "Pipe", "Eva", identifier=[{"value": "a|b"}, {"value": "x,y"}]))
    assert found(client, "Patient", [("identifier", "a\\|b")]) == {"c3"}
    assert found(client, "Patient", [("identifier", "|a\\|b")]) == {"c3"}
    assert found(client, "Patient", [("identifier", "a|b")]) == set()  # system a, code b
    assert found(client, "Patient", [("identifier", "x\\,y")]) == {"c3"}
    assert found(client, "Patient", [("identifier", "x,y")]) == set()
    assert found(client, "Patient", [("family:exact", "Berg\\, von")]) == {"c1"}
    assert found(client, "Patient", [("family:exact", "Berg, von")]) == {"c2"}  # ORed: "Berg" or " von"
    assert found(client, "Patient", [("identifier", f"{PNR}|1,{PNR}|2")]) == {"c1", "c2"}
