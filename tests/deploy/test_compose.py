"""docker/compose.yaml as far as these machines can run it (they pull no base images, so no image is
built here): every gateway service's command with its environment, from the wheel installed in a fresh
virtualenv as docker/Dockerfile installs it (docker/build.sh), against the local PostgreSQL in a database
of its own: the migration once, then the two replicas and the MLLP listener. A client's token from one
replica works on the other, what one creates the other reads, an ADT message over MLLP is acknowledged and
its Encounter is served, both replicas pass the Dockerfile's HEALTHCHECK, links follow GATEWAY_BASE_URL,
the audit records name the client the proxy forwarded for, and a replica without the secret does not
start. nginx is not installed here: the test sends what docker/nginx.conf sets, from 127.0.0.1 (the
proxy's address in GATEWAY_TRUSTED_PROXIES)."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text

from gateway.adapters.hl7v2.ack import read_ack
from gateway.adapters.hl7v2.mllp import frame
from gateway.security import keys
from gateway.security.cli import assertion
from gateway.security.organisation import ACTORS_SECONDS
from gateway.security.tokens import ASSERTION_TYPE
from tests.conftest import POSTGRES_URL, SKIP_POSTGRES
from tests.deploy.compose import (
    NGINX_CONF,
    Dockerfile,
    Local,
    Service,
    gateway_services,
    load_compose,
    local_service,
    proxy_headers,
)
from tests.deploy.conftest import REPO, run_environment

pytestmark = pytest.mark.slow

HL7_MESSAGE = REPO / "tests" / "golden" / "hl7v2" / "01-a01-admit-with-zsv-utf8.hl7"
HOSPITAL = "SE2321000016-KS01"  # MSH-4 of that message
PERSONNUMMER = "http://electronichealth.se/identifier/personnummer"
START_TIMEOUT = 60.0
CLIENT_ADDRESS = "203.0.113.7"  # the client as the proxy saw it (TEST-NET-3)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh database of the local PostgreSQL (the compose `db` service's stand-in), dropped after."""
    if not POSTGRES_URL:
        pytest.skip(SKIP_POSTGRES)
    name = f"gateway_compose_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Running:
    """The services started, each logging to its own file; all stopped with SIGTERM at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, service: Service) -> None:
        with (self.logs / f"{service.name}.log").open("wb") as sink:
            self.processes[service.name] = subprocess.Popen(
                service.argv, env=service.environment, cwd=self.logs, stdout=sink, stderr=subprocess.STDOUT
            )

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def wait(self, name: str, ready: Any) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        process = self.processes[name]
        while not ready():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{self.log(name)}")
            if time.monotonic() > deadline:
                pytest.fail(f"{name} not ready within {START_TIMEOUT} s:\n{self.log(name)}")
            time.sleep(0.2)

    def stop(self) -> dict[str, int]:
        for process in self.processes.values():
            process.terminate()
        codes = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        return True
    except OSError:
        return False


def _via_proxy(base_url: str) -> dict[str, str]:
    """The headers docker/nginx.conf sets, with the values nginx gives them for a client at
    CLIENT_ADDRESS asking the public URL; a variable this test does not know fails it (keep the two in
    step)."""
    public = urlsplit(base_url)
    known = {
        "$http_host": public.netloc,
        "$host": public.hostname or "",
        "$proxy_add_x_forwarded_for": CLIENT_ADDRESS,
        "$scheme": public.scheme,
        "": "",
    }
    headers = {}
    for name, value in proxy_headers().items():
        assert value in known, f"docker/nginx.conf sets {name} to {value}: teach the test what nginx sends"
        headers[name] = known[value]
    headers.pop("Connection", None)
    return headers


def _register(service: Service, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """The hospital's journal system registered (`docker compose run --rm gateway-a clients add …`): its
    client id and private key."""
    key = keys.generate("ES384")
    private = {**key.as_dict(private=True), "kid": key.thumbprint(), "alg": "ES384"}
    jwks = tmp_path / "karolinska.jwks.json"
    jwks.write_text(json.dumps({"keys": [private]}), encoding="utf-8")  # the command keeps the public part
    command = service.run_as(
        "clients", "add", "--name", "Karolinska journal", "--org", HOSPITAL, "--jwks", str(jwks),
        "--scopes", "system/*.cruds gateway/adapter.hl7v2", "--source", f"hl7v2:{HOSPITAL}",
    )  # fmt: skip
    done = subprocess.run(
        command, env=service.environment, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client_id = done.stdout.split("client_id:")[1].split()[0]
    return client_id, private


def _token(root: str, proxy: dict[str, str], client_id: str, private: dict[str, Any], base_url: str) -> str:
    discovery = httpx.get(f"{root}/fhir/.well-known/smart-configuration", headers=proxy, timeout=30).json()
    endpoint = discovery["token_endpoint"]
    assert endpoint == base_url.removesuffix("/fhir") + "/auth/token"  # the public URL, not this replica's
    form = {
        "grant_type": "client_credentials",
        "scope": "system/*.cruds",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(client_id, private, endpoint),
    }
    answer = httpx.post(f"{root}/auth/token", data=form, headers=proxy, timeout=30)
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def _healthcheck(dockerfile: Dockerfile, service: Service, python: Path) -> subprocess.CompletedProcess[str]:
    """The Dockerfile's HEALTHCHECK command, its port the replica's."""
    argv = dockerfile.healthcheck()
    assert argv[:2] == ["python", "-c"], argv
    code = argv[2].replace("127.0.0.1:8080", f"127.0.0.1:{service.ports[8080]}")
    return subprocess.run(
        [str(python), "-c", code],
        env=service.environment,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_compose_services_run_from_the_wheel(
    installed_gateway: Path, database_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    dockerfile = Dockerfile.read()
    secret = tmp_path / "secrets" / "gateway-key-secret"
    secret.parent.mkdir()
    secret.write_text(secrets.token_urlsafe(32) + "\n", encoding="utf-8")
    data = tmp_path / "gateway-data"
    data.mkdir()
    local = Local(
        installed_gateway,
        database_url,
        {"gateway_key_secret": secret},
        {"gateway-data": data},
        _free_port,
        run_environment(installed_gateway),
    )
    compose = load_compose({})
    assert set(gateway_services(compose)) == {"migrate", "gateway-a", "gateway-b", "mllp"}
    assert compose["services"]["gateway-a"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    migrate = local_service("migrate", compose, dockerfile, local)
    done = subprocess.run(
        migrate.argv, env=migrate.environment, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client_id, private = _register(local_service("gateway-a", compose, dockerfile, local), tmp_path)
    # The region's facility list names the client just registered (docker/.env in a real installation)
    compose = load_compose({"GATEWAY_MLLP_FACILITIES": f"{HOSPITAL}={client_id}"})
    names = ("gateway-a", "gateway-b", "mllp")
    a, b, mllp = (local_service(name, compose, dockerfile, local) for name in names)
    assert a.environment["GATEWAY_KEY_SECRET_FILE"] == str(secret)
    assert a.environment["GATEWAY_TRUSTED_PROXIES"] == "127.0.0.1"
    without = {k: v for k, v in a.environment.items() if k != "GATEWAY_KEY_SECRET_FILE"}
    refused = subprocess.run(a.argv, env=without, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2 and "GATEWAY_KEY_SECRET is not set" in refused.stderr, refused.stderr
    base_url = a.environment["GATEWAY_BASE_URL"]
    running = Running(tmp_path)
    try:
        for service in (a, b, mllp):
            running.start(service)
        roots = {name: f"http://127.0.0.1:{service.ports[8080]}" for name, service in (("a", a), ("b", b))}
        running.wait("gateway-a", lambda: _answers(f"{roots['a']}/readyz"))
        running.wait("gateway-b", lambda: _answers(f"{roots['b']}/readyz"))
        running.wait("mllp", lambda: _answers(f"http://127.0.0.1:{mllp.ports[8080]}/readyz"))
        assert _listens(mllp.ports[2575])  # serve's lifespan starts the listener before it is ready
        print(f"migrated and started in {time.monotonic() - started:.1f} s")
        for service in (a, b, mllp):
            health = _healthcheck(dockerfile, service, installed_gateway / "python")
            assert health.returncode == 0, health.stderr
            # GATEWAY_METRICS_PORT, on the `metrics` network: the scraper's, without a token
            scraped = httpx.get(f"http://127.0.0.1:{service.ports[9100]}/metrics", timeout=30)
            assert scraped.status_code == 200, scraped.text

        proxy = _via_proxy(base_url)
        token_a = _token(roots["a"], proxy, client_id, private, base_url)
        token_b = _token(roots["b"], proxy, client_id, private, base_url)
        patient = {
            "resourceType": "Patient",
            "identifier": [{"system": PERSONNUMMER, "value": "199001011239"}],
            "name": [{"family": "Compose", "given": ["Test"]}],
        }
        created = httpx.post(
            f"{roots['a']}/fhir/Patient",
            json=patient,
            headers={**proxy, "Authorization": f"Bearer {token_a}", "Content-Type": "application/fhir+json"},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        assert created.headers["Location"].startswith(f"{base_url}/Patient/")
        patient_id = created.json()["id"]
        # B reads what A wrote, with the token A issued (and A with B's): one installation, one secret
        for root, token in ((roots["b"], token_a), (roots["a"], token_b)):
            read = httpx.get(
                f"{root}/fhir/Patient/{patient_id}", headers={**proxy, "Authorization": f"Bearer {token}"}
            )
            assert read.status_code == 200, read.text
            assert read.json()["name"][0]["family"] == "Compose"

        message = HL7_MESSAGE.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
        with socket.create_connection(("127.0.0.1", mllp.ports[2575]), timeout=60) as connection:
            connection.sendall(frame(message))
            answer = b""
            while b"\x1c\r" not in answer:
                chunk = connection.recv(65536)
                assert chunk, f"no ACK:\n{running.log('mllp')}"
                answer += chunk
        assert read_ack(answer)[0] == "AA", answer
        counted = httpx.get(f"http://127.0.0.1:{mllp.ports[9100]}/metrics", timeout=30).text
        assert 'gateway_mllp_messages_total{ack="AA"}' in counted, "the MLLP service's metrics count its ACKs"

        # B, which looked the hospital up before the message made its Organization, knows it again within
        # ACTORS_SECONDS (what another process wrote of an organisation counts within that time)
        deadline = time.monotonic() + ACTORS_SECONDS + 10
        while True:
            found = httpx.get(
                f"{roots['b']}/fhir/Encounter",
                params={"patient.identifier": f"{PERSONNUMMER}|191212121212"},
                headers={**proxy, "Authorization": f"Bearer {token_b}"},
                timeout=30,
            )
            assert found.status_code == 200, found.text
            bundle = found.json()
            if bundle.get("entry") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert [entry["resource"]["resourceType"] for entry in bundle.get("entry", [])] == ["Encounter"]
        assert all(link["url"].startswith(f"{base_url}/") for link in bundle["link"]), bundle["link"]
        assert bundle["entry"][0]["fullUrl"].startswith(f"{base_url}/Encounter/")
    finally:
        codes = running.stop()
    # SIGTERM, as `docker compose stop` sends it to the exec-form entrypoint: each ends on its own, after
    # its shutdown, with exit status 0
    assert codes == {"gateway-a": 0, "gateway-b": 0, "mllp": 0}, {n: running.log(n) for n in codes}
    for name in ("gateway-a", "gateway-b"):
        assert "Finished server process" in running.log(name)
    assert list(data.iterdir()) == []  # the secret is the compose secret's: nothing generated
    # The proxy is trusted: the audit records name the client it forwarded for, not the proxy
    engine = create_engine(database_url)
    with engine.connect() as connection:
        audited = connection.execute(
            text("SELECT content FROM resource WHERE res_type = 'AuditEvent' AND content LIKE :address"),
            {"address": f"%{CLIENT_ADDRESS}%"},
        ).all()
    engine.dispose()
    assert audited, "no AuditEvent names the forwarded client address"
    print(f"compose services exercised in {time.monotonic() - started:.1f} s")


def test_the_image_is_built_by_the_script_the_tests_run() -> None:
    """What is checked of docker/ without building an image: the Dockerfile runs docker/build.sh's three
    steps (those conftest.py runs), as a non-root user, in exec form; compose gives every gateway service
    the secret, PostgreSQL a volume and a health check, and trusts the proxy that nginx.conf configures."""
    dockerfile = Dockerfile.read()
    stages = dockerfile.all("FROM")
    assert [stage.split()[-1] for stage in stages] == ["build", "runtime"]
    runs = " ".join(dockerfile.all("RUN"))
    for step in ("build.sh wheel ", "build.sh wheelhouse ", "build.sh install "):
        assert step in runs, step
    assert dockerfile.all("ARG")[0] == "PYTHON_IMAGE=python:3.11-slim-bookworm"
    user = dockerfile.all("USER")[-1].split(":")[0]
    assert user not in ("root", "0"), user
    assert set(" ".join(dockerfile.all("EXPOSE")).split()) == {"8080", "2575"}
    assert dockerfile.exec_form("ENTRYPOINT") == ["gateway"]
    assert dockerfile.exec_form("CMD")[:3] == ["serve", "--host", "0.0.0.0"]
    assert "/readyz" in dockerfile.healthcheck()[2]

    compose = load_compose({})
    services = compose["services"]
    for name, service in gateway_services(compose).items():
        assert service["secrets"] == ["gateway_key_secret"], name
        assert service["environment"]["GATEWAY_KEY_SECRET_FILE"] == "/run/secrets/gateway_key_secret"
        assert "GATEWAY_KEY_SECRET" not in service["environment"], name  # never in the environment
        assert "gateway-data:/var/lib/gateway" in service["volumes"], name
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["mllp"]["environment"]["GATEWAY_MLLP_PORT"] == "2575"  # in its serve
    assert services["mllp"]["ports"] == ["2575:2575"]
    assert services["db"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert services["db"]["volumes"][0].split(":")[0] in compose["volumes"]
    proxy = services["proxy"]
    address = proxy["networks"]["front"]["ipv4_address"]
    assert services["gateway-a"]["environment"]["GATEWAY_TRUSTED_PROXIES"] == address
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in proxy["volumes"]
    upstream = NGINX_CONF.read_text(encoding="utf-8")
    assert "server gateway-a:8080" in upstream and "server gateway-b:8080" in upstream
    assert compose["networks"]["metrics"]["internal"] is True
    assert compose["networks"]["back"]["internal"] is True
