"""Golden files: each register row under tests/golden/device_register/ (`*.csv`, a header and one row)
maps to exactly the transaction Bundle beside it (`*.bundle.json`), built against an empty gateway. Nothing
volatile needs removing but `recorded` (and the dates derived from it), fixed here; ids are made under a
fixed installation secret (tests/adapters/source_ids.py). Regenerate after a
deliberate mapping change with GOLDEN_UPDATE=1 and review the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.adapters import mapping
from gateway.adapters.device_register import to_fhir
from gateway.adapters.device_register.adapter import fields, open_csv
from gateway.adapters.device_register.parse import typed, verbatim
from tests.adapters.source_ids import GOLDEN_IDS

GOLDEN = Path(__file__).parents[1] / "golden" / "device_register"
ROWS = sorted(GOLDEN.glob("*.csv"))
RECORDED = "2026-11-22T12:00:00.000Z"


def _rows(path: Path) -> list[tuple[dict[str, Any], bytes]]:
    export = open_csv([path.read_text(encoding="utf-8-sig")])
    return [(typed(row.values, fields()), verbatim(export.header_text, row)) for row in export.rows()]


def test_the_golden_rows_cover_every_register_status() -> None:
    statuses = {record["status"] for path in ROWS for record, _raw in _rows(path)}
    assert statuses == set(mapping.code_map("device-register", "register_status"))


@pytest.mark.parametrize("path", ROWS, ids=lambda p: p.stem)
def test_a_row_maps_to_its_golden_bundle(path: Path) -> None:
    [(record, raw)] = _rows(path)
    assert mapping.check(record, "device-register") == []
    bundle, _notes = to_fhir.build(record, raw, to_fhir.Known(), RECORDED, GOLDEN_IDS)
    expected_path = path.with_suffix(".bundle.json")
    if os.environ.get("GOLDEN_UPDATE") == "1":
        expected_path.write_text(json.dumps(bundle, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    expected: dict[str, Any] = json.loads(expected_path.read_text(encoding="utf-8"))
    assert bundle == expected


def test_every_golden_row_is_stored_and_a_replay_changes_nothing(client: TestClient) -> None:
    exports = [path.read_text(encoding="utf-8").splitlines() for path in ROWS]
    body = "\n".join([exports[0][0], *(lines[1] for lines in exports)]) + "\n"
    url = "/adapters/device-register/records?mode=full"
    first = client.post(url, content=body.encode(), headers={"Content-Type": "text/csv"}).json()
    assert [e["response"]["status"] for e in first["entry"]] == ["201 Created"] * len(ROWS), first
    again = client.post(url, content=body.encode(), headers={"Content-Type": "text/csv"}).json()
    assert [e["response"]["status"] for e in again["entry"]] == ["200 OK"] * len(ROWS)
