"""An adapter entrance takes a registered client's records only of the sources it is bound to (`gateway
clients add --source KIND:ID`): a record of any other source gets one answer, whether that source is
another client's with records stored or nobody's, and is quarantined under the client that sent it. The
writes of a record run in the context of its source, also when the gateway itself writes (auth off, the
CLI without --client). With auth on and organisation-scoped clients: what an unrelated organisation's
client learns from sending another's records is nothing but that it may not send them."""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection
from typer.testing import CliRunner

from gateway.adapters import quarantine
from gateway.adapters.device_register.adapter import Importer, context_for, import_rows, open_csv
from gateway.app import create_app
from gateway.cli import app
from gateway.hooks import AccessRecord, AuditSink
from gateway.security import store
from gateway.security.scopes import (
    ADAPTER_BESTALLNINGSPORTALEN,
    ADAPTER_DEVICE_REGISTER,
    ADAPTER_HL7V2,
    ADAPTER_QUARANTINE,
)
from gateway.services import Services
from tests.adapters.source_ids import bp
from tests.adapters.test_bestallningsportalen import golden
from tests.adapters.test_device_register import HEADER, changed, row_of
from tests.adapters.test_hl7v2_messages import adt
from tests.conftest import Database
from tests.security.conftest import RegisteredClient, bearer, register

ORDERS = "/adapters/bestallningsportalen/orders"
ROWS = "/adapters/device-register/records"
HL7 = "/adapters/hl7v2"
MAH1 = "SE2321000016-MAH1"  # the golden rows' owner
OTHER = "SE2321000016-OTHER"
CSV = {"Content-Type": "text/csv"}
BASE = "https://fhir.home-device-gateway.se"


def token(api: TestClient, client: RegisteredClient, *scopes: str) -> dict[str, str]:
    return bearer(client.token(api, " ".join(scopes)))


