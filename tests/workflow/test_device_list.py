"""The patient's device list (`Patient/{id}/$device-list`, issue 19), end to end with security on: the
seed 000 §4.8.1 patient with an oxygen concentrator prescribed by the lung clinic and delivered by MAH
(its request `completed`), a rollator from another aids centre in the register, and compression
stockings-like accessories (a `tillbehor` order); a discharge hands the patient over to home help. The
municipality that accepted the handover and the region see the whole list with owners' names,
prescribers and phone numbers; an unrelated municipality gets the answer of an unknown patient."""

from __future__ import annotations

from typing import Any

from gateway.risk.reaction import risk_pass
from gateway.security.scopes import ADAPTER_DEVICE_REGISTER
from tests.adapters.test_device_register import HEADER, changed
from tests.adapters.test_device_register import URL as RECORDS
from tests.security.conftest import bearer
from tests.workflow.journey import (
    HSA,
    KOMMUN_A,
    KOMMUN_B,
    SELF_CARE_CHANGE,
    Journey,
    journey,
    order,
    secured,
)
from tests.workflow.test_order_to_return_report import client_for

__all__ = ["journey", "secured"]  # fixtures

HMC = "SE2321000016-HMC2"
LIST_URL = "Patient/{}/$device-list"


def register(j: Journey, row: str) -> None:
    """The other aids centre's device register sends a row."""
    source = (f"device-register:SESAM@{HMC}",)
    client = client_for(j.services, "hmc-register", HMC, ADAPTER_DEVICE_REGISTER, source)
    headers = bearer(client.token(j.http, ADAPTER_DEVICE_REGISTER))
    response = j.http.post(
        f"{RECORDS}?mode=delta",
        content=f"{HEADER}\n{row}\n".encode(),
        headers={**headers, "Content-Type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert all(e["response"]["status"].startswith("20") for e in response.json()["entry"]), response.text


HOME_HELP_ENDED = "Hemtjänsten har upphört; patienten har tackat nej till fortsatt hjälp."


def seed(j: Journey, accept: bool = True) -> dict[str, Any]:
    """The §4.8.1 patient: the concentrator ordered, delivered and on loan; a rollator of another aids
    centre on loan; an accessory order delivered; a stay ending in a handover to home help, accepted or
    (`accept` false) rejected by the municipality saying home help was cancelled."""
    j.order(order("01"))
    j.order(order("01", version=2, status="levererad"))
    j.delivered()
    rollator = changed(
        "02-utlanad",
        individnummer="HMC-000777",
        serienummer="RL-4411",
        artikelnummer="120603",
        benamning="Rollator",
        iso9999="12 06 06",
        agare_hsaid=HMC,
        forskrivning_ordernummer="",
        nasta_service="",
    )
    register(j, rollator)
    j.order(order("04"))  # tillbehor: a nasal cannula without a unit, a tube with one
    j.stay()
    kommun = f"Organization/{j.organization(KOMMUN_A)}"
    handover = j.handover("ka", kommun)
    if accept:
        operations: list[dict[str, Any]] = [{"op": "replace", "path": "/status", "value": "accepted"}]
    else:
        cancelled = {"system": SELF_CARE_CHANGE, "code": "hemtjanst-upphor"}
        reason = {"coding": [cancelled], "text": HOME_HELP_ENDED}
        operations = [
            {"op": "replace", "path": "/status", "value": "rejected"},
            {"op": "add", "path": "/statusReason", "value": reason},
        ]
    j.patch("ka", f"Task/{handover['id']}", operations)
    mah = j.organization("SE2321000016-MAH1")
    service = {
        "resourceType": "HealthcareService",
        "providedBy": {"reference": f"Organization/{mah}"},
        "name": "MAH felanmälan",
        "telecom": [{"system": "phone", "value": "08-123 456 00"}],
        "availableTime": [
            {
                "daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                "availableStartTime": "08:00:00",
                "availableEndTime": "16:00:00",
            }
        ],
    }
    j.post("region", service)
    return {"patient": j.patient()}


def entries(bundle: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == mode]


def test_the_whole_list_for_the_related_municipality_and_the_region_none_for_another(
    journey: Journey,
) -> None:
    j = journey
    patient = seed(j)["patient"]
    for who in ("ka", "region"):
        bundle = j.get(who, LIST_URL.format(patient))
        assert bundle["type"] == "searchset"
        [listed] = entries(bundle, "match")
        assert bundle["entry"][0]["resource"] is listed or bundle["entry"][0]["resource"] == listed
        assert listed["resourceType"] == "List" and listed["mode"] == "snapshot"
        assert listed["subject"]["reference"] == f"Patient/{patient}"
        included = entries(bundle, "include")
        by_key = {f"{r['resourceType']}/{r['id']}": r for r in included}
        items = [e["item"]["reference"] for e in listed["entry"]]
        kinds = sorted(item.split("/")[0] for item in items)
        # the concentrator and the rollator (units); the cannula and the tube (accessories, no Device)
        assert kinds == ["Device", "Device", "DeviceRequest", "DeviceRequest"], items
        devices = [by_key[i] for i in items if i.startswith("Device/")]
        assert {d.get("serialNumber") for d in devices} >= {"SN88231", "RL-4411"}
        owners = {by_key[d["owner"]["reference"]]["identifier"][0]["value"] for d in devices}
        assert {"SE2321000016-MAH1", HMC} <= owners  # several owners
        requests = [r for r in included if r["resourceType"] == "DeviceRequest"]
        assert any(r["status"] == "completed" for r in requests)  # delivered: still listed
        assert {"PractitionerRole", "Practitioner", "Organization", "HealthcareService"} <= {
            r["resourceType"] for r in included
        }
        assert not [r for r in included if r["resourceType"] in ("Binary", "Provenance")]
        div = listed["text"]["div"]
        for text in (
            "Syrgaskoncentrator stationär",
            "Rollator",
            "Näsgrimma",
            "Medicinteknisk apparatur i hemmet (MAH)",
            f"HSA-id {HMC}",  # the register names no name: the directory does (test_directory.py)
            "Frida Förskrivare, läkare, Lungmottagningen",
            "Patienten, Hemtjänst",
            "08-123 456 00",
            "mån–fre 08:00–16:00",
            "2027-01-10",  # next service
            "2026-12-11",  # next follow-up
        ):
            assert text in div, (who, text, div)
        # the records of the list are readable in full too (patient-wide for a related organisation)
        for item in items:
            assert j.get(who, item)["id"] == item.split("/")[1]

    # an unrelated municipality: the answer of an unknown patient, nothing more
    hidden = j.http.get(f"/fhir/{LIST_URL.format(patient)}", headers=j.headers["kb"])
    unknown = j.http.get(f"/fhir/{LIST_URL.format('no-such-patient')}", headers=j.headers["kb"])
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.text.replace(patient, "X") == unknown.text.replace("no-such-patient", "X")
    assert hidden.headers.get("content-type") == unknown.headers.get("content-type")
    assert j.search("kb", f"Device?patient=Patient/{patient}") == []

    # one AuditEvent per access, naming the patient
    events = [
        e
        for e in j.audit(f"entity=Patient/{patient}")
        if any(s.get("code") == "device-list" for s in e.get("subtype", []))
    ]
    assert len([e for e in events if e["outcome"] == "0"]) == 2
    named = {ent["what"]["reference"] for e in events for ent in e.get("entity", []) if "what" in ent}
    assert f"Patient/{patient}" in named
    # and the follow-up plan its date was read from (the named exception), though not included
    assert [n for n in named if n.startswith("CarePlan/")], named


FIRED = {
    "hög ålder": "Patienten är 80 år eller äldre.",
    "många hjälpmedel": "Patienten har minst tre hjälpmedel hemma från minst två huvudmän.",
    "avancerat hjälpmedel": "Patienten har ett avancerat hjälpmedel hemma",
    "ingen hjälp hemma": "Ett behov av hjälp i hemmet har registrerats vid en vårdövergång",
}


def risk_flags(j: Journey, who: str, patient: str, status: str = "active") -> list[dict[str, Any]]:
    return j.search(who, f"Flag?patient=Patient/{patient}&status={status}")


def test_the_high_risk_patient_end_to_end_flag_first_dismissed_stays_dismissed(journey: Journey) -> None:
    """Seed 000 §4.8.1 through the adapters: two device units' devices (the order portal's delivery by
    MAH, the other aids centre's register export), a consumables order, a discharge to home help that
    the municipality rejects because home help was cancelled → the list for the municipality and the
    region, the rules firing with their Swedish explanations and the proposed Flag first; a clinic
    dismisses it, and it stays dismissed after an unrelated write and a `gateway risk evaluate` pass."""
    j = journey
    patient = seed(j, accept=False)["patient"]
    [proposed] = j.search("region", f"RiskAssessment?subject=Patient/{patient}")
    assert proposed["status"] == "preliminary"
    notes = " ".join(n["text"] for n in proposed["note"])
    for name, explanation in FIRED.items():
        assert f"{name}: {explanation}" in notes, (name, notes)

    for who in ("ka", "region"):
        bundle = j.get(who, LIST_URL.format(patient))
        [listed] = entries(bundle, "match")
        included = entries(bundle, "include")
        [flag] = [r for r in included if r["resourceType"] == "Flag"]  # included, once
        assert flag["status"] == "active" and flag["meta"]["tag"][0]["code"] == "proposed"
        assert [r for r in included if r["resourceType"] == "RiskAssessment"] == []  # its basis is per reader
        div = listed["text"]["div"]
        # the flag first, before the heading and every item, with the fired rules' explanations
        top = div.index("Högriskpatient")
        assert top < div.index("Hjälpmedelsförteckning för") < div.index("Syrgaskoncentrator stationär")
        assert "föreslagen, ej bekräftad" in div[: div.index("Hjälpmedelsförteckning för")]
        for name, explanation in FIRED.items():
            assert name in div and explanation in div, (who, name)
        for text in (
            "Syrgaskoncentrator stationär",
            "Rollator",
            "Näsgrimma",
            "Medicinteknisk apparatur i hemmet (MAH)",
            f"HSA-id {HMC}",
            "Frida Förskrivare, läkare, Lungmottagningen",
            "08-123 456 00",
        ):
            assert text in div, (who, text)
        owners = {
            r["identifier"][0]["value"]
            for r in included
            if r["resourceType"] == "Organization" and r.get("identifier")
        }
        assert {"SE2321000016-MAH1", HMC} <= owners
        page = j.http.get(f"/fhir/{LIST_URL.format(patient)}?_format=html", headers=j.headers[who])
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        body = page.text
        assert body.index('class="flag"') < body.index("<h1>") < body.index("Syrgaskoncentrator")
        assert "Högriskpatient" in body and "föreslagen, ej bekräftad" in body
        assert FIRED["hög ålder"] in body

    # the list's AuditEvents name the assessment whose explanations they showed
    events = [
        e
        for e in j.audit(f"entity=Patient/{patient}")
        if any(s.get("code") == "device-list" for s in e.get("subtype", []))
    ]
    named = {ent["what"]["reference"] for e in events for ent in e.get("entity", []) if "what" in ent}
    assert f"RiskAssessment/{proposed['id']}" in named

    # an unrelated municipality: 404 for the list as for an unknown patient, and no Flag
    hidden = j.http.get(f"/fhir/{LIST_URL.format(patient)}", headers=j.headers["kb"])
    assert hidden.status_code == 404
    assert risk_flags(j, "kb", patient) == []
    assert j.search("kb", f"RiskAssessment?subject=Patient/{patient}") == []

    # the lung clinic (it requested a device) dismisses the proposal with a reason
    reason = {"text": "Dottern flyttar hem till patienten; hemtjänst behövs inte."}
    seen = j.get("lung", f"RiskAssessment/{proposed['id']}")  # what the clinic is shown, written back
    dismissed = {**seen, "status": "cancelled", "note": [*seen["note"], reason]}
    answer = j.http.put(f"/fhir/RiskAssessment/{proposed['id']}", json=dismissed, headers=j.headers["lung"])
    assert answer.status_code == 200, answer.text
    assert risk_flags(j, "region", patient) == []
    assert len(risk_flags(j, "region", patient, "inactive")) == 1

    # an unrelated write and a `gateway risk evaluate` pass: still dismissed, no flag on the list
    pulse = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "puls"},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    j.post("region", pulse)
    assert risk_pass(j.services, patient) == {"unchanged": 1}
    [after] = j.search("region", f"RiskAssessment?subject=Patient/{patient}")
    assert after["status"] == "cancelled" and reason in after["note"]
    assert risk_flags(j, "region", patient) == []
    for who in ("ka", "region"):
        bundle = j.get(who, LIST_URL.format(patient))
        assert not [r for r in entries(bundle, "include") if r["resourceType"] == "Flag"]
        assert "Högriskpatient" not in entries(bundle, "match")[0]["text"]["div"]


def test_the_operation_is_in_metadata_and_other_formats_are_refused(journey: Journey) -> None:
    j = journey
    statement = j.http.get("/fhir/metadata").json()
    [patient] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Patient"]
    assert {"name": "device-list", "definition": f"{HSA_BASE}/OperationDefinition/device-list"} in patient[
        "operation"
    ]
    pid = j.post("region", {"resourceType": "Patient", "name": [{"family": "Tom"}]})["id"]
    empty = j.get("region", LIST_URL.format(pid))
    [listed] = entries(empty, "match")
    assert listed["entry"] == [] and listed["emptyReason"]["coding"][0]["code"] == "nilknown"
    refused = j.http.get(f"/fhir/{LIST_URL.format(pid)}?_format=xml", headers=j.headers["region"])
    assert refused.status_code == 406
    assert KOMMUN_B and HSA  # imported for the journey's parties


HSA_BASE = "https://fhir.home-device-gateway.se"


def section(div: str, what: str) -> str:
    """The narrative's facts of one item: from its heading to the end of its list."""
    start = div.index(f"<p><b>{what}</b></p>")
    return div[start : div.index("</ul>", start)]


def fact(item: str, label: str) -> str:
    """One fact of an item's section (its text after the label), empty when not shown."""
    start = item.find(f"<li>{label}: ")
    return "" if start < 0 else item[start + len(label) + 6 : item.index("</li>", start)]


def test_open_tasks_a_device_contact_and_the_article_and_iso_codes_of_an_item(journey: Journey) -> None:
    """An item's "Öppna uppgifter" names the open Task about it (its `focus`), not a completed or a
    cancelled one, nor a Task about another item; a phone in `Device.contact` (a source says so about
    that unit) comes first under "Vid fel, ring"; the article number and the ISO 9999 code are shown."""
    j = journey
    patient = seed(j)["patient"]
    devices = j.search("region", f"Device?patient=Patient/{patient}")
    [rollator] = [d for d in devices if d.get("serialNumber") == "RL-4411"]
    kommun = f"Organization/{j.organization(KOMMUN_A)}"
    for description, status in (
        ("Byt handtagen på rollatorn", "requested"),
        ("Justera rollatorns höjd", "completed"),
        ("Hämta rollatorn för service", "cancelled"),
    ):
        task = {
            "resourceType": "Task",
            "status": status,
            "intent": "order",
            "description": description,
            "for": {"reference": f"Patient/{patient}"},
            "focus": {"reference": f"Device/{rollator['id']}"},
            "owner": {"reference": kommun},
        }
        j.post("region", task)
    contact = [{"system": "phone", "value": "070-111 22 33"}]
    j.patch("region", f"Device/{rollator['id']}", [{"op": "add", "path": "/contact", "value": contact}])

    for who in ("ka", "region"):
        bundle = j.get(who, LIST_URL.format(patient))
        [listed] = entries(bundle, "match")
        div = listed["text"]["div"]
        item = section(div, "Rollator")
        owner = j.get("region", kommun)
        owner_name = owner.get("name") or f"HSA-id {KOMMUN_A}"
        assert f"Byt handtagen på rollatorn, begärd, {owner_name}" in fact(item, "Öppna uppgifter"), item
        assert "Justera rollatorns höjd" not in div and "Hämta rollatorn för service" not in div, who
        assert "Byt handtagen" not in section(div, "Syrgaskoncentrator stationär"), who
        faults = fact(item, "Vid fel, ring")
        assert faults.startswith("Enligt hjälpmedlets uppgifter, tel 070-111 22 33;"), (who, item)
        assert "070-111 22 33" not in section(div, "Syrgaskoncentrator stationär"), who
        assert fact(item, "Artikelnummer") == "120603", (who, item)
        assert fact(item, "Hjälpmedel") == "Rollator (ISO 9999 12 06 06)", (who, item)
        concentrator = section(div, "Syrgaskoncentrator stationär")
        assert fact(concentrator, "Artikelnummer") == "730012", (who, concentrator)
        assert fact(concentrator, "Hjälpmedel") == "Syrgaskoncentrator stationär (ISO 9999 04 03 12)", who
        tasks = {r.get("description") for r in entries(bundle, "include") if r["resourceType"] == "Task"}
        assert "Byt handtagen på rollatorn" in tasks, who
        assert not {"Justera rollatorns höjd", "Hämta rollatorn för service"} & tasks, who


def test_everything_of_the_patient_pages_correctly(journey: Journey) -> None:
    """The §4.8.1 patient's `$everything`, for the related municipality and the region: pages of `_count`
    linked by `next` hold every member of the unpaged answer once; an unrelated municipality gets 404."""
    j = journey
    patient = seed(j)["patient"]

    def keys(bundle: dict[str, Any], mode: str | None = None) -> list[str]:
        return [
            f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in bundle.get("entry", [])
            if mode is None or e.get("search", {}).get("mode") == mode
        ]

    for who in ("ka", "region"):
        whole = keys(j.get(who, f"Patient/{patient}/$everything"))
        assert f"Patient/{patient}" in whole and len(whole) == len(set(whole)), who
        assert any(k.startswith("Device/") for k in whole) and any(k.startswith("Task/") for k in whole), who
        members = keys(j.get(who, f"Patient/{patient}/$everything"), "match")
        paged: list[str] = []
        shown: set[str] = set()
        target: str | None = f"Patient/{patient}/$everything?_count=4"
        pages = 0
        while target:
            bundle = j.get(who, target)
            paged += keys(bundle, "match")
            shown |= set(keys(bundle))  # what a page refers to comes with it (may come again later)
            pages += 1
            following = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
            target = following[0].split("/fhir/", 1)[1] if following else None
        assert pages > 1, who
        assert sorted(paged) == sorted(members), who  # each member once, on one page
        assert shown == set(whole), who
    j.get("kb", f"Patient/{patient}/$everything", status=404)
