"""Property tests (hypothesis): every generated valid order maps to a Bundle the gateway stores, and
replaying any batch of them changes nothing."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gateway.adapters import mapping
from gateway.adapters.bestallningsportalen import order_keys, to_fhir
from gateway.services import Services
from gateway.store.tables import ResourceVersion
from tests.adapters.source_ids import GOLDEN_IDS

SOURCE = "bestallningsportalen"
CODES = {name: sorted(mapping.code_map(SOURCE, name)) for name in ("ordertyp", "status", "yrke", "villkor")}
HSA = st.from_regex(r"SE2321000016-[A-Z0-9]{2,6}", fullmatch=True)
TEXT = st.text(st.characters(codec="utf-8", categories=("L", "N", "Zs")), min_size=1, max_size=20).filter(
    lambda s: s.strip() == s and s != ""
)


@st.composite
def person_numbers(draw: st.DrawFn) -> str:
    year = draw(st.integers(1900, 2020))
    month, day = draw(st.integers(1, 12)), draw(st.integers(1, 28))
    serial = draw(st.integers(0, 999))
    nine = f"{year % 100:02d}{month:02d}{day:02d}{serial:03d}"
    number = f"{year}{month:02d}{day:02d}{serial:03d}{mapping.luhn_digit(nine)}"
    return number[:8] + "-" + number[8:] if draw(st.booleans()) else number


@st.composite
def orders(draw: st.DrawFn) -> dict[str, Any]:
    ordertyp = draw(st.sampled_from(CODES["ordertyp"]))
    unit = draw(HSA)
    count = draw(st.integers(1, 3))
    order: dict[str, Any] = {
        "ordernummer": f"P-{draw(st.integers(1, 10**9))}",
        "version": draw(st.integers(1, 5)),
        "ordertyp": ordertyp,
        "status": draw(st.sampled_from(CODES["status"])),
        "skapad": f"2026-{draw(st.integers(1, 12)):02d}-{draw(st.integers(1, 28)):02d}T10:00:00+01:00",
        "patient": {"personnummer": draw(person_numbers())},
        "registrerad_av": {"hsaid": draw(HSA), "namn": draw(TEXT), "enhet_hsaid": unit},
        "rader": [
            {
                "radnummer": i + 1,
                "artikelnummer": str(draw(st.integers(100000, 999999))),
                "benamning": draw(TEXT),
                "antal": draw(st.integers(1, 50)),
                **({"individnummer": f"MAH-{draw(st.integers(1, 999999))}"} if draw(st.booleans()) else {}),
            }
            for i in range(count)
        ],
    }
    if draw(st.booleans()):
        order["patient"].update(fornamn=draw(TEXT), efternamn=draw(TEXT))
    if draw(st.booleans()):
        order["forskrivare"] = {
            "hsaid": draw(HSA),
            "namn": draw(TEXT),
            "yrke": draw(st.sampled_from(CODES["yrke"])),
            "enhet_hsaid": unit,
        }
    if draw(st.booleans()):
        order["leverans"] = {
            "villkor": draw(st.lists(st.sampled_from(CODES["villkor"]), max_size=2, unique=True))
        }
    if ordertyp == "hamtorder":
        order["hamtar_individnummer"] = f"MAH-{draw(st.integers(1, 999999))}"
    return order


@settings(max_examples=200, deadline=None)
@given(orders())
def test_every_valid_order_passes_the_checks_and_maps(order: dict[str, Any]) -> None:
    assert mapping.check(order, SOURCE) == []
    raw = json.dumps(order).encode()
    bundle = to_fhir.build(order, raw, order_keys.Known(), "2026-11-22T12:00:00.000Z", GOLDEN_IDS)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds[0] == "Binary" and kinds[-1] == "Provenance"
    if mapping.code_map(SOURCE, "ordertyp")[order["ordertyp"]]["resource"] == "DeviceRequest":
        assert kinds.count("DeviceRequest") == len(order["rader"])
        assert ("Task" in kinds) == ("forskrivare" not in order)
    else:
        assert "DeviceRequest" not in kinds and "Task" in kinds


def _versions(services: Services) -> int:
    with services.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(ResourceVersion)).scalar_one())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(orders(), min_size=1, max_size=4, unique_by=lambda o: o["ordernummer"]))
def test_replaying_any_batch_changes_nothing(
    client: TestClient, services: Services, batch: list[Any]
) -> None:
    url = "/adapters/bestallningsportalen/orders"
    run = uuid.uuid4().hex[:8]  # examples share the database: each run's orders are its own
    batch = [{**order, "ordernummer": f"{order['ordernummer']}-{run}"} for order in batch]
    first = client.post(url, json=batch).json()["entry"]
    assert all(e["response"]["status"][:3] in ("200", "201") for e in first), first
    stored = _versions(services)
    again = client.post(url, json=batch).json()["entry"]
    assert [e["response"]["status"] for e in again] == ["200 OK"] * len(batch)
    assert _versions(services) == stored
