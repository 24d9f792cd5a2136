"""A patient's journey through the real entrances with security on, each party its own client (no helper
of its own is region-wide): the order portal and the device register as the sources they are bound to,
the hospital over MLLP, and the FHIR clients of a lung clinic, a primary-care unit and two
municipalities. The region's own client (region-wide) keeps the directory, as the region does."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.adapters.hl7v2.ack import read_ack
from gateway.adapters.hl7v2.mllp import ListenerSettings
from gateway.app import create_app
from gateway.security.scopes import ADAPTER_BESTALLNINGSPORTALEN, ADAPTER_DEVICE_REGISTER
from gateway.services import Services
from tests.adapters.test_bestallningsportalen import URL as ORDERS
from tests.adapters.test_bestallningsportalen import golden
from tests.adapters.test_device_register import HEADER, row_of
from tests.adapters.test_device_register import URL as RECORDS
from tests.adapters.test_hl7v2_messages import KOMMUN, VC, adt
from tests.adapters.test_hl7v2_mllp import Running, exchange, hospital_senders
from tests.conftest import Database
from tests.security.conftest import bearer, organisation_policy
from tests.workflow.test_order_to_return_report import client_for

HSA = "urn:oid:1.2.752.29.4.19"
LUNG = "SE2321000016-LUNG"
MAH = "SE2321000016-MAH1"
KOMMUN_A = KOMMUN
KOMMUN_B = "SE2120001300-SOC3"
PERSONNUMMER = "http://electronichealth.se/identifier/personnummer|191212121212"
PATCH = {"Content-Type": "application/json-patch+json"}
BASE = "https://fhir.home-device-gateway.se"
TASK_SYSTEM = f"{BASE}/CodeSystem/care-transition-task"
CATEGORY = f"{BASE}/CodeSystem/communication-category"
SELF_CARE_CHANGE = f"{BASE}/CodeSystem/self-care-change"
OUTPUT_TYPES = f"{BASE}/CodeSystem/task-output-type"
SCOPES = {
    "portal": ADAPTER_BESTALLNINGSPORTALEN,
    "register": ADAPTER_DEVICE_REGISTER,
    "lung": "system/*.cruds gateway/audit.read",
    "vc": "system/*.crus",
    "ka": "system/*.crus gateway/audit.read",
    "kb": "system/*.crus gateway/audit.read",
    "region": "system/*.cruds gateway/audit.read",
}
UNITS = {
    "portal": LUNG,
    "register": MAH,
    "lung": LUNG,
    "vc": VC,
    "ka": KOMMUN_A,
    "kb": KOMMUN_B,
    "region": "SE2321000016-REGION",
}
SOURCES = {"portal": ("bestallningsportalen:BP",), "register": (f"device-register:SESAM@{MAH}",)}


def order(name: str, **changes: Any) -> dict[str, Any]:
    """A golden order, changed (`forskrivare` of another prescriber, a later version, …)."""
    found = copy.deepcopy(golden(name))
    found.update(changes)
    return found


class Journey:
    def __init__(self, services: Services, http: TestClient) -> None:
        self.services = services
        self.http = http
        self.headers: dict[str, dict[str, str]] = {}
        for who, scopes in SCOPES.items():
            registered = client_for(services, f"{who}-client", UNITS[who], scopes, SOURCES.get(who, ()))
            self.headers[who] = bearer(registered.token(http, scopes))
        policy = organisation_policy(services)
        policy.region_clients = policy.region_clients | {"region-client"}
        self.senders = hospital_senders(services)

    # -- the sources -------------------------------------------------------------------------------

    def order(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.http.post(ORDERS, json=body, headers=self.headers["portal"])
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["entry"]
        assert all(e["response"]["status"].startswith(("200", "201")) for e in entries), entries
        return entries

    def delivered(self, name: str = "02-utlanad") -> None:
        """The device register reports the unit on loan to the patient (for the order in its row)."""
        self.register(row_of(name))

    def register(self, row: str) -> None:
        """The device register's delta export of one row, every entry accepted."""
        body = f"{HEADER}\n{row}\n"
        response = self.http.post(
            f"{RECORDS}?mode=delta",
            content=body.encode(),
            headers={**self.headers["register"], "Content-Type": "text/csv"},
        )
        assert response.status_code == 200, response.text
        assert all(e["response"]["status"].startswith("20") for e in response.json()["entry"])

    def stay(self, visit: str = "V2026-778899") -> None:
        """Admission and discharge at the hospital, over MLLP: a handover Task to the municipality."""
        running = Running(self.services, ListenerSettings(port=0, senders=self.senders))
        try:
            discharge = adt(
                "A03", f"{visit}-2", visit=visit, sent="20261127120000", discharged="20261127110000"
            )
            answers = exchange(running.port, [adt("A01", f"{visit}-1", visit=visit), discharge])
        finally:
            running.stop()
        assert [read_ack(a)[0] for a in answers] == ["AA", "AA"]

    # -- FHIR as each party ----------------------------------------------------------------------------

    def get(self, who: str, target: str, status: int = 200) -> dict[str, Any]:
        response = self.http.get(f"/fhir/{target}", headers=self.headers[who])
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()
        return body

    def search(self, who: str, query: str) -> list[dict[str, Any]]:
        bundle = self.get(who, query)
        return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]

    def post(self, who: str, resource: dict[str, Any], status: int = 201) -> dict[str, Any]:
        response = self.http.post(
            f"/fhir/{resource['resourceType']}", json=resource, headers=self.headers[who]
        )
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()
        return body

    def patch(
        self, who: str, target: str, operations: list[dict[str, Any]], status: int = 200
    ) -> dict[str, Any]:
        response = self.http.patch(f"/fhir/{target}", json=operations, headers={**self.headers[who], **PATCH})
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()
        return body

    def put(self, who: str, resource: dict[str, Any]) -> None:
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        response = self.http.put(url, json=resource, headers=self.headers[who])
        assert response.status_code in (200, 201), response.text

    # -- what the parties look for ---------------------------------------------------------------------

    def patient(self) -> str:
        [found] = self.search("region", f"Patient?identifier={PERSONNUMMER}")
        return str(found["id"])

    def organization(self, hsa: str) -> str:
        [found] = self.search("region", f"Organization?identifier={HSA}|{hsa}")
        return str(found["id"])

    def handover(self, who: str, owner: str) -> dict[str, Any]:
        """The open handover Task the unit finds for itself."""
        found = self.search(who, f"Task?code=handover&owner={owner}&status=requested")
        assert len(found) == 1, found
        return found[0]

    def reports(self, who: str, recipient: str) -> list[dict[str, Any]]:
        return self.search(who, f"Communication?category={CATEGORY}|returrapport&recipient={recipient}")

    def audit(self, query: str, who: str = "region") -> list[dict[str, Any]]:
        assert self.services.audit is not None
        self.services.audit.flush()
        return self.search(who, f"AuditEvent?{query}&_count=100")


