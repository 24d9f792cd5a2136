"""Care relations (docs/security.md, "What relates an organisation to a patient"): only facts a client could
not forge relate it to a patient; relations end and lapse; referrals relate one step; what a client writes
about its own people and teams relates no one else; identifiers and audit reads across organisations.
Through the real app, auth on, each organisation acting as itself, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import delete, select
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.cli import app
from gateway.services import Services
from gateway.store.tables import CareRelation, Resource
from tests.api.helpers import HSA, patient
from tests.conftest import Database
from tests.security.conftest import bearer, organisation_policy, register

ALL = "system/*.cruds gateway/audit.read"
POLICY = Path(__file__).resolve().parents[2] / "policy" / "access.yaml"


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


class Parties:
    """The region (its journal system, region-wide), a lung clinic (C) and three municipalities' or
    units' clients (A, B, D), each acting for its own HSA-id; p1 is related to A by a Task the region
    wrote (owner A), and the clinic requested a device for p1."""

    def __init__(self, services: Services, client: TestClient) -> None:
        self.services = services
        self.client = client
        region = register(services, ALL, org="SE-REGION")
        organisation_policy(services).region_clients = frozenset({region.client_id})
        self.region = bearer(region.token(client, ALL))
        self.a, self.b, self.c, self.d = (
            bearer(register(services, ALL, org=org).token(client, ALL))
            for org in ("SE-A", "SE-B", "SE-C", "SE-D")
        )
        for org in ("A", "B", "C", "D"):
            self.put(
                {
                    "resourceType": "Organization",
                    "id": f"org{org}",
                    "identifier": [{"system": HSA, "value": f"SE-{org}"}],
                }
            )
        self.put({"resourceType": "Practitioner", "id": "pracB"})
        self.put(
            {
                "resourceType": "PractitionerRole",
                "id": "roleB",
                "organization": ref("Organization/orgB"),
                "practitioner": ref("Practitioner/pracB"),
            }
        )
        self.put(patient("191212121212", id="p1"))
        self.put(patient("191111111111", id="p2", family="Andra"))
        self.put(
            {
                "resourceType": "DeviceRequest",
                "id": "dr1",
                "status": "active",
                "intent": "order",
                "codeCodeableConcept": {"text": "syrgas"},
                "subject": ref("Patient/p1"),
                "requester": ref("Organization/orgC"),
            }
        )
        self.put(self.task("t1", owner="Organization/orgA", focus="DeviceRequest/dr1"))

    def task(self, task_id: str | None = None, **refs: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "for": ref("Patient/p1"),
        }
        body.update({key: ref(value) for key, value in refs.items()})
        return body | ({"id": task_id} if task_id else {})

    def put(self, resource: dict[str, Any], headers: dict[str, str] | None = None) -> int:
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        response = self.client.put(url, json=resource, headers=headers or self.region)
        status: int = response.status_code
        assert status in (200, 201), response.text
        return status

    def reads(self, who: dict[str, str], target: str) -> bool:
        status: int = self.client.get(f"/fhir/{target}", headers=who).status_code
        assert status in (200, 404), status
        return status == 200

    def until(self, task_id: str) -> list[Any]:
        with self.services.engine.connect() as connection:
            rid = connection.execute(select(Resource.rid).where(Resource.res_id == task_id)).scalar_one()
            return list(
                connection.execute(select(CareRelation.until).where(CareRelation.rid == rid)).scalars()
            )


def _services(database: Database, tmp_path: Path, **policy: Any) -> Iterator[Services]:
    rules = yaml.safe_load(POLICY.read_text(encoding="utf-8")) | policy
    path = tmp_path / "access.yaml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    database.clear()
    built = Services.build(
        database.settings(auth=True, audit=True, access_policy=path), engine=database.engine
    )
    yield built
    built.close()


@pytest.fixture
def parties(database: Database, tmp_path: Path) -> Iterator[Parties]:
    for services in _services(database, tmp_path):
        with TestClient(create_app(services.settings, services=services)) as client:
            yield Parties(services, client)


@pytest.fixture
def lapsing(database: Database, tmp_path: Path) -> Iterator[Parties]:
    """Relations lapse the moment they end (relationship_lasts_days: 0)."""
    for services in _services(database, tmp_path, relationship_lasts_days=0):
        with TestClient(create_app(services.settings, services=services)) as client:
            yield Parties(services, client)


def _complete(world: Parties) -> None:
    assert world.reads(world.a, "Patient/p1") and world.reads(world.a, "DeviceRequest/dr1")
    world.put(world.client.get("/fhir/Task/t1", headers=world.region).json() | {"status": "completed"})
    assert world.until("t1") and all(world.until("t1"))


def test_a_relation_lasts_after_it_ends(parties: Parties) -> None:
    _complete(parties)
    assert parties.reads(parties.a, "Patient/p1") and parties.reads(parties.a, "Task/t1")


def test_a_relation_lapses_after_its_period(lapsing: Parties) -> None:
    _complete(lapsing)
    assert not lapsing.reads(lapsing.a, "Patient/p1")
    assert not lapsing.reads(lapsing.a, "Task/t1") and not lapsing.reads(lapsing.a, "DeviceRequest/dr1")


def test_a_client_cannot_make_an_ended_relation_active_again(parties: Parties) -> None:
    stay = {
        "resourceType": "Encounter",
        "id": "enc2",
        "status": "finished",
        "class": {"code": "AMB"},
        "subject": ref("Patient/p2"),
        "serviceProvider": ref("Organization/orgD"),
    }
    parties.put(stay)
    ended = parties.until("enc2")
    assert ended and all(ended)
    again = parties.client.get("/fhir/Encounter/enc2", headers=parties.d).json() | {"status": "in-progress"}
    assert parties.put(again, parties.d) == 200  # the provider may change its Encounter
    assert parties.until("enc2") == ended  # but its relation stays ending
    parties.put(
        parties.client.get("/fhir/Encounter/enc2", headers=parties.region).json() | {"status": "planned"}
    )
    assert parties.until("enc2") == [None]  # the region reopens it


def test_a_returned_device_ends_its_relation(lapsing: Parties) -> None:
    device = {
        "resourceType": "Device",
        "id": "dev1",
        "owner": ref("Organization/orgD"),
        "patient": ref("Patient/p2"),
    }
    lapsing.put(device)
    assert lapsing.reads(lapsing.d, "Patient/p2")
    lapsing.put({k: v for k, v in device.items() if k != "patient"})
    assert not lapsing.reads(lapsing.d, "Patient/p2")
    assert lapsing.reads(lapsing.d, "Device/dev1")  # the unit itself is still the owner's


def test_a_referral_relates_one_step(parties: Parties) -> None:
    c, a, b, d = parties.client, parties.a, parties.b, parties.d
    assert not parties.reads(b, "Patient/p1")
    referral = parties.task(requester="Organization/orgA", owner="Organization/orgB")
    made = c.post("/fhir/Task", json=referral, headers=a)
    assert made.status_code == 201, made.text
    assert parties.reads(b, "Patient/p1") and parties.reads(b, f"Task/{made.json()['id']}")
    assert not parties.reads(b, "Task/t1")  # A's own Task is not B's
    # but the patient's orders are, as for every related organisation (named exception: the device list)
    assert parties.reads(b, "DeviceRequest/dr1")
    onward = parties.task(requester="Organization/orgB", owner="Organization/orgD")
    refused = c.post("/fhir/Task", json=onward, headers=b)
    assert refused.status_code == 403 and "referred" in refused.text
    assert not parties.reads(d, "Patient/p1")
    # naming itself relates nobody: A's own Task owned by itself adds no relation of its own
    mine = c.post(
        "/fhir/Task", json=parties.task(requester="Organization/orgA", owner="Organization/orgA"), headers=a
    )
    assert mine.status_code == 201
    assert parties.until(mine.json()["id"]) == []


def test_what_a_client_writes_of_its_people_and_teams_relates_no_one_else(parties: Parties) -> None:
    c, a, b = parties.client, parties.a, parties.b
    note = {
        "resourceType": "Communication",
        "id": "com1",
        "status": "completed",
        "recipient": [ref("Practitioner/pracB")],
        "payload": [{"contentString": "Till B:s läkare"}],
    }
    parties.put(note)
    assert parties.reads(b, "Communication/com1") and not parties.reads(a, "Communication/com1")
    role = {
        "resourceType": "PractitionerRole",
        "organization": ref("Organization/orgA"),
        "practitioner": ref("Practitioner/pracB"),
    }
    assert c.post("/fhir/PractitionerRole", json=role, headers=a).status_code == 201
    assert not parties.reads(a, "Communication/com1")
    team = {
        "resourceType": "CareTeam",
        "participant": [{"member": ref("Organization/orgA")}, {"member": ref("Organization/orgB")}],
    }
    made = c.post("/fhir/CareTeam", json=team, headers=a)
    assert made.status_code == 201, made.text
    plan = {
        "resourceType": "CarePlan",
        "id": "cp2",
        "status": "active",
        "intent": "plan",
        "subject": ref("Patient/p2"),
        "careTeam": [ref(f"CareTeam/{made.json()['id']}")],
    }
    parties.put(plan)
    assert parties.reads(a, "Patient/p2")  # the region named A's team: A is on it
    assert not parties.reads(b, "Patient/p2")  # a team A wrote relates no one but A


def test_identifiers_a_client_writes_are_its_organisations(parties: Parties) -> None:
    """An identifier held by a resource B may not read neither stops B's write nor tells B it exists."""
    identifier = [{"system": "urn:oid:1.2.752.129.2.1.2.1", "value": "LAB-77"}]
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "SpO2"},
        "identifier": identifier,
    }
    hidden = {**observation, "id": "obs-hidden", "subject": ref("Patient/p1")}
    parties.put(hidden)
    own = parties.client.post(
        "/fhir/Task",
        json=parties.task(requester="Organization/orgA", owner="Organization/orgB"),
        headers=parties.a,
    )
    assert own.status_code == 201
    mine = parties.client.post(
        "/fhir/Observation",
        json={**observation, "subject": ref("Patient/p1"), "performer": [ref("Organization/orgB")]},
        headers=parties.b,
    )
    assert mine.status_code == 201, mine.text
    again = parties.client.post(
        "/fhir/Observation",
        json={**observation, "subject": ref("Patient/p1"), "performer": [ref("Organization/orgB")]},
        headers=parties.b,
    )
    assert again.status_code == 409  # within its own organisation an identifier is still one resource's


