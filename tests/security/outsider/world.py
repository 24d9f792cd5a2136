"""The adversarial world on one database: seeded once per test session and database
(tests/security/outsider/conftest.py) in a database of its own (a SQLite file or a PostgreSQL schema
beside the session's), so the tests that clear the shared database between tests neither disturb it nor
are disturbed by it.

Seeding runs with the audit trail on, so the world holds AuditEvents of the clinic's, Kommun A's and
Kommun B's own accesses, and quarantined adapter inputs of Kommun A and Kommun B; the probes then run
with it off, so nothing they do changes what the next probe sees. What the world is, as the tests need
it (`Facts`), is read back through the API as the region-wide client, and from what the world wrote
where that client is served less (a protected patient's masked elements). Tokens are issued on use and
renewed before they expire, so one world serves a whole session."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from joserfc.jwk import ECKey
from sqlalchemy import Engine, insert, text

from gateway.app import create_app
from gateway.model.types import SUPPORTED_TYPES, Json
from gateway.security import store
from gateway.security.store import NOTIFY
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine
from tests.conftest import Database, postgres_schema
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
TOKEN_LIFETIME = 3600  # the world's tokens; renewed after RENEW_AFTER seconds
RENEW_AFTER = 1800
OWNERSHIP = tuple(policy()["ownership_elements"])


@dataclass
class Facts:
    """What the world holds, as the region-wide client reads it back."""

    stored: dict[str, Json]  # ref → current resource, every type, as the region-wide client reads it
    written: dict[str, Json]  # the same, as the world wrote it where it did (protected patients unmasked)
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
class Tokens:
    """Bearer headers issued on first use and renewed after RENEW_AFTER seconds."""

    client: TestClient
    issued: dict[str, tuple[float, dict[str, str]]] = field(default_factory=dict)

    def headers(self, who: RegisteredClient, scopes: str) -> dict[str, str]:
        key = f"{who.client_id} {scopes}"
        now = time.monotonic()
        if key not in self.issued or now - self.issued[key][0] > RENEW_AFTER:
            self.issued[key] = (now, bearer(who.token(self.client, scopes)))
        return self.issued[key][1]


@dataclass
class World:
    database: Database
    services: Services
    client: TestClient
    clients: dict[str, RegisteredClient]
    tokens: Tokens
    outsider_id: str
    facts: Facts
    cache: dict[str, Any] = field(default_factory=dict)  # probes chosen once per world

    @property
    def region(self) -> dict[str, str]:
        return self.tokens.headers(self.clients["region"], f"{FHIR} {ADAPTERS} gateway/audit.read")

    @property
    def outsider(self) -> dict[str, str]:
        return self.tokens.headers(self.clients["b"], OUTSIDER_SCOPES)

    @property
    def outsider_adapters(self) -> dict[str, str]:
        return self.tokens.headers(self.clients["b"], f"{OUTSIDER_SCOPES} {ADAPTERS}")

    @property
    def kommun_a(self) -> dict[str, str]:
        return self.tokens.headers(self.clients["a"], FHIR)

    def get(self, url: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self.client.get(url, headers=headers or self.outsider, **kwargs)


HOOKS = "https://region.example/hooks/"


def _register(engine: Engine, org: str, scopes: str, sources: tuple[str, ...] = ()) -> RegisteredClient:
    key = ECKey.generate_key("P-384", auto_kid=True)
    jwks = {"keys": [key.as_dict(private=False) | {"kid": key.kid}]}
    client = store.add_client(engine, f"world {org}", org, jwks, scopes.split(), sources=sources)
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
    with postgres_schema("gw_world") as database:
        yield database


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
        # a Subscription of the region-wide client's own: hidden from every other client (its owner's)
        with services.engine.begin() as connection:
            row = {"client_id": clients["region"].client_id, "kind": "endpoint", "value": HOOKS}
            connection.execute(insert(NOTIFY), row)
        subscription = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "Regionens prenumeration",
            "criteria": "Task?status=requested",
            "channel": {"type": "rest-hook", "endpoint": HOOKS + "4711", "header": ["X-Region: 90210"]},
        }
        answer = client.post("/fhir/Subscription", json=subscription, headers=region)
        assert answer.status_code == 201, answer.text[:2000]
        answer = client.post(
            "/fhir/Subscription", json={**subscription, "reason": "Borttagen"}, headers=region
        )
        assert answer.status_code == 201, answer.text[:2000]
        gone_url = f"/fhir/Subscription/{answer.json()['id']}"
        assert client.delete(gone_url, headers=region).status_code in (200, 204)
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
            # the clinic's client sends the portal's orders and the device unit's register rows (bound to
            # both sources: docs/security.md, "Who an adapter writes as")
            "region": _register(
                database.engine,
                HSA_CLINIC,
                f"{FHIR} {ADAPTERS} gateway/audit.read",
                ("bestallningsportalen:BP", "device-register:SESAM@SE2321000016-MAH1"),
            ),
            "a": _register(database.engine, HSA_A, f"{FHIR} {ADAPTERS} gateway/audit.read"),
            "b": _register(database.engine, HSA_B, f"{OUTSIDER_SCOPES} {ADAPTERS}"),
        }
        regional = (clients["region"].client_id,)
        seeding = Services.build(
            database.settings(auth=True, audit=True, region_clients=regional), engine=database.engine
        )
        _seed(seeding, clients)
        services = Services.build(
            database.settings(auth=True, region_clients=regional, token_lifetime=TOKEN_LIFETIME),
            engine=database.engine,
        )
        with TestClient(create_app(services.settings, services=services)) as client:
            tokens = Tokens(client)
            region = tokens.headers(clients["region"], f"{FHIR} {ADAPTERS} gateway/audit.read")
            facts = read_facts(client, region, clients["b"].client_id, database.engine)
            yield World(database, services, client, clients, tokens, clients["b"].client_id, facts)
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


def _b_actors(stored: dict[str, Json]) -> set[str]:
    """What names Kommun B (docs/security.md, "Who it is"): its Organization, its PractitionerRoles and
    the CareTeams they are on (all written by the region-wide client, a trusted writer)."""
    actors = {"Organization/org-kb", "PractitionerRole/role-b"}
    for ref, resource in stored.items():
        if ref.startswith("CareTeam/") and set(_references(resource.get("participant", []))) & actors:
            actors.add(ref)
    return actors


def _names_b(node: Any, actors: set[str]) -> bool:
    return bool(set(_references(node)) & actors) or HSA_B in json.dumps(node)


def _audit_visible(event: Json, outsider_id: str, content: dict[str, Json], actors: set[str]) -> bool:
    """An AuditEvent Kommun B's audit reader sees (docs/security.md, "What it sees"): one of its own
    clients' accesses, or an access to patient data (not master data) it authored, requested or owns."""
    agents = json.dumps(event.get("agent", []))
    if outsider_id in agents or HSA_B in agents:
        return True
    for entity in _references(event.get("entity", [])):
        resource = content.get(entity)
        if resource is None or entity.split("/")[0] in PUBLIC_TYPES:
            continue
        if any(_names_b(resource.get(element), actors) for element in OWNERSHIP if element in resource):
            return True
    return False


