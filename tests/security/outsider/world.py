"""The adversarial world on one database: seeded once per test module (tests/security/outsider/conftest.py)
in a database of its own (a SQLite file or a PostgreSQL schema beside the session's), so the tests that
clear the shared database between tests neither disturb it nor are disturbed by it.

Seeding runs with the audit trail on, so the world holds AuditEvents of the clinic's, Kommun A's and
Kommun B's own accesses, and quarantined adapter inputs of Kommun A and Kommun B; the probes then run
with it off, so nothing they do changes what the next probe sees. What the world is, as the tests need
it (`Facts`), is read back through the API as the region-wide client."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from joserfc.jwk import ECKey
from sqlalchemy import Engine, create_engine, text

from gateway.app import create_app
from gateway.model.types import SUPPORTED_TYPES, Json
from gateway.security import store
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine
from tests.conftest import POSTGRES_URL, Database
from tests.security.conftest import RegisteredClient, bearer
from tests.security.outsider.world_data import (
    HIDDEN_FLAVOURS,
    HSA_A,
    HSA_B,
    HSA_CLINIC,
    PUBLIC_TYPES,
    Seeded,
    policy,
    world_resources,
)

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
FHIR = "system/*.cruds"
ADAPTERS = "gateway/adapter.bestallningsportalen gateway/adapter.device-register gateway/adapter.quarantine"
OUTSIDER_SCOPES = f"{FHIR} gateway/audit.read"
MIN_SECRET = 6


@dataclass
class Facts:
    """What the world holds, as the region-wide client reads it back."""

    stored: dict[str, Json]  # ref → current resource, every type
    visible: set[str]  # refs the outsider must be able to read (its own, and the directory)
    hidden: set[str]  # refs of current resources the outsider may not read
    gone: set[str]  # refs of hidden resources deleted after seeding
    exposed: set[str]  # hidden refs that resources the outsider reads reference (their ids are known)
    secrets: list[str]  # strings only hidden resources hold (and what masking hides)
    protected_visible: str = ""  # the protected patient the outsider reads masked
    quarantined: dict[str, list[int]] = field(default_factory=dict)  # sender (a, b) → quarantine item ids

    def of_type(self, refs: set[str], res_type: str) -> list[str]:
        return sorted(r for r in refs if r.split("/")[0] == res_type)


@dataclass
class World:
    database: Database
    services: Services
    client: TestClient
    region: dict[str, str]
    outsider: dict[str, str]
    outsider_adapters: dict[str, str]
    kommun_a: dict[str, str]
    outsider_id: str
    facts: Facts
    cache: dict[str, Any] = field(default_factory=dict)  # probes chosen once per world

    def get(self, url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self.client.get(url, headers=headers or self.outsider, **kwargs)


def _register(engine: Engine, org: str, scopes: str) -> RegisteredClient:
    key = ECKey.generate_key("P-384", auto_kid=True)
    jwks = {"keys": [key.as_dict(private=False) | {"kid": key.kid}]}
    client = store.add_client(engine, f"world {org}", org, jwks, scopes.split())
    return RegisteredClient(client.client_id, key, "ES384")


@contextmanager
def own_database(shared: Database, tmp: Path) -> Iterator[Database]:
    """A database of its own on the shared one's backend: a SQLite file, or a PostgreSQL schema."""
    if shared.backend == "sqlite":
        url = f"sqlite:///{tmp / f'world-{uuid.uuid4().hex[:8]}.db'}"
        engine = make_engine(url)
        migrate.upgrade(engine)
        try:
            yield Database("sqlite", url, "", engine)
        finally:
            engine.dispose()
        return
    schema = f"gw_world_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    engine = make_engine(POSTGRES_URL, schema)
    try:
        migrate.upgrade(engine)
        yield Database("postgresql", POSTGRES_URL, schema, engine)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _transaction(client: TestClient, headers: dict[str, str], items: list[Seeded]) -> None:
    entries = [{"resource": s.resource, "request": {"method": "PUT", "url": s.ref}} for s in items]
    response = client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": entries}, headers=headers
    )
    assert response.status_code == 200, response.text[:2000]


