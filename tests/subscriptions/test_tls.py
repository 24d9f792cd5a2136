"""https endpoints with what the client registered (`gateway clients add --notify-ca FILE
--notify-client-cert FILE`): the deliverer checks the receiver's certificate against the client's CA bundle
and presents the client's certificate. A receiver that requires a certificate signed by its CA gets the
notification from a client registered with one; a client registered without them (the system's CAs, no
certificate) gets nothing delivered there, and its subscription records why."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import insert

from gateway.store.tables import ClientNotify
from gateway.subscriptions.delivery import Deliverer
from tests.subscriptions.conftest import World, subscription
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery_rules import active, drive, state

Key = ec.EllipticCurvePrivateKey


def _certificate(name: str, key: Key, issuer: tuple[x509.Name, Key] | None, server: bool) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, signer = issuer if issuer is not None else (subject, key)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        address = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        builder = builder.add_extension(x509.SubjectAlternativeName([address]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem(path: Path, *parts: x509.Certificate | Key) -> Path:
    chunks = [
        part.public_bytes(serialization.Encoding.PEM)
        if isinstance(part, x509.Certificate)
        else part.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        for part in parts
    ]
    path.write_bytes(b"".join(chunks))
    return path


def test_the_clients_ca_and_certificate_reach_a_receiver_that_requires_them(
    manual: World, deliverer: Deliverer, tmp_path: Path
) -> None:
    world = manual
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("Testregionens CA", ca_key, None, server=False)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = _certificate("mottagare", server_key, (ca.subject, ca_key), server=True)
    client = _certificate("kommun A", client_key, (ca.subject, ca_key), server=False)
    ca_file = _pem(tmp_path / "ca.pem", ca)
    receiver = Receiver(
        tls={
            "ssl_certfile": str(_pem(tmp_path / "server.pem", server)),
            "ssl_keyfile": str(_pem(tmp_path / "server-key.pem", server_key)),
            "ssl_ca_certs": str(ca_file),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }
    ).start()
    try:
        rows = [
            {"client_id": world.a_client.client_id, "kind": "ca", "value": str(ca_file)},
            {
                "client_id": world.a_client.client_id,
                "kind": "cert",
                "value": str(_pem(tmp_path / "a.pem", client, client_key)),
            },
        ]
        rows += [
            {"client_id": c.client_id, "kind": "endpoint", "value": receiver.base}
            for c in (world.a_client, world.b_client)
        ]
        with world.services.engine.begin() as connection:
            connection.execute(insert(ClientNotify), rows)
        registered = active(world, deliverer, receiver, "a")
        body = subscription(receiver.base + "b", payload="application/fhir+json")
        response = world.api.post("/fhir/Subscription", json=body, headers=world.b)
        assert response.status_code == 201, response.text
        unregistered = str(response.json()["id"])
        drive([deliverer], lambda: state(world, unregistered)["status"] == "active")
        world.task("t1", "orgA", "pa")
        world.task("t2", "orgB", "pb")
        drive([deliverer], lambda: state(world, registered)["acked"] == 1)
        drive([deliverer], lambda: int(str(state(world, unregistered)["attempts"] or 0)) >= 1)
        assert [(r.method, r.path) for r in receiver.received] == [("PUT", "/hooks/a/Task/t1")]
        assert state(world, unregistered)["acked"] == 0
        assert "TLS" in str(state(world, unregistered)["reason"])
    finally:
        receiver.stop()
