"""Golden files: each order under tests/golden/bestallningsportalen/ (`*.order.json`) maps to exactly the
transaction Bundle beside it (`*.bundle.json`), built against an empty gateway. The mapping is pure and
its ids deterministic (under a fixed installation secret: tests/adapters/source_ids.py), so nothing
volatile needs removing but `Provenance.recorded`, fixed here.
Regenerate after a deliberate mapping change with GOLDEN_UPDATE=1 and review the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.adapters import mapping
from gateway.adapters.bestallningsportalen import order_keys, to_fhir
from tests.adapters.source_ids import GOLDEN_IDS

GOLDEN = Path(__file__).parents[1] / "golden" / "bestallningsportalen"
ORDERS = sorted(GOLDEN.glob("*.order.json"))
RECORDED = "2026-11-22T12:00:00.000Z"
PROFILES = Path(__file__).parents[2] / "profiles"


def test_there_are_enough_golden_orders_to_cover_the_format() -> None:
    orders = [json.loads(path.read_text(encoding="utf-8")) for path in ORDERS]
    assert len(orders) >= 10
    assert {o["ordertyp"] for o in orders} == set(mapping.code_map("bestallningsportalen", "ordertyp"))
    assert {o["status"] for o in orders} == set(mapping.code_map("bestallningsportalen", "status"))
    assert {"forskrivare" in o for o in orders} == {True, False}


@pytest.mark.parametrize("path", ORDERS, ids=lambda p: p.name.removesuffix(".order.json"))
def test_an_order_maps_to_its_golden_bundle(path: Path) -> None:
    raw = path.read_bytes()
    order = json.loads(raw)
    assert mapping.check(order, "bestallningsportalen") == []
    bundle = to_fhir.build(order, raw, order_keys.Known(), RECORDED, GOLDEN_IDS)
    expected_path = path.with_name(path.name.replace(".order.json", ".bundle.json"))
    if os.environ.get("GOLDEN_UPDATE") == "1":
        expected_path.write_text(json.dumps(bundle, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    expected: dict[str, Any] = json.loads(expected_path.read_text(encoding="utf-8"))
    assert bundle == expected


def test_the_follow_up_category_is_declared_beside_sip_in_the_one_careplan_category_codesystem() -> None:
    [declared] = [
        json.loads(path.read_text(encoding="utf-8"))
        for path in PROFILES.glob("CodeSystem-*.json")
        if "careplan-category" in path.name
    ]
    assert declared["url"] == mapping.CAREPLAN_CATEGORY
    codes = {concept["code"] for concept in declared["concept"]}
    assert codes == {"sip", "device-follow-up"}
    used = {
        (coding["system"], coding["code"])
        for path in GOLDEN.glob("*.bundle.json")
        for entry in json.loads(path.read_text(encoding="utf-8"))["entry"]
        if entry["resource"]["resourceType"] == "CarePlan"
        for category in entry["resource"]["category"]
        for coding in category["coding"]
    }
    assert used == {(mapping.CAREPLAN_CATEGORY, "device-follow-up")}


def test_every_golden_order_is_stored_and_a_replay_changes_nothing(client: TestClient) -> None:
    body = "\n".join(json.dumps(json.loads(path.read_bytes())) for path in ORDERS)
    headers = {"Content-Type": "application/x-ndjson"}
    first = client.post("/adapters/bestallningsportalen/orders", content=body, headers=headers).json()
    assert [e["response"]["status"] for e in first["entry"]] == ["201 Created"] * len(ORDERS), first
    again = client.post("/adapters/bestallningsportalen/orders", content=body, headers=headers).json()
    assert [e["response"]["status"] for e in again["entry"]] == ["200 OK"] * len(ORDERS)
