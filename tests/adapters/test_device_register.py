"""The device register adapter end to end: POST /adapters/device-register/records (and the CLI, the
quarantine and replay) through the common write path, on both databases. Rows are the golden inputs."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from gateway.adapters import quarantine
from gateway.adapters.bestallningsportalen.adapter import context_for as order_context
from gateway.adapters.bestallningsportalen.adapter import import_order
from gateway.adapters.bestallningsportalen.parse import pieces
from gateway.adapters.device_register import to_fhir
from gateway.adapters.device_register.adapter import (
    ADAPTER,
    Importer,
    context_for,
    import_rows,
    open_csv,
    required_columns,
)
from gateway.app import create_app
from gateway.cli import app
from gateway.services import Services
from gateway.store.tables import ResourceVersion
from tests.adapters.source_ids import bp
from tests.conftest import Database

GOLDEN = Path(__file__).parents[1] / "golden" / "device_register"
ORDERS = Path(__file__).parents[1] / "golden" / "bestallningsportalen"
URL = "/adapters/device-register/records"
TAGS = "https://fhir.home-device-gateway.se/CodeSystem/adapter-tags"
HEADER = (GOLDEN / "01-i-lager.csv").read_text(encoding="utf-8").splitlines()[0]
COLUMNS = HEADER.split(";")


def row_of(name: str) -> str:
    return next(GOLDEN.glob(f"{name}*.csv")).read_text(encoding="utf-8").splitlines()[1]


def changed(name: str, **values: str) -> str:
    cells = dict(zip(COLUMNS, row_of(name).split(";"), strict=True))
    cells.update(values)
    return ";".join(cells[c] for c in COLUMNS)


def post(client: TestClient, *rows: str, mode: str = "delta", header: str = HEADER) -> list[dict[str, Any]]:
    body = "\n".join([header, *rows]) + "\n"
    response = client.post(f"{URL}?mode={mode}", content=body.encode(), headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "batch-response"
    return [e["response"] for e in response.json()["entry"]]


def search(client: TestClient, query: str) -> list[dict[str, Any]]:
    bundle = client.get(f"/fhir/{query}").json()
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def read(client: TestClient, reference: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{reference}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def device(client: TestClient, register: str, number: str) -> dict[str, Any]:
    system = f"https://fhir.home-device-gateway.se/identifier/individnummer/{register.lower()}"
    [found] = search(client, f"Device?identifier={system}|{number}")
    return found


def versions(services: Services) -> int:
    """Versions of every resource but AuditEvent (reading what is stored is audited, and changes nothing)."""
    statement = (
        select(func.count()).select_from(ResourceVersion).where(ResourceVersion.res_type != "AuditEvent")
    )
    with services.engine.connect() as connection:
        return int(connection.execute(statement).scalar_one())


def post_order(client: TestClient, name: str) -> None:
    order = json.loads(next(ORDERS.glob(f"{name}*.order.json")).read_text(encoding="utf-8"))
    response = client.post("/adapters/bestallningsportalen/orders", json=order)
    assert response.json()["entry"][0]["response"]["status"] == "201 Created", response.text


def test_a_unit_on_loan_becomes_a_device_at_the_patient_used_for_its_order_line(client: TestClient) -> None:
    post_order(client, "01")
    [entry] = post(client, row_of("02"))
    assert entry["status"] == "201 Created", entry
    assert entry["location"].startswith("Device/")
    unit = device(client, "SESAM", "MAH-000123")
    assert unit["serialNumber"] == "SN88231"
    assert unit["status"] == "active"
    assert unit["statusReason"][0]["coding"][0]["code"] == "utlanad"
    assert unit["deviceName"][0]["name"] == "Syrgaskoncentrator stationär"
    assert unit["modelNumber"] == "OC-5" and unit["manufacturer"] == "Acme Medical"
    assert {c["code"] for c in unit["type"]["coding"]} == {"04 03 12", "730012"}
    owner = read(client, unit["owner"]["reference"])
    assert owner["identifier"][0]["value"] == "SE2321000016-MAH1"
    patient = read(client, unit["patient"]["reference"])
    assert patient["name"][0]["family"] == "Tolvansson"  # the order's Patient, not a duplicate
    assert len(search(client, "Patient")) == 1
    [maintenance] = unit["extension"]
    parts = {e["url"]: e for e in maintenance["extension"]}
    assert parts["serviceInterval"]["valueDuration"]["value"] == 12
    assert parts["nextService"]["valueDate"] == "2027-01-10"
    assert parts["batteryBackup"]["valueBoolean"] is False
    [use] = search(client, f"DeviceUseStatement?device=Device/{unit['id']}")
    assert use["status"] == "active" and use["subject"] == unit["patient"]
    assert use["timingPeriod"]["start"] == "2026-11-25"
    assert use["extension"][0]["valueReference"]["reference"] == f"DeviceRequest/{bp('BP-2026-004711', 'r1')}"
    [provenance] = search(client, f"Provenance?target=Device/{unit['id']}")
    binary = read(client, provenance["entity"][0]["what"]["reference"])
    assert binary["contentType"] == "text/csv"
    text = json.dumps(entry["outcome"])
    assert "DeviceUseStatement/" in text and "created" in text


SAMORDNINGSNUMMER = "http://electronichealth.se/identifier/samordningsnummer"


def test_a_unit_on_loan_to_a_patient_with_a_samordningsnummer_is_with_the_orders_patient(
    client: TestClient,
) -> None:
    post_order(client, "10")  # the order names its patient by samordningsnummer 19121272-4569
    [entry] = post(client, row_of("09"))
    assert entry["status"] == "201 Created", entry
    [patient] = search(client, "Patient")  # one Patient: the order's, not a duplicate
    assert patient["identifier"] == [{"system": SAMORDNINGSNUMMER, "value": "191212724569"}]
    unit = device(client, "SESAM", "MAH-000130")
    assert unit["patient"]["reference"] == f"Patient/{patient['id']}"
    [use] = search(client, f"DeviceUseStatement?device=Device/{unit['id']}")
    assert use["subject"]["reference"] == f"Patient/{patient['id']}"
    [line] = search(client, "DeviceRequest")
    assert use["extension"][0]["valueReference"]["reference"] == f"DeviceRequest/{line['id']}"


def test_a_register_patient_by_samordningsnummer_is_the_one_a_later_order_names(client: TestClient) -> None:
    post(client, changed("09", patient_personnummer="191212724569"))  # without the hyphen
    [patient] = search(client, "Patient")
    assert patient["identifier"] == [{"system": SAMORDNINGSNUMMER, "value": "191212724569"}]
    post_order(client, "10")
    [same] = search(client, "Patient")
    assert same["id"] == patient["id"]
    [line] = search(client, "DeviceRequest")
    assert line["subject"]["reference"] == f"Patient/{patient['id']}"


def test_the_patients_number_with_or_without_its_hyphen_is_the_same_use(
    client: TestClient, services: Services
) -> None:
    post(client, row_of("09"))  # 19121272-4569
    before = versions(services)
    [entry] = post(client, changed("09", patient_personnummer="191212724569"))
    assert entry["status"] == "200 OK" and "nothing changed" in json.dumps(entry["outcome"])
    assert versions(services) == before


def test_a_bad_samordningsnummer_is_rejected_naming_the_column(
    client: TestClient, services: Services
) -> None:
    # the Luhn check digit is right, but the day is 92 - 60 = 32
    [entry] = post(client, changed("09", patient_personnummer="19121292-4565"))
    assert entry["status"] == "400 Bad Request"
    [issue] = entry["outcome"]["issue"]
    assert issue["expression"] == ["patient_personnummer"]
    assert issue["diagnostics"].startswith("line 2, column patient_personnummer:")
    assert "samordningsnummer" in issue["diagnostics"]
    assert versions(services) == 0


def test_a_row_identical_to_what_is_stored_changes_nothing(client: TestClient, services: Services) -> None:
    rows = [row_of(f"0{i}") for i in range(1, 9)]
    first = post(client, *rows)
    assert [e["status"] for e in first] == ["201 Created"] * 8, first
    before = versions(services)
    again = post(client, *rows)
    assert [e["status"] for e in again] == ["200 OK"] * 8
    assert all("nothing changed" in json.dumps(e["outcome"]) for e in again)
    assert versions(services) == before


def test_a_changed_row_updates_the_same_device(client: TestClient) -> None:
    post(client, row_of("01"))
    [entry] = post(client, changed("01", nasta_service="2027-02-01", status="På service"))
    assert entry["status"] == "200 OK" and "updated" in json.dumps(entry["outcome"])
    unit = device(client, "SESAM", "MAH-000200")
    assert unit["status"] == "inactive" and unit["meta"]["versionId"] == "2"
    assert len(search(client, f"Provenance?target=Device/{unit['id']}")) == 2


def test_a_returned_unit_completes_its_return_task_and_ends_its_use(client: TestClient) -> None:
    post_order(client, "01")
    post(client, row_of("02"))
    post_order(client, "08")  # hämtorder for MAH-000123
    unit = device(client, "SESAM", "MAH-000123")
    [task] = search(client, f"Task?focus=Device/{unit['id']}")
    assert task["status"] == "requested"
    [entry] = post(client, changed("02", status="Återlämnad", patient_personnummer=""))
    assert entry["status"] == "200 OK", entry
    assert read(client, f"Task/{task['id']}")["status"] == "completed"
    [use] = search(client, f"DeviceUseStatement?device=Device/{unit['id']}")
    assert use["status"] == "completed" and "end" in use["timingPeriod"]
    assert "patient" not in device(client, "SESAM", "MAH-000123")


def test_a_recalled_unit_at_a_patient_tasks_the_owner_and_tells_the_prescriber(client: TestClient) -> None:
    post_order(client, "01")
    [entry] = post(client, row_of("08"))
    assert entry["status"] == "201 Created", entry
    unit = device(client, "SESAM", "MAH-000127")
    [task] = search(
        client, "Task?code=https://fhir.home-device-gateway.se/CodeSystem/device-register-task|recall-device"
    )
    assert task["owner"] == unit["owner"] and task["focus"]["reference"] == f"Device/{unit['id']}"
    [message] = search(client, "Communication")
    request = read(client, f"DeviceRequest/{bp('BP-2026-004711', 'r1')}")
    assert message["recipient"] == [request["requester"]]
    assert message["subject"] == unit["patient"]
    # the same row again: no second Task or message
    assert post(client, row_of("08"))[0]["status"] == "200 OK"
    assert len(search(client, "Communication")) == 1


def test_a_full_export_marks_units_it_no_longer_lists_and_a_delta_touches_only_its_rows(
    client: TestClient,
) -> None:
    post(client, row_of("01"), row_of("03"), row_of("06"), mode="full")
    entries = post(client, row_of("01"), mode="delta")
    assert entries[0]["status"] == "200 OK" and len(entries) == 1
    entries = post(client, row_of("01"), mode="full")
    assert len(entries) == 2  # the row, then MAH-000124 marked missing (MEDUSA is not in this export)
    assert "missing" in json.dumps(entries[1]["outcome"])
    missing = search(client, f"Device?_tag={TAGS}|missing-from-register")
    assert [d["identifier"][0]["value"] for d in missing] == ["MAH-000124"]
    assert len(search(client, "Device")) == 3  # never deleted
    assert len(post(client, row_of("01"), mode="full")) == 1  # already marked: nothing more
    post(client, row_of("03"), mode="delta")  # listed again: the tag goes
    assert search(client, f"Device?_tag={TAGS}|missing-from-register") == []


def test_a_full_export_spelling_its_register_two_ways_lists_the_units_of_both(client: TestClient) -> None:
    post(client, row_of("01"), row_of("03"), mode="full")
    entries = post(client, row_of("01"), changed("03", register="sesam"), mode="full")
    assert len(entries) == 2, entries  # the rows, and nothing marked missing
    assert search(client, f"Device?_tag={TAGS}|missing-from-register") == []


def test_a_header_lacking_a_required_column_is_rejected_whole(client: TestClient, services: Services) -> None:
    for column in required_columns():
        header = ";".join(c for c in COLUMNS if c != column)
        cells = dict(zip(COLUMNS, row_of("01").split(";"), strict=True))
        body = header + "\n" + ";".join(cells[c] for c in COLUMNS if c != column) + "\n"
        response = client.post(URL, content=body.encode(), headers={"Content-Type": "text/csv"})
        assert response.status_code == 400, column
        assert column in response.json()["issue"][0]["diagnostics"]
    response = client.post(URL, content=b'{"not": "csv"}', headers={"Content-Type": "text/csv"})
    assert response.status_code == 400
    assert versions(services) == 0


@pytest.mark.parametrize(
    "column", ["individnummer", "register", "artikelnummer", "benamning", "status", "agare_hsaid"]
)
def test_a_row_lacking_a_required_value_is_rejected_by_line_and_column(
    client: TestClient, services: Services, column: str
) -> None:
    entries = post(client, row_of("01"), changed("03", **{column: ""}))
    assert entries[0]["status"] == "201 Created"
    assert entries[1]["status"] == "400 Bad Request"
    [issue] = [i for i in entries[1]["outcome"]["issue"] if i["severity"] == "error"]
    assert issue["diagnostics"].startswith(f"line 3, column {column}:")
    assert issue["expression"] == [column]
    [item] = quarantine.listing(services.engine, "device-register")
    assert item.payload.decode().startswith(HEADER)


@pytest.mark.parametrize(
    ("values", "column"),
    [
        ({"status": "Försvunnen"}, "status"),
        ({"patient_personnummer": "191212121213"}, "patient_personnummer"),
        ({"patient_personnummer": "19121272-4568"}, "patient_personnummer"),  # samordningsnummer, bad Luhn
        ({"status": "Utlånad", "patient_personnummer": ""}, "patient_personnummer"),
        ({"nasta_service": "2027-13-01"}, "nasta_service"),
        ({"agare_hsaid": "MAH1"}, "agare_hsaid"),
        ({"serviceintervall_manader": "tolv"}, "serviceintervall_manader"),
        ({"livslangd_ar": "sju"}, "livslangd_ar"),
        ({"batteribackup": "Kanske"}, "batteribackup"),
    ],
)
def test_a_bad_value_is_rejected_and_the_rest_of_the_file_still_loads(
    client: TestClient, values: dict[str, str], column: str
) -> None:
    entries = post(client, changed("03", **values), row_of("01"))
    assert [e["status"] for e in entries] == ["400 Bad Request", "201 Created"]
    [issue] = [i for i in entries[0]["outcome"]["issue"] if i["severity"] == "error"]
    assert issue["expression"] == [column] and issue["diagnostics"].startswith("line 2,")


def test_a_row_with_the_wrong_number_of_values_names_its_line(client: TestClient) -> None:
    entries = post(client, row_of("01"), "MAH-1;SESAM")
    assert entries[1]["status"] == "400 Bad Request"
    assert "line 3 has 2 values" in entries[1]["outcome"]["issue"][0]["diagnostics"]


def test_one_unit_twice_in_a_batch_with_other_content_conflicts(client: TestClient) -> None:
    entries = post(client, row_of("01"), changed("01", modell="OC-6"))
    assert [e["status"] for e in entries] == ["201 Created", "409 Conflict"]


def test_one_unit_twice_alike_in_a_batch_is_one_device_and_the_rows_after_it_are_written(
    client: TestClient,
) -> None:
    """The rows of a chunk are written together; the repeated row, built before the first was written,
    stops the group (it would write what the first writes), is read and built again by itself
    (unchanged), and the rows after it are written on what is stored by then."""
    rows = [row_of("01"), row_of("02"), row_of("01"), row_of("03"), row_of("04")]
    entries = post(client, *rows)
    statuses = [e["status"] for e in entries]
    assert statuses == ["201 Created", "201 Created", "200 OK", "201 Created", "201 Created"], entries
    assert "nothing changed" in json.dumps(entries[2]["outcome"])
    device(client, "SESAM", "MAH-000200")  # one Device, not two


def test_a_row_whose_write_fails_in_its_chunk_is_written_alone_and_the_rest_still_loads(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Bundle built on a stale view (here, once: a version expected of a resource that has none) fails
    inside the chunk's unit of work without taking the rows before it along; by itself it is built
    again, and the rows after it are read and built again."""
    build = to_fhir.build
    spoiled: list[str] = []

    def spoil_once(row: dict[str, Any], *args: Any) -> tuple[dict[str, Any], Any]:
        bundle, notes = build(row, *args)
        if row["individnummer"] == "MAH-000500" and not spoiled:
            spoiled.append(row["individnummer"])
            owner = {**bundle["entry"][0]["resource"], "id": "org-nowhere"}
            request = {"method": "PUT", "url": "Organization/org-nowhere", "ifMatch": 'W/"9"'}
            bundle["entry"].append({"resource": owner, "request": request})
        return bundle, notes

    monkeypatch.setattr(to_fhir, "build", spoil_once)
    rows = [changed("01", individnummer=f"MAH-000{n}00") for n in range(3, 8)]
    entries = post(client, *rows)
    assert [e["status"] for e in entries] == ["201 Created"] * 5, entries
    assert spoiled == ["MAH-000500"]
    for n in range(3, 8):
        device(client, "SESAM", f"MAH-000{n}00")
    assert search(client, "Organization?_id=org-nowhere") == []


