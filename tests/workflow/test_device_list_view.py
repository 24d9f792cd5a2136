"""The device list's rows as a person reads them (gateway/workflow/device_list_view.py), from what the
gatherer found: pure, no database. An order whose prescriber the portal could not confirm shows its
requester as unconfirmed, never as the actual prescriber (finding 1)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from gateway.store.repository import Stored
from gateway.workflow.device_list import Gathered
from gateway.workflow.device_list_view import view
from gateway.workflow.prescribers import UNCONFIRMED

BASE = "https://fhir.home-device-gateway.se"


def stored(resource: dict[str, Any]) -> Stored:
    return Stored(
        resource["resourceType"], resource["id"], 1, datetime(2026, 12, 1), False, json.dumps(resource)
    )


def gathered(tags: list[dict[str, str]]) -> Gathered:
    request = {
        "resourceType": "DeviceRequest",
        "id": "line",
        "meta": {"tag": tags},
        "status": "completed",
        "intent": "order",
        "codeCodeableConcept": {"text": "Rollator"},
        "subject": {"reference": "Patient/p"},
        "requester": {"reference": "PractitionerRole/role"},
        "extension": [{"url": f"{BASE}/StructureDefinition/order-type", "valueCode": "tillbehor"}],
    }
    role = {
        "resourceType": "PractitionerRole",
        "id": "role",
        "practitioner": {"reference": "Practitioner/doc"},
        "code": [{"text": "Arbetsterapeut"}],
        "organization": {"reference": "Organization/unit"},
    }
    doc = {
        "resourceType": "Practitioner",
        "id": "doc",
        "name": [{"given": ["Frida"], "family": "Förskrivare"}],
    }
    unit = {"resourceType": "Organization", "id": "unit", "name": "Rehabenheten"}
    found = Gathered(stored({"resourceType": "Patient", "id": "p"}))
    found.items = [stored(request)]
    found.requests_of = {"DeviceRequest/line": ["DeviceRequest/line"]}
    found.by_key = {f"{r['resourceType']}/{r['id']}": r for r in (request, role, doc, unit)}
    return found


def test_a_confirmed_prescriber_is_the_actual_prescriber() -> None:
    [row] = view(gathered([])).rows
    assert row.prescriber == "Frida Förskrivare, arbetsterapeut, Rehabenheten"


def test_an_unconfirmed_prescriber_is_shown_as_unconfirmed() -> None:
    [row] = view(gathered([{"system": f"{BASE}/CodeSystem/adapter-tags", "code": UNCONFIRMED}])).rows
    assert (
        row.prescriber == "Frida Förskrivare, arbetsterapeut, Rehabenheten (förskrivaren är inte bekräftad)"
    )
