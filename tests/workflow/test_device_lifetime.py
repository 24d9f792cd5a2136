"""Service and retirement dates searchable (issue 18): the register's next service date and the end of a
unit's lifetime (purchase date + lifetime, stored by the register mapping) as `Device?next-service=` and
`Device?lifetime-end=`; Devices stored before get the lifetime end from `gateway backfill device-lifetime`,
through the write path; an unrelated organisation finds nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gateway.adapters.device_register.backfill import backfill
from gateway.adapters.device_register.lifetime import lifetime_end
from gateway.cli import CLI_CONTEXT, app
from gateway.services import Services
from tests.conftest import Database
from tests.workflow.journey import Journey, journey, secured
from tests.workflow.test_fault_reports import handled

__all__ = ["journey", "secured"]  # fixtures

EXT = "https://fhir.home-device-gateway.se/StructureDefinition/device-maintenance"


@pytest.mark.parametrize(
    ("purchased", "years", "end"),
    [
        ("2023-05-02", 7, "2030-05-02"),
        ("2024-02-29", 1, "2025-02-28"),
        ("2020-01-31", 0.5, "2020-07-31"),
        ("2020-08-31", 2.5, "2023-02-28"),
        ("2020-01-01", "sju", None),
        (None, 7, None),
        ("inte ett datum", 7, None),
    ],
)
def test_the_end_of_a_lifetime(purchased: Any, years: Any, end: str | None) -> None:
    assert lifetime_end(purchased, years) == end


def ids(j: Journey, who: str, query: str) -> list[str]:
    return [str(r["id"]) for r in j.search(who, query)]


def test_service_and_lifetime_dates_are_searchable_by_the_owner_only(journey: Journey) -> None:
    j = journey
    home = handled(j)  # the register's row: next service 2027-01-10, bought 2023-05-02, 7 years
    device_id = home["device"].split("/")[1]
    device = j.get("mah", home["device"])
    [maintenance] = [e for e in device["extension"] if e["url"] == EXT]
    assert {"url": "lifetimeEnd", "valueDate": "2030-05-02"} in maintenance["extension"]
    assert ids(j, "mah", "Device?next-service=lt2027-02-01") == [device_id]
    assert ids(j, "mah", "Device?next-service=lt2027-01-01") == []
    assert ids(j, "mah", "Device?lifetime-end=lt2031-01-01") == [device_id]
    assert ids(j, "mah", "Device?lifetime-end=le2030-05-01") == []
    assert ids(j, "ka", "Device?lifetime-end=lt2031-01-01") == [device_id]  # it handles the unit
    assert ids(j, "kb", "Device?lifetime-end=lt2031-01-01") == []
    assert ids(j, "kb", "Device?next-service=lt2099-01-01") == []


def stored_before(client: TestClient, res_id: str, **parts: Any) -> None:
    extension = [{"url": "purchaseDate", "valueDate": parts["purchased"]}]
    if "years" in parts:
        years = {"value": parts["years"], "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"}
        extension.insert(0, {"url": "lifetime", "valueDuration": years})
    device = {"resourceType": "Device", "id": res_id, "extension": [{"url": EXT, "extension": extension}]}
    assert client.put(f"/fhir/Device/{res_id}", json=device).status_code == 201


def found(client: TestClient, query: str) -> set[str]:
    bundle = client.get(f"/fhir/Device?{query}").json()
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def test_stored_devices_are_backfilled_through_the_write_path(
    services: Services, client: TestClient, database: Database
) -> None:
    stored_before(client, "gammal-1", purchased="2018-03-01", years=8)
    stored_before(client, "gammal-2", purchased="2019-03-01", years=12)
    stored_before(client, "utan-livslangd", purchased="2019-03-01")
    assert found(client, "lifetime-end=lt2100-01-01") == set()

    assert backfill(services, CLI_CONTEXT, batch=2) == (3, 2)
    assert found(client, "lifetime-end=lt2027-01-01") == {"gammal-1"}
    assert found(client, "lifetime-end=lt2100-01-01") == {"gammal-1", "gammal-2"}
    assert client.get("/fhir/Device/gammal-1").json()["meta"]["versionId"] == "2"
    assert backfill(services, CLI_CONTEXT) == (3, 0)  # a second run changes nothing

    stored_before(client, "senare", purchased="2020-03-01", years=1)
    result = CliRunner().invoke(app, ["backfill", "device-lifetime"], env=database.environment())
    assert result.exit_code == 0, result.output
    assert "set the lifetime end of 1" in result.output
    assert found(client, "lifetime-end=eq2021-03-01") == {"senare"}