def text(resource: dict[str, Any]) -> str:
    return " ".join(str(p.get("contentString", "")) for p in resource.get("payload") or [])


def reject(reason: str) -> list[dict[str, Any]]:
    return [
        {"op": "replace", "path": "/status", "value": "rejected"},
        {"op": "add", "path": "/statusReason", "value": {"text": reason}},
    ]


def complete(change: str | None = None) -> list[dict[str, Any]]:
    operations: list[dict[str, Any]] = [{"op": "replace", "path": "/status", "value": "completed"}]
    if change is not None:
        output = {
            "type": {"coding": [{"system": OUTPUT_TYPES, "code": "self-care-change"}]},
            "valueCodeableConcept": {"coding": [{"system": SELF_CARE_CHANGE, "code": change}]},
        }
        operations.append({"op": "add", "path": "/output", "value": [output]})
    return operations


@pytest.fixture
def secured(database: Database) -> Iterator[Services]:
    """Auth, the organisation policy and audit on."""
    database.clear()
    built = Services.build(
        database.settings(auth=True, organisation_policy=True, audit=True), engine=database.engine
    )
    yield built
    built.close()


@pytest.fixture
def journey(secured: Services) -> Iterator[Journey]:
    with TestClient(create_app(secured.settings, services=secured)) as http:
        yield Journey(secured, http)
