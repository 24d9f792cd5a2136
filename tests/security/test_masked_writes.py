"""Writes to protected-identity Patients by clients served them masked: an update keeps the stored name,
address, telecom (and the other masked elements and the protection label), so writing back what was read
wipes nothing; a JSON Patch touching a masked element is refused before it is applied, so a `test`
confirms no guess."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.hooks import Principal, RequestContext
from gateway.services import Services
from tests.conftest import Database
from tests.security.conftest import bearer, organisation_policy, register
from tests.security.test_masking import PROTECTED, Seeded, assert_masked, protected_patient
from tests.security.test_organisation_policy import ALL, World

PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
def seeded(database: Database) -> Iterator[Seeded]:
    """Auth and the organisation policy on; the region-wide client is served protected Patients masked."""
    database.clear()
    services = Services.build(database.settings(auth=True, organisation_policy=True), engine=database.engine)
    with TestClient(create_app(services.settings, services=services)) as client:
        yield Seeded(services, client, World(services, client))
    services.close()


def _stored(seeded: Seeded, patient_id: str) -> tuple[int, dict[str, Any]]:
    stored = seeded.services.write_path.run(
        RequestContext(Principal(client_id="cli")),
        lambda uow: uow.repository.current("Patient", patient_id),
        write=False,
    )
    assert stored is not None
    return stored.version_id, stored.json()


def _protected(seeded: Seeded, serial: int) -> str:
    response = seeded.client.put(
        f"/fhir/Patient/skyddad-{serial}",
        json=protected_patient(serial, id=f"skyddad-{serial}", gender="female"),
        headers=seeded.world.region,
    )
    assert response.status_code == 201, response.text
    return f"skyddad-{serial}"


def test_writing_back_a_masked_read_wipes_nothing(seeded: Seeded) -> None:
    c, region = seeded.client, seeded.world.region
    patient_id = _protected(seeded, 60)
    version, before = _stored(seeded, patient_id)
    read = c.get(f"/fhir/Patient/{patient_id}", headers=region).json()
    assert_masked(read)
    response = c.put(f"/fhir/Patient/{patient_id}", json=read, headers=region)
    assert response.status_code == 200, response.text
    assert _stored(seeded, patient_id) == (version, before)  # unchanged: no new version


def test_an_update_changes_what_is_shown_and_keeps_what_is_hidden(seeded: Seeded) -> None:
    c, region = seeded.client, seeded.world.region
    patient_id = _protected(seeded, 61)
    read = c.get(f"/fhir/Patient/{patient_id}", headers=region).json()
    changed = {**read, "gender": "other", "name": [{"family": "Gissad"}], "meta": {}}
    assert c.put(f"/fhir/Patient/{patient_id}", json=changed, headers=region).status_code == 200
    _, after = _stored(seeded, patient_id)
    assert after["gender"] == "other"
    assert after["name"][0]["family"] == "Nyskyddad"
    assert after["address"] == [{"city": "Hemlig"}] and after["telecom"][0]["value"] == "070-1111111"
    assert after["meta"]["security"] == PROTECTED["security"]  # the label stays, REDACTED is not stored


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "test", "path": "/name/0/family", "value": "Nyskyddad"},
        {"op": "test", "path": "/name/0/family", "value": "Fel"},
        {"op": "replace", "path": "/address", "value": []},
        {"op": "remove", "path": "/telecom"},
        {"op": "add", "path": "/name/-", "value": {"family": "Ny"}},
        {"op": "move", "from": "/telecom/0", "path": "/extension/0"},
        {"op": "copy", "from": "/address/0", "path": "/extension/0"},
        {"op": "replace", "path": "", "value": {"resourceType": "Patient"}},
        {"op": "remove", "path": "name"},
    ],
)
def test_a_patch_touching_what_is_hidden_is_refused_alike(seeded: Seeded, operation: dict[str, Any]) -> None:
    c, region = seeded.client, seeded.world.region
    patient_id = _protected(seeded, 62)
    version, before = _stored(seeded, patient_id)
    operations = [{"op": "replace", "path": "/gender", "value": "other"}, operation]
    response = c.patch(f"/fhir/Patient/{patient_id}", content=json.dumps(operations), headers=region | PATCH)
    assert response.status_code == 403, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Nyskyddad" not in response.text and "Fel" not in response.text
    assert outcome == _refusal(seeded, patient_id)  # the same answer for a right and a wrong guess
    assert _stored(seeded, patient_id) == (version, before)


def _refusal(seeded: Seeded, patient_id: str) -> Any:
    wrong = [{"op": "test", "path": "/name/0/family", "value": "Fel"}]
    return seeded.client.patch(
        f"/fhir/Patient/{patient_id}", content=json.dumps(wrong), headers=seeded.world.region | PATCH
    ).json()


def test_a_patch_of_what_is_shown_applies(seeded: Seeded) -> None:
    c, region = seeded.client, seeded.world.region
    patient_id = _protected(seeded, 63)
    operations = [
        {"op": "test", "path": "/gender", "value": "female"},
        {"op": "replace", "path": "/gender", "value": "other"},
        {"op": "remove", "path": "/meta/security"},
    ]
    response = c.patch(f"/fhir/Patient/{patient_id}", content=json.dumps(operations), headers=region | PATCH)
    assert response.status_code == 200, response.text
    assert_masked(response.json())  # removing the label through a patch does not unmask it
    _, after = _stored(seeded, patient_id)
    assert after["gender"] == "other" and after["meta"]["security"] == PROTECTED["security"]


def test_an_allowed_client_changes_the_identity(seeded: Seeded) -> None:
    c = seeded.client
    patient_id = _protected(seeded, 64)
    allowed = register(seeded.services, ALL, org="SE-A", region=True)
    policy = organisation_policy(seeded.services)
    policy.identities.unmasked_clients = policy.identities.unmasked_clients | {allowed.client_id}
    headers = bearer(allowed.token(c, ALL))
    operations = [
        {"op": "test", "path": "/name/0/family", "value": "Nyskyddad"},
        {"op": "replace", "path": "/name/0/family", "value": "Omdöpt"},
    ]
    response = c.patch(f"/fhir/Patient/{patient_id}", content=json.dumps(operations), headers=headers | PATCH)
    assert response.status_code == 200, response.text
    read = c.get(f"/fhir/Patient/{patient_id}", headers=headers).json()
    moved = {k: v for k, v in read.items() if k != "address"}
    assert c.put(f"/fhir/Patient/{patient_id}", json=moved, headers=headers).status_code == 200
    _, after = _stored(seeded, patient_id)
    assert after["name"][0]["family"] == "Omdöpt" and "address" not in after
