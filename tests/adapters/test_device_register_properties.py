"""Property tests (hypothesis): every generated valid register row passes the checks and maps, and
replaying any batch of rows (written as CSV, quoting and all) changes nothing."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from gateway.adapters import mapping
from gateway.adapters.device_register import to_fhir
from gateway.adapters.device_register.adapter import fields, open_csv
from gateway.adapters.device_register.parse import typed, verbatim
from gateway.services import Services
from gateway.store.tables import ResourceVersion
from tests.adapters.source_ids import GOLDEN_IDS

SOURCE = "device-register"
STATUSES = sorted(mapping.code_map(SOURCE, "register_status"))
COLUMNS = list(fields())
HSA = st.from_regex(r"SE2321000016-[A-Z0-9]{2,6}", fullmatch=True)
TEXT = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "Zs"), include_characters=';"'),
    min_size=1,
    max_size=20,
).filter(lambda s: s.strip() == s and s != "")
DATE = st.dates().map(lambda d: d.isoformat()).filter(lambda s: len(s) == 10)


@st.composite
def person_numbers(draw: st.DrawFn) -> str:
    year = draw(st.integers(1900, 2020))
    month, day = draw(st.integers(1, 12)), draw(st.integers(1, 28))
    day += draw(st.sampled_from([0, 60]))  # a personnummer, or a samordningsnummer (day + 60)
    serial = draw(st.integers(0, 999))
    nine = f"{year % 100:02d}{month:02d}{day:02d}{serial:03d}"
    return f"{year}{month:02d}{day:02d}{serial:03d}{mapping.luhn_digit(nine)}"


def maybe(draw: st.DrawFn, strategy: st.SearchStrategy[str]) -> str:
    return draw(strategy) if draw(st.booleans()) else ""


@st.composite
def rows(draw: st.DrawFn) -> dict[str, str]:
    status = draw(st.sampled_from(STATUSES))
    at_patient = mapping.code_map(SOURCE, "register_status")[status]["patient"] == "required"
    return {
        "individnummer": f"U-{draw(st.integers(1, 10**9))}",
        "register": draw(st.sampled_from(["SESAM", "MEDUSA", "Region_X"])),
        "serienummer": maybe(draw, TEXT),
        "artikelnummer": str(draw(st.integers(100000, 999999))),
        "benamning": draw(TEXT),
        "iso9999": maybe(draw, st.from_regex(r"\d{2} \d{2} \d{2}", fullmatch=True)),
        "tillverkare": maybe(draw, TEXT),
        "modell": maybe(draw, TEXT),
        "status": status,
        "agare_hsaid": draw(HSA),
        "patient_personnummer": draw(person_numbers()) if at_patient else maybe(draw, person_numbers()),
        "forskrivning_ordernummer": maybe(draw, st.from_regex(r"BP-[0-9]{4}", fullmatch=True)),
        "utlamnad_datum": maybe(draw, DATE),
        "serviceintervall_manader": maybe(draw, st.integers(1, 120).map(str)),
        "senaste_service": maybe(draw, DATE),
        "nasta_service": maybe(draw, DATE),
        "livslangd_ar": maybe(draw, st.sampled_from(["7", "8,5", "10", "0,5"])),
        "inkopsdatum": maybe(draw, DATE),
        "batteribackup": maybe(draw, st.sampled_from(["Ja", "Nej"])),
        "kopplad_till": maybe(draw, st.from_regex(r"U-[0-9]{1,5}( U-[0-9]{1,5})?", fullmatch=True)),
        "leverantor_service": maybe(draw, TEXT),
    }


def as_csv(batch: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([[row[c] for c in COLUMNS] for row in batch])
    return out.getvalue()


@settings(max_examples=200, deadline=None)
@given(rows())
def test_every_valid_row_passes_the_checks_and_maps(row: dict[str, str]) -> None:
    export = open_csv([as_csv([row])])
    [parsed] = list(export.rows())
    record = typed(parsed.values, fields())
    values: dict[str, str | None] = dict(row)
    assert record == {k: v for k, v in typed(values, fields()).items() if v != ""}
    assert mapping.check(record, SOURCE) == []
    bundle, _notes = to_fhir.build(
        record, verbatim(export.header_text, parsed), to_fhir.Known(), "2026-11-22", GOLDEN_IDS
    )
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert "Device" in kinds and kinds[-1] == "Provenance"


def _versions(services: Services) -> int:
    statement = (
        select(func.count()).select_from(ResourceVersion).where(ResourceVersion.res_type != "AuditEvent")
    )
    with services.engine.connect() as connection:
        return int(connection.execute(statement).scalar_one())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(rows(), min_size=1, max_size=5, unique_by=lambda r: (r["register"], r["individnummer"])))
def test_replaying_any_batch_changes_nothing(
    client: TestClient, services: Services, batch: list[dict[str, Any]]
) -> None:
    url = "/adapters/device-register/records?mode=delta"
    run = uuid.uuid4().hex[:8]  # examples share the database: each run's units are its own
    batch = [{**row, "individnummer": f"{row['individnummer']}-{run}"} for row in batch]
    body = as_csv(batch).encode()
    first = client.post(url, content=body, headers={"Content-Type": "text/csv"}).json()["entry"]
    assert all(e["response"]["status"][:3] in ("200", "201") for e in first), first
    stored = _versions(services)
    again = client.post(url, content=body, headers={"Content-Type": "text/csv"}).json()["entry"]
    assert [e["response"]["status"] for e in again] == ["200 OK"] * len(batch)
    assert _versions(services) == stored
