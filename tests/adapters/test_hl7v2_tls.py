"""MLLP over TLS with certificates made here (`cryptography`): the in-process listener, `gateway mllp` and
`gateway serve` all speak TLS when configured, refuse plain TCP, and require client certificates when a
client CA is configured."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.adapters.hl7v2.ack import read_ack
from gateway.adapters.hl7v2.mllp import ListenerSettings, frame, tls_context
from gateway.services import Services
from tests.adapters.test_hl7v2_messages import adt
from tests.adapters.test_hl7v2_mllp import Running
from tests.adapters.test_hl7v2_serve import gateway_serve
from tests.conftest import Database
from tests.interop.conftest import GATEWAY, _environment, _free_port, _stop
from tests.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_exchange(port: int, pki: Pki, payload: bytes, client_certificate: bool = False) -> bytes:
    """One message over TLS (the server verified against the test CA); the ACK, unframed."""
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client_certificate:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=20) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        sock.sendall(frame(payload))
        answer = b""
        while not answer.endswith(b"\x1c\r"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"\x0b") and answer.endswith(b"\x1c\r"), answer
    return answer[1:-2]


def plain_exchange(port: int, payload: bytes) -> bytes:
    """A plain-TCP client's try: everything it gets back before the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(frame(payload))
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return received


@pytest.fixture
def tls_listener(services: Services, pki: Pki) -> Iterator[Running]:
    settings = ListenerSettings(port=0, tls=tls_context(str(pki.server_cert), str(pki.server_key)))
    running = Running(services, settings)
    yield running
    running.stop()


@pytest.fixture
def mutual_tls_listener(services: Services, pki: Pki) -> Iterator[Running]:
    context = tls_context(str(pki.server_cert), str(pki.server_key), str(pki.ca))
    running = Running(services, ListenerSettings(port=0, tls=context))
    yield running
    running.stop()


def test_tls_listener_answers_over_tls_only(tls_listener: Running, pki: Pki) -> None:
    assert read_ack(tls_exchange(tls_listener.port, pki, adt("A01", "T1")))[:2] == ("AA", "T1")
    answer = plain_exchange(tls_listener.port, adt("A01", "T2"))
    assert b"MSH|" not in answer and b"MSA|" not in answer  # no ACK in clear text, the message unread
    assert read_ack(tls_exchange(tls_listener.port, pki, adt("A01", "T2")))[:2] == ("AA", "T2")


def test_mutual_tls_requires_a_client_certificate(mutual_tls_listener: Running, pki: Pki) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
        tls_exchange(mutual_tls_listener.port, pki, adt("A01", "U1"))
    answer = tls_exchange(mutual_tls_listener.port, pki, adt("A01", "U2"), client_certificate=True)
    assert read_ack(answer)[:2] == ("AA", "U2")


def test_a_certificate_without_its_key_is_a_configuration_error(pki: Pki) -> None:
    with pytest.raises(ValueError, match="GATEWAY_MLLP_TLS_KEY"):
        tls_context(str(pki.server_cert), "")
    assert tls_context("", "") is None


def tls_settings(pki: Pki, mutual: bool = False) -> dict[str, str]:
    settings = {"GATEWAY_MLLP_TLS_CERT": str(pki.server_cert), "GATEWAY_MLLP_TLS_KEY": str(pki.server_key)}
    if mutual:
        settings["GATEWAY_MLLP_TLS_CLIENT_CA"] = str(pki.ca)
    return settings


def test_gateway_serve_listens_with_tls(database: Database, pki: Pki, tmp_path: Path) -> None:
    with gateway_serve(database, tmp_path / "serve.log", **tls_settings(pki)) as (server, port):
        assert read_ack(tls_exchange(port, pki, adt("A01", "V1")))[:2] == ("AA", "V1")
        assert b"MSA|" not in plain_exchange(port, adt("A01", "V2"))
        assert "MLLP over TLS listening" in server.log_since(0)


def test_gateway_mllp_listens_with_mutual_tls(database: Database, pki: Pki, tmp_path: Path) -> None:
    database.clear()
    port = _free_port()
    env = {**_environment(database), **tls_settings(pki, mutual=True)}
    log = tmp_path / "mllp.log"
    command = [str(GATEWAY), "mllp", "--port", str(port), "--no-upgrade"]
    with log.open("wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=sink)
    try:
        _wait_listening(port, process, log)
        answer = tls_exchange(port, pki, adt("A01", "W1"), client_certificate=True)
        assert read_ack(answer)[:2] == ("AA", "W1")
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
            tls_exchange(port, pki, adt("A01", "W2"))
        assert b"MSA|" not in plain_exchange(port, adt("A01", "W3"))
    finally:
        _stop(process)


def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(600):
        assert process.poll() is None, log.read_text()
        if "listening on" in log.read_text():
            return
        time.sleep(0.05)
    pytest.fail(f"gateway mllp did not start:\n{log.read_text()}")
