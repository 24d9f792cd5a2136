"""A real `gateway serve` subprocess on a free port, per database backend, for third-party clients.

The server starts once per backend (after `gateway db upgrade` with the same environment); each test
gets an emptied database and, when it fails, the server's log lines written during the test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Database

GATEWAY = Path(sys.executable).with_name("gateway")
START_TIMEOUT = 60.0


@dataclass
class Server:
    base_url: str  # the FHIR base, http://127.0.0.1:PORT/fhir
    process: subprocess.Popen[bytes]
    log: Path

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        with self.log.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", errors="replace")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _environment(database: Database) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "GATEWAY_"))}
    env.update(database.environment())
    env["PYTHONUNBUFFERED"] = "1"
    env["GATEWAY_AUTH"] = "off"  # third-party clients here test FHIR, not SMART; tests/security does
    return env


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    ready_url = server.base_url.removesuffix("/fhir") + "/readyz"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"gateway serve exited with {server.process.returncode}:\n{server.log_since(0)}")
        try:
            if httpx.get(ready_url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"gateway serve was not ready within {START_TIMEOUT} s:\n{server.log_since(0)}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def server(database: Database, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    database.clear()
    env = _environment(database)
    upgrade = subprocess.run(
        [str(GATEWAY), "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert upgrade.returncode == 0, upgrade.stderr
    port = _free_port()
    log = tmp_path_factory.mktemp(f"server-{database.backend}") / "stderr.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(GATEWAY), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-upgrade"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    running = Server(f"http://127.0.0.1:{port}/fhir", process, log)
    try:
        _wait_ready(running)
        yield running
    finally:
        _stop(process)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture
def base_url(server: Server, database: Database, request: pytest.FixtureRequest) -> Iterator[str]:
    """The FHIR base of a running server whose database is empty; its log is printed on failure."""
    database.clear()
    offset = server.log_size()
    yield server.base_url
    report = getattr(request.node, "report_call", None)
    if report is None or report.failed or server.process.poll() is not None:
        print(f"---- gateway serve stderr ({database.backend}) ----\n{server.log_since(offset)}")