def answer(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    [entry] = response.json()["entry"]
    found: dict[str, Any] = entry["response"]
    return found


def csv(*rows: str) -> bytes:
    return ("\n".join([HEADER, *rows]) + "\n").encode()


class Capture:
    """An audit sink that keeps every record (and passes it on)."""

    def __init__(self, sink: AuditSink) -> None:
        self.sink = sink
        self.records: list[AccessRecord] = []

    def store(self, connection: Connection, records: list[AccessRecord]) -> None:
        self.records.extend(records)
        self.sink.store(connection, records)

    def record(self, record: AccessRecord) -> Future[None] | None:
        self.records.append(record)
        return self.sink.record(record)

    def sources(self, *interactions: str) -> set[str | None]:
        return {r.context.source for r in self.records if r.interaction in interactions}


# -- one answer for every source the client is not bound to -----------------------------------------------


def test_an_order_from_a_client_not_bound_to_the_portal_gets_one_answer_and_is_quarantined_as_its(
    secure_services: Services, secure_client: TestClient
) -> None:
    """The portal's own client stores an order. An unrelated organisation's client bound to another
    portal, and one bound to nothing, send that order and a new order: four answers alike, none saying
    whether the order is stored; nothing written; each quarantined under its sender, none of them
    listed to the portal's client."""
    api = secure_client
    both = f"{ADAPTER_BESTALLNINGSPORTALEN} {ADAPTER_QUARANTINE}"
    portal = register(secure_services, both, sources=("bestallningsportalen:BP",))
    elsewhere = register(secure_services, both, org=OTHER, sources=("bestallningsportalen:B2",))
    unbound = register(secure_services, both, org=OTHER)
    headers = token(api, portal, ADAPTER_BESTALLNINGSPORTALEN)
    assert answer(api.post(ORDERS, json=golden("01"), headers=headers))["status"] == "201 Created"
    fresh = {**golden("01"), "ordernummer": "BP-2099-000001"}
    answers = []
    for client in (elsewhere, unbound):
        headers = token(api, client, ADAPTER_BESTALLNINGSPORTALEN)
        answers += [answer(api.post(ORDERS, json=order, headers=headers)) for order in (golden("01"), fresh)]
    assert all(found == answers[0] for found in answers)
    assert answers[0]["status"] == "403 Forbidden" and "location" not in answers[0]
    [issue] = answers[0]["outcome"]["issue"]
    assert issue["diagnostics"] == "This client may not send records of the source bestallningsportalen:BP"

    for client in (elsewhere, unbound):
        mine = api.get("/adapters/quarantine", headers=token(api, client, ADAPTER_QUARANTINE)).json()["items"]
        assert [(item["sourceKey"], item["client"]) for item in mine] == [
            ("BP BP-2026-004711 v1", client.client_id), ("BP BP-2099-000001 v1", client.client_id)
        ]  # fmt: skip
    theirs = token(api, portal, ADAPTER_QUARANTINE)
    assert api.get("/adapters/quarantine?status=all", headers=theirs).json()["items"] == []


def test_a_register_row_of_an_owner_the_client_is_not_bound_to_gets_one_answer(
    secure_services: Services, secure_client: TestClient
) -> None:
    api = secure_client
    owner = register(secure_services, ADAPTER_DEVICE_REGISTER, sources=(f"device-register:SESAM@{MAH1}",))
    stranger = register(
        secure_services, ADAPTER_DEVICE_REGISTER, org=OTHER, sources=(f"device-register:SESAM@{OTHER}",)
    )
    assert (
        answer(
            api.post(
                ROWS, content=csv(row_of("01")), headers={**token(api, owner, ADAPTER_DEVICE_REGISTER), **CSV}
            )
        )["status"]
        == "201 Created"
    )
    headers = {**token(api, stranger, ADAPTER_DEVICE_REGISTER), **CSV}
    stored = answer(api.post(ROWS, content=csv(row_of("01")), headers=headers))
    fresh = answer(api.post(ROWS, content=csv(changed("01", individnummer="MAH-999999")), headers=headers))
    nobodys = "SE2321000016-NONE"
    unknown = answer(
        api.post(ROWS, content=csv(changed("01", agare_hsaid=nobodys, register="sesam")), headers=headers)
    )
    assert stored == fresh
    assert json.loads(json.dumps(unknown).replace(nobodys, MAH1)) == stored
    assert stored["status"] == "403 Forbidden" and "location" not in stored
    assert "Device/" not in json.dumps(stored)
    assert stored["outcome"]["issue"][0]["diagnostics"] == (
        f"This client may not send records of the source device-register:SESAM@{MAH1}"
    )
    items = quarantine.listing(
        secure_services.engine, "device-register", whose=quarantine.Whose(stranger.client_id)
    )
    assert [item.source_key for item in items] == [
        f"SESAM@{MAH1} MAH-000200", f"SESAM@{MAH1} MAH-999999", f"SESAM@{nobodys} MAH-000200"
    ]  # fmt: skip


def test_an_hl7_message_of_a_facility_the_client_is_not_bound_to_is_ar_as_an_unknown_facility(
    secure_services: Services, secure_client: TestClient
) -> None:
    api = secure_client
    journal = register(secure_services, ADAPTER_HL7V2, sources=("hl7v2:SE2321000016-KS01",))
    stranger = register(secure_services, ADAPTER_HL7V2, org=OTHER, sources=("hl7v2:SE2321000016-SS01",))
    kind = {"Content-Type": "application/hl7-v2"}
    first = api.post(HL7, content=adt("A01", "M1"), headers={**token(api, journal, ADAPTER_HL7V2), **kind})
    assert b"MSA|AA|M1" in first.content, first.content
    headers = {**token(api, stranger, ADAPTER_HL7V2), **kind}
    stored = api.post(HL7, content=adt("A08", "M2"), headers=headers).content
    unknown = api.post(
        HL7, content=adt("A08", "M2", facility="Karolinska^SE2321000016-XX99^L"), headers=headers
    ).content

    def segments(ack: bytes) -> list[str]:  # MSH-7 (the time) left out
        lines = ack.decode().replace("SE2321000016-XX99", "SE2321000016-KS01").split("\r")
        return [line if not line.startswith("MSH") else "|".join(line.split("|")[:6]) for line in lines]

    assert segments(stored) == segments(unknown)
    assert b"MSA|AR|M2" in stored and b"The sending facility SE2321000016-KS01 is not accepted" in stored
    items = quarantine.listing(secure_services.engine, "hl7v2", whose=quarantine.Whose(stranger.client_id))
    assert [item.source_key for item in items] == ["SE2321000016-KS01 M2", "SE2321000016-XX99 M2"]


def test_the_cli_client_must_be_bound_to_each_records_source(database: Database, tmp_path: Path) -> None:
    database.clear()
    scopes = [ADAPTER_DEVICE_REGISTER]
    mine = f"device-register:SESAM@{OTHER}"
    store.add_client(database.engine, "r", OTHER, {"keys": []}, scopes, "register-b", [mine])
    rows = tmp_path / "rows.csv"
    rows.write_text(csv(row_of("01"), changed("01", individnummer="B-1", agare_hsaid=OTHER)).decode())
    env = {**database.environment(), "GATEWAY_REGION_CLIENTS": "register-b"}
    result = CliRunner().invoke(app, ["import", "devices", "--client", "register-b", str(rows)], env=env)
    assert result.exit_code == 1, result.output
    assert "created 1, updated 0, unchanged 0, rejected 1" in result.output
    assert f"may not send records of the source device-register:SESAM@{MAH1}" in result.output
    [item] = quarantine.listing(database.engine, whose=quarantine.Whose("register-b"))
    assert item.source_key == f"SESAM@{MAH1} MAH-000200" and item.client_id == "register-b"
    assert quarantine.listing(database.engine, whose=quarantine.Whose(None)) == []
    # the gateway itself (no --client) sends every source's rows
    again = CliRunner().invoke(app, ["import", "devices", str(rows)], env=database.environment())
    assert again.exit_code == 0, again.output


# -- the context of a record's writes ---------------------------------------------------------------------


def test_the_writes_of_each_record_run_in_the_context_of_its_source(services: Services) -> None:
    """Auth off: the gateway writes every source's records, each in its source's context."""
    capture = Capture(services.hooks.audit)
    services.hooks.audit = capture
    with TestClient(create_app(services.settings, services=services)) as api:
        assert answer(api.post(ORDERS, json=golden("01")))["status"] == "201 Created"
        assert capture.sources("create", "update") == {"bestallningsportalen:BP"}
        capture.records.clear()
        assert answer(api.post(ROWS, content=csv(row_of("01")), headers=CSV))["status"] == "201 Created"
        assert capture.sources("create", "update") == {f"device-register:SESAM@{MAH1}"}
        capture.records.clear()
        api.post(HL7, content=adt("A01", "M1"), headers={"Content-Type": "application/hl7-v2"})
        assert capture.sources("create", "update") == {"hl7v2:SE2321000016-KS01"}


def test_a_bound_clients_writes_run_in_its_sources_context_as_that_client(
    secure_services: Services, secure_client: TestClient
) -> None:
    capture = Capture(secure_services.hooks.audit)
    secure_services.hooks.audit = capture
    portal = register(secure_services, ADAPTER_BESTALLNINGSPORTALEN, sources=("bestallningsportalen:BP",))
    headers = token(secure_client, portal, ADAPTER_BESTALLNINGSPORTALEN)
    assert answer(secure_client.post(ORDERS, json=golden("01"), headers=headers))["status"] == "201 Created"
    writes = [r for r in capture.records if r.interaction in ("create", "update")]
    assert writes and {(r.context.source, r.context.principal.client_id) for r in writes} == {
        ("bestallningsportalen:BP", portal.client_id)
    }


# -- a registered client's rows reach only what its owner holds --------------------------------------------


def _load(services: Services, *rows: str) -> None:
    """Rows written by the gateway itself (the register's whole state, as the operator's CLI would)."""
    import asyncio

    export = open_csv([csv(*rows).decode()])
    importer = Importer(services, context_for(services), export.header_text, "delta")
    entries = asyncio.run(import_rows(importer, list(export.rows())))
    assert {e["response"]["status"] for e in entries} == {"201 Created"}, entries


@pytest.fixture
def two_owners(secure_services: Services) -> dict[str, str]:
    """Units of MAH1 (MAH-000123, MAH-1) and of another owner (OTHER-1) in SESAM; their Device ids."""
    _load(
        secure_services,
        row_of("01"),
        changed("01", individnummer="MAH-1", patient_personnummer="", status="I lager"),
        changed("01", individnummer="OTHER-1", agare_hsaid=OTHER, patient_personnummer="", status="I lager"),
    )
    with TestClient(create_app(secure_services.settings, services=secure_services)) as api:
        admin = register(secure_services, "system/*.rs", region=True)
        headers = token(api, admin, "system/*.rs")
        found = api.get("/fhir/Device", headers=headers).json()["entry"]
    return {e["resource"]["identifier"][0]["value"]: e["resource"]["id"] for e in found}


def test_a_full_export_of_a_bound_client_marks_only_its_owners_units(
    secure_services: Services, secure_client: TestClient, two_owners: dict[str, str]
) -> None:
    client = register(secure_services, ADAPTER_DEVICE_REGISTER, sources=(f"device-register:SESAM@{MAH1}",))
    headers = {**token(secure_client, client, ADAPTER_DEVICE_REGISTER), **CSV}
    response = secure_client.post(f"{ROWS}?mode=full", content=csv(row_of("01")), headers=headers)
    entries = [e["response"] for e in response.json()["entry"]]
    assert [e["status"] for e in entries] == ["200 OK", "200 OK"]
    text = json.dumps(entries)
    assert f"Device/{two_owners['MAH-1']} is not listed" in text  # its owner's unit it no longer lists
    assert two_owners["OTHER-1"] not in text  # another owner's unit: neither marked nor named
    admin = register(secure_services, "system/*.rs", region=True)
    other = secure_client.get(
        f"/fhir/Device/{two_owners['OTHER-1']}", headers=token(secure_client, admin, "system/*.rs")
    )
    assert "missing-from-register" not in json.dumps(other.json().get("meta", {}))


def test_a_row_for_a_unit_another_owner_holds_is_refused_telling_nothing(
    secure_services: Services, secure_client: TestClient, two_owners: dict[str, str]
) -> None:
    """Bound to its own owner, a client naming itself owner of OTHER's unit gets what it gets for a unit
    it may not change; the unit keeps its owner and its id is in no answer."""
    client = register(secure_services, ADAPTER_DEVICE_REGISTER, sources=(f"device-register:SESAM@{MAH1}",))
    headers = {**token(secure_client, client, ADAPTER_DEVICE_REGISTER), **CSV}
    row = changed("01", individnummer="OTHER-1", patient_personnummer="", status="I lager")
    refused = answer(secure_client.post(ROWS, content=csv(row), headers=headers))
    assert refused["status"] == "403 Forbidden" and "location" not in refused
    assert two_owners["OTHER-1"] not in json.dumps(refused)
    assert refused["outcome"]["issue"][0]["diagnostics"] == "This client may not change SESAM OTHER-1"


def test_a_register_row_links_only_to_order_lines_its_owner_performs(
    secure_services: Services, secure_client: TestClient
) -> None:
    """An order performed by MAH1 is stored; a register row of another owner naming that order number
    is not linked to it and is told nothing of it (the same note as for an order never stored)."""
    portal = register(secure_services, ADAPTER_BESTALLNINGSPORTALEN, sources=("bestallningsportalen:BP",))
    headers = token(secure_client, portal, ADAPTER_BESTALLNINGSPORTALEN)
    assert answer(secure_client.post(ORDERS, json=golden("01"), headers=headers))["status"] == "201 Created"
    client = register(secure_services, ADAPTER_DEVICE_REGISTER, sources=(f"device-register:SESAM@{OTHER}",))
    headers = {**token(secure_client, client, ADAPTER_DEVICE_REGISTER), **CSV}
    linked = answer(
        secure_client.post(
            ROWS, content=csv(changed("02", individnummer="X-1", agare_hsaid=OTHER)), headers=headers
        )
    )
    unknown = answer(
        secure_client.post(
            ROWS,
            content=csv(
                changed("02", individnummer="X-2", agare_hsaid=OTHER, forskrivning_ordernummer="BP-2099-1")
            ),
            headers=headers,
        )
    )
    notes = [i["diagnostics"] for i in linked["outcome"]["issue"] if i["severity"] == "warning"]
    assert notes == [
        "No order line of BP-2026-004711 with article 730012 is stored: the DeviceUseStatement does not "
        "point at a DeviceRequest"
    ]
    assert [i["diagnostics"] for i in unknown["outcome"]["issue"] if i["severity"] == "warning"] == [
        notes[0].replace("BP-2026-004711", "BP-2099-1")
    ]
    assert "DeviceRequest/" not in json.dumps(linked)


def test_a_new_version_revokes_only_its_own_orders_lines(client: TestClient) -> None:
    """Another writer's DeviceRequest in the order's group (its number) is not one of the order's lines:
    a new version without it neither revokes nor names it."""
    assert client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"}).status_code in (
        200,
        201,
    )
    foreign = {
        "resourceType": "DeviceRequest",
        "groupIdentifier": {
            "system": f"{BASE}/identifier/bestallningsportalen-order",
            "value": "BP-2026-004714",
        },
        "identifier": [
            {"system": f"{BASE}/identifier/bestallningsportalen-orderrad", "value": "BP-2026-004714:9"}
        ],
        "status": "active",
        "intent": "order",
        "codeCodeableConcept": {"text": "not the portal's"},
        "subject": {"reference": "Patient/p1"},
    }
    created = client.post("/fhir/DeviceRequest", json=foreign)
    assert created.status_code == 201, created.text
    foreign_id = created.json()["id"]
    order = golden("04")
    assert answer(client.post(ORDERS, json=order))["status"] == "201 Created"
    newer = {**order, "version": 2, "rader": order["rader"][:1]}
    entry = answer(client.post(ORDERS, json=newer))
    assert entry["status"] == "200 OK" and foreign_id not in json.dumps(entry)
    assert client.get(f"/fhir/DeviceRequest/{bp('BP-2026-004714', 'r2')}").json()["status"] == "revoked"
    kept = client.get(f"/fhir/DeviceRequest/{foreign_id}").json()
    assert kept["status"] == "active" and kept["meta"]["versionId"] == "1"
