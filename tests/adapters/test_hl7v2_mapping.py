"""HL7 v2 ADT through POST /adapters/hl7v2: the stay, its Tasks and the SIP, as FHIR resources."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.adapters import quarantine
from gateway.adapters.hl7v2 import planning, service
from gateway.adapters.hl7v2.ack import read_ack
from gateway.adapters.hl7v2.message import Message
from gateway.adapters.hl7v2.message import parse as message_parse
from tests.adapters.test_hl7v2_messages import adt, post


def search(client: TestClient, query: str) -> list[dict[str, Any]]:
    response = client.get(f"/fhir/{query}")
    assert response.status_code == 200, response.text
    return [e["resource"] for e in response.json().get("entry", [])]


def test_admission_creates_patient_encounter_and_notices(client: TestClient) -> None:
    assert post(client, adt("A01", "M1")) == ("AA", "M1", "")
    [patient] = search(client, "Patient?identifier=191212121212")
    assert patient["name"][0] == {"family": "Tolvansson", "given": ["Tolvan"]}
    [encounter] = search(client, f"Encounter?subject=Patient/{patient['id']}")
    assert encounter["status"] == "in-progress"
    assert encounter["period"]["start"] == "2026-11-20T08:00:00+01:00"
    tasks = search(client, "Task?code=inskrivningsmeddelande")
    assert len(tasks) == 2
    assert {t["restriction"]["period"]["end"] for t in tasks} == {"2026-11-21T08:00:00+01:00"}
    assert all(t["for"]["reference"] == f"Patient/{patient['id']}" for t in tasks)
    [plan] = search(client, "CarePlan?category=sip")
    assert plan["status"] == "draft"
    [provenance] = search(client, f"Provenance?target=Encounter/{encounter['id']}")
    assert provenance["entity"][0]["what"]["reference"].startswith("Binary/")


def test_iso_8859_1_and_utf_8_keep_swedish_letters(client: TestClient) -> None:
    latin = adt("A01", "L1", family="Åström", given="Örjan", charset="8859/1")
    assert "Åström".encode("latin-1") in latin
    assert post(client, latin)[0] == "AA"
    assert (
        post(client, adt("A01", "U1", pnr="195001182046", family="Ärlig", given="Åsa", visit="V2"))[0] == "AA"
    )
    names = {p["name"][0]["family"] for p in search(client, "Patient")}
    assert names == {"Åström", "Ärlig"}


def test_a_field_the_message_lacks_is_never_erased(client: TestClient) -> None:
    assert post(client, adt("A01", "M1"))[0] == "AA"
    bare = adt("A08", "M2", sent="20261120091500").replace(b"Storgatan 1^^Stockholm^^11122^SE^^^0180", b"")
    bare = bare.replace(b"|19121212|M|", b"|||")
    assert post(client, bare)[0] == "AA"
    [patient] = search(client, "Patient")
    assert patient["address"][0]["city"] == "Stockholm"
    assert patient["birthDate"] == "1912-12-12" and patient["gender"] == "male"


def test_a_duplicate_is_answered_aa_and_changes_nothing(client: TestClient) -> None:
    message = adt("A01", "M1")
    assert post(client, message)[0] == "AA"
    kinds = ("Patient", "Encounter", "Task", "Provenance", "Binary", "Organization", "CarePlan")

    def history() -> list[Any]:
        return [client.get(f"/fhir/{kind}/_history?_count=500").json().get("entry") for kind in kinds]

    before = history()
    assert all(before)
    assert post(client, message) == ("AA", "M1", "")
    assert history() == before


def test_invalid_personnummer_is_ae_quarantined_and_writes_nothing(client: TestClient, services: Any) -> None:
    code, control, text = post(client, adt("A01", "BAD1", pnr="191212121213"))
    assert (code, control) == ("AE", "BAD1") and "personnummer" in text
    assert search(client, "Patient") == [] and search(client, "Encounter") == []
    [item] = client.get("/adapters/quarantine?adapter=hl7v2").json()["items"]
    assert item["sourceKey"].endswith("BAD1")
    stored = quarantine.get(services.engine, item["id"])
    assert stored is not None
    from gateway.adapters.registry import ADAPTERS
    from gateway.hooks import RequestContext

    fixed = adt("A01", "BAD1")
    again = ADAPTERS["hl7v2"].replay(services, RequestContext(), stored.payload, stored.content_type)
    [failed] = [entry["response"] for entry in again["entry"]]
    assert failed["status"] == "422 Unprocessable Entity" and "etag" not in failed
    ack, *errors = failed["outcome"]["issue"]
    assert ack["severity"] == "error" and ack["details"]["coding"][0]["code"] == "AE"
    assert (
        ack["diagnostics"].startswith("HL7 ACK AE for message BAD1: ")
        and "personnummer" in ack["diagnostics"]
    )
    assert errors and all(issue["severity"] == "error" for issue in errors)
    response = ADAPTERS["hl7v2"].replay(services, RequestContext(), fixed, "application/hl7-v2")
    [accepted] = [entry["response"] for entry in response["entry"]]
    assert accepted["status"] == "200 OK" and "etag" not in accepted
    assert accepted["outcome"]["issue"] == [
        {
            "severity": "information",
            "code": "informational",
            "details": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0008", "code": "AA"}]
            },
            "diagnostics": "HL7 ACK AA for message BAD1",
        }
    ]
    assert len(search(client, "Patient")) == 1
    assert client.get("/adapters/quarantine?adapter=hl7v2").json()["items"] == [item]  # not kept twice


def test_not_hl7_or_unsupported_is_ar(client: TestClient) -> None:
    assert post(client, b"hello world")[0] == "AR"
    assert post(client, adt("A04", "X1", structure="ADT_A01"))[:2] == ("AR", "X1")
    assert post(client, adt("A01", "X2").replace(b"|P|2.5|", b"|P|2.3|"))[0] == "AR"
    response = client.post("/adapters/hl7v2", content=adt("A01", "X3").replace(b"|", b"", 3))
    assert response.status_code == 200 and b"MSA|AR" in response.content
    # a broken MSH (the field separator left out before the encoding characters): a well-formed ACK that
    # says what is wrong, not a complaint about the version
    broken = adt("A01", "X4").replace(b"MSH|^~\\&|", b"MSH^~\\&|", 1)
    assert broken.startswith(b"MSH^~\\&|")
    response = client.post("/adapters/hl7v2", content=broken, headers={"Content-Type": "application/hl7-v2"})
    code, _, text = read_ack(response.content)
    assert code == "AR" and "separators" in text and "version" not in text
    assert response.content.startswith(b"MSH|^~\\&|") and b"\rMSA|AR|" in response.content
    assert client.get("/adapters/quarantine?adapter=hl7v2").json()["items"] == []


def test_ready_for_discharge_discharge_and_cancellations(client: TestClient) -> None:
    assert post(client, adt("A01", "M1"))[0] == "AA"
    assert post(client, adt("A08", "M2", sent="20261125100000", ready="20261125093000"))[0] == "AA"
    ready = search(client, "Task?code=utskrivningsklar")
    assert len(ready) == 2
    [call] = search(client, "Task?code=kalla-till-sip")
    assert call["restriction"]["period"]["end"] == "2026-11-28T09:30:00+01:00"
    assert call["focus"]["reference"].startswith("CarePlan/")
    [plan] = search(client, "CarePlan")
    assert plan["activity"][0]["reference"]["reference"] == f"Task/{call['id']}"
    discharge = adt("A03", "M3", sent="20261127120000", discharged="20261127110000")
    assert post(client, discharge)[0] == "AA"
    [encounter] = search(client, "Encounter")
    assert encounter["status"] == "finished" and encounter["period"]["end"] == "2026-11-27T11:00:00+01:00"
    first = search(client, "Task?code=handover")
    assert len(first) == 2 and {t["status"] for t in first} == {"requested"}
    assert post(client, adt("A13", "M4", sent="20261127130000"))[0] == "AA"
    cancelled = search(client, "Task?code=handover")
    assert {t["status"] for t in cancelled} == {"cancelled"}
    assert all("A13" in t["statusReason"]["text"] for t in cancelled)
    [encounter] = search(client, "Encounter")
    assert encounter["status"] == "in-progress" and "end" not in encounter["period"]
    again = adt("A03", "M5", sent="20261128120000", discharged="20261128110000")
    assert post(client, again)[0] == "AA"
    handovers = search(client, "Task?code=handover&status=requested")
    assert len(handovers) == 2 and not {t["id"] for t in handovers} & {t["id"] for t in first}


def test_cancel_admit_cancels_its_tasks_and_the_stay(client: TestClient) -> None:
    assert post(client, adt("A01", "M1"))[0] == "AA"
    assert post(client, adt("A11", "M2", sent="20261120120000"))[0] == "AA"
    tasks = search(client, "Task?code=inskrivningsmeddelande")
    assert {t["status"] for t in tasks} == {"cancelled"}
    assert [e["status"] for e in search(client, "Encounter")] == ["cancelled"]


def test_late_notices_and_overdue_tasks_are_found_by_search(client: TestClient) -> None:
    assert post(client, adt("A01", "M1", sent="20261123090000"))[0] == "AA"
    late = search(
        client, "Task?_tag=https://fhir.home-device-gateway.se/CodeSystem/care-transition-flag|late-notice"
    )
    assert len(late) == 2 and "timmar" in late[0]["note"][0]["text"]
    assert len(search(client, "Task?due=lt2026-11-22&status=requested")) == 2
    assert search(client, "Task?due=lt2026-11-21T07:00:00Z&status=requested") == []


STAY = [
    adt("A01", "O1", sent="20261120081500"),
    adt("A08", "O2", sent="20261125100000", ready="20261125093000"),
    adt("A03", "O3", sent="20261127120000", discharged="20261127110000"),
    adt("A13", "O4", sent="20261127130000"),
    adt("A03", "O5", sent="20261128120000", discharged="20261128110000"),
]


def _state(client: TestClient) -> list[Any]:
    """Every resource but the message records, without meta, the Patient's and Organizations' random ids
    replaced by their identifiers."""
    names: dict[str, str] = {}
    resources = []
    for res_type in ("Patient", "Organization", "Practitioner", "Encounter", "Task", "CarePlan", "CareTeam"):
        for resource in search(client, f"{res_type}?_count=500"):
            resource.pop("meta")
            if res_type in ("Patient", "Organization", "Practitioner"):
                names[f"{res_type}/{resource.pop('id')}"] = resource["identifier"][0]["value"]
            resources.append(resource)
    text = repr(sorted(resources, key=repr))
    for reference, name in names.items():
        text = text.replace(reference, name)
    return [text]


def test_out_of_order_arrival_gives_the_same_end_state(client: TestClient, database: Any) -> None:
    for message in STAY:
        assert post(client, message)[0] == "AA"
    in_order = _state(client)
    database.clear()
    for message in [STAY[4], STAY[2], STAY[0], STAY[3], STAY[1]]:
        assert post(client, message)[0] == "AA"
    assert _state(client) == in_order
    [encounter] = search(client, "Encounter")
    assert encounter["status"] == "finished"


def test_each_message_is_parsed_once_and_read_back_alike(
    client: TestClient, database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stay's earlier messages come from the adapter's cache of parsed messages, not parsed again;
    read back from their Binaries instead (the cache emptied before every message), the end state is
    the same."""
    parses: list[bytes] = []
    real_parse = message_parse

    def counting(data: bytes, stored: bool = False) -> Message:
        parses.append(data)
        return real_parse(data, stored)

    for message in STAY:
        planning.EVENTS.items.clear()
        assert post(client, message)[0] == "AA"
    from_binaries = _state(client)
    database.clear()
    monkeypatch.setattr(service, "parse", counting)
    monkeypatch.setattr(planning, "parse", counting)  # where a stay's earlier messages are read back
    for message in STAY:
        assert post(client, message)[0] == "AA"
    assert _state(client) == from_binaries
    assert len(parses) == len(STAY)


def test_a_discharge_before_its_admission_leaves_the_stay_finished(client: TestClient) -> None:
    """Out of order and in ISO 8859-1: the discharge first, then the admission; the stay ends finished,
    the name as sent."""
    a03 = adt(
        "A03", "O2", charset="8859/1", family="Åström", sent="20261127120000", discharged="20261127110000"
    )
    a01 = adt("A01", "O1", charset="8859/1", family="Åström")
    assert post(client, a03)[0] == "AA" and post(client, a01)[0] == "AA"
    [encounter] = search(client, "Encounter")
    assert encounter["status"] == "finished"
    [person] = search(client, "Patient")
    assert person["name"][0]["family"] == "Åström"
