"""A client that disconnects stops its request's database work, in a real `gateway serve` (auth off: the
point is the connection, not who sends): PostgreSQL gets a cancel request for the statement, SQLite an
interrupt. Observed from outside the server: on PostgreSQL the server's backend no longer waits on the
lock this test holds; on SQLite the server process stops spending CPU on the search."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import Database
from tests.interop.conftest import GATEWAY, Server, _environment, _free_port, _stop, _wait_ready
from tests.limits.slow import seed, slow_search


@pytest.fixture
def server(database: Database, tmp_path: Path) -> Iterator[Server]:
    database.clear()
    env = _environment(database)  # GATEWAY_STATEMENT_TIMEOUT at its default (30 s): not what stops here
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        command = [str(GATEWAY), "serve", "--host", "127.0.0.1", "--port", str(port)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sink)
    running = Server(f"http://127.0.0.1:{port}/fhir", process, log)
    try:
        _wait_ready(running)
        yield running
    finally:
        _stop(process)


def wait_for(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


class GivesUp(threading.Thread):
    """A client that sends a request and disconnects after `seconds` without an answer."""

    def __init__(self, url: str, method: str, seconds: float, **kwargs: object) -> None:
        super().__init__()
        self.request = (method, url, seconds, kwargs)
        self.answer: str = "nothing yet"

    def run(self) -> None:
        method, url, seconds, kwargs = self.request
        try:
            response = httpx.request(method, url, timeout=seconds, **kwargs)  # type: ignore[arg-type]
            self.answer = f"answered {response.status_code} within {seconds} s"
        except httpx.TimeoutException:
            self.answer = "gave up"

    def gave_up(self) -> bool:
        self.join()
        return self.answer == "gave up"


def test_a_disconnect_stops_the_statement(server: Server, database: Database) -> None:
    if database.backend == "postgresql":
        cancels_the_postgresql_statement(server, database)
    else:
        interrupts_the_sqlite_statement(server, database)


def cancels_the_postgresql_statement(server: Server, database: Database) -> None:
    patient = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Tolvansson"}]}
    assert httpx.put(f"{server.base_url}/Patient/p1", json=patient).status_code == 201
    with database.engine.connect() as holder:
        pid = holder.execute(text("SELECT pg_backend_pid()")).scalar_one()
        holder.execute(text("SELECT rid FROM resource WHERE res_id = 'p1' FOR UPDATE"))
        waiting = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")

        def blocked() -> int:
            with database.engine.connect() as probe:
                return int(probe.execute(waiting, {"pid": pid}).scalar_one())

        changed = {**patient, "name": [{"family": "Ändrad"}]}
        client = GivesUp(f"{server.base_url}/Patient/p1", "PUT", 2.0, json=changed)
        client.start()
        assert wait_for(lambda: blocked() == 1, 5), "the server's update never waited on the lock"
        assert client.gave_up(), client.answer
        # The client is gone: its statement is cancelled at once (not after the 30 s statement timeout),
        # though this test still holds the lock it waited on.
        assert wait_for(lambda: blocked() == 0, 3), "the statement went on after its client disconnected"
        holder.rollback()
    assert httpx.get(f"{server.base_url}/Patient/p1").json()["meta"]["versionId"] == "1"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def interrupts_the_sqlite_statement(server: Server, database: Database) -> None:
    seed(database.engine)  # the search runs ~6 s to its end (tests/limits/slow.py)
    pid = server.process.pid
    before = cpu_seconds(pid)
    client = GivesUp(f"{server.base_url}/{slow_search()}", "GET", 1.0)
    client.start()
    assert client.gave_up(), client.answer
    busy = cpu_seconds(pid) - before
    assert busy > 0.2, f"the server spent {busy:.2f} s of CPU on the search: it did not run"
    time.sleep(0.3)
    before = cpu_seconds(pid)
    time.sleep(1.5)
    spent = cpu_seconds(pid) - before
    assert spent < 0.3, f"the server spent {spent:.2f} s of CPU after its client disconnected"
    assert httpx.get(f"{server.base_url}/Patient/slow-1").status_code == 200
