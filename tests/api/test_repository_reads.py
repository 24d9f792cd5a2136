"""Reads the adapters make of many resources at once, without search's parsing and planning, must find
what the equivalent search finds."""

from __future__ import annotations

from typing import Any

from gateway.hooks import RequestContext
from gateway.pipeline import UnitOfWork
from gateway.services import Services
from tests.conftest import Database

BASE = "http://test/fhir"
CONTEXT = RequestContext(base_url=BASE)


def use(res_id: str, device: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "DeviceUseStatement",
        "id": res_id,
        "status": status,
        "subject": {"reference": "Patient/p1"},
        "device": {"reference": device},
    }


def test_referring_finds_what_the_reference_search_finds(database: Database) -> None:
    database.clear()
    services = Services.build(database.settings(base_url=BASE), engine=database.engine)
    uses = [
        use("u1", "Device/d1"),
        use("u2", f"{BASE}/Device/d2"),  # absolute, under this server's base: local
        use("u3", "http://elsewhere.example/fhir/Device/d1"),  # another server's d1: not ours
        use("u4", "Device/d3"),
        use("u5", "Device/d1", "completed"),
    ]

    def write(uow: UnitOfWork) -> None:
        for resource in uses:
            services.write_path.update(uow, resource["resourceType"], resource["id"], resource)
        services.write_path.delete(uow, "DeviceUseStatement", "u5")

    services.write_path.run(CONTEXT, write)

    def read(uow: UnitOfWork) -> tuple[list[str], list[str]]:
        direct = uow.repository.referring("DeviceUseStatement", "device", "Device", ["d1", "d2"], BASE)
        searched = services.searcher.match(
            uow.connection, "DeviceUseStatement", "device=Device/d1,Device/d2", limit=100
        )
        return sorted(s.res_id for s in direct), sorted(s.res_id for s in searched)

    try:
        direct, searched = services.write_path.run(CONTEXT, read, write=False)
    finally:
        services.close()
    assert direct == searched == ["u1", "u2"]
