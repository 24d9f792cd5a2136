"""Follow-up dates (issue 16), end to end through the real entrances with auth on: the portal and the
register are clients bound to their sources, and the lung clinic responsible for the follow-up reads the
plan with its own organisation-scoped client. A planned date comes from the version that planned it; a
later version with the same follow-up leaves it where it was (an overdue follow-up stays overdue); a changed
plan ends what it dropped and plans what it adds from its own version; a cancelled order and a pick-up
end the open follow-ups with a coded reason."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.adapters.bestallningsportalen.follow_up import END_REASON
from gateway.app import create_app
from gateway.security.scopes import ADAPTER_BESTALLNINGSPORTALEN, ADAPTER_DEVICE_REGISTER
from gateway.services import Services
from tests.adapters.test_bestallningsportalen import URL, golden
from tests.adapters.test_device_register import HEADER, changed, row_of
from tests.security.conftest import bearer
from tests.workflow.test_order_to_return_report import LUNG, client_for, read, search, secured

__all__ = ["secured"]  # the fixture: auth, organisation policy and audit on, no client region-wide

MAH = "SE2321000016-MAH1"
CATEGORY = "https://fhir.home-device-gateway.se/CodeSystem/careplan-category|device-follow-up"
READ = "system/*.rs"


class World:
    """The portal, the register and the lung clinic, each its own client on one running server."""

    def __init__(self, services: Services, http: TestClient) -> None:
        self.http = http
        portal = client_for(
            services, "portal", LUNG, ADAPTER_BESTALLNINGSPORTALEN, ("bestallningsportalen:BP",)
        )
        register = client_for(
            services, "sesam", MAH, ADAPTER_DEVICE_REGISTER, (f"device-register:SESAM@{MAH}",)
        )
        lung = client_for(services, "lung-journal", LUNG, READ)
        self.portal = bearer(portal.token(http, ADAPTER_BESTALLNINGSPORTALEN))
        self.register = bearer(register.token(http, ADAPTER_DEVICE_REGISTER))
        self.lung = bearer(lung.token(http, READ))

    def order(self, order: dict[str, Any]) -> str:
        response = self.http.post(URL, json=order, headers=self.portal)
        assert response.status_code == 200, response.text
        [entry] = response.json()["entry"]
        assert entry["response"]["status"][:3] in ("200", "201"), entry
        return str(entry["response"]["location"]).split("/_history")[0]

    def rows(self, *rows: str) -> None:
        body = "\n".join([HEADER, *rows]) + "\n"
        headers = {**self.register, "Content-Type": "text/csv"}
        response = self.http.post(
            "/adapters/device-register/records?mode=delta", content=body, headers=headers
        )
        assert response.status_code == 200, response.text
        assert all(e["response"]["status"][:3] in ("200", "201") for e in response.json()["entry"])

    def plan(self, line: str) -> dict[str, Any]:
        """The follow-up CarePlan as the responsible clinic finds it: by the order line it follows up."""
        self.http.headers.update(self.lung)
        [plan] = search(self.http, "CarePlan", **{"activity-reference": line, "category": CATEGORY})
        return plan


@pytest.fixture
def world(secured: Services) -> Iterator[World]:
    with TestClient(create_app(secured.settings, services=secured)) as http:
        yield World(secured, http)


def planned(plan: dict[str, Any]) -> dict[str, tuple[str, str, str | None]]:
    """Each planned activity by its follow-up: (date, status, end reason code)."""
    found = {}
    for activity in plan["activity"]:
        if "detail" in activity:
            detail = activity["detail"]
            codes = [
                c["code"]
                for c in detail.get("statusReason", {}).get("coding", [])
                if c["system"] == END_REASON
            ]
            found[activity["id"]] = (
                detail["scheduledPeriod"]["start"],
                detail["status"],
                (codes or [None])[0],
            )
    return found


def version(order: dict[str, Any], number: int, skapad: str, **changes: Any) -> dict[str, Any]:
    later = copy.deepcopy(order)
    later.update(version=number, skapad=skapad, **changes)
    return later


def test_a_later_version_leaves_planned_dates_and_only_a_changed_plan_moves_them(world: World) -> None:
    first = golden("01")  # skapad 2026-11-20: follow-ups after 21 and 180 days
    line = world.order(first)
    assert planned(world.plan(line)) == {
        "uppfoljning-21-aterbesok": ("2026-12-11", "not-started", None),
        "uppfoljning-180-telefon": ("2027-05-19", "not-started", None),
    }

    # delivered a month later: the 21-day follow-up is overdue, and stays so
    world.order(version(first, 2, "2026-12-20T10:00:00+01:00", status="levererad"))
    assert planned(world.plan(line)) == {
        "uppfoljning-21-aterbesok": ("2026-12-11", "not-started", None),
        "uppfoljning-180-telefon": ("2027-05-19", "not-started", None),
    }

    # closed: the follow-ups go on
    world.order(version(first, 3, "2026-12-22T10:00:00+01:00", status="avslutad"))
    plan = world.plan(line)
    assert plan["status"] == "active"
    assert plan["created"] == first["skapad"]
    assert {status for _, status, _ in planned(plan).values()} == {"not-started"}

    # a changed plan: the telephone follow-up dropped, a home visit added (planned from this version)
    changed_plan = copy.deepcopy(first["uppfoljning"])
    changed_plan["plan"] = [{"efter_dagar": 21, "satt": "aterbesok"}, {"efter_dagar": 90, "satt": "hembesok"}]
    world.order(version(first, 4, "2027-01-10T08:00:00+01:00", status="avslutad", uppfoljning=changed_plan))
    plan = world.plan(line)
    assert planned(plan) == {
        "uppfoljning-21-aterbesok": ("2026-12-11", "not-started", None),
        "uppfoljning-180-telefon": ("2027-05-19", "cancelled", "plan-changed"),
        "uppfoljning-90-hembesok": ("2027-04-10", "not-started", None),
    }
    [dropped] = [a for a in plan["activity"] if a.get("id") == "uppfoljning-180-telefon"]
    assert dropped["detail"]["statusReason"]["text"] == (
        "Version 4 av order BP-2026-004711 har inte längre denna uppföljning"
    )

    # cancelled: every open follow-up ends, with the reason
    world.order(version(first, 5, "2027-01-12T08:00:00+01:00", status="makulerad", uppfoljning=changed_plan))
    plan = world.plan(line)
    assert plan["status"] == "revoked"
    assert planned(plan) == {
        "uppfoljning-21-aterbesok": ("2026-12-11", "cancelled", "order-cancelled"),
        "uppfoljning-180-telefon": ("2027-05-19", "cancelled", "plan-changed"),
        "uppfoljning-90-hembesok": ("2027-04-10", "cancelled", "order-cancelled"),
    }
    [ended] = [a for a in plan["activity"] if a.get("id") == "uppfoljning-90-hembesok"]
    assert ended["detail"]["statusReason"]["text"] == "Order BP-2026-004711 makulerades (version 5)"


def test_a_pick_up_ends_the_follow_ups_once_every_unit_of_the_plan_goes_back(world: World) -> None:
    first = golden("01")
    line = world.order(first)
    # delivered: the register places the concentrator with the patient, for the order's line; a second
    # unit of the same line (a spare concentrator) too
    world.rows(row_of("02"), changed("02", individnummer="MAH-000199", serienummer="SN99999"))
    pick_up = golden("08")  # hämtorder of MAH-000123
    world.order(pick_up)
    assert {status for _, status, _ in planned(world.plan(line)).values()} == {"not-started"}

    second = version(pick_up, 1, "2026-12-01T09:00:00+01:00", ordernummer="BP-2026-004799")
    second["hamtar_individnummer"] = "MAH-000199"
    world.order(second)
    plan = world.plan(line)
    assert planned(plan) == {
        "uppfoljning-21-aterbesok": ("2026-12-11", "cancelled", "device-returned"),
        "uppfoljning-180-telefon": ("2027-05-19", "cancelled", "device-returned"),
    }
    [first_activity] = [a for a in plan["activity"] if a.get("id") == "uppfoljning-21-aterbesok"]
    assert first_activity["detail"]["statusReason"]["text"] == (
        "Hjälpmedlet hämtas tillbaka: enheten MAH-000199 (hämtorder BP-2026-004799)"
    )
    [provenance] = search(
        world.http, "Provenance", target=f"CarePlan/{plan['id']}", _sort="-recorded", _count="1"
    )
    assert provenance["reason"] == [{"text": first_activity["detail"]["statusReason"]["text"]}]
    assert provenance["entity"][0]["what"]["reference"].startswith("Task/")

    # a later version of the prescription keeps them ended
    world.order(version(first, 2, "2026-12-20T10:00:00+01:00", status="avslutad"))
    assert {reason for _, _, reason in planned(world.plan(line)).values()} == {"device-returned"}
    assert read(world.http, line)["status"] == "completed"
