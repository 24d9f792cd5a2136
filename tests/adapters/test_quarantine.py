"""The adapters' quarantine keeps rejected inputs verbatim and lists them; each item belongs to the client
that sent it: over HTTP a client lists, shows, replays and discards only its own (another's item is to it
as an id never used), the operator's CLI sees every item; the same rejected record sent again by the same
client is one open item."""

from __future__ import annotations

import base64
import json

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gateway.adapters import quarantine
from gateway.cli import app
from gateway.security import sources
from gateway.security.scopes import ADAPTER_DEVICE_REGISTER, ADAPTER_QUARANTINE
from gateway.services import Services
from tests.adapters.test_device_register import HEADER, changed, row_of
from tests.conftest import Database
from tests.security.conftest import RegisteredClient, bearer, register

ROWS = "/adapters/device-register/records"
MAH1 = "SE2321000016-MAH1"
BAD = changed("01", status="Trasig")  # not a register status: rejected (400)


def test_quarantined_input_is_kept_verbatim_and_listed(client: TestClient, services: Services) -> None:
    payload = '{"ordernummer": "B-1", "patient": {"namn": "Åsa"}}'.encode()
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "required"}]}
    item_id = quarantine.put(
        services.engine, "bestallningsportalen", payload, "application/json", outcome, "B-1 v1"
    )
    stored = quarantine.get(services.engine, item_id)
    assert stored is not None and stored.payload == payload and stored.outcome == outcome
    listed = client.get("/adapters/quarantine?adapter=bestallningsportalen").json()["items"]
    assert [item["id"] for item in listed] == [item_id]
    assert listed[0]["sourceKey"] == "B-1 v1" and listed[0]["client"] is None
    shown = client.get(f"/adapters/quarantine/{item_id}").json()
    assert base64.b64decode(shown["data"]) == payload
    quarantine.set_status(services.engine, item_id, "replayed")
    assert client.get("/adapters/quarantine").json()["items"] == []
    assert len(client.get("/adapters/quarantine?status=all").json()["items"]) == 1
    assert client.get("/adapters/quarantine?limit=x").status_code == 400
    assert client.get("/adapters/quarantine?status=gone").status_code == 400


def _client(services: Services, org: str) -> RegisteredClient:
    source = f"device-register:SESAM@{org}"
    return register(services, f"{ADAPTER_DEVICE_REGISTER} {ADAPTER_QUARANTINE}", org=org, sources=(source,))


def _headers(api: TestClient, client: RegisteredClient) -> dict[str, str]:
    return bearer(client.token(api, f"{ADAPTER_DEVICE_REGISTER} {ADAPTER_QUARANTINE}"))


def _send(api: TestClient, headers: dict[str, str], row: str) -> str:
    body = ("\n".join([HEADER, row]) + "\n").encode()
    response = api.post(ROWS, content=body, headers={**headers, "Content-Type": "text/csv"})
    [entry] = response.json()["entry"]
    status: str = entry["response"]["status"]
    return status


def test_a_clients_items_are_its_own_and_anothers_are_as_ids_never_used(
    secure_services: Services, secure_client: TestClient
) -> None:
    """Two organisations' register clients each send a rejected row of their own units (with their
    patients' numbers in them). Neither lists, shows, replays or discards the other's item: each answer
    is the one for an id never used, so the other's item, its content and its existence stay unknown."""
    api = secure_client
    other = "SE2321000016-OTHER"
    a, b = _client(secure_services, MAH1), _client(secure_services, other)
    a_headers, b_headers = _headers(api, a), _headers(api, b)
    assert _send(api, a_headers, BAD) == "400 Bad Request"
    assert _send(api, b_headers, changed("01", status="Trasig", agare_hsaid=other)) == "400 Bad Request"
    [a_item] = api.get("/adapters/quarantine", headers=a_headers).json()["items"]
    [b_item] = api.get("/adapters/quarantine", headers=b_headers).json()["items"]
    assert (a_item["client"], b_item["client"]) == (a.client_id, b.client_id)
    assert a_item["id"] != b_item["id"]
    unused = max(a_item["id"], b_item["id"]) + 1000
    for method, suffix in (("GET", ""), ("POST", "/replay"), ("POST", "/discard")):
        theirs = api.request(method, f"/adapters/quarantine/{b_item['id']}{suffix}", headers=a_headers)
        never = api.request(method, f"/adapters/quarantine/{unused}{suffix}", headers=a_headers)
        assert theirs.status_code == never.status_code == 404
        assert theirs.json() == json.loads(never.text.replace(str(unused), str(b_item["id"])))
    assert api.get("/adapters/quarantine?status=all", headers=a_headers).json()["items"] == [a_item]
    # the operator sees both
    assert {item.client_id for item in quarantine.listing(secure_services.engine)} == {
        a.client_id,
        b.client_id,
    }


