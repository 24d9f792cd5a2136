"""Endpoint rules: normalization, registered prefixes, ranges refused before any connection attempt."""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import Any

import pytest

from gateway.subscriptions import endpoints
from gateway.subscriptions.endpoints import EndpointRefused, Registration, normalize
from tests.security.conftest import bearer
from tests.subscriptions.conftest import MUNICIPALITY, World, register_notifying, subscription
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_classic import subscribe


def test_urls_are_normalized() -> None:
    assert (
        normalize("HTTPS://Kommun.Example:443/a/./b/../c%7e%2f?x=1").url
        == "https://kommun.example/a/c~%2F?x=1"
    )
    assert normalize("https://kommun.example").url == "https://kommun.example/"
    assert normalize("https://kommun.example:8443/h").url == "https://kommun.example:8443/h"
    for bad in (
        "ftp://kommun.example/",
        "https://u:p@kommun.example/",
        "https://kommun.example/#x",
        "kommun",
    ):
        with pytest.raises(EndpointRefused):
            normalize(bad)


def test_prefixes_match_at_a_path_boundary() -> None:
    reg = Registration(prefixes=("https://kommun.example/hooks",))
    endpoints.check("https://kommun.example/hooks/tasks", reg, False)
    endpoints.check("https://kommun.example/hooks", reg, False)
    for bad in (
        "https://kommun.example/hooksevil",
        "https://kommun.example/hooks/../admin",
        "http://kommun.example/hooks",
    ):
        with pytest.raises(EndpointRefused):
            endpoints.check(bad, reg, False)


def test_private_and_link_local_ranges_need_a_registered_network() -> None:
    for literal in (
        "10.1.2.3",
        "192.168.1.1",
        "169.254.169.254",
        "127.0.0.1",
        "[::1]",
        "[fe80::1]",
        "100.64.0.1",
    ):
        reg = Registration(prefixes=(f"https://{literal}/",))
        with pytest.raises(EndpointRefused):
            endpoints.check(f"https://{literal}/hooks", reg, False)
    sjunet = Registration(prefixes=("https://10.12.0.9/",), networks=(ipaddress.ip_network("10.12.0.0/16"),))
    endpoints.check("https://10.12.0.9/hooks", sjunet, False)
    with pytest.raises(EndpointRefused):
        endpoints.check(
            "https://10.13.0.9/hooks",
            Registration(prefixes=("https://10.13.0.9/",), networks=sjunet.networks),
            False,
        )


def test_an_ip_literal_endpoint_in_a_private_range_is_refused_at_create(world: World) -> None:
    client = register_notifying(world.services, "SE-A", ["https://10.1.2.3/hooks/"])
    headers = bearer(client.token(world.api, MUNICIPALITY))
    response = world.api.post(
        "/fhir/Subscription", json=subscription("https://10.1.2.3/hooks/x"), headers=headers
    )
    assert response.status_code == 422 and "private" in response.text
    allowed = register_notifying(
        world.services, "SE-A", ["https://10.1.2.3/hooks/"], networks=("10.1.0.0/16",)
    )
    headers = bearer(allowed.token(world.api, MUNICIPALITY))
    response = world.api.post(
        "/fhir/Subscription", json=subscription("https://10.1.2.3/hooks/x"), headers=headers
    )
    assert response.status_code == 201, response.text


def test_a_name_resolving_to_a_private_address_is_refused_before_connecting(
    notifying: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = notifying
    if world.services.settings.audit:
        return
    connections: list[Any] = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connections.append(a))

    def resolved(host: str, port: int, **_: Any) -> list[Any]:
        return [(2, 1, 6, "", ("169.254.169.254", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolved)
    client = register_notifying(world.services, "SE-A", ["https://hooks.kommun-a.example/"])
    headers = bearer(client.token(world.api, MUNICIPALITY))
    created = world.api.post(
        "/fhir/Subscription", json=subscription("https://hooks.kommun-a.example/tasks"), headers=headers
    )
    assert created.status_code == 201
    url = f"/fhir/Subscription/{created.json()['id']}"
    world.api.get(url, headers=headers)
    deadline = time.monotonic() + 10
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        world.task(f"t{time.monotonic_ns()}", "orgA", "pa")
        body = world.api.get(url, headers=headers).json()
        if body["status"] == "error":
            break
        time.sleep(0.2)
    assert body["status"] == "error" and "refused" in body["error"]
    assert connections == []


def test_redirects_are_not_followed(notifying: World, receiver: Receiver) -> None:
    world = notifying
    if world.services.settings.audit:
        return
    seen: list[str] = []

    def answer(item: Any) -> int:
        seen.append(item.path)
        return 307 if len(seen) < 3 else 200

    receiver.answer = answer
    subscribe(world, receiver, world.a)
    world.task("ta1", "orgA", "pa")
    assert receiver.wait_for(1)
    assert seen == ["/hooks/tasks"] * 3  # retried at the endpoint, never sent elsewhere
