"""Graceful shutdown (docs/operations.md, Shutdown): on SIGTERM a real `gateway serve` stops accepting,
finishes the request and the MLLP message in flight (the ACK goes out before the connection closes),
stores every queued audit record and exits 0 within GATEWAY_SHUTDOWN_GRACE_SECONDS."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from gateway.adapters.hl7v2.ack import read_ack
from gateway.adapters.hl7v2.mllp import frame
from tests.adapters.test_hl7v2_messages import adt
from tests.api.helpers import patient
from tests.conftest import Database
from tests.security.test_audit_durable import naming
from tests.telemetry.served import REGION_SCOPES, served

GRACE = 15


def events(database: Database) -> list[dict[str, Any]]:
    with database.engine.connect() as connection:
        rows = connection.exec_driver_sql("SELECT content FROM resource WHERE res_type = 'AuditEvent'")
        return [json.loads(content) for (content,) in rows]


def ack_of(sock: socket.socket) -> bytes:
    buffer = b""
    while b"\x1c\r" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return buffer


def test_sigterm_finishes_the_request_and_the_message_in_flight(database: Database, tmp_path: Path) -> None:
    # parsing in a process of its own: the first message waits for that process to start (seconds), so
    # it is still in flight when the listener is told to stop
    settings = {"GATEWAY_SHUTDOWN_GRACE_SECONDS": str(GRACE), "GATEWAY_MLLP_PARSE_PROCESSES": "1"}
    with served(database, tmp_path, mllp=True, **settings) as run:
        headers = {**run.headers(run.region, REGION_SCOPES), "Content-Type": "application/fhir+json"}
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": patient(f"19121212{n:04d}", "Sigterm"),
                    "request": {"method": "POST", "url": "Patient"},
                }
                for n in range(20)
            ],
        }
        body = json.dumps(bundle).encode()
        sent_half = threading.Event()

        def slowly() -> Iterator[bytes]:  # the request is in flight for a second after SIGTERM
            yield body[: len(body) // 2]
            sent_half.set()
            time.sleep(1.0)
            yield body[len(body) // 2 :]

        answers: list[httpx.Response] = []

        def request() -> None:
            answers.append(httpx.post(run.server.base_url, content=slowly(), headers=headers, timeout=60))

        requester = threading.Thread(target=request)
        requester.start()
        assert sent_half.wait(20)
        time.sleep(0.2)  # its headers and first half are read
        assert run.mllp_port is not None
        with socket.create_connection(("127.0.0.1", run.mllp_port), timeout=60) as mllp:
            mllp.sendall(frame(adt("A01", "SIGTERM-1", visit="V-SIGTERM")))
            time.sleep(0.1)
            started = time.monotonic()
            run.process.send_signal(signal.SIGTERM)
            ack = ack_of(mllp)
            assert mllp.recv(100) == b""  # then the connection is closed
        requester.join(60)
        assert run.process.wait(timeout=GRACE + 15) == 0, run.log()
        elapsed = time.monotonic() - started
        log = run.log()
    assert read_ack(ack)[:2] == ("AA", "SIGTERM-1"), log
    [answer] = answers
    assert answer.status_code == 200, answer.text
    created = [e["response"]["location"].split("/")[1] for e in answer.json()["entry"]]
    assert len(created) == 20
    assert elapsed < GRACE + 10
    with socket.socket() as late:  # nothing listens any more
        assert late.connect_ex(("127.0.0.1", run.mllp_port)) != 0
    found = events(database)
    for pid in created:
        assert naming(found, f"Patient/{pid}", "create"), pid
    imports = [e for e in found if e["subtype"][0]["code"] == "import" and "SIGTERM-1" in json.dumps(e)]
    assert imports, log
    assert "Application shutdown complete" in log and "Traceback" not in log


def test_sigterm_while_idle_exits_zero_at_once(database: Database, tmp_path: Path) -> None:
    with served(database, tmp_path, GATEWAY_SHUTDOWN_GRACE_SECONDS=str(GRACE)) as run:
        assert httpx.get(f"{run.server.base_url}/metadata", timeout=10).status_code == 200
        started = time.monotonic()
        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(timeout=GRACE) == 0
        # well within the grace period (nothing in flight to wait for), with room for a loaded machine
        assert time.monotonic() - started < GRACE - 5
