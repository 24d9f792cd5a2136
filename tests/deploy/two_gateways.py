"""Two real `gateway serve` processes on one PostgreSQL schema, as two containers behind one load balancer:
the same base URL, the same key secret, auth and audit on, each with its own HTTP and MLLP port. The
schema starts empty: both processes start at the same moment and migrate it (`serve` runs `db upgrade`).

Clients are registered with `gateway clients add` (or in the database, for a given id), with keys made
here; a client's tokens come from either process's token endpoint, for private_key_jwt assertions."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from sqlalchemy import Engine, create_engine, func, select, text

from gateway.security import store
from gateway.security.tokens import ASSERTION_TYPE
from gateway.store.database import make_engine
from gateway.store.tables import Resource, ResourceVersion
from tests.conftest import POSTGRES_URL, SKIP_POSTGRES
from tests.interop.conftest import GATEWAY, Server, _free_port, _stop, _wait_ready
from tests.security.conftest import ALL, RegisteredClient, new_key

# Where clients see the gateway (the load balancer's address): tokens' issuer and audience.
BASE_URL = "https://gateway.region.example/fhir"
TOKEN_ENDPOINT = BASE_URL.removesuffix("/fhir") + "/auth/token"
HOSPITAL_HSA = "SE2321000016-KS01"  # the sending facility of tests/adapters/test_hl7v2_messages.py
HOSPITAL_CLIENT = "karolinska-journal"


@dataclass
class Gateway:
    """One `gateway serve` process: its HTTP server and MLLP port."""

    server: Server
    mllp_port: int

    @property
    def origin(self) -> str:
        return self.server.base_url.removesuffix("/fhir")


@dataclass
class Client:
    """A registered client with its signing key; `token(gateway)` asks that process for a token."""

    registered: RegisteredClient
    scope: str
    tokens: dict[int, str] = field(default_factory=dict)
    token_requests: int = 0  # POST /auth/token made, each of which the audit trail must show
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def client_id(self) -> str:
        return self.registered.client_id

    def assertion(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": TOKEN_ENDPOINT,
            "exp": now + 240,
            "jti": uuid.uuid4().hex,
        }
        header = {"alg": self.registered.alg, "kid": self.registered.key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, self.registered.key, algorithms=ALL)

    def form(self, assertion: str | None = None) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion or self.assertion(),
        }

    def ask(self, gateway: Gateway, assertion: str | None = None) -> httpx.Response:
        """POST /auth/token at `gateway` (counted)."""
        with self.lock:
            self.token_requests += 1
        return httpx.post(f"{gateway.origin}/auth/token", data=self.form(assertion), timeout=30)

    def headers(self, gateway: Gateway, index: int) -> dict[str, str]:
        """A bearer token of this client from process `index` (asked for once)."""
        with self.lock:
            token = self.tokens.get(index)
        if token is None:
            answer = self.ask(gateway)
            assert answer.status_code == 200, answer.text
            token = str(answer.json()["access_token"])
            with self.lock:
                self.tokens.setdefault(index, token)
        return {"Authorization": f"Bearer {token}"}


class Gateways:
    """Two processes on a schema of their own (created empty, dropped after)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.schema = f"gw_two_{uuid.uuid4().hex[:12]}"
        self.admin = create_engine(POSTGRES_URL)
        with self.admin.begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {self.schema}"))
        self.engine: Engine = make_engine(POSTGRES_URL, self.schema)
        self.running: list[Gateway] = []

    def environment(self, mllp_port: int, secret: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "GATEWAY_"))}
        return env | {
            "DATABASE_URL": POSTGRES_URL,
            "DATABASE_SCHEMA": self.schema,
            "PYTHONUNBUFFERED": "1",
            "GATEWAY_AUTH": "on",
            "GATEWAY_AUDIT": "on",
            "GATEWAY_BASE_URL": BASE_URL,
            "GATEWAY_KEY_SECRET": secret,
            "GATEWAY_SCHEDULE_SECONDS": "0",  # the scheduler's runs: tests/schedule (one lease per job)
            "GATEWAY_MLLP_PORT": str(mllp_port),
            "GATEWAY_MLLP_FACILITIES": f"{HOSPITAL_HSA}={HOSPITAL_CLIENT}",
            # the hospital's journal system writes region-wide (its patients are the region's)
            "GATEWAY_REGION_CLIENTS": HOSPITAL_CLIENT,
        }

    def start(self, count: int = 2) -> list[Gateway]:
        """`count` processes started at once on the empty schema, each migrating it first."""
        secret = secrets.token_urlsafe(32)
        started = []
        for index in range(count):
            http_port, mllp_port = _free_port(), _free_port()
            command = [str(GATEWAY), "serve", "--host", "127.0.0.1", "--port", str(http_port)]
            log = self.tmp_path / f"serve-{index}.log"
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    command,
                    env=self.environment(mllp_port, secret),
                    stdout=subprocess.DEVNULL,
                    stderr=sink,
                )
            started.append(Gateway(Server(f"http://127.0.0.1:{http_port}/fhir", process, log), mllp_port))
        self.running.extend(started)
        for gateway in started:
            _wait_ready(gateway.server)
        return started

    def stop(self) -> None:
        """SIGTERM, as an orchestrator stops a container: each stores its queued audit records first."""
        for gateway in self.running:
            _stop(gateway.server.process)

    def close(self) -> None:
        self.stop()
        self.engine.dispose()
        with self.admin.begin() as connection:
            connection.execute(text(f"DROP SCHEMA {self.schema} CASCADE"))
        self.admin.dispose()

    def logs(self) -> str:
        return "\n".join(
            f"---- gateway serve {index} ----\n{gateway.server.log_since(0)}"
            for index, gateway in enumerate(self.running)
        )

    def cli(self, *arguments: str) -> str:
        """A `gateway` command on this database (as an operator runs it); its standard output."""
        env = self.environment(0, "unused") | {"GATEWAY_MLLP_PORT": ""}
        done = subprocess.run(
            [str(GATEWAY), *arguments], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def add_client(self, scope: str, org: str) -> Client:
        """A client registered with `gateway clients add`, with a key made here."""
        key = new_key("ES384")
        jwks = self.tmp_path / f"{uuid.uuid4().hex}.jwks.json"
        jwks.write_text(json.dumps({"keys": [key.as_dict(private=False) | {"kid": key.kid}]}))
        out = self.cli(
            "clients", "add", "--name", f"Kommun {org}", "--org", org, "--jwks", str(jwks), "--scopes", scope
        )
        [client_id] = [
            line.removeprefix("client_id: ") for line in out.splitlines() if line.startswith("client_id: ")
        ]
        return Client(RegisteredClient(client_id, key, "ES384"), scope)

    def register(
        self, scope: str, org: str, sources: tuple[str, ...] = (), client_id: str | None = None
    ) -> Client:
        """A client registered straight in the database (tests/security/conftest.py's way), for what
        `gateway clients add` does not take: a given client id."""
        key = new_key("ES384")
        jwks = {"keys": [key.as_dict(private=False) | {"kid": key.kid}]}
        added = store.add_client(
            self.engine, f"test {org}", org, jwks, scope.split(), client_id, sources=sources
        )
        return Client(RegisteredClient(added.client_id, key, "ES384"), scope)

    def counts(self) -> dict[str, int]:
        """Current (not deleted) resources by type, the audit trail left out."""
        query = (
            select(Resource.res_type, func.count())
            .where(Resource.deleted.is_(False), Resource.res_type != "AuditEvent")
            .group_by(Resource.res_type)
        )
        with self.engine.connect() as connection:
            return {str(row[0]): int(row[1]) for row in connection.execute(query)}

    def twins(self) -> list[list[str]]:
        """Current resources of one type that say the same but for their id and meta, two or more of them
        with ids the gateway assigned at random (a create's): what a race that makes one thing twice would
        leave. Ids derived from a source's keys (UUID version 8, gateway/adapters/ids.py) cannot be made
        twice, and two of them may rightly say the same (the same assessment in two orders)."""
        query = select(Resource.res_type, Resource.res_id, Resource.content).where(
            Resource.deleted.is_(False), Resource.res_type != "AuditEvent"
        )
        seen: dict[str, list[str]] = {}
        with self.engine.connect() as connection:
            for res_type, res_id, content in connection.execute(query):
                body = {k: v for k, v in json.loads(content).items() if k not in ("id", "meta")}
                seen.setdefault(json.dumps(body, sort_keys=True), []).append(f"{res_type}/{res_id}")
        return [ids for ids in seen.values() if sum(not _derived(i) for i in ids) > 1]

    def versions(self) -> set[str]:
        """Every version stored (`Type/id/_history/n`), the audit trail left out."""
        query = select(ResourceVersion.res_type, ResourceVersion.res_id, ResourceVersion.version_id).where(
            ResourceVersion.res_type != "AuditEvent"
        )
        with self.engine.connect() as connection:
            return {f"{t}/{i}/_history/{v}" for t, i, v in connection.execute(query)}

    def audit_events(self) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(Resource.content).where(Resource.res_type == "AuditEvent"))
            return [json.loads(content) for content in rows.scalars()]


def _derived(reference: str) -> bool:
    try:
        return uuid.UUID(reference.split("/")[1]).version == 8
    except ValueError:
        return False


@pytest.fixture(name="gateways")
def gateways_fixture(tmp_path: Path) -> Iterator[Gateways]:
    """The processes' logs are printed (pytest shows them when the test fails)."""
    if not POSTGRES_URL:
        pytest.skip(SKIP_POSTGRES)
    made = Gateways(tmp_path)
    try:
        yield made
    finally:
        made.stop()
        print(made.logs())
        made.close()
