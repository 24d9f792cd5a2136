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


def test_subscription_ids_are_the_servers_and_cannot_be_probed(world: World) -> None:
    """A PUT to a Subscription id that does not exist, is deleted or is another client's answers the
    same 404 for every client, the region-wide one included (it may create other types by PUT)."""
    api = world.api
    ours = api.post("/fhir/Subscription", json=subscription(HOOK), headers=world.a).json()
    gone = api.post("/fhir/Subscription", json=subscription(HOOK), headers=world.a).json()
    assert api.delete(f"/fhir/Subscription/{gone['id']}", headers=world.a).status_code in (200, 204)

    def put(res_id: str, headers: dict[str, str]) -> tuple[int, str]:
        body = {**subscription(HOOK), "id": res_id}
        answer = api.put(f"/fhir/Subscription/{res_id}", json=body, headers=headers)
        outcome = answer.json()
        text_ = str(outcome).replace(res_id, "ID")
        return answer.status_code, text_

    unknown = put("finns-inte", world.region)
    assert unknown[0] == 404 and unknown[1].count("OperationOutcome") == 1
    for res_id, who in (
        ("finns-inte", world.a),
        (ours["id"], world.region),  # another client's: as unknown (was a 409 that told it exists)
        (ours["id"], world.b),
        (gone["id"], world.a),  # its own deleted one: ids are not taken back
        (gone["id"], world.region),
    ):
        assert put(res_id, who) == unknown, (res_id, who)
    conditional = api.put(
        f"/fhir/Subscription?_id={ours['id']}", json=subscription(HOOK), headers=world.region
    )
    assert conditional.status_code == 404
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {**subscription(HOOK), "id": ours["id"]},
                "request": {"method": "PUT", "url": f"Subscription/{ours['id']}"},
            }
        ],
    }
    assert api.post("/fhir", json=bundle, headers=world.region).status_code == 404
    assert api.get(f"/fhir/Subscription/{ours['id']}", headers=world.a).json()["meta"]["versionId"] == "1"
    # the owner's update still works
    updated = api.put(f"/fhir/Subscription/{ours['id']}", json={**ours, "reason": "Ändrad"}, headers=world.a)
    assert updated.status_code == 200, updated.text
    assert updated.json()["reason"] == "Ändrad"
    metadata = api.get("/fhir/metadata", headers=world.region).json()
    entry = next(r for r in metadata["rest"][0]["resource"] if r["type"] == "Subscription")
    assert entry["updateCreate"] is False
