"""High-risk identification end to end, as organisation-scoped clients: the rules fire on what the region,
the clinic and the municipality write (a reaction in the write's transaction), the gateway proposes a
preliminary RiskAssessment and an active Flag tagged `proposed`, visible to every related organisation
(its basis only as far as each may read it), not to an unrelated one; the clinic that requested a device
dismisses it with a reason (the municipality may not), and it stays dismissed until a new input."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.risk.reaction import risk_pass
from gateway.services import Services
from tests.api.helpers import HSA, patient
from tests.security.conftest import bearer, organisation_policy, register
from tests.security.test_organisation_policy import pnr, ref

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ALL = "system/*.cruds"
SNOMED = "http://snomed.info/sct"
HL7 = "http://terminology.hl7.org/CodeSystem"
BASE = "https://fhir.home-device-gateway.se"
SAFETY = "http://terminology.hl7.org/CodeSystem/flag-category|safety"


def days_ago(days: int) -> str:
    return (date.today() - timedelta(days=days)).isoformat()


class Clients:
    def __init__(self, services: Services, client: TestClient) -> None:
        self.client = client
        region = register(services, ALL, org="SE-REGION")
        organisation_policy(services).region_clients = frozenset({region.client_id})
        self.region = bearer(region.token(client, ALL))
        self.clinic = bearer(register(services, ALL, org="SE-CLINIC").token(client, ALL))
        self.kommun = bearer(register(services, ALL, org="SE-KOMMUN").token(client, ALL))
        self.other = bearer(register(services, ALL, org="SE-OTHER").token(client, ALL))

    def put(self, resource: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        response = self.client.put(url, json=resource, headers=headers or self.region)
        assert response.status_code in (200, 201), response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, url: str, headers: dict[str, str]) -> Any:
        response = self.client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    def search(self, url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
        return [
            e["resource"] for e in self.get(url, headers).get("entry", []) if e["search"]["mode"] == "match"
        ]


def seed(c: Clients) -> None:
    for org in ("CLINIC", "KOMMUN", "OTHER"):
        c.put(
            {
                "resourceType": "Organization",
                "id": org.lower(),
                "identifier": [{"system": HSA, "value": f"SE-{org}"}],
            }
        )
    c.put({"resourceType": "Practitioner", "id": "doc", "name": [{"family": "Läkare"}]})
    c.put(
        {
            "resourceType": "PractitionerRole",
            "id": "doc-role",
            "practitioner": ref("Practitioner/doc"),
            "organization": ref("Organization/clinic"),
        }
    )
    c.put(patient(pnr(21), id="risk", birthDate="1938-04-01"))  # 80 or older: one rule, weight 1
    c.put(
        {
            "resourceType": "DeviceRequest",
            "id": "oxygen-order",
            "status": "completed",
            "intent": "order",
            "codeCodeableConcept": {"text": "syrgas"},
            "subject": ref("Patient/risk"),
            "requester": ref("PractitionerRole/doc-role"),
        }
    )
    c.put(
        {
            "resourceType": "Task",
            "id": "handover",
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": f"{BASE}/CodeSystem/care-transition-task", "code": "handover"}]},
            "for": ref("Patient/risk"),
            "owner": ref("Organization/kommun"),
        }
    )


def assessment(c: Clients, headers: dict[str, str]) -> dict[str, Any]:
    found = c.search("/fhir/RiskAssessment?subject=Patient/risk", headers)
    assert len(found) == 1
    return found[0]


def flag(c: Clients, headers: dict[str, str], status: str = "active") -> list[dict[str, Any]]:
    return c.search(f"/fhir/Flag?patient=Patient/risk&status={status}&category={SAFETY}", headers)


@pytest.fixture
def clients(secure_services: Services, secure_client: TestClient) -> Clients:
    found = Clients(secure_services, secure_client)
    seed(found)
    return found


def test_proposed_visible_to_related_dismissed_until_new_input(
    secure_services: Services, clients: Clients
) -> None:
    c = clients
    # age (1) and a need for help with none active (1): the threshold (2) is reached
    proposed = assessment(c, c.region)
    assert proposed["status"] == "preliminary"
    assert proposed["method"]["coding"][0]["code"] == "hogriskpatient"
    notes = " ".join(n["text"] for n in proposed["note"])
    assert "hög ålder" in notes and "ingen hjälp hemma" in notes and "80 år" in notes
    assert {b["reference"] for b in proposed["basis"]} == {"Patient/risk", "Task/handover"}
    [shown] = flag(c, c.region)
    assert shown["code"]["coding"][0]["code"] == "hogriskpatient"
    assert "Högriskpatient" in shown["code"]["text"] and "ingen hjälp hemma" in shown["code"]["text"]
    assert shown["meta"]["tag"][0]["code"] == "proposed"
    assert shown["extension"][0]["valueReference"]["reference"] == f"RiskAssessment/{proposed['id']}"

    # lives alone, written by the region: the municipality may not read that Observation
    c.put(
        {
            "resourceType": "Observation",
            "id": "alone",
            "status": "final",
            "code": {"coding": [{"system": SNOMED, "code": "224130005"}]},
            "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "105529008"}]},
            "subject": ref("Patient/risk"),
            "effectiveDateTime": days_ago(30),
        }
    )
    assert "bor ensam" in " ".join(n["text"] for n in assessment(c, c.region)["note"])
    assert "Observation/alone" in {b["reference"] for b in assessment(c, c.region)["basis"]}
    # the related municipality sees the flag and the assessment, not what it may not read in the basis
    assert flag(c, c.kommun)
    seen = assessment(c, c.kommun)
    assert "Observation/alone" not in {b["reference"] for b in seen.get("basis", [])}
    assert c.client.get("/fhir/Observation/alone", headers=c.kommun).status_code == 404
    # an unrelated organisation: no Flag, no assessment, $everything 404
    assert flag(c, c.other) == []
    assert c.search("/fhir/RiskAssessment?subject=Patient/risk", c.other) == []
    assert c.client.get(f"/fhir/RiskAssessment/{proposed['id']}", headers=c.other).status_code == 404
    assert c.client.get("/fhir/Patient/risk/$everything", headers=c.other).status_code == 404

    # the municipality may not decide; the clinic (it requested a device) may, with a reason, writing back
    # what it was shown
    current = assessment(c, c.clinic)
    cancelled = {**current, "status": "cancelled"}
    url = f"/fhir/RiskAssessment/{current['id']}"
    by_kommun = {**cancelled, "note": [*current["note"], {"text": "Hemtjänsten finns."}]}
    assert c.client.put(url, json=by_kommun, headers=c.kommun).status_code == 403
    refused = c.client.put(url, json=cancelled, headers=c.clinic)
    assert refused.status_code == 422 and "RiskAssessment.note" in refused.text
    wider = {**cancelled, "basis": [], "note": [*current["note"], {"text": "Fel"}]}
    assert c.client.put(url, json=wider, headers=c.clinic).status_code == 403
    reason = {
        "authorReference": ref("PractitionerRole/doc-role"),
        "text": "Dottern bor hos patienten sedan oktober.",
    }
    dismissed = {
        **cancelled,
        "note": [*current["note"], reason],
        "performer": ref("PractitionerRole/doc-role"),
    }
    answer = c.client.put(url, json=dismissed, headers=c.clinic)
    assert answer.status_code == 200, answer.text
    assert flag(c, c.region) == []
    assert len(flag(c, c.region, "inactive")) == 1

    # an unrelated write and a pass change nothing
    c.put(
        {
            "resourceType": "Observation",
            "id": "pulse",
            "status": "final",
            "code": {"text": "puls"},
            "subject": ref("Patient/risk"),
        }
    )
    assert risk_pass(secure_services, "risk") == {"unchanged": 1}
    assert assessment(c, c.region)["status"] == "cancelled"

    # a new input: an oxygen concentrator at home (an advanced device class) raises it again
    c.put(
        {
            "resourceType": "Device",
            "id": "concentrator",
            "status": "active",
            "type": {"coding": [{"system": f"{BASE}/CodeSystem/iso9999", "code": "04 03 12"}]},
            "patient": ref("Patient/risk"),
            "owner": ref("Organization/clinic"),
        }
    )
    raised = assessment(c, c.region)
    assert raised["status"] == "preliminary"
    assert "avancerat hjälpmedel" in " ".join(n["text"] for n in raised["note"])
    assert reason in raised["note"]  # the clinician's note stays
    [again] = flag(c, c.region)
    assert again["meta"]["tag"][0]["code"] == "proposed"

    # confirmed by the clinic: the tag goes, the flag stays active
    seen = assessment(c, c.clinic)
    confirmed = {**seen, "status": "final", "performer": ref("PractitionerRole/doc-role")}
    answer = c.client.put(f"/fhir/RiskAssessment/{raised['id']}", json=confirmed, headers=c.clinic)
    assert answer.status_code == 200, answer.text
    [final_flag] = flag(c, c.kommun)
    assert not final_flag.get("meta", {}).get("tag")
    assert c.search("/fhir/RiskAssessment?status=final", c.kommun)[0]["id"] == raised["id"]


def test_only_the_gateway_creates_or_deletes_an_assessment(clients: Clients) -> None:
    c = clients
    current = assessment(c, c.region)
    copy = {k: v for k, v in current.items() if k not in ("id", "meta")}
    assert c.client.post("/fhir/RiskAssessment", json=copy, headers=c.region).status_code == 403
    assert c.client.delete(f"/fhir/RiskAssessment/{current['id']}", headers=c.region).status_code == 403


def test_language_devices_and_the_latest_living_situation(clients: Clients) -> None:
    """Speaks neither Swedish nor English, three devices at home from two owners; lives alone until a
    later living-situation Observation without 105529008 wins."""
    c = clients
    c.put(
        patient(
            pnr(22),
            id="young",
            birthDate="1990-01-01",
            communication=[{"language": {"coding": [{"code": "ar"}]}}],
        )
    )
    for number, owner in enumerate(("clinic", "clinic", "kommun")):
        c.put(
            {
                "resourceType": "Device",
                "id": f"rollator-{number}",
                "status": "active",
                "patient": ref("Patient/young"),
                "owner": ref(f"Organization/{owner}"),
            }
        )
    found = c.search("/fhir/RiskAssessment?subject=Patient/young&status=preliminary", c.region)
    assert len(found) == 1
    notes = " ".join(n["text"] for n in found[0]["note"])
    assert "tolk eller språk" in notes and "många hjälpmedel" in notes and "hög ålder" not in notes
    situation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": SNOMED, "code": "224130005"}]},
        "subject": ref("Patient/young"),
    }
    alone = {"coding": [{"system": SNOMED, "code": "105529008"}]}
    c.put({**situation, "id": "then", "valueCodeableConcept": alone, "effectiveDateTime": days_ago(60)})
    with_alone = c.search("/fhir/RiskAssessment?subject=Patient/young", c.region)[0]
    assert "bor ensam" in " ".join(n["text"] for n in with_alone["note"])
    c.put(
        {
            **situation,
            "id": "now",
            "valueCodeableConcept": {"text": "bor med make"},
            "effectiveDateTime": days_ago(10),
        }
    )
    latest = c.search("/fhir/RiskAssessment?subject=Patient/young", c.region)[0]
    assert "bor ensam" not in " ".join(n["text"] for n in latest["note"])
    assert latest["status"] == "preliminary"


def test_a_dementia_condition_fires_cognitive_decline(clients: Clients) -> None:
    """The clinic (related through its DeviceRequest) records a dementia diagnosis (ICD-10-SE F03, in
    ValueSet cognitive-decline): the rule `kognitiv-svikt` (weight 2) alone reaches the threshold. The
    related municipality sees the Flag naming it (named exception 9), not the Condition; an unrelated
    municipality sees neither."""
    c = clients
    c.put(patient(pnr(23), id="minne", birthDate="1960-05-01"))
    c.put(
        {
            "resourceType": "DeviceRequest",
            "id": "minne-order",
            "status": "active",
            "intent": "order",
            "codeCodeableConcept": {"text": "rollator"},
            "subject": ref("Patient/minne"),
            "requester": ref("PractitionerRole/doc-role"),
        }
    )
    c.put(
        {
            "resourceType": "Task",
            "id": "minne-handover",
            "status": "completed",
            "intent": "order",
            "code": {"coding": [{"system": f"{BASE}/CodeSystem/care-transition-task", "code": "handover"}]},
            "for": ref("Patient/minne"),
            "owner": ref("Organization/kommun"),
        }
    )
    assert c.search("/fhir/RiskAssessment?subject=Patient/minne", c.region) == []
    condition = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": f"{HL7}/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": "urn:oid:1.2.752.116.1.1.1.1.3", "code": "F03"}]},
        "subject": ref("Patient/minne"),
        "recorder": ref("PractitionerRole/doc-role"),
    }
    written = c.client.post("/fhir/Condition", json=condition, headers=c.clinic)
    assert written.status_code == 201, written.text
    condition_ref = f"Condition/{written.json()['id']}"
    assert c.client.get(f"/fhir/{condition_ref}", headers=c.clinic).status_code == 200

    [proposed] = c.search("/fhir/RiskAssessment?subject=Patient/minne", c.region)
    assert proposed["status"] == "preliminary"
    assert "kognitiv svikt" in " ".join(n["text"] for n in proposed["note"])
    assert condition_ref in {b["reference"] for b in proposed["basis"]}
    flags = f"/fhir/Flag?patient=Patient/minne&status=active&category={SAFETY}"
    [shown] = c.search(flags, c.kommun)
    assert "Högriskpatient" in shown["code"]["text"] and "kognitiv svikt" in shown["code"]["text"]
    # the municipality may not read the Condition, nor find it, nor see it in the basis
    assert c.client.get(f"/fhir/{condition_ref}", headers=c.kommun).status_code == 404
    assert c.search("/fhir/Condition?subject=Patient/minne", c.kommun) == []
    seen = c.search("/fhir/RiskAssessment?subject=Patient/minne", c.kommun)[0]
    assert condition_ref not in {b["reference"] for b in seen.get("basis", [])}
    # an unrelated municipality: no Flag, no assessment, no Condition
    assert c.search(flags, c.other) == []
    assert c.search("/fhir/RiskAssessment?subject=Patient/minne", c.other) == []
    assert c.client.get(f"/fhir/{condition_ref}", headers=c.other).status_code == 404
    assert c.search("/fhir/Condition?subject=Patient/minne", c.other) == []


INTERPRETER = "http://hl7.org/fhir/StructureDefinition/patient-interpreterRequired"
SWEDISH = [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "sv-SE"}]}}]


def interpreter(needed: bool) -> list[dict[str, Any]]:
    return [{"url": INTERPRETER, "valueBoolean": needed}]


def test_an_interpreter_need_fires_the_language_rule(clients: Clients) -> None:
    """`patient-interpreterRequired` true fires `tolk-eller-sprak` for a Swedish-speaking patient (the
    rule's FHIRPath reads `value`, the R4 choice element `valueBoolean`); writing the extension is itself
    a write the rules read, so it triggers the evaluation, also for a patient no other Patient rule
    concerns."""
    c = clients
    # 80 or older (1): the interpreter need (1) reaches the threshold, false does not
    c.put(patient(pnr(24), id="tolk", birthDate="1938-06-01", communication=SWEDISH))
    c.put(
        patient(
            pnr(24), id="tolk", birthDate="1938-06-01", communication=SWEDISH, extension=interpreter(False)
        )
    )
    assert c.search("/fhir/RiskAssessment?subject=Patient/tolk", c.region) == []
    c.put(
        patient(
            pnr(24), id="tolk", birthDate="1938-06-01", communication=SWEDISH, extension=interpreter(True)
        )
    )
    [proposed] = c.search("/fhir/RiskAssessment?subject=Patient/tolk", c.region)
    assert proposed["status"] == "preliminary"
    notes = [n["text"] for n in proposed["note"]]
    assert "tolk eller språk: Patienten behöver tolk eller talar varken svenska eller engelska." in notes
    assert any(n.startswith("hög ålder:") for n in notes)

    # 35 years old with a need for help at home and none active (1): only the interpreter need, written
    # on the Patient, can raise it, so its write must be found relevant
    c.put(patient(pnr(25), id="tolk-ung", birthDate="1990-01-01", communication=SWEDISH))
    c.put(
        {
            "resourceType": "Task",
            "id": "tolk-ung-handover",
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": f"{BASE}/CodeSystem/care-transition-task", "code": "handover"}]},
            "for": ref("Patient/tolk-ung"),
            "owner": ref("Organization/kommun"),
        }
    )
    assert c.search("/fhir/RiskAssessment?subject=Patient/tolk-ung", c.region) == []
    c.put(
        patient(
            pnr(25), id="tolk-ung", birthDate="1990-01-01", communication=SWEDISH, extension=interpreter(True)
        )
    )
    [young] = c.search("/fhir/RiskAssessment?subject=Patient/tolk-ung", c.region)
    fired = " ".join(n["text"] for n in young["note"])
    assert "tolk eller språk" in fired and "ingen hjälp hemma" in fired and "hög ålder" not in fired


def test_a_confirming_unit_decides_only_the_gateways_assessment(clients: Clients) -> None:
    """The clinic confirms for the patient (it requested a device), which lets it decide on the gateway's
    proposal, not rewrite another organisation's RiskAssessment of the same patient: that one is under the
    ordinary ownership rules (403), though the clinic may read it (named exception 9)."""
    c = clients
    theirs = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": ref("Patient/risk"),
        "code": {"text": "fallrisk"},
        "note": [{"text": "Bedömd av kommunens arbetsterapeut."}],
    }
    written = c.client.post("/fhir/RiskAssessment", json=theirs, headers=c.kommun)
    assert written.status_code == 201, written.text
    url = f"/fhir/RiskAssessment/{written.json()['id']}"
    seen = c.get(url, c.clinic)
    changed = {
        **seen,
        "status": "cancelled",
        "performer": ref("PractitionerRole/doc-role"),
        "note": [*seen.get("note", []), {"authorReference": ref("PractitionerRole/doc-role"), "text": "Fel"}],
    }
    refused = c.client.put(url, json=changed, headers=c.clinic)
    assert refused.status_code == 403, refused.text
    assert c.client.put(url, json={**seen, "status": "cancelled"}, headers=c.clinic).status_code == 403
    assert c.get(url, c.region)["status"] == "final"

    # the gateway's proposal it still decides
    [proposal] = [
        found
        for found in c.search("/fhir/RiskAssessment?subject=Patient/risk", c.clinic)
        if found.get("identifier")
    ]
    confirmed = {**proposal, "status": "final", "performer": ref("PractitionerRole/doc-role")}
    answer = c.client.put(f"/fhir/RiskAssessment/{proposal['id']}", json=confirmed, headers=c.clinic)
    assert answer.status_code == 200, answer.text


def test_a_dismissal_reason_is_shown_to_its_author_and_the_region(clients: Clients) -> None:
    """The proposal is visible to every related organisation (named exception 9), but a clinician's note
    is free text: the related municipality is shown the gateway's notes (the rules' explanations) and not
    the clinic's reason, in any answer; the clinic and the region are. A note the reader was not shown
    stays as stored when it writes back what it read, and a confirming unit names no other as a note's
    author."""
    c = clients
    why = "Dottern bor hos patienten sedan oktober."
    seen_by_clinic = assessment(c, c.clinic)  # its own view: the Task it may not read left out of the basis
    assert [b["reference"] for b in seen_by_clinic["basis"]] == ["Patient/risk"]
    url = f"/fhir/RiskAssessment/{seen_by_clinic['id']}"
    cancelled = {**seen_by_clinic, "status": "cancelled", "performer": ref("PractitionerRole/doc-role")}
    # a note in another organisation's name, or claiming to be the gateway's, is refused
    c.put(
        {
            "resourceType": "PractitionerRole",
            "id": "kommun-role",
            "practitioner": ref("Practitioner/doc"),
            "organization": ref("Organization/kommun"),
        }
    )
    theirs = {"authorReference": ref("PractitionerRole/kommun-role"), "text": why}
    in_their_name = {**cancelled, "note": [*seen_by_clinic["note"], theirs]}
    assert c.client.put(url, json=in_their_name, headers=c.clinic).status_code == 403
    # nor may it name another organisation's PractitionerRole as the performer of its decision
    mine = {"authorReference": ref("PractitionerRole/doc-role"), "text": why}
    by_another = {**cancelled, "performer": ref("PractitionerRole/kommun-role")}
    by_another["note"] = [*seen_by_clinic["note"], mine]
    assert c.client.put(url, json=by_another, headers=c.clinic).status_code == 403
    # claiming the gateway's authorship is refused to everyone, a region-wide client too: those notes are
    # shown to every related organisation and make the Flag's text
    claimed = {"authorString": "Gatewayen", "text": "påhittad regel: En förklaring ingen regel gav."}
    by_region = assessment(c, c.region)
    as_gateway = {**by_region, "note": [*by_region["note"], claimed]}
    assert c.client.put(url, json=as_gateway, headers=c.region).status_code == 403
    as_gateway = {**cancelled, "note": [*seen_by_clinic["note"], claimed]}
    assert c.client.put(url, json=as_gateway, headers=c.clinic).status_code == 403
    reason = {"authorReference": ref("PractitionerRole/doc-role"), "text": why}
    answer = c.client.put(
        url, json={**cancelled, "note": [*seen_by_clinic["note"], reason]}, headers=c.clinic
    )
    assert answer.status_code == 200, answer.text

    def texts(resource: dict[str, Any]) -> list[str]:
        return [str(n.get("text")) for n in resource.get("note", [])]

    by_region = assessment(c, c.region)
    assert by_region["status"] == "cancelled" and why in texts(by_region)
    basis = {b["reference"] for b in by_region["basis"]}
    assert basis == {"Patient/risk", "Task/handover"}  # what it was not shown stays
    assert why in texts(assessment(c, c.clinic))
    by_kommun = assessment(c, c.kommun)
    assert why not in texts(by_kommun)
    assert any(t.startswith("hög ålder:") for t in texts(by_kommun))  # the gateway's notes are shown
    for path in (url, f"{url}/_history", "/fhir/Patient/risk/$everything"):
        # the assessment is in every answer, with the gateway's notes; the reason only in the region's
        shown = {
            reader: json.dumps(c.get(path, headers), ensure_ascii=False)
            for reader, headers in (("kommun", c.kommun), ("region", c.region))
        }
        assert "80 år" in shown["kommun"] and why not in shown["kommun"], path
        assert why in shown["region"], path

    # a region note the clinic is not shown stays where it is when the clinic confirms from its view
    noted = {**by_region, "note": [*by_region["note"], {"authorString": "Regionen", "text": "Ring dottern."}]}
    assert c.client.put(url, json=noted, headers=c.region).status_code == 200
    clinic_view = assessment(c, c.clinic)
    assert "Ring dottern." not in texts(clinic_view) and why in texts(clinic_view)
    # a note naming no author: nothing says whose it is, so only the region is shown it
    unsigned = {"authorString": "Läkare", "text": "Bekräftad efter hembesök."}
    confirmed = {**clinic_view, "status": "final", "note": [*clinic_view["note"], unsigned]}
    answer = c.client.put(url, json=confirmed, headers=c.clinic)
    assert answer.status_code == 200, answer.text
    after = assessment(c, c.region)
    assert after["status"] == "final" and texts(after) == [*texts(noted), unsigned["text"]]
    assert unsigned["text"] not in texts(assessment(c, c.kommun)) + texts(assessment(c, c.clinic))

    # a JSON Patch applies to what is stored: it may add a note at the end, and no `test` confirms a guess
    # of a note or basis the clinic is not shown
    patching = c.clinic | {"Content-Type": "application/json-patch+json"}
    hidden_at = texts(after).index("Ring dottern.")
    guesses = [
        [{"op": "test", "path": f"/note/{hidden_at}/text", "value": "Ring dottern."}],
        [{"op": "test", "path": "/basis/1/reference", "value": "Task/handover"}],
        [{"op": "copy", "from": f"/note/{hidden_at}", "path": "/note/-"}],
        [{"op": "test", "path": "", "value": after}],
    ]
    for guess in guesses:
        assert c.client.patch(url, json=guess, headers=patching).status_code == 403, guess
    added = {"authorReference": ref("PractitionerRole/doc-role"), "text": "Uppföljning om en månad."}
    answer = c.client.patch(url, json=[{"op": "add", "path": "/note/-", "value": added}], headers=patching)
    assert answer.status_code == 200, answer.text
    assert texts(assessment(c, c.region)) == [*texts(after), added["text"]]


SELF_CARE_CHANGE = f"{BASE}/CodeSystem/self-care-change"
HOME_HELP_ENDS = {"coding": [{"system": SELF_CARE_CHANGE, "code": "hemtjanst-upphor"}]}
OUTPUT_TYPES = f"{BASE}/CodeSystem/task-output-type"


def handover(task_id: str, patient_id: str, status: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "id": task_id,
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": f"{BASE}/CodeSystem/care-transition-task", "code": "handover"}]},
        "for": ref(f"Patient/{patient_id}"),
        "owner": ref("Organization/kommun"),
        **more,
    }


def fired(c: Clients, patient_id: str) -> list[dict[str, Any]]:
    return c.search(f"/fhir/RiskAssessment?subject=Patient/{patient_id}", c.region)


def test_help_cancelled_by_a_status_reason_or_an_output_still_fires_no_help_at_home(
    secure_services: Services, clients: Clients
) -> None:
    """`ingen-hjalp-hemma`'s `cancelled_by`: a handover the municipality accepted or completed is help
    at home, unless its `statusReason` or an `output` says home help ends (self-care-change
    `hemtjanst-upphor`); then the rule fires as if no help were given. 80 or older (1) and the rule (1)
    reach the threshold; the accepted handover alone does not."""
    c = clients
    c.put(patient(pnr(26), id="hjalp", birthDate="1938-02-01"))
    c.put(handover("hjalp-handover", "hjalp", "accepted"))
    assert risk_pass(secure_services, "hjalp") == {"none": 1}
    assert fired(c, "hjalp") == []
    c.put(handover("hjalp-handover", "hjalp", "accepted", statusReason={**HOME_HELP_ENDS, "text": "Upphör."}))
    [by_reason] = fired(c, "hjalp")
    assert by_reason["status"] == "preliminary"
    assert any(n["text"].startswith("ingen hjälp hemma:") for n in by_reason["note"])
    assert "Task/hjalp-handover" in {b["reference"] for b in by_reason["basis"]}

    c.put(patient(pnr(27), id="utfall", birthDate="1938-03-01"))
    done = handover("utfall-handover", "utfall", "completed")
    c.put(done)
    assert risk_pass(secure_services, "utfall") == {"none": 1}
    assert fired(c, "utfall") == []
    output = {
        "type": {"coding": [{"system": OUTPUT_TYPES, "code": "self-care-change"}]},
        "valueCodeableConcept": HOME_HELP_ENDS,
    }
    c.put({**done, "output": [output]})
    [by_output] = fired(c, "utfall")
    assert any(n["text"].startswith("ingen hjälp hemma:") for n in by_output["note"])
    assert "Task/utfall-handover" in {b["reference"] for b in by_output["basis"]}


def test_living_alone_needs_a_final_or_amended_observation_within_the_window(
    secure_services: Services, clients: Clients
) -> None:
    """`bor-ensam` reads a living-situation Observation `final` or `amended` effective within 12 months:
    a `preliminary` one and a final one older than the window leave 80 or older (1) below the threshold;
    an `amended` one fires it, naming only that Observation."""
    c = clients
    c.put(patient(pnr(28), id="ensam", birthDate="1938-07-01"))
    alone = {
        "resourceType": "Observation",
        "code": {"coding": [{"system": SNOMED, "code": "224130005"}]},
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "105529008"}]},
        "subject": ref("Patient/ensam"),
    }
    c.put({**alone, "id": "ensam-prel", "status": "preliminary", "effectiveDateTime": days_ago(5)})
    assert risk_pass(secure_services, "ensam") == {"none": 1}
    assert fired(c, "ensam") == []
    c.put({**alone, "id": "ensam-old", "status": "final", "effectiveDateTime": days_ago(400)})
    assert risk_pass(secure_services, "ensam") == {"none": 1}
    assert fired(c, "ensam") == []
    c.put({**alone, "id": "ensam-amended", "status": "amended", "effectiveDateTime": days_ago(20)})
    [proposed] = fired(c, "ensam")
    assert any(n["text"].startswith("bor ensam:") for n in proposed["note"])
    basis = {b["reference"] for b in proposed["basis"]}
    assert "Observation/ensam-amended" in basis
    assert not {"Observation/ensam-prel", "Observation/ensam-old"} & basis


def test_a_snomed_code_of_the_cognitive_decline_value_set_fires_the_rule(
    secure_services: Services, clients: Clients
) -> None:
    """SNOMED CT 386806002 (impaired cognition, in profiles/ValueSet-cognitive-decline.json) fires
    `kognitiv-svikt` (weight 2) alone; a SNOMED CT code outside the ValueSet does not."""
    c = clients
    c.put(patient(pnr(29), id="kognitiv", birthDate="1960-01-01"))
    condition = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": f"{HL7}/condition-clinical", "code": "active"}]},
        "subject": ref("Patient/kognitiv"),
    }
    c.put({**condition, "id": "diabetes", "code": {"coding": [{"system": SNOMED, "code": "73211009"}]}})
    assert risk_pass(secure_services, "kognitiv") == {"none": 1}
    assert fired(c, "kognitiv") == []
    c.put({**condition, "id": "svikt", "code": {"coding": [{"system": SNOMED, "code": "386806002"}]}})
    [proposed] = fired(c, "kognitiv")
    assert proposed["status"] == "preliminary"
    assert [n["text"].split(":")[0] for n in proposed["note"]] == ["kognitiv svikt"]
    assert {b["reference"] for b in proposed["basis"]} == {"Condition/svikt"}


def test_writing_back_a_guess_at_a_hidden_basis_entry_or_note_confirms_nothing(clients: Clients) -> None:
    """A guess at a basis entry or a note the clinic is not shown, right or wrong, gets the same answer and
    makes the same kind of change: what it writes is compared with what it was shown, never with what is
    stored."""
    c = clients
    noted = assessment(c, c.region)
    region_note = {"authorString": "Regionen", "text": "Ring dottern."}
    url = f"/fhir/RiskAssessment/{noted['id']}"
    assert (
        c.client.put(url, json={**noted, "note": [*noted["note"], region_note]}, headers=c.region).status_code
        == 200
    )
    seen = assessment(c, c.clinic)
    assert "Ring dottern." not in json.dumps(seen, ensure_ascii=False)

    def answer(resource: dict[str, Any]) -> tuple[int, str]:
        response = c.client.put(url, json=resource, headers=c.clinic)
        body = response.json()
        text = (
            " ".join(i.get("diagnostics", "") for i in body.get("issue", []))
            if response.status_code >= 400
            else ""
        )
        return response.status_code, text

    shown_basis = seen.get("basis", [])
    right = answer({**seen, "basis": [ref("Task/handover"), *shown_basis]})
    wrong = answer({**seen, "basis": [ref("Task/no-such-task"), *shown_basis]})
    assert right == wrong and right[0] == 403, (right, wrong)

    versions = [int(assessment(c, c.region)["meta"]["versionId"])]
    for text in ("Ring dottern.", "Ring sonen."):
        current = assessment(c, c.clinic)
        guess = {**current, "note": [*current["note"], {"authorString": "Regionen", "text": text}]}
        response = c.client.put(url, json=guess, headers=c.clinic)
        assert response.status_code == 200, response.text
        versions.append(int(assessment(c, c.region)["meta"]["versionId"]))
    assert versions == [versions[0], versions[0] + 1, versions[0] + 2]  # the right guess is a new note too
    texts = [n.get("text") for n in assessment(c, c.region)["note"]]
    assert texts.count("Ring dottern.") == 2


def test_a_dismissed_proposal_comes_back_when_a_fired_rule_finds_new_data(clients: Clients) -> None:
    """Dismissed; a newer living-situation Observation saying the same (new data for a rule that fired)
    changes the outcome's digest: proposed again, the clinician's reason kept."""
    c = clients
    alone = {
        "resourceType": "Observation",
        "id": "alone-1",
        "status": "final",
        "code": {"coding": [{"system": SNOMED, "code": "224130005"}]},
        "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": "105529008"}]},
        "subject": ref("Patient/risk"),
        "effectiveDateTime": days_ago(30),
    }
    c.put(alone)
    seen = assessment(c, c.clinic)
    assert seen["status"] == "preliminary"
    reason = {"authorReference": ref("PractitionerRole/doc-role"), "text": "Grannen tittar in varje dag."}
    dismissed = {**seen, "status": "cancelled", "note": [*seen["note"], reason]}
    answer = c.client.put(f"/fhir/RiskAssessment/{seen['id']}", json=dismissed, headers=c.clinic)
    assert answer.status_code == 200, answer.text
    c.put({**alone, "id": "alone-2", "effectiveDateTime": days_ago(2)})
    again = assessment(c, c.region)
    assert again["status"] == "preliminary"
    assert "Observation/alone-2" in {b["reference"] for b in again["basis"]}
    assert reason in again["note"]
