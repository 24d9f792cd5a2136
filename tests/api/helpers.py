"""Small builders for test resources (fictitious people; personnummer with a valid Luhn digit)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

PNR = "http://electronichealth.se/identifier/personnummer"
HSA = "urn:oid:1.2.752.29.4.19"
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def patient(
    pnr: str = "191212121212", family: str = "Tolvansson", given: str = "Tolvan", **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": PNR, "value": pnr}],
        "name": [{"family": family, "given": [given]}],
        **extra,
    }


def task(
    patient_id: str,
    owner: str = "Organization/kommun-1",
    status: str = "requested",
    subject: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Task for Patient/`patient_id`, or for the reference `subject` (any form) when given."""
    return {
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "for": {"reference": subject or f"Patient/{patient_id}"},
        "owner": {"reference": owner},
        **extra,
    }


def create(client: TestClient, resource: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode", "match") == mode
    ]
