"""Who an adapter writes as, and what its imports leave in the audit log.

The REST entrances write as the calling client (its token's client id, organisation and person), the
entrance scope implying the adapter's writes; `gateway import … --client ID` acts as a registered client;
each record the CLI imports leaves one `import` AuditEvent naming its patients and resources, whatever its
outcome."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from gateway.cli import app
from gateway.security import store
from gateway.security.audit_event import CLIENT_SYSTEM
from gateway.security.scopes import ADAPTER_BESTALLNINGSPORTALEN, ADAPTER_DEVICE_REGISTER, ADAPTER_HL7V2
from gateway.services import Services
from gateway.store.tables import Resource
from tests.adapters.test_bestallningsportalen import golden
from tests.adapters.test_device_register import HEADER, changed, row_of
from tests.adapters.test_hl7v2_messages import adt
from tests.conftest import Database
from tests.security.conftest import bearer, register

ORDERS = "/adapters/bestallningsportalen/orders"
PORTAL_HSA = "SE2321000016-PORTAL"
PORTAL = "bestallningsportalen:BP"  # the golden orders' portal: source.yaml portal_id
SESAM_MAH1 = "device-register:SESAM@SE2321000016-MAH1"  # the golden register rows' register and owner
KS01 = "hl7v2:SE2321000016-KS01"  # the test messages' sending facility


@pytest.fixture
def audited(audited_services: Services) -> Services:
    return audited_services


@pytest.fixture
def api(audited_client: TestClient) -> TestClient:
    return audited_client


def events(services: Services | Database) -> list[dict[str, Any]]:
    """Every stored AuditEvent, once what is queued is stored."""
    if isinstance(services, Services) and services.audit is not None:
        services.audit.flush()
    with services.engine.connect() as connection:
        rows = connection.execute(select(Resource.content).where(Resource.res_type == "AuditEvent"))
        return [json.loads(content) for content in rows.scalars()]


def writers(found: list[dict[str, Any]], subtype: str) -> set[str]:
    """The clients (agent who.identifier) of the AuditEvents of one subtype."""
    return {
        agent["who"]["identifier"]["value"]
        for event in found
        if event["subtype"][0]["code"] == subtype
        for agent in event["agent"]
        if agent["who"]["identifier"]["system"] == CLIENT_SYSTEM
    }


def entities(event: dict[str, Any], role: str) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if e["role"]["code"] == role}


# -- the REST entrances -----------------------------------------------------------------------------------


def test_an_order_is_written_as_the_calling_client(audited: Services, api: TestClient) -> None:
    portal = register(audited, ADAPTER_BESTALLNINGSPORTALEN, org=PORTAL_HSA, sources=(PORTAL,))
    token = bearer(portal.token(api, ADAPTER_BESTALLNINGSPORTALEN))
    response = api.post(ORDERS, json=golden("01"), headers=token)
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["status"] == "201 Created"
    found = events(audited)
    assert writers(found, "create") == {portal.client_id}  # the entrance scope implies the writes
    [imported] = [event for event in found if event["subtype"][0]["code"] == "import"]
    assert {"system": "urn:oid:1.2.752.29.4.19", "value": PORTAL_HSA} in [
        agent["who"]["identifier"] for agent in imported["agent"]
    ]


def test_a_client_not_bound_to_the_portal_writes_nothing(audited: Services, api: TestClient) -> None:
    """An organisation's client holding the entrance scope but not bound to the portal: the order is
    refused (403) before anything is read or written, and audited as the client's import."""
    portal = register(audited, ADAPTER_BESTALLNINGSPORTALEN, org=PORTAL_HSA)
    token = bearer(portal.token(api, ADAPTER_BESTALLNINGSPORTALEN))
    [entry] = api.post(ORDERS, json=golden("01"), headers=token).json()["entry"]
    assert entry["response"]["status"] == "403 Forbidden"
    found = events(audited)
    assert not [event for event in found if event["subtype"][0]["code"] not in ("import", "token")]
    assert writers(found, "import") == {portal.client_id}