def _seed(services: Services, clients: dict[str, RegisteredClient]) -> None:
    """Everything written with the audit trail on: the resources (by the region-wide client, hidden and
    visible ones in transactions of their own, so no AuditEvent names both), the deletions, the accesses
    of Kommun A and Kommun B, and adapter inputs (the clinic's orders and devices; a rejected input each
    of Kommun A and Kommun B)."""
    seeded = world_resources()
    with TestClient(create_app(services.settings, services=services)) as client:
        region = bearer(clients["region"].token(client, f"{FHIR} {ADAPTERS}"))
        hidden = [s for s in seeded if s.flavour in ("public", "h", "gone")]
        _transaction(client, region, hidden)
        _transaction(client, region, [s for s in seeded if s.flavour == "b"])
        _transaction(client, region, [s for s in seeded if s.flavour == "hb"])
        for item in seeded:
            if item.flavour == "gone":
                assert client.delete(f"/fhir/{item.ref}", headers=region).status_code in (200, 204)
        gone_patient = next(
            s for s in seeded if s.flavour == "gone" and s.resource["resourceType"] == "Patient"
        )
        assert gone_patient is not None
        # the clinic's order and device, through the adapters (a patient of the clinic's, hidden)
        order = (GOLDEN / "bestallningsportalen" / "01-forskrivning-with-prescriber.order.json").read_bytes()
        answer = client.post("/adapters/bestallningsportalen/orders", content=order, headers=region)
        assert answer.status_code == 200, answer.text[:2000]
        devices = (GOLDEN / "device_register" / "02-utlanad.csv").read_bytes()
        answer = client.post("/adapters/device-register/records?mode=delta", content=devices, headers=region)
        assert answer.status_code == 200, answer.text[:2000]
        # Kommun A reads its patients; Kommun B its own: AuditEvents with their clients as agents
        a = bearer(clients["a"].token(client, f"{FHIR} {ADAPTERS}"))
        b = bearer(clients["b"].token(client, f"{OUTSIDER_SCOPES} {ADAPTERS}"))
        for item in seeded:
            if item.resource["resourceType"] == "Patient" and item.flavour in ("h", "b"):
                client.get(f"/fhir/{item.ref}", headers=a if item.flavour == "h" else b)
                client.get(f"/fhir/Observation?subject={item.ref}", headers=a if item.flavour == "h" else b)
        # a rejected order each (quarantined with the sender's client id): Kommun A's names a hidden order
        bad = json.loads(order)
        bad["rader"] = []
        for who, number in ((a, "BP-2026-HEMLIG1"), (b, "BP-2026-EGEN001")):
            bad["ordernummer"] = number
            client.post(
                "/adapters/bestallningsportalen/orders", content=json.dumps(bad).encode(), headers=who
            )
    services.close()


def build(shared: Database, tmp: Path) -> Iterator[World]:
    with own_database(shared, tmp) as database:
        clients = {
            "region": _register(database.engine, HSA_CLINIC, f"{FHIR} {ADAPTERS} gateway/audit.read"),
            "a": _register(database.engine, HSA_A, f"{FHIR} {ADAPTERS} gateway/audit.read"),
            "b": _register(database.engine, HSA_B, f"{OUTSIDER_SCOPES} {ADAPTERS}"),
        }
        regional = (clients["region"].client_id,)
        seeding = Services.build(
            database.settings(auth=True, audit=True, region_clients=regional), engine=database.engine
        )
        _seed(seeding, clients)
        services = Services.build(
            database.settings(auth=True, region_clients=regional), engine=database.engine
        )
        with TestClient(create_app(services.settings, services=services)) as client:
            region = bearer(clients["region"].token(client, f"{FHIR} {ADAPTERS} gateway/audit.read"))
            outsider = bearer(clients["b"].token(client, OUTSIDER_SCOPES))
            adapters = bearer(clients["b"].token(client, f"{OUTSIDER_SCOPES} {ADAPTERS}"))
            kommun_a = bearer(clients["a"].token(client, FHIR))
            facts = read_facts(client, region, clients["b"].client_id, database.engine)
            yield World(
                database,
                services,
                client,
                region,
                outsider,
                adapters,
                kommun_a,
                clients["b"].client_id,
                facts,
            )
        services.close()