def test_more_than_the_row_limit_is_refused_before_anything_is_written(
    client: TestClient, services: Services
) -> None:
    rows = [changed("01", individnummer=f"MAH-{i}") for i in range(10_001)]
    response = client.post(URL, content=("\n".join([HEADER, *rows]) + "\n").encode())
    assert response.status_code == 413
    assert versions(services) == 0


def test_a_quarantined_row_is_replayed_once_corrected(client: TestClient, services: Services) -> None:
    post(client, changed("01", status="Försvunnen"))
    [item] = quarantine.listing(services.engine, "device-register")
    fixed = item.payload.decode().replace("Försvunnen", "I lager").encode()
    result = ADAPTER.replay(services, context_for(services), fixed, item.content_type)
    assert result["entry"][0]["response"]["status"] == "201 Created"
    still = ADAPTER.replay(services, context_for(services), item.payload, item.content_type)
    assert still["entry"][0]["response"]["status"] == "400 Bad Request"
    assert len(quarantine.listing(services.engine, "device-register")) == 1  # not quarantined twice


def test_the_cli_imports_a_file_and_exits_non_zero_on_rejections(
    database: Database, services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in database.environment().items():
        monkeypatch.setenv(key, value)
    good = tmp_path / "good.csv"
    good.write_text("\ufeff" + "\n".join([HEADER, row_of("01"), row_of("03")]) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["import", "devices", "--mode", "full", str(good)])
    assert result.exit_code == 0, result.output
    assert "created 2" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([HEADER, row_of("01"), changed("05", status="x")]) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["import", "devices", str(bad)])
    assert result.exit_code == 1
    assert "unchanged 1" in result.output and "rejected 1" in result.output
    headless = tmp_path / "headless.csv"
    headless.write_text("a;b\n1;2\n", encoding="utf-8")
    assert CliRunner().invoke(app, ["import", "devices", str(headless)]).exit_code == 1