def test_another_organisations_stored_order_is_answered_without_telling_anything(
    audited: Services, api: TestClient
) -> None:
    """A replay (or other content for the same version) of an order by a client not bound to its portal
    gets 403 with no location and no word of the stored version: not 200 with the DeviceRequest's
    location, nor 409 "stored with different content"."""
    portal = register(audited, ADAPTER_BESTALLNINGSPORTALEN, sources=(PORTAL,))
    stored = api.post(
        ORDERS, json=golden("01"), headers=bearer(portal.token(api, ADAPTER_BESTALLNINGSPORTALEN))
    )
    assert stored.json()["entry"][0]["response"]["status"] == "201 Created"
    stranger = register(audited, ADAPTER_BESTALLNINGSPORTALEN, org="SE2321000016-OTHER")
    token = bearer(stranger.token(api, ADAPTER_BESTALLNINGSPORTALEN))
    altered = {**golden("01"), "meddelande": "other content, same version"}
    for order in (golden("01"), altered):
        [entry] = api.post(ORDERS, json=order, headers=token).json()["entry"]
        assert entry["response"]["status"] == "403 Forbidden"
        assert "location" not in entry["response"]
        assert "stored" not in json.dumps(entry["response"]["outcome"])


def test_another_organisations_unchanged_unit_is_answered_without_telling_anything(
    audited: Services, api: TestClient
) -> None:
    """Another owner's client, bound to its own owner in the same register, sends a row naming itself as
    the owner of a unit MAH1 holds: 403 with no location and no word of the unit, whether the row
    changes the unit or not."""
    register_client = register(audited, ADAPTER_DEVICE_REGISTER, sources=(SESAM_MAH1,))
    body = ("\n".join([HEADER, row_of("01")]) + "\n").encode()
    kind = {"Content-Type": "text/csv"}
    url = "/adapters/device-register/records"
    token = bearer(register_client.token(api, ADAPTER_DEVICE_REGISTER))
    assert api.post(url, content=body, headers={**token, **kind}).json()["entry"][0]["response"][
        "status"
    ] == ("201 Created")
    other = "SE2321000016-OTHER"
    stranger = register(
        audited, ADAPTER_DEVICE_REGISTER, org=other, sources=(f"device-register:SESAM@{other}",)
    )
    token = bearer(stranger.token(api, ADAPTER_DEVICE_REGISTER))
    for row in (changed("01", agare_hsaid=other), changed("01", agare_hsaid=other, modell="X-1")):
        body = ("\n".join([HEADER, row]) + "\n").encode()
        [entry] = api.post(url, content=body, headers={**token, **kind}).json()["entry"]
        assert entry["response"]["status"] == "403 Forbidden"
        assert "location" not in entry["response"]
        assert "Device/" not in json.dumps(entry)


def test_register_rows_and_hl7_messages_are_written_as_the_calling_client(
    audited: Services, api: TestClient
) -> None:
    register_client = register(audited, ADAPTER_DEVICE_REGISTER, sources=(SESAM_MAH1,))
    token = bearer(register_client.token(api, ADAPTER_DEVICE_REGISTER))
    body = "\n".join([HEADER, row_of("01")]) + "\n"
    response = api.post(
        "/adapters/device-register/records",
        content=body.encode(),
        headers={**token, "Content-Type": "text/csv"},
    )
    assert response.json()["entry"][0]["response"]["status"] == "201 Created", response.text
    assert writers(events(audited), "create") == {register_client.client_id}

    journal = register(audited, ADAPTER_HL7V2, sources=(KS01,))
    token = bearer(journal.token(api, ADAPTER_HL7V2))
    response = api.post(
        "/adapters/hl7v2", content=adt("A01", "M1"), headers={**token, "Content-Type": "application/hl7-v2"}
    )
    assert b"MSA|AA" in response.content, response.content
    assert writers(events(audited), "create") == {register_client.client_id, journal.client_id}


