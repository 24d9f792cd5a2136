"""The write path's named hook points: rules before a write, reactions after it, in one transaction."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from gateway.errors import unprocessable
from gateway.pipeline import UnitOfWork, WritePath
from gateway.services import Services
from gateway.store.repository import Stored
from tests.api.helpers import create, patient, task


def test_a_rule_can_refuse_and_complete_writes(client: TestClient, services: Services) -> None:
    def terminal_states_stay(uow: UnitOfWork, action: str, resource: Any, current: Any) -> Any:
        if current and current.get("status") == "completed" and resource.get("status") != "completed":
            raise unprocessable("A completed Task cannot be reopened", "Task.status")
        return resource

    def default_priority(uow: UnitOfWork, action: str, resource: Any, current: Any) -> Any:
        if resource["resourceType"] == "Task" and "priority" not in resource:
            return {**resource, "priority": "routine"}
        return resource

    services.hooks.rules.extend([terminal_states_stay, default_priority])
    done = create(client, task("p1", status="completed"))
    assert done["priority"] == "routine"
    reopened = client.put(f"/fhir/Task/{done['id']}", json={**done, "status": "requested"})
    assert reopened.status_code == 422
    assert reopened.json()["issue"][0]["expression"] == ["Task.status"]


def test_a_reaction_writes_in_the_same_transaction(client: TestClient, services: Services) -> None:
    def provenance_for_tasks(uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Any) -> None:
        if stored.res_type == "Task":
            target = {"reference": f"Task/{stored.res_id}/_history/{stored.version_id}"}
            provenance = {
                "resourceType": "Provenance",
                "target": [target],
                "recorded": "2026-11-22T10:00:00Z",
                "agent": [{"who": {"reference": "Organization/o1"}}],
            }
            write_path.create(uow, provenance)

    services.hooks.reactions.append(provenance_for_tasks)
    created = create(client, task("p1"))
    found = client.get(f"/fhir/Provenance?target=Task/{created['id']}").json()
    assert len(found["entry"]) == 1
    # a transaction that fails after the Task was stored rolls the reaction's write back too
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": task("p2"), "request": {"method": "POST", "url": "Task"}},
            {"resource": patient(birthDate="not a date"), "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    assert client.post("/fhir", json=bundle).status_code == 400
    assert len(client.get("/fhir/Provenance").json()["entry"]) == 1