def test_the_same_rejected_record_again_is_one_open_item_of_its_sender(
    secure_services: Services, secure_client: TestClient
) -> None:
    api = secure_client
    a, b = _client(secure_services, MAH1), _client(secure_services, MAH1)
    a_headers, b_headers = _headers(api, a), _headers(api, b)
    for _ in range(2):
        assert _send(api, a_headers, BAD) == "400 Bad Request"
    [first] = api.get("/adapters/quarantine", headers=a_headers).json()["items"]
    # the same unit rejected with other content: still the unit's one open item, now holding that row
    other = changed("01", status="Trasig", modell="X-9")
    assert _send(api, a_headers, other) == "400 Bad Request"
    [item] = api.get("/adapters/quarantine", headers=a_headers).json()["items"]
    assert item["id"] == first["id"] and item["receivedAt"] >= first["receivedAt"]
    shown = api.get(f"/adapters/quarantine/{item['id']}", headers=a_headers).json()
    assert "X-9" in base64.b64decode(shown["data"]).decode()
    # another client sending it has an item of its own
    assert _send(api, b_headers, BAD) == "400 Bad Request"
    [theirs] = api.get("/adapters/quarantine", headers=b_headers).json()["items"]
    assert theirs["id"] != item["id"]
    # a discarded item is not reopened: the record rejected again is a new open item
    discarded = api.post(f"/adapters/quarantine/{item['id']}/discard", headers=a_headers)
    assert discarded.status_code == 200 and discarded.json()["status"] == "discarded"
    assert api.post(f"/adapters/quarantine/{item['id']}/discard", headers=a_headers).status_code == 409
    assert _send(api, a_headers, BAD) == "400 Bad Request"
    [reopened] = api.get("/adapters/quarantine", headers=a_headers).json()["items"]
    assert reopened["id"] != item["id"]


def test_a_rejection_without_a_key_is_one_item_only_for_the_same_payload(services: Services) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": []}
    put = quarantine.put
    first = put(
        services.engine, "bestallningsportalen", b"{broken", "application/json", outcome, "#1", None, False
    )
    again = put(
        services.engine, "bestallningsportalen", b"{broken", "application/json", outcome, "#1", None, False
    )
    other = put(
        services.engine, "bestallningsportalen", b"{other", "application/json", outcome, "#1", None, False
    )
    assert first == again != other


def test_a_client_replays_its_own_item_once_bound_to_its_source(
    secure_services: Services, secure_client: TestClient
) -> None:
    """A row of an owner the client is not bound to is quarantined under it; replayed before the
    binding it is refused again (the item stays open), after it the row is written and the item is
    replayed. The replay is the client's: its binding is checked, as at the entrance."""
    api = secure_client
    client = register(secure_services, f"{ADAPTER_DEVICE_REGISTER} {ADAPTER_QUARANTINE}", org=MAH1)
    headers = _headers(api, client)
    assert _send(api, headers, row_of("01")) == "403 Forbidden"
    [item] = api.get("/adapters/quarantine", headers=headers).json()["items"]
    refused = api.post(f"/adapters/quarantine/{item['id']}/replay", headers=headers)
    assert [e["response"]["status"] for e in refused.json()["entry"]] == ["403 Forbidden"]
    assert api.get("/adapters/quarantine", headers=headers).json()["items"][0]["status"] == "open"
    sources.bind(secure_services.engine, client.client_id, [f"device-register:SESAM@{MAH1}"])
    replayed = api.post(f"/adapters/quarantine/{item['id']}/replay", headers=headers)
    assert [e["response"]["status"] for e in replayed.json()["entry"]] == ["201 Created"]
    assert api.get("/adapters/quarantine", headers=headers).json()["items"] == []
    # replaying needs the adapter's scope as well as the quarantine's
    narrow = bearer(client.token(api, ADAPTER_QUARANTINE))
    assert api.post(f"/adapters/quarantine/{item['id']}/replay", headers=narrow).status_code == 403


def test_the_operators_cli_lists_shows_and_discards_every_clients_items(
    database: Database, secure_services: Services, secure_client: TestClient
) -> None:
    client = _client(secure_services, MAH1)
    assert _send(secure_client, _headers(secure_client, client), BAD) == "400 Bad Request"
    own = quarantine.put(
        secure_services.engine, "device-register", b"x", "text/csv", {"issue": []}, "SESAM 1"
    )
    env = database.environment()
    listed = CliRunner().invoke(app, ["quarantine", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.strip().splitlines()
    assert [line.split("\t")[3] for line in lines] == [client.client_id, "-"]
    mine = CliRunner().invoke(app, ["quarantine", "list", "--client", "-"], env=env)
    assert [line.split("\t")[0] for line in mine.stdout.strip().splitlines()] == [str(own)]
    first = lines[0].split("\t")[0]
    shown = CliRunner().invoke(app, ["quarantine", "show", first], env=env)
    assert shown.exit_code == 0 and "Trasig" in shown.stdout
    assert CliRunner().invoke(app, ["quarantine", "discard", first], env=env).exit_code == 0
    assert CliRunner().invoke(app, ["quarantine", "discard", first], env=env).exit_code == 2
    assert quarantine.get(secure_services.engine, int(first)).status == "discarded"  # type: ignore[union-attr]
