"""`Subscription` is a supported type owned by its client: its own only, headers restricted and sealed."""

from __future__ import annotations

from sqlalchemy import text

from tests.subscriptions.conftest import World, subscription

HOOK = "https://kommun-a.example/hooks/tasks"


def test_a_client_sees_and_changes_only_its_own_subscriptions(world: World) -> None:
    api = world.api
    created = api.post(
        "/fhir/Subscription",
        json=subscription(HOOK, header=["Authorization: Bearer hemligt"]),
        headers=world.a,
    )
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["status"] == "requested"
    assert "hemligt" not in created.text and sub["channel"]["header"][0].startswith("Authorization: enc:v1:")
    with world.services.engine.connect() as connection:
        stored = " ".join(str(c) for (c,) in connection.execute(text("SELECT content FROM resource_version")))
    assert "hemligt" not in stored
    url = f"/fhir/Subscription/{sub['id']}"
    assert api.get(url, headers=world.a).status_code == 200
    assert api.get(url, headers=world.b).status_code == 404
    assert api.get("/fhir/Subscription", headers=world.b).json().get("total", 0) == 0
    assert len(api.get("/fhir/Subscription", headers=world.a).json()["entry"]) == 1
    assert api.put(url, json={**sub, "status": "off"}, headers=world.b).status_code == 404
    api.delete(url, headers=world.b)
    assert api.get(url, headers=world.a).status_code == 200
    # read back and written again: the sealed header stays, the client turns it off
    again = api.put(url, json={**sub, "status": "off"}, headers=world.a)
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "off"
    assert again.json()["channel"]["header"] == sub["channel"]["header"]
    # another subscription's sealed header is not accepted as this one's
    other = api.post("/fhir/Subscription", json=subscription(HOOK), headers=world.a).json()
    stolen = {**other, "channel": {**other["channel"], "header": sub["channel"]["header"]}}
    assert api.put(f"/fhir/Subscription/{other['id']}", json=stolen, headers=world.a).status_code == 422
    assert api.delete(url, headers=world.a).status_code in (200, 204)
    assert api.get(url, headers=world.a).status_code in (404, 410)


def test_headers_endpoints_and_criteria_are_checked(world: World) -> None:
    api = world.api

    def status(**changes: object) -> int:
        body = subscription(HOOK)
        body["channel"].update(changes.pop("channel", {}))
        body.update(changes)
        code: int = api.post("/fhir/Subscription", json=body, headers=world.a).status_code
        return code

    assert status(channel={"header": ["Cookie: a=b"]}) == 422
    assert status(channel={"header": ["X-Kommun: " + "x" * 4096]}) == 422
    assert status(channel={"header": ["X-Kommun: a", "Authorization: Basic eA=="]}) == 201
    assert status(channel={"endpoint": "https://kommun-b.example/hooks/tasks"}) == 422
    assert status(channel={"endpoint": "https://kommun-a.example/hooksevil"}) == 422
    assert status(channel={"endpoint": "https://kommun-a.example/hooks/../admin"}) == 422
    assert status(channel={"endpoint": "https://user@kommun-a.example/hooks/x"}) == 422
    assert status(channel={"endpoint": "http://kommun-a.example/hooks/x"}) == 422
    assert status(channel={"endpoint": "HTTPS://Kommun-A.example:443/hooks/./x"}) == 201
    assert status(channel={"type": "websocket"}) == 422
    assert status(criteria="AuditEvent?type=rest") == 422
    assert status(criteria="Nothing?x=1") == 422
    assert status(criteria="https://example.org/unknown-topic") == 422
    scopes = "system/Task.rs system/Subscription.rs"
    reader = world.a_client.token(api, scopes)
    forbidden = api.post(
        "/fhir/Subscription", json=subscription(HOOK), headers={"Authorization": f"Bearer {reader}"}
    )
    assert forbidden.status_code == 403