def _audit_as_seen(event: Json, visible: set[str]) -> Json:
    """An AuditEvent as Kommun B's audit reader is served it: only the entities it may read, and no
    network address of another organisation's client."""
    shown = dict(event)
    agents = event.get("agent", [])
    if HSA_B not in json.dumps(agents):
        shown["agent"] = [{k: v for k, v in a.items() if k != "network"} for a in agents]
    shown["entity"] = [
        e
        for e in event.get("entity", [])
        if not isinstance((e.get("what") or {}).get("reference"), str) or e["what"]["reference"] in visible
    ]
    return shown


RISK_IDENTIFIERS = (
    "https://fhir.home-device-gateway.se/identifier/risk-assessment",
    "https://fhir.home-device-gateway.se/identifier/risk-flag",
)


def _proposal_of(resource: Json) -> str | None:
    """The patient of one of the gateway's high-risk RiskAssessments or Flags, else None."""
    if not any(i.get("system") in RISK_IDENTIFIERS for i in resource.get("identifier", [])):
        return None
    return str((resource.get("subject") or {}).get("reference"))


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
    # what the world wrote, where the region-wide client is served less (a protected patient, masked)
    written = {**stored}
    for ref, item in seeded.items():
        written[ref] = {**item.resource, **({"meta": stored[ref]["meta"]} if ref in stored else {})}
    visible = {
        r for r in stored if r.split("/")[0] in PUBLIC_TYPES or (r in seeded and seeded[r].flavour == "b")
    }
    # the gateway's high-risk RiskAssessment and Flag of a patient B reads: visible to it (named exception
    # 6), the assessment without the basis B may not read
    proposals = {r for r in stored if r not in seeded and _proposal_of(stored[r]) in visible}
    visible |= proposals
    actors = _b_actors(stored)
    hidden: set[str] = set()
    for ref, resource in stored.items():
        if ref in visible:
            continue
        if ref.startswith("AuditEvent/"):
            (visible if _audit_visible(resource, outsider_id, written, actors) else hidden).add(ref)
            continue
        if ref in seeded and seeded[ref].flavour not in HIDDEN_FLAVOURS:
            continue
        hidden.add(ref)
    gone = {s.ref for s in world_resources() if s.flavour == "gone"}
    with engine.connect() as connection:  # the region's deleted Subscription (its own, not seeded)
        for res_id, content in connection.execute(
            text(
                "SELECT res_id, content FROM resource_version WHERE res_type = 'Subscription' AND "
                "version_id = 1 AND res_id IN (SELECT res_id FROM resource WHERE res_type = 'Subscription' "
                "AND deleted = :yes)"
            ),
            {"yes": True},
        ):
            gone.add(f"Subscription/{res_id}")
            written[f"Subscription/{res_id}"] = json.loads(content)
    # what the outsider is served of what it reads
    served = {
        ref: _audit_as_seen(stored[ref], visible) if ref.startswith("AuditEvent/") else stored[ref]
        for ref in visible
    }
    for ref in proposals:
        basis = [b for b in stored[ref].get("basis", []) if b.get("reference") in visible]
        served[ref] = {k: v for k, v in stored[ref].items() if k != "basis"} | (
            {"basis": basis} if basis else {}
        )
    exposed = {r for ref in visible for r in _references(served[ref]) if r in hidden or r in gone}
    rules = policy()
    masked = tuple(rules["protected_identity"]["masked_elements"])
    protected = ""
    for ref in sorted(visible):
        security = written[ref].get("meta", {}).get("security", [])
        if ref.startswith("Patient/") and any(s.get("code") == "sekretessmarkering" for s in security):
            protected = ref
    shown: set[str] = set()
    for ref in visible:
        skip = frozenset(masked) if ref == protected else frozenset()
        shown.update(_leaves(served[ref], skip | {"meta"}))
    candidates: set[str] = set()
    for ref in hidden | gone:
        leaves = set(_leaves(written.get(ref) or seeded[ref].resource, frozenset({"meta"})))
        if ref in stored and ref in seeded:
            leaves |= set(_leaves(stored[ref], frozenset({"meta"})))
        if ref not in seeded:  # the gateway's and the adapters' own: only numbers and ids are the world's
            leaves = {leaf for leaf in leaves if any(c.isdigit() for c in leaf)}
        candidates.update(leaves)
        if ref.split("/")[1] not in {e.split("/")[1] for e in exposed}:
            candidates.add(ref.split("/")[1])
    if protected:
        candidates.update(_leaves({k: v for k, v in written[protected].items() if k in masked}))
    # master data is readable by everyone: its ids, and references to it, are no secret
    # what the outsider reads is no secret either: its ids and references to it (a hidden AuditEvent of
    # the region's writing it names it), nor is master data, readable by everyone
    readable_ids = {r.split("/")[1] for r in visible}
    candidates = {
        c
        for c in candidates
        if c not in readable_ids and c not in visible and c.split("/")[0] not in PUBLIC_TYPES
    }
    known = {e.split("/")[1] for e in exposed}
    secrets = sorted(s for s in candidates - shown if _distinctive(s) and s not in known)
    secrets.append("BP-2026-HEMLIG1")  # Kommun A's quarantined order
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, payload FROM quarantine")).all()
    quarantined: dict[str, list[int]] = {}
    for item_id, payload in rows:  # the rejected orders seeded by Kommun A and by the outsider
        sender = "a" if b"HEMLIG" in bytes(payload) else "b" if b"EGEN" in bytes(payload) else "other"
        quarantined.setdefault(sender, []).append(int(item_id))
    return Facts(stored, written, visible, hidden, gone, exposed, secrets, protected, quarantined)