def test_a_hamtorder_stub_and_the_register_row_are_one_device(client: TestClient) -> None:
    post_order(client, "08")  # the hämtorder names MAH-000123 before the register has fed it
    [entry] = post(client, row_of("02"))
    assert entry["status"] == "200 OK", entry  # the stub Device, updated
    assert len(search(client, "Device")) == 1
    assert device(client, "SESAM", "MAH-000123")["serialNumber"] == "SN88231"


CLIENTS = 6


def send_at_once(services: Services, rows: list[str]) -> list[dict[str, Any]]:
    """Each row sent by a client of its own, in real threads released together against the real
    database: each client reads the unit as new, builds its Bundle and writes."""
    barrier = Barrier(len(rows))

    def send(text: str) -> dict[str, Any]:
        export = open_csv(["\n".join([HEADER, text]) + "\n"])
        importer = Importer(services, context_for(services), export.header_text, "delta")
        [row] = list(export.rows())
        barrier.wait()
        entry: dict[str, Any] = asyncio.run(importer.rows([row]))[0]["response"]
        return entry

    with ThreadPoolExecutor(len(rows)) as pool:
        return list(pool.map(send, rows))


def test_clients_sending_the_same_new_unit_at_once_make_one_device(services: Services) -> None:
    """The database, not the read, decides which client creates the unit; the others read again and
    find it stored as their row says."""
    entries = send_at_once(services, [row_of("02")] * CLIENTS)  # on loan: Patient, Organization, use
    statuses = sorted(e["status"] for e in entries)
    assert statuses == ["200 OK"] * (CLIENTS - 1) + ["201 Created"], entries
    assert len({e["location"].split("/_history/")[0] for e in entries}) == 1
    with TestClient(create_app(services.settings, services=services)) as client:
        [unit] = search(client, "Device")
        assert unit["identifier"][0]["value"] == "MAH-000123"
        assert len(search(client, "Patient")) == len(search(client, "Organization")) == 1
        [use] = search(client, "DeviceUseStatement")
        assert use["device"]["reference"] == f"Device/{unit['id']}"
        [provenance] = search(client, "Provenance")
    # the clients that lost wrote nothing: every resource is at its first version
    assert {r["meta"]["versionId"] for r in (unit, use, provenance)} == {"1"}
    assert versions(services) == 6  # Organization, Patient, Device, DeviceUseStatement, Binary, Provenance
    assert quarantine.listing(services.engine, "device-register") == []


