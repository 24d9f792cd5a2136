"""The gateway as a region installs it: its wheel in a fresh virtualenv outside the checkout (conftest.py),
run from a directory that is not the checkout, on SQLite and PostgreSQL. Everything it reads at run time
(mappings, profiles, the access policy, the R4 definitions) comes from the wheel or from the directories
configuration names; everything it writes goes to GATEWAY_DATA_DIR (or the database), never under the
installed package."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import POSTGRES_URL, SKIP_POSTGRES
from tests.deploy.conftest import REPO, run_environment, site_package

pytestmark = pytest.mark.slow

HL7_MESSAGE = REPO / "tests" / "golden" / "hl7v2" / "01-a01-admit-with-zsv-utf8.hl7"  # PID-8 M, PV1-2 I
START_TIMEOUT = 60.0
PROFILE_SEARCH_PARAMETER = "https://fhir.home-device-gateway.se/SearchParameter/task-due"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """Every file under `directory` with its size and modification time."""
    found = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            status = path.stat()
            found[str(path.relative_to(directory))] = (status.st_size, status.st_mtime_ns)
    return found


@dataclass
class Installed:
    """The installed gateway, run from `workdir` with `environment`."""

    bin_dir: Path
    workdir: Path
    environment: dict[str, str]

    def run(self, *arguments: str, **variables: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.bin_dir / "gateway"), *arguments],
            cwd=self.workdir,
            env={**self.environment, **variables},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, (
            f"gateway {' '.join(arguments)}: {done.returncode}\n{done.stderr[-3000:]}"
        )
        return done

    def serve(self, port: int, log: Path, **variables: str) -> Generator[str]:
        """`gateway serve` on `port` until the generator is closed; yields its root URL once ready."""
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [str(self.bin_dir / "gateway"), "serve", "--port", str(port), "--no-upgrade"],
                cwd=self.workdir,
                env={**self.environment, **variables},
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        root = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if process.poll() is not None:
                    pytest.fail(f"gateway serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    if httpx.get(f"{root}/readyz", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"gateway serve not ready within {START_TIMEOUT} s:\n{log.read_text()[-3000:]}"
                    )
                time.sleep(0.1)
            yield root
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Backend:
    name: str
    variables: dict[str, str]


def _sqlite(tmp: Path) -> Iterator[Backend]:
    yield Backend("sqlite", {})  # the default database: gateway.db in the data directory


def _postgres() -> Iterator[Backend]:
    if not POSTGRES_URL:
        pytest.skip(SKIP_POSTGRES)
    schema = f"gw_wheel_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        # Production sets the key secret (docs/security.md): no development secret file is written then.
        yield Backend(
            "postgresql",
            {
                "DATABASE_URL": POSTGRES_URL,
                "DATABASE_SCHEMA": schema,
                "GATEWAY_KEY_SECRET": "s3cret-" + schema,
            },
        )
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    yield from (_sqlite(tmp_path) if request.param == "sqlite" else _postgres())


@pytest.fixture
def installed(installed_gateway: Path, tmp_path: Path) -> Installed:
    """The installed gateway, run from a fresh directory outside the checkout with its data directory
    there too (the working directory is not the data directory: the default ./var must not be used)."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    assert not workdir.resolve().is_relative_to(REPO)
    environment = run_environment(
        installed_gateway,
        GATEWAY_DATA_DIR=str(tmp_path / "data"),
        GATEWAY_SCHEDULE_SECONDS="0",
        GATEWAY_NOTIFY="off",
    )
    return Installed(installed_gateway, workdir, environment)


def _token(installed: Installed, root: str) -> dict[str, str]:
    token = installed.run("demo-token", "--url", root).stdout.strip()
    return {"Authorization": f"Bearer {token}"}


def _patient(root: str, headers: dict[str, str]) -> dict[str, Any]:
    found = httpx.get(
        f"{root}/fhir/Patient", params={"identifier": "191212121212"}, headers=headers, timeout=30
    ).json()
    entries = [entry["resource"] for entry in found.get("entry", [])]
    return entries[0] if entries else {}


