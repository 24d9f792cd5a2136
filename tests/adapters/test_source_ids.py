"""The ids of source-derived resources are UUIDs from an HMAC of the source and the record's key under
the installation's secret: the same under the same secret (a replay writes to the same resources, in any
process), others under another secret, and none names the order number or register unit it is of."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.adapters.bestallningsportalen import order_keys, to_fhir
from gateway.adapters.device_register import to_fhir as register_fhir
from gateway.adapters.hl7v2.engine import message_id, stay_ids
from gateway.adapters.ids import SourceIds
from gateway.app import create_app
from gateway.services import Services
from tests.adapters.source_ids import GOLDEN_IDS, GOLDEN_SECRET
from tests.adapters.test_bestallningsportalen import golden
from tests.adapters.test_device_register import HEADER, row_of
from tests.conftest import Database

RECORDED = "2026-11-22T12:00:00.000Z"
OTHER = SourceIds("another installation's secret")


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle["entry"] if "id" in e["resource"]]


def _without_ids(bundle: dict[str, Any], ids: list[str]) -> str:
    text = json.dumps(bundle)
    text = re.sub(r"urn:uuid:[0-9a-f-]{36}", "urn:uuid:X", text)
    for res_id in ids:
        text = text.replace(res_id, "ID")
    return text


def test_the_same_secret_gives_the_same_ids_and_another_secret_others() -> None:
    order = golden("01")
    raw = json.dumps(order).encode()
    first = to_fhir.build(order, raw, order_keys.Known(), RECORDED, GOLDEN_IDS)
    again = to_fhir.build(order, raw, order_keys.Known(), RECORDED, SourceIds(GOLDEN_SECRET))
    other = to_fhir.build(order, raw, order_keys.Known(), RECORDED, OTHER)
    assert again == first
    assert not set(_ids(first)) & set(_ids(other))
    assert _without_ids(first, _ids(first)) == _without_ids(other, _ids(other))  # only the ids differ
    for res_id in _ids(first):
        assert uuid.UUID(res_id).version == 8 and "4711" not in res_id


def test_every_adapters_ids_are_uuids_of_the_secret() -> None:
    register_row = {"register": "SESAM", "individnummer": "MAH-1", "status": "Utlånad",
                    "patient_personnummer": "191212121212", "agare_hsaid": "SE2321000016-MAH1"}  # fmt: skip
    made: list[Callable[[SourceIds], str]] = [
        lambda ids: register_fhir.use_id(ids, register_row),
        lambda ids: register_fhir.recall_ids(ids, register_row)[0],
        lambda ids: register_fhir.record_id(ids, b"row"),
        lambda ids: stay_ids(ids, "SE2321000016-KS01", "V1")[0],
        lambda ids: message_id(ids, "SE2321000016-KS01", "M1"),
    ]
    for make in made:
        mine, theirs = make(GOLDEN_IDS), make(OTHER)
        assert mine == make(GOLDEN_IDS) != theirs
        assert uuid.UUID(mine).version == 8 and "MAH-1" not in mine and "V1" not in mine
    # the parts are length-delimited: moving a boundary gives another id
    assert GOLDEN_IDS.id("a|b", "c") != GOLDEN_IDS.id("a", "b|c") != GOLDEN_IDS.id("a", "b", "c")


@pytest.fixture
def secret_services(database: Database) -> Iterator[tuple[Services, Services]]:
    """Two gateways on one database: the same installation secret, then another."""
    database.clear()
    same = Services.build(database.settings(key_secret="installation A"), engine=database.engine)
    other = Services.build(database.settings(key_secret="installation B"), engine=database.engine)
    yield same, other
    same.close()
    other.close()


def test_stored_ids_follow_the_installation_secret(secret_services: tuple[Services, Services]) -> None:
    same, other = secret_services
    with TestClient(create_app(same.settings, services=same)) as api:
        [created] = api.post("/adapters/bestallningsportalen/orders", json=golden("01")).json()["entry"]
        [again] = api.post("/adapters/bestallningsportalen/orders", json=golden("01")).json()["entry"]
        body = ("\n".join([HEADER, row_of("02")]) + "\n").encode()
        response = api.post(
            "/adapters/device-register/records", content=body, headers={"Content-Type": "text/csv"}
        )
        [row] = response.json()["entry"]
    ids = SourceIds.of(same.settings)
    line = order_keys.order_ids(ids, golden("01")).line(1)
    assert created["response"]["location"].startswith(f"DeviceRequest/{line}/_history/1")
    assert again["response"]["status"] == "200 OK"
    assert again["response"]["location"].startswith(f"DeviceRequest/{line}/")  # a replay: the same ids
    assert "BP-2026" not in json.dumps(created)
    record = {"register": "SESAM", "individnummer": "MAH-000123", "status": "Utlånad",
              "patient_personnummer": "191212121212"}  # fmt: skip
    use = register_fhir.use_id(ids, record)
    assert f"DeviceUseStatement/{use} created" in json.dumps(row)
    assert order_keys.order_ids(SourceIds.of(other.settings), golden("01")).line(1) != line
    assert register_fhir.use_id(SourceIds.of(other.settings), record) != use
