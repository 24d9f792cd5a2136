"""Golden messages: each tests/golden/hl7v2/NN-*.hl7 holds one or more messages; all but the last set the
scene, and the last one's ACK code and transaction Bundle must equal NN-*.expected.json. The Patient's id
(random when the gateway creates it) is replaced by PATIENT-ID; every other id derives from the message
under a fixed installation secret (tests/adapters/source_ids.py). To accept a deliberate change of the
mappings, run with GATEWAY_GOLDEN_UPDATE=1 and review the diff of the expected files."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.adapters.hl7v2 import service
from gateway.adapters.hl7v2.message import Hl7Error, split_messages
from gateway.services import Services
from gateway.store.tables import Resource
from tests.adapters.source_ids import GOLDEN_SECRET
from tests.conftest import Database

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "hl7v2"
CASES = sorted(p.stem for p in GOLDEN.glob("*.hl7"))


def _normalized(bundle: Any, services: Services) -> Any:
    """Random ids replaced: a Patient's by PATIENT-ID, an Organization's or Practitioner's (stored by an
    earlier message, referred to as it is) by its type and HSA-id."""
    text = json.dumps(bundle, ensure_ascii=False, indent=2, sort_keys=True)
    with services.engine.connect() as connection:
        ids = connection.execute(select(Resource.res_id).where(Resource.res_type == "Patient")).scalars()
        for res_id in ids:
            text = text.replace(res_id, "PATIENT-ID")
        master = connection.execute(
            select(Resource.res_type, Resource.res_id, Resource.content).where(
                Resource.res_type.in_(["Organization", "Practitioner"])
            )
        )
        for res_type, res_id, content in master:
            hsa = json.loads(content)["identifier"][0]["value"]
            text = text.replace(f"{res_type}/{res_id}", f"{res_type}/{res_type.upper()}-{hsa}")
    return json.loads(text)


def test_there_are_enough_golden_messages() -> None:
    assert len(CASES) >= 12


@pytest.fixture
def golden(database: Database) -> Iterator[Services]:
    """Services whose ids are made under the golden files' fixed secret."""
    database.clear()
    built = Services.build(database.settings(key_secret=GOLDEN_SECRET), engine=database.engine)
    yield built
    built.close()


@pytest.mark.parametrize("case", CASES)
def test_golden_message(case: str, golden: Services) -> None:
    services = golden
    messages = split_messages((GOLDEN / f"{case}.hl7").read_bytes())
    for message in messages[:-1]:
        assert asyncio.run(service.handle(services, message)).ack.code == "AA"
    try:
        bundle = service.plan_bundle(services, messages[-1])
    except Hl7Error:
        bundle = None
    bundle = _normalized(bundle, services)
    result = asyncio.run(service.handle(services, messages[-1]))
    actual = {"ack": result.ack.code, "error": result.ack.text, "bundle": bundle}
    expected_path = GOLDEN / f"{case}.expected.json"
    if os.environ.get("GATEWAY_GOLDEN_UPDATE") == "1":
        expected_path.write_text(json.dumps(actual, ensure_ascii=False, indent=2, sort_keys=True) + "\n")
    expected = json.loads(expected_path.read_text())
    assert actual == expected