def test_the_wheel_serves_outside_the_checkout(
    installed: Installed, backend: Backend, tmp_path: Path
) -> None:
    """db upgrade, a demo client, an HL7 message through the packaged mappings, then serve: the metadata
    lists the packaged profiles' SearchParameters, /readyz answers, the message's Patient is there; the
    installed package is untouched and the writable defaults are in the data directory."""
    package = site_package(installed.bin_dir)
    assert (package / "_data" / "policy" / "access.yaml").is_file()
    before = _snapshot(package)
    data = Path(installed.environment["GATEWAY_DATA_DIR"])
    port = _free_port()
    root = f"http://127.0.0.1:{port}"
    variables = backend.variables
    installed.run("db", "upgrade", **variables)
    installed.run("clients", "demo", "--url", root, **variables)
    installed.run("import", "hl7", str(HL7_MESSAGE), **variables)
    serving = installed.serve(
        port,
        tmp_path / "serve.log",
        GATEWAY_BASE_URL=f"{root}/fhir",
        GATEWAY_REGION_CLIENTS="demo-client",
        **variables,
    )
    try:
        next(serving)
        assert httpx.get(f"{root}/readyz", timeout=10).status_code == 200
        metadata = httpx.get(f"{root}/fhir/metadata", timeout=30).json()
        task = next(entry for entry in metadata["rest"][0]["resource"] if entry["type"] == "Task")
        assert PROFILE_SEARCH_PARAMETER in [parameter["definition"] for parameter in task["searchParam"]]
        patient = _patient(root, _token(installed, root))
        assert patient["gender"] == "male", patient  # PID-8 M through mappings/hl7v2/codes.json
    finally:
        serving.close()
    assert _snapshot(package) == before, "the gateway wrote under its installed package"
    # the SQLite database's companions (-wal, -shm, the writers' lock) count as the database
    written = {"gateway.db" if path.name.startswith("gateway.db") else path.name for path in data.iterdir()}
    if backend.name == "sqlite":
        assert written == {"demo-client.jwk.json", "gateway.db", "key-secret"}
    else:
        assert written == {"demo-client.jwk.json"}  # GATEWAY_KEY_SECRET set: no development secret
    assert list(installed.workdir.iterdir()) == []  # nothing in the working directory either


def test_a_region_s_own_policy_and_mappings_take_effect(installed: Installed, tmp_path: Path) -> None:
    """GATEWAY_ACCESS_POLICY and GATEWAY_MAPPINGS_DIR name edited copies: the demo client, exempt in the
    copied policy only (no GATEWAY_REGION_CLIENTS), sees the Patient; the copied code map gives its
    gender. With the packaged ones it would see nothing, and the gender would be `male`."""
    package = site_package(installed.bin_dir)
    mappings = tmp_path / "region" / "mappings"
    shutil.copytree(package / "_data" / "mappings", mappings, ignore=shutil.ignore_patterns("__*"))
    codes_file = mappings / "hl7v2" / "codes.json"
    codes = json.loads(codes_file.read_text(encoding="utf-8"))
    codes["administrative-sex"]["map"]["M"] = "other"
    codes_file.write_text(json.dumps(codes), encoding="utf-8")
    policy = tmp_path / "region" / "access.yaml"
    original = (package / "_data" / "policy" / "access.yaml").read_text(encoding="utf-8")
    edited = original.replace(
        'exempt_clients: [cli, "gateway:scheduler"]',
        'exempt_clients: [cli, "gateway:scheduler", demo-client]',
    )
    assert edited != original
    policy.write_text(edited, encoding="utf-8")
    overrides = {"GATEWAY_MAPPINGS_DIR": str(mappings), "GATEWAY_ACCESS_POLICY": str(policy)}
    port = _free_port()
    root = f"http://127.0.0.1:{port}"
    installed.run("db", "upgrade")
    installed.run("clients", "demo", "--url", root)
    installed.run("import", "hl7", str(HL7_MESSAGE), **overrides)
    serving = installed.serve(port, tmp_path / "serve.log", GATEWAY_BASE_URL=f"{root}/fhir", **overrides)
    try:
        next(serving)
        headers = _token(installed, root)
        assert _patient(root, headers).get("gender") == "other"
    finally:
        serving.close()
    without = installed.serve(port, tmp_path / "serve-packaged.log", GATEWAY_BASE_URL=f"{root}/fhir")
    try:
        next(without)
        assert _patient(root, _token(installed, root)) == {}  # the packaged policy: not exempt, not related
    finally:
        without.close()


def test_a_bad_setting_stops_the_installed_command(installed: Installed) -> None:
    done = subprocess.run(
        [str(installed.bin_dir / "gateway"), "serve"],
        cwd=installed.workdir,
        env={**installed.environment, "GATEWAY_MAX_PAGE_SIZE": "abc"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "GATEWAY_MAX_PAGE_SIZE: must be an integer, not 'abc'" in done.stderr
    assert "Traceback" not in done.stderr
    assert os.listdir(installed.workdir) == []
