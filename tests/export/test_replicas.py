"""Export jobs across gateway processes on one database: a job kicked off at one replica is made by
another's worker and answered (status, files, cancel) by a third; workers racing for the same jobs make
each once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.export import jobs
from gateway.export.worker import Worker
from gateway.services import Services
from tests.export.test_export import exported, kick_off, manifest, searched
from tests.security.test_organisation_policy import World

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def other(secure_services: Services) -> Iterator[TestClient]:
    """Another replica: its own Services (policy, caches, audit writer) on the same database."""
    built = Services.build(secure_services.settings, engine=secure_services.engine)
    with TestClient(create_app(built.settings, services=built)) as client:
        yield client
    built.close()


def test_any_replica_answers_a_job(
    secure_services: Services, secure_client: TestClient, other: TestClient
) -> None:
    world = World(secure_services, secure_client)
    status_url = kick_off(world, world.a, "?_type=Patient,Observation")
    worker_services = Services.build(secure_services.settings, engine=secure_services.engine)
    try:
        assert Worker(worker_services).run_once() == 1
    finally:
        worker_services.close()
    world.client = other  # the same tokens, the other replica
    body = manifest(world, world.a, status_url)
    found = exported(world, world.a, body)
    assert {k for k in found if k.startswith("Observation/")} == set(searched(world, world.a, "Observation"))
    assert other.get(status_url, headers=world.b).status_code == 404
    assert other.delete(status_url, headers=world.a).status_code == 202
    assert secure_client.get(status_url, headers=world.a).status_code == 404


def test_racing_workers_make_each_job_once(secure_services: Services, secure_client: TestClient) -> None:
    world = World(secure_services, secure_client)
    urls = [kick_off(world, who) for who in (world.a, world.b, world.a, world.region)]
    settings = secure_services.settings.replace(export_chunk_resources=3)
    workers = [Worker(Services.build(settings, engine=secure_services.engine), f"w{i}") for i in range(2)]
    finished: list[int] = []
    threads = [threading.Thread(target=lambda w=w: finished.append(w.run_once())) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for worker in workers:
        worker.services.close()
    assert sum(finished) == len(urls)
    for url, who in zip(urls, (world.a, world.b, world.a, world.region), strict=True):
        body = manifest(world, who, url)
        found = exported(world, who, body)  # each resource once (asserted there)
        assert sum(item["count"] for item in body["output"]) == len(found)
    with secure_services.engine.connect() as connection:
        done = connection.execute(
            select(func.count()).select_from(jobs.JOB).where(jobs.JOB.c.status == jobs.DONE)
        ).scalar_one()
    assert done == len(urls)
