"""The Beställningsportalen adapter end to end: POST /adapters/bestallningsportalen/orders (and the CLI)
through the common write path, on both databases. The orders are the golden inputs, varied per test."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from gateway.adapters import quarantine
from gateway.adapters.bestallningsportalen import to_fhir
from gateway.adapters.bestallningsportalen.adapter import ADAPTER, context_for
from gateway.cli import app
from gateway.services import Services
from gateway.store.tables import ResourceVersion
from tests.adapters.source_ids import bp
from tests.api.helpers import HSA
from tests.conftest import Database

GOLDEN = Path(__file__).parents[1] / "golden" / "bestallningsportalen"
URL = "/adapters/bestallningsportalen/orders"
TAGS = "https://fhir.home-device-gateway.se/CodeSystem/adapter-tags"


def golden(name: str) -> dict[str, Any]:
    path = next(GOLDEN.glob(f"{name}*.order.json"))
    order: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return order


def post(client: TestClient, *orders: Any) -> list[dict[str, Any]]:
    body = orders[0] if len(orders) == 1 else list(orders)
    response = client.post(URL, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "batch-response"
    entries: list[dict[str, Any]] = [e["response"] for e in response.json()["entry"]]
    return entries


def search(client: TestClient, query: str) -> list[dict[str, Any]]:
    bundle = client.get(f"/fhir/{query}").json()
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def read(client: TestClient, reference: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{reference}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def errors(entry: dict[str, Any]) -> list[tuple[str, list[str]]]:
    return [
        (issue["diagnostics"], issue.get("expression", []))
        for issue in entry["outcome"]["issue"]
        if issue["severity"] == "error"
    ]


def test_the_actual_prescriber_is_the_requester_and_the_orderer_only_the_enterer(client: TestClient) -> None:
    [entry] = post(client, golden("01"))
    assert entry["status"] == "201 Created"
    assert entry["location"].startswith(f"DeviceRequest/{bp('BP-2026-004711', 'r1')}/_history/1")
    request = read(client, f"DeviceRequest/{bp('BP-2026-004711', 'r1')}")
    role = read(client, request["requester"]["reference"])
    assert role["identifier"][0]["value"] == "SE2321000016-F9X8@SE2321000016-LUNG"
    assert "tag" not in request.get("meta", {})
    assert search(client, "Task?code=confirm-prescriber") == []
    [provenance] = search(client, f"Provenance?target=DeviceRequest/{bp('BP-2026-004711', 'r1')}")
    by_type = {a["type"]["coding"][0]["code"]: a for a in provenance["agent"]}
    assert by_type["author"]["who"]["reference"] == request["requester"]["reference"]
    enterer = read(client, by_type["enterer"]["who"]["reference"])
    assert enterer["identifier"][0]["value"].startswith("SE2321000016-A1B2@")
    assert by_type["enterer"]["onBehalfOf"]["reference"] == request["requester"]["reference"]
    binary = read(client, provenance["entity"][0]["what"]["reference"])
    assert binary["contentType"] == "application/json"
    targets = {t["reference"].split("/")[0] for t in provenance["target"]}
    assert {"Patient", "DeviceRequest", "CarePlan", "Observation", "PractitionerRole"} <= targets
    [patient] = search(
        client, "Patient?identifier=http://electronichealth.se/identifier/personnummer|191212121212"
    )
    assert patient["meta"]["profile"] == ["http://hl7.se/fhir/ig/base/StructureDefinition/SEBasePatient"]
    [plan] = search(client, f"CarePlan?subject=Patient/{patient['id']}")
    assert [a["detail"]["scheduledPeriod"]["start"] for a in plan["activity"] if "detail" in a] == [
        "2026-12-11",
        "2027-05-19",
    ]
    assert request["supportingInfo"] == [{"reference": f"Observation/{bp('BP-2026-004711', 'selfcare')}"}]


def test_an_unnamed_prescriber_is_tagged_and_confirmed_through_a_task(client: TestClient) -> None:
    [entry] = post(client, golden("02"))
    assert entry["status"] == "201 Created"
    tagged = search(client, f"DeviceRequest?_tag={TAGS}|unconfirmed-prescriber")
    assert [r["id"] for r in tagged] == [f"{bp('BP-2026-004712', 'r1')}"]
    orderer_role = tagged[0]["requester"]["reference"]
    [task] = search(client, "Task?code=confirm-prescriber&status=requested")
    assert task["focus"] == {"reference": f"DeviceRequest/{bp('BP-2026-004712', 'r1')}"}
    owner = read(client, task["owner"]["reference"])
    assert owner["identifier"][0]["value"] == "SE2321000016-LUNG"
    # the ordering unit names the real prescriber (known from another order) and completes the Task
    post(client, golden("01"))
    [real] = search(client, "PractitionerRole?identifier=https://fhir.home-device-gateway.se/identifier/"
                    "practitioner-role|SE2321000016-F9X8@SE2321000016-LUNG")  # fmt: skip
    done = {
        **task,
        "status": "completed",
        "output": [
            {
                "type": {"text": "prescriber"},
                "valueReference": {"reference": f"PractitionerRole/{real['id']}"},
            }
        ],
    }
    assert client.put(f"/fhir/Task/{task['id']}", json=done).status_code == 200
    request = read(client, f"DeviceRequest/{bp('BP-2026-004712', 'r1')}")
    assert request["requester"]["reference"] == f"PractitionerRole/{real['id']}" != orderer_role
    assert "tag" not in request.get("meta", {})
    assert search(client, f"DeviceRequest?_tag={TAGS}|unconfirmed-prescriber") == []
    assert len(search(client, f"Provenance?target=DeviceRequest/{bp('BP-2026-004712', 'r1')}")) == 2
    # a later version of the order, still without forskrivare, keeps the confirmed prescriber
    [again] = post(client, {**golden("02"), "version": 2, "meddelande": "Ändrad"})
    assert again["status"] == "200 OK", again
    request = read(client, f"DeviceRequest/{bp('BP-2026-004712', 'r1')}")
    assert request["requester"]["reference"] == f"PractitionerRole/{real['id']}"
    assert "tag" not in request.get("meta", {})


def versions(services: Services) -> int:
    with services.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(ResourceVersion)).scalar_one())


def test_the_same_order_again_changes_nothing(client: TestClient, services: Services) -> None:
    orders = [golden(n) for n in ("01", "02", "07", "08")]
    first = post(client, *orders)
    assert [e["status"] for e in first] == ["201 Created"] * 4
    history = versions(services)
    again = post(client, *orders)
    assert [e["status"] for e in again] == ["200 OK"] * 4
    assert all("nothing changed" in e["outcome"]["issue"][0]["diagnostics"] for e in again)
    assert [e["location"] for e in again] == [e["location"] for e in first]
    assert versions(services) == history
    # the same content in other bytes is the same order
    text = json.dumps(golden("01"), indent=4, ensure_ascii=True)
    response = client.post(URL, content=text, headers={"Content-Type": "application/json"})
    assert response.json()["entry"][0]["response"]["status"] == "200 OK"
    assert len(search(client, "Patient")) == 1  # four orders for Tolvan: one Patient, never duplicated


def test_a_higher_version_updates_and_withdraws_dropped_lines(client: TestClient) -> None:
    order = golden("04")
    post(client, order)
    newer = copy.deepcopy(order)
    newer["version"] = 2
    newer["rader"] = [{**order["rader"][0], "antal": 20}]
    [entry] = post(client, newer)
    assert entry["status"] == "200 OK"
    line1 = read(client, f"DeviceRequest/{bp('BP-2026-004714', 'r1')}")
    assert line1["parameter"][0]["valueQuantity"]["value"] == 20
    assert line1["meta"]["versionId"] == "2"
    assert read(client, f"DeviceRequest/{bp('BP-2026-004714', 'r2')}")["status"] == "revoked"
    # cancelling the order revokes every line and cancels its open Tasks
    unconfirmed = golden("02")
    post(client, unconfirmed)
    post(client, {**unconfirmed, "version": 2, "status": "makulerad"})
    assert read(client, f"DeviceRequest/{bp('BP-2026-004712', 'r1')}")["status"] == "revoked"
    assert read(client, f"Task/{bp('BP-2026-004712', 'confirm')}")["status"] == "cancelled"


def test_versions_of_one_order_in_one_batch_are_applied_in_their_order(client: TestClient) -> None:
    """The orders of a batch are read together and written together; a later version of an order of the
    same batch is read (and built) only after the earlier one is written."""
    order, other = golden("04"), golden("01")
    newer = copy.deepcopy(order)
    newer["version"] = 2
    newer["rader"] = [{**order["rader"][0], "antal": 20}]
    entries = post(client, order, other, newer, other)
    assert [e["status"] for e in entries] == ["201 Created", "201 Created", "200 OK", "200 OK"], entries
    assert "nothing changed" in entries[3]["outcome"]["issue"][0]["diagnostics"]
    line1 = read(client, f"DeviceRequest/{bp('BP-2026-004714', 'r1')}")
    assert line1["parameter"][0]["valueQuantity"]["value"] == 20 and line1["meta"]["versionId"] == "2"
    assert read(client, f"DeviceRequest/{bp('BP-2026-004714', 'r2')}")["status"] == "revoked"


def test_an_order_whose_write_fails_in_its_batch_is_written_alone_and_the_rest_still_load(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An order whose Bundle fails inside the batch's unit of work (here, once: a version expected of a
    resource that has none) takes nothing else with it; by itself it is read and built again."""
    build = to_fhir.build
    spoiled: list[str] = []

    def spoil_once(order: dict[str, Any], *args: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = build(order, *args)
        if order["ordernummer"] == golden("03")["ordernummer"] and not spoiled:
            spoiled.append(order["ordernummer"])
            request = {"method": "PUT", "url": "Organization/org-nowhere", "ifMatch": 'W/"9"'}
            resource = {"resourceType": "Organization", "id": "org-nowhere", "name": "Nowhere"}
            bundle["entry"].append({"resource": resource, "request": request})
        return bundle

    monkeypatch.setattr(to_fhir, "build", spoil_once)
    entries = post(client, golden("01"), golden("02"), golden("03"), golden("05"), golden("07"))
    assert [e["status"] for e in entries] == ["201 Created"] * 5, entries
    assert spoiled == [golden("03")["ordernummer"]]
    assert search(client, "Organization?_id=org-nowhere") == []
    assert len(search(client, "Provenance")) == 5


def test_a_version_without_follow_up_or_self_care_ends_the_earlier_ones(
    client: TestClient, services: Services
) -> None:
    order = golden("01")  # uppfoljning and egenvard
    post(client, order)
    [line] = [read(client, f"DeviceRequest/{bp('BP-2026-004711', 'r1')}")]
    assert line["supportingInfo"] == [{"reference": f"Observation/{bp('BP-2026-004711', 'selfcare')}"}]
    newer = {k: v for k, v in order.items() if k not in ("uppfoljning", "egenvard")}
    [entry] = post(client, {**newer, "version": 2})
    assert entry["status"] == "200 OK", entry
    plan = read(client, f"CarePlan/{bp('BP-2026-004711', 'followup')}")
    assert plan["status"] == "revoked" and plan["meta"]["versionId"] == "2"
    assert (
        "Version 2 av order BP-2026-004711 har inte längre någon uppföljningsplan" in plan["note"][0]["text"]
    )
    assert [a["detail"]["status"] for a in plan["activity"] if "detail" in a] == ["cancelled", "cancelled"]
    assert [a["reference"] for a in plan["activity"] if "reference" in a] == [
        {"reference": f"DeviceRequest/{bp('BP-2026-004711', 'r1')}"}
    ]
    assessment = read(client, f"Observation/{bp('BP-2026-004711', 'selfcare')}")
    assert assessment["status"] == "cancelled" and assessment["meta"]["versionId"] == "2"
    assert "har inte längre någon egenvårdsbedömning" in assessment["note"][0]["text"]
    assert "supportingInfo" not in read(client, f"DeviceRequest/{bp('BP-2026-004711', 'r1')}")
    assert search(client, "CarePlan?status=active") == []
    assert search(client, "Observation?status=final") == []
    [provenance] = search(client, f"Provenance?_id={bp('BP-2026-004711', 'provenance')}")
    targets = {t["reference"] for t in provenance["target"]}
    assert {
        f"CarePlan/{bp('BP-2026-004711', 'followup')}",
        f"Observation/{bp('BP-2026-004711', 'selfcare')}",
    } <= targets
    # the same version again, and a later one still without them, leave them as they are
    history = versions(services)
    [again] = post(client, {**newer, "version": 2})
    assert again["status"] == "200 OK" and "nothing changed" in json.dumps(again["outcome"])
    assert versions(services) == history
    post(client, {**newer, "version": 3, "meddelande": "Ändrad igen"})
    assert read(client, f"CarePlan/{bp('BP-2026-004711', 'followup')}")["meta"]["versionId"] == "2"
    assert read(client, f"Observation/{bp('BP-2026-004711', 'selfcare')}")["meta"]["versionId"] == "2"


def test_a_follow_up_activity_already_done_stands_when_the_plan_is_withdrawn(client: TestClient) -> None:
    order = golden("01")
    post(client, order)
    plan = read(client, f"CarePlan/{bp('BP-2026-004711', 'followup')}")
    plan["activity"][1]["detail"]["status"] = "completed"  # the unit made the 21-day visit
    plan["activity"][2]["detail"]["status"] = "in-progress"
    response = client.put(f"/fhir/CarePlan/{bp('BP-2026-004711', 'followup')}", json=plan)
    assert response.status_code == 200, response.text
    post(client, {**{k: v for k, v in order.items() if k != "uppfoljning"}, "version": 2})
    withdrawn = read(client, f"CarePlan/{bp('BP-2026-004711', 'followup')}")
    assert withdrawn["status"] == "revoked"
    assert [a["detail"]["status"] for a in withdrawn["activity"][1:]] == ["completed", "stopped"]
    assert (
        read(client, f"Observation/{bp('BP-2026-004711', 'selfcare')}")["status"] == "final"
    )  # egenvard kept


def test_an_older_version_or_other_content_is_409_and_quarantined(
    client: TestClient, services: Services
) -> None:
    order = {**golden("01"), "version": 2}
    post(client, order)
    [older] = post(client, {**order, "version": 1})
    assert older["status"] == "409 Conflict"
    assert errors(older)[0][1] == ["version"]
    [other] = post(client, {**order, "meddelande": "Annat innehåll"})
    assert other["status"] == "409 Conflict"
    assert "different content" in errors(other)[0][0]
    items = quarantine.listing(services.engine, "bestallningsportalen")
    assert [item.source_key for item in items] == ["BP BP-2026-004711 v1", "BP BP-2026-004711 v2"]
    assert json.loads(items[1].payload)["meddelande"] == "Annat innehåll"
    assert read(client, f"DeviceRequest/{bp('BP-2026-004711', 'r1')}")["meta"]["versionId"] == "1"


REQUIRED = [
    "ordernummer",
    "ordertyp",
    "status",
    "skapad",
    "patient",
    "patient.personnummer",
    "registrerad_av",
    "registrerad_av.hsaid",
    "registrerad_av.namn",
    "registrerad_av.enhet_hsaid",
    "forskrivare.hsaid",
    "forskrivare.namn",
    "forskrivare.enhet_hsaid",
    "rader",
    "rader[0].radnummer",
    "rader[0].artikelnummer",
    "rader[0].benamning",
    "rader[0].antal",
    "uppfoljning.ansvarig_enhet_hsaid",
    "uppfoljning.plan",
    "uppfoljning.plan[0].efter_dagar",
    "uppfoljning.plan[0].satt",
    "egenvard.bedomning",
]


def _without(order: dict[str, Any], path: str) -> dict[str, Any]:
    changed = copy.deepcopy(order)
    *parents, last = path.replace("[0]", ".0").split(".")
    node: Any = changed
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    del node[last]
    return changed


@pytest.mark.parametrize("path", REQUIRED)
def test_a_missing_required_field_is_named_and_nothing_is_written(
    client: TestClient, services: Services, path: str
) -> None:
    [entry] = post(client, _without(golden("01"), path))
    assert entry["status"] == "400 Bad Request"
    expected = "patient.personnummer" if path == "patient.personnummer" else path
    assert [expression for _, expression in errors(entry)] == [[expected]]
    assert search(client, "Patient") == [] and search(client, "Binary") == []
    assert len(quarantine.listing(services.engine, "bestallningsportalen")) == 1


def test_bad_values_are_named_by_their_json_path(client: TestClient) -> None:
    bad = golden("01")
    bad["patient"]["personnummer"] = "19121212-1213"  # wrong check digit
    bad["rader"][0]["antal"] = 0
    bad["ordertyp"] = "bestallning"
    bad["forskrivare"]["hsaid"] = "F9X8"
    [entry] = post(client, bad)
    assert sorted(e[0] for _, e in errors(entry)) == [
        "forskrivare.hsaid",
        "ordertyp",
        "patient.personnummer",
        "rader[0].antal",
    ]
    [hamtorder] = post(client, {k: v for k, v in golden("08").items() if k != "hamtar_individnummer"})
    assert errors(hamtorder)[0][1] == ["hamtar_individnummer"]


def test_a_batch_goes_on_past_bad_orders(client: TestClient) -> None:
    lines = [json.dumps(golden("01")), "{not json", json.dumps(golden("03")), json.dumps([1])]
    response = client.post(URL, content="\n".join(lines), headers={"Content-Type": "application/x-ndjson"})
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "201 Created", "400 Bad Request"]
    too_many = "\n".join(["{}"] * 1001)
    response = client.post(URL, content=too_many, headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 413


def test_hamtorder_and_arbetsorder_become_tasks_to_the_device_unit(client: TestClient) -> None:
    entries = post(client, golden("08"), golden("07"), golden("09"))
    assert [e["location"].split("/_history")[0] for e in entries] == [
        f"Task/{bp('BP-2026-004718', 'task')}",
        f"Task/{bp('BP-2026-004717', 'task')}",
        f"Task/{bp('BP-2026-004719', 'task')}",
    ]
    pickup = read(client, f"Task/{bp('BP-2026-004718', 'task')}")
    assert pickup["code"]["coding"][0]["code"] == "return-device" and pickup["status"] == "requested"
    device = read(client, pickup["focus"]["reference"])
    assert device["identifier"] == [
        {
            "system": "https://fhir.home-device-gateway.se/identifier/individnummer/sesam",
            "value": "MAH-000123",
        }
    ]
    work = read(client, f"Task/{bp('BP-2026-004717', 'task')}")
    assert work["code"]["coding"][0]["code"] == "work-order"
    assert work["focus"] == pickup["focus"]  # the same unit, found by register + individnummer
    assert read(client, work["owner"]["reference"])["identifier"][0]["value"] == "SE2321000016-MAH1"
    assert read(client, f"Task/{bp('BP-2026-004719', 'task')}")["status"] == "cancelled"
    assert search(client, "DeviceRequest") == []


def test_master_data_is_merged_never_erased_and_the_newer_event_wins(client: TestClient) -> None:
    post(client, golden("01"))
    sparse = golden("10")
    sparse["patient"] = {"personnummer": "191212121212", "telefon": "070-1111111"}
    sparse["skapad"] = "2026-11-21T10:00:00+01:00"
    post(client, sparse)
    [patient] = search(client, "Patient")
    assert patient["name"][0]["family"] == "Tolvansson"  # not erased by an order without a name
    assert patient["telecom"][0]["value"] == "070-1111111"  # the newer order's phone
    older = {**golden("03"), "patient": {"personnummer": "191212121212", "telefon": "070-2222222"}}
    older["skapad"] = "2026-01-01T10:00:00+01:00"
    post(client, older)
    [patient] = search(client, "Patient")
    assert patient["telecom"][0]["value"] == "070-1111111"  # an older event does not overwrite


def test_master_data_of_orders_in_one_batch_is_merged_as_if_they_came_one_by_one(client: TestClient) -> None:
    """The orders of a batch are written together; one naming a Patient an earlier one of the batch
    creates is built again on what that one wrote (its newer phone kept, the older one's not)."""
    sparse = golden("10")
    sparse["patient"] = {"personnummer": "191212121212", "telefon": "070-1111111"}
    sparse["skapad"] = "2026-11-21T10:00:00+01:00"
    older = {**golden("03"), "patient": {"personnummer": "191212121212", "telefon": "070-2222222"}}
    older["skapad"] = "2026-01-01T10:00:00+01:00"
    entries = post(client, golden("01"), sparse, older)
    assert [e["status"] for e in entries] == ["201 Created"] * 3, entries
    [patient] = search(client, "Patient")
    assert patient["name"][0]["family"] == "Tolvansson"
    assert patient["telecom"][0]["value"] == "070-1111111"


def test_a_quarantined_order_is_replayed_after_correction(client: TestClient, services: Services) -> None:
    bad = {**golden("01"), "status": "okand"}
    post(client, bad)
    [item] = quarantine.listing(services.engine, "bestallningsportalen")
    fixed = json.dumps({**bad, "status": "registrerad"}).encode()
    response = ADAPTER.replay(services, context_for(services), fixed, item.content_type)
    assert response["entry"][0]["response"]["status"] == "201 Created"
    again = ADAPTER.replay(services, context_for(services), item.payload, item.content_type)
    assert again["entry"][0]["response"]["status"] == "400 Bad Request"
    assert len(quarantine.listing(services.engine, "bestallningsportalen")) == 1  # not kept twice


def test_cli_imports_orders_with_a_summary(database: Database, services: Services, tmp_path: Path) -> None:
    jsonl = tmp_path / "orders.ndjson"
    jsonl.write_text("\n".join(json.dumps(golden(n)) for n in ("01", "02")) + "\n{broken\n", encoding="utf-8")
    array = tmp_path / "orders.json"
    array.write_text(json.dumps([golden("01"), golden("03")], indent=2), encoding="utf-8")
    env = {**database.environment(), "COLUMNS": "60"}
    result = CliRunner().invoke(app, ["import", "orders", str(jsonl), str(array)], env=env)
    assert result.exit_code == 1, result.output
    assert "orders: created 3, updated 0, unchanged 1, rejected 1" in result.output
    assert "orders.ndjson: order 3: 400 Bad Request" in result.output


def test_an_invalid_order_is_quarantined_under_its_number_and_version(
    client: TestClient, services: Services
) -> None:
    """Refused for its content (a personnummer with a wrong check digit), an order whose number can be
    read is quarantined under it and its version; one whose number cannot, under its position."""
    bad = {**golden("01"), "version": 3}
    bad["patient"] = {**bad["patient"], "personnummer": "191212121213"}
    [refused] = post(client, bad)
    assert refused["status"] == "400 Bad Request"
    [nameless] = post(client, {k: v for k, v in bad.items() if k != "ordernummer"})
    assert nameless["status"] == "400 Bad Request"
    items = quarantine.listing(services.engine, "bestallningsportalen")
    assert [item.source_key for item in items] == ["BP BP-2026-004711 v3", "#1"]


def test_a_prescriber_who_keyed_the_order_themselves_is_one_practitioner(client: TestClient) -> None:
    """`forskrivare` is the person in `registrerad_av`, new to the gateway: stored, with one Practitioner
    who is both the author and the enterer of the order's Provenance."""
    order = {**golden("01"), "ordernummer": "BP-2026-009001"}
    prescriber = order["forskrivare"]
    order["registrerad_av"] = {k: prescriber[k] for k in ("hsaid", "namn", "enhet_hsaid", "enhet_namn")}
    [answer] = post(client, order)
    assert answer["status"] == "201 Created", answer
    practitioners = client.get(f"/fhir/Practitioner?identifier={HSA}|{prescriber['hsaid']}").json()["entry"]
    assert len(practitioners) == 1
    assert practitioners[0]["resource"]["qualification"][0]["identifier"][0]["value"] == "1234567"
    provenance = read(client, f"Provenance/{bp('BP-2026-009001', 'provenance')}")
    roles = {a["type"]["coding"][0]["code"]: a["who"].get("reference") for a in provenance["agent"]}
    assert roles["author"] == roles["enterer"] and roles["author"].startswith("PractitionerRole/")