def _leaves(node: Any, skip: frozenset[str] = frozenset()) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in skip:
                yield from _leaves(value, skip)
    elif isinstance(node, list):
        for value in node:
            yield from _leaves(value, skip)
    elif isinstance(node, str):
        yield node


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node["reference"]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _distinctive(value: str) -> bool:
    """Whether a string is the world's own (a name, a number, an id), not a code or word any answer
    may hold (`completed`, `source`): long enough, and with a digit, a capital, a space or an accent."""
    if len(value) < MIN_SECRET or value.startswith(
        ("http://testserver", "urn:gateway", "http://hl7.org", "http://terminology.hl7.org")
    ):
        return False
    return any(c.isdigit() or c.isupper() or c == " " or not c.isascii() for c in value)


def read_facts(client: TestClient, region: dict[str, str], outsider_id: str, engine: Engine) -> Facts:
    stored: dict[str, Json] = {}
    for res_type in SUPPORTED_TYPES:
        url: str | None = f"/fhir/{res_type}?_count=1000"
        while url:
            bundle = client.get(url, headers=region).json()
            for entry in bundle.get("entry", []):
                resource = entry["resource"]
                stored[f"{res_type}/{resource['id']}"] = resource
            url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
    seeded = {s.ref: s for s in world_resources()}
    visible = {
        r for r in stored if r.split("/")[0] in PUBLIC_TYPES or (r in seeded and seeded[r].flavour == "b")
    }
    hidden: set[str] = set()
    for ref, resource in stored.items():
        if ref in visible:
            continue
        if ref.startswith("AuditEvent/"):
            agents = json.dumps(resource.get("agent", []))
            entities = set(_references(resource.get("entity", [])))
            if outsider_id in agents or HSA_B in agents:
                visible.add(ref)
            elif (
                entities
                and not entities & visible
                and not any(e.startswith("Patient/") and e in visible for e in entities)
            ):
                hidden.add(ref)
            continue  # the rest (an access of the region's to B's data) is not asserted either way
        if ref in seeded and seeded[ref].flavour not in HIDDEN_FLAVOURS:
            continue
        hidden.add(ref)
    gone = {s.ref for s in world_resources() if s.flavour == "gone"}
    exposed = {r for ref in visible for r in _references(stored[ref]) if r in hidden or r in gone}
    rules = policy()
    masked = tuple(rules["protected_identity"]["masked_elements"])
    protected = ""
    for ref in sorted(visible):
        security = stored[ref].get("meta", {}).get("security", [])
        if ref.startswith("Patient/") and any(s.get("code") == "sekretessmarkering" for s in security):
            protected = ref
    shown: set[str] = set()
    for ref in visible:
        resource = stored[ref]
        skip = frozenset(masked) if ref == protected else frozenset()
        shown.update(_leaves(resource, skip | {"meta"}))
    candidates: set[str] = set()
    for ref in hidden | gone:
        resource = stored.get(ref) or seeded[ref].resource
        leaves = set(_leaves(resource, frozenset({"meta"})))
        if ref not in seeded:  # the gateway's and the adapters' own: only numbers and ids are the world's
            leaves = {leaf for leaf in leaves if any(c.isdigit() for c in leaf)}
        candidates.update(leaves)
        if ref.split("/")[1] not in {e.split("/")[1] for e in exposed}:
            candidates.add(ref.split("/")[1])
    if protected:
        candidates.update(_leaves({k: v for k, v in stored[protected].items() if k in masked}))
    known = {e.split("/")[1] for e in exposed}
    secrets = sorted(s for s in candidates - shown if _distinctive(s) and s not in known)
    secrets.append("BP-2026-HEMLIG1")  # Kommun A's quarantined order
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, payload FROM quarantine")).all()
    quarantined: dict[str, list[int]] = {}
    for item_id, payload in rows:  # the rejected orders seeded by Kommun A and by the outsider
        sender = "a" if b"HEMLIG" in bytes(payload) else "b" if b"EGEN" in bytes(payload) else "other"
        quarantined.setdefault(sender, []).append(int(item_id))
    return Facts(stored, visible, hidden, gone, exposed, secrets, protected, quarantined)
