"""The adapters' quarantine keeps rejected inputs verbatim and lists them."""

from __future__ import annotations

from fastapi.testclient import TestClient

from gateway.adapters import quarantine
from gateway.services import Services


def test_quarantined_input_is_kept_verbatim_and_listed(client: TestClient, services: Services) -> None:
    payload = '{"ordernummer": "B-1", "patient": {"namn": "Åsa"}}'.encode()
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "required"}]}
    item_id = quarantine.put(
        services.engine, "bestallningsportalen", payload, "application/json", outcome, "B-1 v1"
    )
    stored = quarantine.get(services.engine, item_id)
    assert stored is not None and stored.payload == payload and stored.outcome == outcome
    listed = client.get("/adapters/quarantine?adapter=bestallningsportalen").json()["items"]
    assert [item["id"] for item in listed] == [item_id]
    assert listed[0]["sourceKey"] == "B-1 v1"
    quarantine.set_status(services.engine, item_id, "replayed")
    assert client.get("/adapters/quarantine").json()["items"] == []
    assert len(client.get("/adapters/quarantine?status=all").json()["items"]) == 1
    assert client.get("/adapters/quarantine?limit=x").status_code == 400
