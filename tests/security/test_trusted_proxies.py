"""The audit records' source address: the direct peer's, unless the peer is a proxy the installation
trusts (GATEWAY_TRUSTED_PROXIES), whose X-Forwarded-For / Forwarded headers then give the client. Anyone
else's forwarded headers are ignored, so no client can put another address into the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.security.proxies import TrustedProxies
from gateway.services import Services
from tests.conftest import Database
from tests.security.conftest import RegisteredClient, bearer, register

PROXY = "10.1.2.3"
SPOOFED = "198.51.100.66"
CLIENT = "203.0.113.7"


@pytest.fixture
def proxied(database: Database) -> Iterator[Services]:
    database.clear()
    settings = database.settings(auth=True, audit=True, trusted_proxies=("10.0.0.0/8", "2001:db8:ffff::1"))
    built = Services.build(settings, engine=database.engine)
    yield built
    built.close()


def _addresses(services: Services, api: TestClient, reader: RegisteredClient) -> list[str]:
    """The source address of every AuditEvent of a search (subtype search)."""
    assert services.audit is not None
    services.audit.flush()
    token = bearer(reader.token(api, "gateway/audit.read"))
    services.audit.flush()
    found = api.get("/fhir/AuditEvent?subtype=search&_sort=date&_count=100", headers=token).json()
    events: list[dict[str, Any]] = [entry["resource"] for entry in found.get("entry", [])]
    return [event["agent"][0]["network"]["address"] for event in events]


def _search(services: Services, peer: str, headers: dict[str, str], worker: RegisteredClient) -> None:
    with TestClient(create_app(services.settings, services=services), client=(peer, 4000)) as api:
        response = api.get("/fhir/Patient", headers={**bearer(worker.token(api, "system/*.rs")), **headers})
        assert response.status_code == 200, response.text


def test_forwarded_headers_count_only_from_a_trusted_proxy(proxied: Services) -> None:
    worker = register(proxied, "system/*.rs", region=True)
    reader = register(proxied, "gateway/audit.read", region=True)
    cases = [
        ("192.0.2.9", {"X-Forwarded-For": SPOOFED}),  # an untrusted peer's header: ignored
        (PROXY, {"X-Forwarded-For": CLIENT}),
        (PROXY, {"X-Forwarded-For": f"{SPOOFED}, {CLIENT}"}),  # what the client wrote itself: not taken
        (PROXY, {"X-Forwarded-For": f"{CLIENT}, 10.9.9.9"}),  # through two trusted proxies
        (PROXY, {"Forwarded": f'for={SPOOFED}, for="{CLIENT}:4711";by=proxy'}),
        (PROXY, {"Forwarded": 'for="[2001:db8::1]:443"'}),
        (PROXY, {}),  # a trusted proxy that says nothing: itself
    ]
    for peer, headers in cases:
        _search(proxied, peer, headers, worker)
    with TestClient(create_app(proxied.settings, services=proxied)) as api:
        found = _addresses(proxied, api, reader)
    assert sorted(found) == sorted(["192.0.2.9", CLIENT, CLIENT, CLIENT, CLIENT, "2001:db8::1", PROXY])


def test_without_trusted_proxies_every_forwarded_header_is_ignored(
    audited_services: Services, database: Database
) -> None:
    worker = register(audited_services, "system/*.rs", region=True)
    reader = register(audited_services, "gateway/audit.read", region=True)
    _search(
        audited_services, "127.0.0.1", {"X-Forwarded-For": SPOOFED, "Forwarded": f"for={SPOOFED}"}, worker
    )
    with TestClient(create_app(audited_services.settings, services=audited_services)) as api:
        assert _addresses(audited_services, api, reader) == ["127.0.0.1"]


def test_a_refused_token_is_audited_with_the_forwarded_address_too(proxied: Services) -> None:
    with TestClient(create_app(proxied.settings, services=proxied), client=(PROXY, 4000)) as api:
        assert api.get("/fhir/Patient", headers={"X-Forwarded-For": CLIENT}).status_code == 401
        reader = register(proxied, "gateway/audit.read", region=True)
        assert proxied.audit is not None
        proxied.audit.flush()
        token = bearer(reader.token(api, "gateway/audit.read"))
        proxied.audit.flush()
        found = api.get("/fhir/AuditEvent?outcome=4&_count=100", headers=token).json()["entry"]
    addresses = {e["resource"]["agent"][0].get("network", {}).get("address") for e in found}
    assert addresses == {CLIENT}


def test_the_setting_must_name_addresses_or_networks(database: Database) -> None:
    with pytest.raises(ValueError, match="GATEWAY_TRUSTED_PROXIES"):
        create_app(database.settings(trusted_proxies=("proxy.example",)))
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert trusted.client("10.0.0.1", [(b"x-forwarded-for", b"unknown")]) == ("10.0.0.1", None)
    assert trusted.client("10.0.0.1", [(b"x-forwarded-proto", b"https")]) == ("10.0.0.1", "https")
    assert trusted.client("testclient", [(b"x-forwarded-for", CLIENT.encode())]) == ("testclient", None)
