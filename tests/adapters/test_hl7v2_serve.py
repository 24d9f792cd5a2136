"""The MLLP listener inside a real `gateway serve` process (GATEWAY_MLLP_PORT): ACKs over a real socket
and the HTTP API from the same process, on the same event loop; a clean stop."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from gateway.adapters.hl7v2.ack import read_ack
from tests.adapters.test_hl7v2_messages import adt
from tests.adapters.test_hl7v2_mllp import exchange
from tests.conftest import Database
from tests.interop.conftest import GATEWAY, Server, _environment, _free_port, _stop, _wait_ready


@contextmanager
def gateway_serve(database: Database, log: Path, **settings: str) -> Iterator[tuple[Server, int]]:
    """`gateway serve` on a free port with the MLLP listener on another; (server, MLLP port)."""
    database.clear()
    mllp_port = _free_port()
    env = {**_environment(database), "GATEWAY_MLLP_PORT": str(mllp_port), **settings}
    http_port = _free_port()
    command = [str(GATEWAY), "serve", "--host", "127.0.0.1", "--port", str(http_port)]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sink)
    server = Server(f"http://127.0.0.1:{http_port}/fhir", process, log)
    try:
        _wait_ready(server)
        yield server, mllp_port
    finally:
        _stop(process)


def test_serve_runs_the_mllp_listener_beside_the_http_api(database: Database, tmp_path: Path) -> None:
    with gateway_serve(database, tmp_path / "serve.log") as (server, port):
        [ack] = exchange(port, [adt("A01", "S1")])
        assert read_ack(ack)[:2] == ("AA", "S1")
        [encounter] = [e["resource"] for e in httpx.get(f"{server.base_url}/Encounter").json()["entry"]]
        assert encounter["identifier"][0]["value"] == "V2026-778899"
        http_ack = httpx.post(
            server.base_url.removesuffix("/fhir") + "/adapters/hl7v2",
            content=adt("A03", "S2", sent="20261127120000", discharged="20261127110000"),
            headers={"Content-Type": "application/hl7-v2"},
        )
        assert read_ack(http_ack.content)[:2] == ("AA", "S2")
        [ack] = exchange(port, [adt("A03", "S2", sent="20261127120000", discharged="20261127110000")])
        assert read_ack(ack)[:2] == ("AA", "S2")  # the duplicate of what came over HTTP
        encounter = httpx.get(f"{server.base_url}/Encounter/{encounter['id']}").json()
        assert encounter["status"] == "finished"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
            _stop(server.process)  # SIGTERM: uvicorn shuts down cleanly, then re-raises the signal
            assert idle.recv(100) == b""  # an open connection is closed by the stop, not left hanging
        log = server.log_since(0)
        assert "Application shutdown complete" in log and "Traceback" not in log
        assert f"MLLP listening on 127.0.0.1:{port}" in log
        assert "every sending facility is accepted" in log
        assert f"MLLP listener on 127.0.0.1:{port} stopped" in log


def test_serve_parses_in_processes_when_configured(database: Database, tmp_path: Path) -> None:
    settings = {"GATEWAY_MLLP_PARSE_PROCESSES": "1"}
    with gateway_serve(database, tmp_path / "serve.log", **settings) as (server, port):
        answers = exchange(port, [adt("A01", "S1"), adt("A01", "S2", charset="EBCDIC")])
        assert [read_ack(ack)[:2] for ack in answers] == [("AA", "S1"), ("AR", "S2")]
        log = server.log_since(0)
    assert "MLLP: parse processes beside the listener: 1" in log
    assert "parse pool" not in log  # parsed in the pool, none fell back


def test_serve_without_the_setting_has_no_listener(database: Database, tmp_path: Path) -> None:
    with gateway_serve(database, tmp_path / "serve.log", GATEWAY_MLLP_PORT="") as (server, _port):
        assert httpx.get(f"{server.base_url}/metadata").status_code == 200
        assert "MLLP" not in server.log_since(0)


def test_serve_refuses_several_workers_with_the_listener(database: Database) -> None:
    env = {**_environment(database), "GATEWAY_MLLP_PORT": str(_free_port())}
    done = subprocess.run(
        [str(GATEWAY), "serve", "--workers", "2", "--no-upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "one worker" in done.stderr