def test_two_clients_sending_one_new_unit_with_other_content_at_once_lose_neither_row(
    services: Services,
) -> None:
    entries = send_at_once(services, [row_of("01"), changed("01", modell="OC-6")])
    assert sorted(e["status"] for e in entries) == ["200 OK", "201 Created"], entries
    [second] = [i for i, e in enumerate(entries) if e["status"] == "200 OK"]
    assert "updated" in json.dumps(entries[second]["outcome"])
    with TestClient(create_app(services.settings, services=services)) as client:
        unit = device(client, "SESAM", "MAH-000200")
    assert unit["meta"]["versionId"] == "2"  # created by one, then updated by the other: not dropped
    assert unit["modelNumber"] == ("OC-5", "OC-6")[second]


def test_the_adapters_own_scopes_suffice_when_scopes_are_enforced(secure_services: Services) -> None:
    svc = secure_services
    text = next(ORDERS.glob("01*.order.json")).read_text(encoding="utf-8")
    [piece] = list(pieces([text]))
    assert asyncio.run(import_order(svc, order_context(svc), piece))["response"]["status"] == "201 Created"
    export = open_csv(["\n".join([HEADER, row_of("02"), row_of("08"), changed("03", status="Återlämnad")])])
    importer = Importer(svc, context_for(svc), export.header_text, "full")
    entries = asyncio.run(import_rows(importer, list(export.rows())))
    assert [e["response"]["status"] for e in entries] == ["201 Created"] * 3, entries
