"""A real `gateway serve` for the operations tests: auth on, audit on, clients registered in its database
before it starts (one region-wide, one of a municipality), their tokens fetched from its token endpoint;
optionally the MLLP listener. Its stderr (the logs) is kept in a file."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from joserfc.jwk import ECKey

from gateway.security import store
from tests.conftest import Database
from tests.interop.conftest import GATEWAY, Server, _environment, _free_port, _stop, _wait_ready
from tests.security.conftest import RegisteredClient, bearer, new_key

HOSPITAL_HSA = "SE2321000016-KS01"  # the sending facility of tests/adapters/test_hl7v2_messages.adt
REGION_ORG, KOMMUN_ORG = "SE2321000016-LUNG", "SE2120000181-KA"
REGION_SCOPES = "system/*.cruds gateway/adapter.hl7v2 gateway/audit.read gateway/metrics"
KOMMUN_SCOPES = "system/*.cruds"


def _client(database: Database, org: str, scopes: str, sources: tuple[str, ...] = ()) -> RegisteredClient:
    key: ECKey = new_key("ES384")  # type: ignore[assignment]
    jwks = {"keys": [key.as_dict(private=False) | {"kid": key.kid}]}
    made = store.add_client(database.engine, f"ops {org}", org, jwks, scopes.split(), sources=sources)
    return RegisteredClient(made.client_id, key, "ES384")


@dataclass
class Served:
    server: Server
    process: subprocess.Popen[bytes]
    region: RegisteredClient
    kommun: RegisteredClient
    mllp_port: int | None = None
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> str:
        return self.server.base_url.removesuffix("/fhir")

    def headers(self, who: RegisteredClient, scopes: str) -> dict[str, str]:
        """A bearer header for `who` from the server's own token endpoint (fetched once)."""
        if who.client_id not in self.tokens:
            token_url = f"{self.root}/auth/token"
            form = who.form(scopes, who.assertion(aud=token_url))
            answer = httpx.post(token_url, data=form, timeout=20)
            assert answer.status_code == 200, answer.text
            self.tokens[who.client_id] = answer.json()["access_token"]
        return bearer(self.tokens[who.client_id])

    def log(self) -> str:
        return self.server.log_since(0)


@contextmanager
def served(database: Database, tmp: Path, mllp: bool = False, **settings: str) -> Iterator[Served]:
    """`gateway serve` (one worker) with auth and audit on; stopped (SIGTERM) at the end if still running."""
    database.clear()
    region = _client(database, REGION_ORG, REGION_SCOPES, (f"hl7v2:{HOSPITAL_HSA}",))
    kommun = _client(database, KOMMUN_ORG, KOMMUN_SCOPES)
    port = _free_port()
    mllp_port = _free_port() if mllp else None
    env = {
        **_environment(database),
        "GATEWAY_AUTH": "on",
        "GATEWAY_AUDIT": "on",
        "GATEWAY_BASE_URL": f"http://127.0.0.1:{port}/fhir",
        "GATEWAY_REGION_CLIENTS": region.client_id,
        "GATEWAY_KEY_SECRET": "operations-test-secret-0123456789abcdef",
        "GATEWAY_NOTIFY": "off",
        **({"GATEWAY_MLLP_PORT": str(mllp_port)} if mllp_port else {}),
        **settings,
    }
    log = tmp / "serve.log"
    command = [str(GATEWAY), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-upgrade"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sink)
    server = Server(f"http://127.0.0.1:{port}/fhir", process, log)
    try:
        _wait_ready(server)
        yield Served(server, process, region, kommun, mllp_port)
    finally:
        _stop(process)
