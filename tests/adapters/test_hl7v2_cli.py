"""`gateway import hl7 FILE…` and `gateway mllp`, against both databases."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select
from typer.testing import CliRunner

from gateway.adapters import quarantine
from gateway.adapters.hl7v2.ack import read_ack
from gateway.cli import app
from gateway.security.scopes import ADAPTER_HL7V2
from gateway.services import Services
from gateway.store.tables import Resource
from tests.adapters.test_hl7v2_messages import adt
from tests.adapters.test_hl7v2_mllp import HOSPITAL_CLIENT, HOSPITAL_HSA, exchange, register
from tests.conftest import Database

GATEWAY = Path(sys.executable).with_name("gateway")


def _count(services: Services, res_type: str) -> int:
    with services.engine.connect() as connection:
        statement = select(func.count()).select_from(Resource).where(Resource.res_type == res_type)
        return int(connection.execute(statement).scalar_one())


def test_import_files_of_messages(tmp_path: Path, database: Database, services: Services) -> None:
    good = tmp_path / "stay.hl7"
    discharge = adt("A03", "I2", sent="20261127120000", discharged="20261127110000")
    good.write_bytes((adt("A01", "I1") + discharge).replace(b"\r", b"\r\n"))
    bad = tmp_path / "bad.hl7"
    bad.write_bytes(adt("A01", "I3", pnr="191212121213", visit="V3"))
    env = {**database.environment(), "COLUMNS": "60"}
    result = CliRunner().invoke(app, ["import", "hl7", str(good), str(bad)], env=env)
    assert result.exit_code == 1, result.output
    assert "accepted 2, duplicates 0, errors (AE, quarantined) 1, rejected (AR) 0" in result.output
    assert _count(services, "Encounter") == 1 and _count(services, "Patient") == 1
    again = CliRunner().invoke(app, ["import", "hl7", str(good)], env=env)
    assert again.exit_code == 0 and "duplicates 2" in again.output
    [item] = quarantine.listing(services.engine, "hl7v2")
    replayed = CliRunner().invoke(app, ["import", "--replay", str(item.id)], env=env)
    assert replayed.exit_code == 1, replayed.output
    assert f"replayed {item.id}: 422 Unprocessable Entity" in replayed.output
    assert "HL7 ACK AE for message I3: " in replayed.output and "personnummer" in replayed.output


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def await_listener(port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until the listener `process` started accepts connections on `port` (at most 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=20).close()
            return
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)


def test_mllp_command_listens_and_answers(database: Database, services: Services) -> None:
    port = free_port()
    register(services, HOSPITAL_CLIENT, HOSPITAL_HSA, [ADAPTER_HL7V2, "system/*.cruds"])
    env = {
        **os.environ,
        **database.environment(),
        "GATEWAY_MLLP_FACILITIES": f"{HOSPITAL_HSA}={HOSPITAL_CLIENT}",
        # auth and the organisation policy are on: the hospital's journal system writes region-wide
        "GATEWAY_REGION_CLIENTS": HOSPITAL_CLIENT,
    }
    process = subprocess.Popen(
        [str(GATEWAY), "mllp", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await_listener(port, process)
        [answer] = exchange(port, [adt("A01", "S1")])
        assert read_ack(answer)[:2] == ("AA", "S1")
    finally:
        process.terminate()
        process.wait(10)
    assert _count(services, "Encounter") == 1