def _events(parties: Parties, who: dict[str, str], query: str) -> list[dict[str, Any]]:
    assert parties.services.audit is not None
    parties.services.audit.flush()
    bundle = parties.client.get(f"/fhir/AuditEvent?{query}&_count=1000", headers=who).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def test_audit_reads_across_organisations(parties: Parties) -> None:
    """A's read of the clinic's DeviceRequest is seen by A (with its address) and by the clinic, which owns
    the request (A's client and organisation, not its address); B sees neither; an event shows only the
    entities its reader may read."""
    assert parties.reads(parties.a, "DeviceRequest/dr1")
    query = "entity=DeviceRequest/dr1&subtype=read"
    [own] = _events(parties, parties.a, query)
    assert own["agent"][0]["network"]["address"]
    [theirs] = _events(parties, parties.c, query)
    assert all("network" not in agent for agent in theirs["agent"])
    assert {a.get("altId") for a in theirs["agent"]} >= {"SE-A"}
    assert _events(parties, parties.b, query) == []
    # the region's write that made the Task and the request names both; A's own reads of its Task are its own
    written = _events(parties, parties.c, "entity=Task/t1")
    assert all("Task/t1" not in str(event.get("entity")) for event in written)


def test_reindex_computes_the_care_relations(parties: Parties, database: Database) -> None:
    """`gateway reindex` computes care relations anew from what is stored (after the upgrade that brought
    them): trusted writers' facts relate, a Patient a client wrote is its own."""
    made = parties.client.post(
        "/fhir/Patient", json=patient("190101010106", family="Egen"), headers=parties.b
    )
    assert made.status_code == 201
    with parties.services.engine.begin() as connection:
        connection.execute(delete(CareRelation))
    assert not parties.reads(parties.a, "Patient/p1")
    assert not parties.reads(parties.b, f"Patient/{made.json()['id']}")
    result = CliRunner().invoke(app, ["reindex", "--batch", "2"], env=database.environment())
    assert result.exit_code == 0, result.output
    assert parties.reads(parties.a, "Patient/p1") and parties.reads(parties.a, "DeviceRequest/dr1")
    assert parties.reads(parties.b, f"Patient/{made.json()['id']}")
    assert not parties.reads(parties.b, "Patient/p1")
