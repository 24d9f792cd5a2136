"""Each limit of a request (docs/operations.md, "Limits") through the real app, auth on: JSON depth at
every JSON entrance, the size of one resource, a search's parameters and values, a conditional
operation's criteria, and numbers that would overflow SQL. Past a limit: 4xx with an OperationOutcome
naming the limit's setting, nothing stored, and the server answering as before."""

from __future__ import annotations

import base64
import json
from typing import Any

from tests.api.helpers import patient
from tests.conftest import Database
from tests.limits.conftest import Bounded, bounded_app


def nested_extension(levels: int) -> dict[str, Any]:
    """An extension holding an extension … `levels` deep (valid FHIR at any depth)."""
    node: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(levels - 1):
        node = {"url": "http://example.org/level", "extension": [node]}
    return node


def nested_arrays(levels: int) -> str:
    return "[" * levels + "]" * levels


def stored_patients(app: Bounded) -> int:
    found = app.client.get("/fhir/Patient?_summary=count", headers=app.headers)
    assert found.status_code == 200, found.text
    total: int = found.json()["total"]
    return total


def test_json_nested_past_the_depth_limit_is_refused_at_every_entrance(database: Database) -> None:
    with bounded_app(database, max_json_depth=32) as app:
        client, headers = app.client, app.headers
        shallow = patient(extension=[nested_extension(8)])
        assert client.post("/fhir/Patient", json=shallow, headers=headers).status_code == 201
        deep = patient(pnr="191212121213", extension=[nested_extension(200)])
        app.outcome(client.post("/fhir/Patient", json=deep, headers=headers), 400, "GATEWAY_MAX_JSON_DEPTH")
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": deep, "request": {"method": "POST", "url": "Patient"}}],
        }
        app.outcome(client.post("/fhir", json=bundle, headers=headers), 400, "GATEWAY_MAX_JSON_DEPTH")
        # Past orjson's own limit (1024) too: 400, not 500.
        raw = '{"resourceType": "Patient", "x": ' + nested_arrays(5000) + "}"
        app.outcome(
            client.post(
                "/fhir/Patient", content=raw, headers={**headers, "Content-Type": "application/fhir+json"}
            ),
            400,
            "not valid JSON",
        )
        [stored] = client.get("/fhir/Patient", headers=headers).json()["entry"]
        pid = stored["resource"]["id"]
        value = '{"a": ' * 1000 + '"x"' + "}" * 1000  # JSON nested 1000 levels, as text
        patch_text = '[{"op": "add", "path": "/extension/0/valueString", "value": ' + value + "}]"
        patch_headers = {**headers, "Content-Type": "application/json-patch+json"}
        app.outcome(
            client.patch(f"/fhir/Patient/{pid}", content=patch_text, headers=patch_headers),
            400,
            "GATEWAY_MAX_JSON_DEPTH",
        )
        # A JSON Patch in a Bundle comes as base64 in a Binary: held to the limit once decoded.
        binary = {
            "resourceType": "Binary",
            "contentType": "application/json-patch+json",
            "data": base64.b64encode(patch_text.encode()).decode(),
        }
        batch = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"resource": binary, "request": {"method": "PATCH", "url": f"Patient/{pid}"}}],
        }
        answer = client.post("/fhir", json=batch, headers=headers)
        assert answer.status_code == 200, answer.text
        [entry] = answer.json()["entry"]
        assert entry["response"]["status"].startswith("400")
        assert "GATEWAY_MAX_JSON_DEPTH" in entry["response"]["outcome"]["issue"][0]["diagnostics"]
        # A patch whose result nests past the limit, though each value is shallow.
        grown = [{"op": "add", "path": "/extension/0/extension", "value": [nested_extension(30)]}]
        app.outcome(
            client.patch(f"/fhir/Patient/{pid}", content=json.dumps(grown), headers=patch_headers),
            400,
            "GATEWAY_MAX_JSON_DEPTH",
        )
        assert client.get(f"/fhir/Patient/{pid}", headers=headers).json()["meta"]["versionId"] == "1"
        assert stored_patients(app) == 1


def test_a_resource_larger_than_the_resource_limit_is_413(database: Database) -> None:
    limit = 64 * 1024
    with bounded_app(database, max_resource_bytes=limit) as app:
        client, headers = app.client, app.headers
        big = patient(family="x" * (limit + 1))
        app.outcome(
            client.post("/fhir/Patient", json=big, headers=headers), 413, "GATEWAY_MAX_RESOURCE_BYTES"
        )
        app.outcome(
            client.put("/fhir/Patient/p1", json={**big, "id": "p1"}, headers=headers),
            413,
            "GATEWAY_MAX_RESOURCE_BYTES",
        )
        # In a transaction the body is larger than one resource may be only by the others: checked per entry.
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
                {
                    "resource": patient(pnr="191212121213", family="y" * limit),
                    "request": {"method": "POST", "url": "Patient"},
                },
            ],
        }
        body = app.outcome(
            client.post("/fhir", json=bundle, headers=headers), 413, "GATEWAY_MAX_RESOURCE_BYTES"
        )
        assert body["issue"][0]["expression"] == ["Bundle.entry[1]"]
        assert stored_patients(app) == 0
        # A patch that copies a part of the resource onto itself again and again: refused before the
        # copies are built, not after they fill the memory.
        created = client.post("/fhir/Patient", json=patient(family="z" * 1000), headers=headers).json()
        # Each copy puts the whole name list into itself once more: 40 of them would need 2^40 times its size.
        doubling = [{"op": "copy", "from": "/name", "path": "/name/0"}] * 40
        patch_headers = {**headers, "Content-Type": "application/json-patch+json"}
        app.outcome(
            client.patch(
                f"/fhir/Patient/{created['id']}", content=json.dumps(doubling), headers=patch_headers
            ),
            413,
            "GATEWAY_MAX_RESOURCE_BYTES",
        )
        small = patient(pnr="191212121213", family="y" * (limit // 2))
        assert client.post("/fhir/Patient", json=small, headers=headers).status_code == 201
