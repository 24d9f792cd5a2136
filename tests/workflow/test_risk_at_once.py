"""The high-risk rules when two writes for one patient commit at the same moment, each bringing one of the
two inputs that together reach the threshold (age, and a need for help at home with none active). Each
write's transaction evaluates the rules (gateway/risk/reaction.py); without taking turns per patient each
saw only its own input (PostgreSQL, READ COMMITTED), neither reached the threshold, and the proposal waited
for the scheduler's next pass. With several processes (or threads) on PostgreSQL this is every busy
patient's case; SQLite's writers take turns anyway."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gateway.cli import CLI_CONTEXT
from gateway.pipeline import UnitOfWork
from gateway.services import Services
from tests.api.helpers import HSA, patient
from tests.security.test_organisation_policy import pnr

BASE = "https://fhir.home-device-gateway.se"
ROUNDS = 8


def write(services: Services, resource: dict[str, Any]) -> None:
    def work(uow: UnitOfWork) -> None:
        services.write_path.update(uow, resource["resourceType"], resource["id"], resource)

    services.write_path.run(CLI_CONTEXT, work)


def test_two_inputs_written_at_once_are_evaluated_together(services: Services) -> None:
    if services.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's writers take turns: the two writes never overlap")
    write(
        services,
        {"resourceType": "Organization", "id": "kommun", "identifier": [{"system": HSA, "value": "K"}]},
    )
    missed = []
    for n in range(-1, ROUNDS):  # -1: one write after the other, to show the two reach the threshold
        young = patient(pnr(300 + n), id=f"p{n}", birthDate="1990-01-01")
        write(services, young)
        old = young | {"birthDate": "1938-04-01"}  # 80 or older: weight 1
        handover = {  # a need for help at home, none active: weight 1
            "resourceType": "Task",
            "id": f"handover{n}",
            "status": "requested",
            "intent": "order",
            "code": {"coding": [{"system": f"{BASE}/CodeSystem/care-transition-task", "code": "handover"}]},
            "for": {"reference": f"Patient/p{n}"},
            "owner": {"reference": "Organization/kommun"},
        }
        barrier = threading.Barrier(1 if n < 0 else 2)

        def at_once(resource: dict[str, Any], barrier: threading.Barrier = barrier) -> None:
            barrier.wait(timeout=30)
            write(services, resource)

        with ThreadPoolExecutor(1 if n < 0 else 2) as pool:
            for done in [pool.submit(at_once, old), pool.submit(at_once, handover)]:
                done.result(timeout=60)
        with services.engine.connect() as connection:
            found = services.searcher.match(connection, "RiskAssessment", f"subject=Patient/p{n}", limit=10)
        if len(found) != 1:
            missed.append(f"p{n}")
    assert missed == []