def test_each_entrance_still_needs_its_scope(audited: Services, api: TestClient) -> None:
    other = register(audited, "system/*.cruds", region=True)
    token = bearer(other.token(api, "system/*.cruds"))
    assert api.post(ORDERS, json=golden("01"), headers=token).status_code == 403
    assert api.post("/adapters/hl7v2", content=adt("A01", "M1"), headers=token).status_code == 403


# -- the CLI ----------------------------------------------------------------------------------------------


def _import(database: Database, *args: str, **env: str) -> Any:
    environment = {**database.environment(), "GATEWAY_AUDIT": "on", "COLUMNS": "80", **env}
    return CliRunner().invoke(app, ["import", *args], env=environment)


def _imports(database: Database) -> list[dict[str, Any]]:
    return [event for event in events(database) if event["subtype"][0]["code"] == "import"]


@pytest.fixture
def clean(database: Database) -> Database:
    database.clear()
    return database


def test_each_imported_order_is_audited_also_when_nothing_changes(clean: Database, tmp_path: Path) -> None:
    orders = tmp_path / "orders.ndjson"
    orders.write_text(json.dumps(golden("01")) + "\n{broken\n", encoding="utf-8")
    assert _import(clean, "orders", str(orders)).exit_code == 1  # the broken one is rejected
    assert _import(clean, "orders", str(orders)).exit_code == 1  # the first unchanged now
    found = _imports(clean)
    assert len(found) == 4
    by_order = sorted(found, key=lambda event: (event["recorded"], event["outcomeDesc"]))
    created, rejected, unchanged, rejected_again = by_order
    assert created["outcome"] == unchanged["outcome"] == "0"
    assert rejected["outcome"] == rejected_again["outcome"] == "4"
    assert "order 1: 201" in created["outcomeDesc"] and "order 1: 200" in unchanged["outcomeDesc"]
    assert "order 2: 400" in rejected["outcomeDesc"] and "entity" not in rejected
    patients = entities(created, "1")
    assert len(patients) == 1 and entities(unchanged, "1") == patients
    assert any(ref.startswith("DeviceRequest/") for ref in entities(unchanged, "4"))
    assert entities(unchanged, "4") <= entities(created, "4")
    assert {writers([event], "import").pop() for event in found} == {"adapter:bestallningsportalen"}


def test_each_imported_register_row_is_audited(clean: Database, tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join([HEADER, row_of("01"), changed("05", status="x")]) + "\n", encoding="utf-8")
    assert _import(clean, "devices", str(rows)).exit_code == 1
    assert _import(clean, "devices", str(rows)).exit_code == 1
    found = sorted(_imports(clean), key=lambda event: (event["recorded"], event["outcomeDesc"]))
    assert [event["outcomeDesc"].rsplit(": ", 1)[1] for event in found] == ["201", "400", "200", "400"]
    assert any(ref.startswith("Device/") for ref in entities(found[2], "4"))
    assert entities(found[2], "4") <= entities(found[0], "4")


def test_the_cli_acts_as_a_named_registered_client(clean: Database, tmp_path: Path) -> None:
    orders = tmp_path / "orders.json"
    orders.write_text(json.dumps(golden("01")), encoding="utf-8")
    scopes = [ADAPTER_BESTALLNINGSPORTALEN]
    store.add_client(clean.engine, "portal", PORTAL_HSA, {"keys": []}, scopes, "portal-client", [PORTAL])
    store.add_client(clean.engine, "other", PORTAL_HSA, {"keys": []}, ["system/*.cruds"], "other-client")
    for unusable in ("no-such-client", "other-client"):
        result = _import(clean, "orders", "--client", unusable, str(orders))
        assert result.exit_code == 2 and "--client" in result.output, result.output
    result = _import(
        clean, "orders", "--client", "portal-client", str(orders), GATEWAY_REGION_CLIENTS="portal-client"
    )
    assert result.exit_code == 0, result.output
    found = events(clean)
    assert writers(found, "create") == writers(found, "import") == {"portal-client"}
