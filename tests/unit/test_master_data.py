"""The field-by-field merge of master data (gateway/adapters/master_data.py), without a server: the rules
the end-to-end tests in tests/workflow/test_master_data.py rely on."""

from __future__ import annotations

import itertools
from typing import Any

from gateway.adapters.master_data import (
    MUNICIPALITY_CODE,
    OLD_EVENT_TIME,
    OLD_MUNICIPALITY_CODE,
    event_times,
    merge,
    new_master,
    normalized,
)

PNR = {"system": "http://electronichealth.se/identifier/personnummer", "value": "191212121212"}
KOMMUNKOD = "https://fhir.home-device-gateway.se/CodeSystem/kommunkod"


def record(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [PNR], **fields}


def address(
    street: str | None = None, code: str | None = None, url: str = MUNICIPALITY_CODE
) -> dict[str, Any]:
    found: dict[str, Any] = {"use": "home"}
    if street:
        found["line"] = [street]
    if code:
        found["extension"] = [{"url": url, "valueCoding": {"system": KOMMUNKOD, "code": code}}]
    return found


def codes(patient: dict[str, Any]) -> list[str]:
    return [e["valueCoding"]["code"] for e in patient["address"][0].get("extension", [])]


def test_a_record_without_a_field_neither_erases_it_nor_blocks_a_later_one() -> None:
    held = new_master(record(address=[address("Storgatan 1", "0180")]), "2026-11-20T09:00:00+01:00")
    phone = merge(held, record(telecom=[{"system": "phone", "value": "070"}]), "2026-11-30T09:00:00+01:00")
    assert phone["address"] == held["address"]
    moved = merge(phone, record(address=[address("Nygatan 5")]), "2026-11-25T09:00:00+01:00")
    assert moved["address"][0]["line"] == ["Nygatan 5"] and codes(moved) == ["0180"]  # the code stays
    older = merge(moved, record(address=[address("Gamla vägen 1")]), "2026-11-21T09:00:00+01:00")
    assert older is moved


def test_a_source_without_event_times_only_fills_fields_without_a_value() -> None:
    created = new_master(record(), None)
    assert "extension" not in created
    filled = merge(created, record(address=[address("Storgatan 1")]), "2026-11-20T09:00:00+01:00")
    assert merge(filled, record(address=[address("Registervägen 2")]), None) is filled
    assert merge(filled, record(address=[address("Nygatan 5")]), "2026-11-21T09:00:00+01:00")["address"][0][
        "line"
    ] == ["Nygatan 5"]


def test_the_result_does_not_depend_on_the_order_records_arrive_in() -> None:
    records = [
        (record(address=[address("A-gatan 1")]), "2026-11-21T10:00:00+01:00"),
        (record(name=[{"family": "Tolvansson"}]), "2026-11-22T10:00:00+01:00"),
        (record(address=[address("B-gatan 2", "0184")]), "2026-11-23T10:00:00+01:00"),
        (record(address=[address("B-gatan 2", "0184")]), "2026-11-25T10:00:00+01:00"),
        (record(address=[address(code="0180")]), "2026-11-24T10:00:00+01:00"),
    ]
    results = []
    for ordering in itertools.permutations(records):
        patient = new_master(record(), None)
        for incoming, when in ordering:
            patient = merge(patient, incoming, when)
        results.append(patient)
    assert all(result == results[0] for result in results)
    assert codes(results[0]) == ["0184"] and event_times(results[0])["address"] == "2026-11-25T10:00:00+01:00"


def test_the_old_form_is_read_and_normalized_once() -> None:
    old = record(
        address=[
            {
                **address("Storgatan 1", "0180"),
                "extension": [
                    {"url": MUNICIPALITY_CODE, "valueCoding": {"system": KOMMUNKOD, "code": "0180"}},
                    {"url": OLD_MUNICIPALITY_CODE, "valueCoding": {"system": KOMMUNKOD, "code": "0184"}},
                ],
            }
        ],
        extension=[{"url": OLD_EVENT_TIME, "valueDateTime": "2026-11-20T09:14:00+01:00"}],
    )
    assert event_times(old) == {
        "address": "2026-11-20T09:14:00+01:00",
        "address.municipality-code": "2026-11-20T09:14:00+01:00",
    }
    new = normalized(old)
    assert new["address"][0]["extension"] == [
        {"url": MUNICIPALITY_CODE, "valueCoding": {"system": KOMMUNKOD, "code": "0184"}}
    ]
    assert normalized(new) is new
    assert event_times(new) == event_times(old)
    # an order older than the stored time does not overwrite it, read in either form
    late = record(address=[address("Gamla vägen 1")])
    assert merge(old, late, "2026-11-19T09:00:00+01:00") is old
    assert merge(new, late, "2026-11-19T09:00:00+01:00") is new
