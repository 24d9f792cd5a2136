"""https endpoints with what the client registered (`gateway clients add --notify-ca FILE
--notify-client-cert FILE`): the deliverer checks the receiver's certificate against the client's CA bundle
and presents the client's certificate. A receiver that requires a certificate signed by its CA gets the
notification from a client registered with one; a client registered without them (the system's CAs, no
certificate) gets nothing delivered there, and its subscription records why."""

from __future__ import annotations

import ssl
from pathlib import Path

from sqlalchemy import insert

from gateway.store.tables import ClientNotify
from gateway.subscriptions.delivery import Deliverer
from tests.pki import make_pki
from tests.subscriptions.conftest import World, subscription
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery_rules import active, drive, state


def test_the_clients_ca_and_certificate_reach_a_receiver_that_requires_them(
    manual: World, deliverer: Deliverer, tmp_path: Path
) -> None:
    world = manual
    pki = make_pki(tmp_path)
    client_file = tmp_path / "kommun-a.pem"  # one file, the certificate then its key, as registered
    client_file.write_bytes(pki.client_cert.read_bytes() + pki.client_key.read_bytes())
    receiver = Receiver(
        tls={
            "ssl_certfile": str(pki.server_cert),
            "ssl_keyfile": str(pki.server_key),
            "ssl_ca_certs": str(pki.ca),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }
    ).start()
    try:
        rows = [
            {"client_id": world.a_client.client_id, "kind": "ca", "value": str(pki.ca)},
            {"client_id": world.a_client.client_id, "kind": "cert", "value": str(client_file)},
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
