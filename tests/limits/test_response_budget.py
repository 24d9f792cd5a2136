"""The response budget (GATEWAY_MAX_RESPONSE_BYTES, GATEWAY_MAX_RESPONSE_RESOURCES) through the real app,
auth on: a search page with its includes, a history page and a read past it are 400 naming the setting;
a batch's entries share one budget (those past it answer 400 each, a write among them is not stored);
and resources a client may not see cost it nothing, so the budget tells it nothing about them."""

from __future__ import annotations

from typing import Any

from tests.api.helpers import PNR
from tests.conftest import Database
from tests.limits.conftest import bounded_app
from tests.security.conftest import bearer, register

FILLER = 2000  # bytes of text in each test Patient, so each is ~2.2 kB stored


def person(serial: int, filler: int = FILLER, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": PNR, "value": f"19121212{serial:04d}"}],
        "name": [{"family": f"F{serial}", "given": ["x" * filler]}],
        **extra,
    }


def test_a_search_or_history_past_the_budget_is_400(database: Database) -> None:
    with bounded_app(database, max_response_bytes=12 * 1024, max_response_resources=8) as app:
        client, headers = app.client, app.headers
        org = client.post(
            "/fhir/Organization", json={"resourceType": "Organization", "name": "o"}, headers=headers
        )
        org_ref = {"reference": f"Organization/{org.json()['id']}"}
        ids = []
        for serial in range(6):
            made = client.post(
                "/fhir/Patient", json=person(serial, managingOrganization=org_ref), headers=headers
            )
            assert made.status_code == 201, made.text
            ids.append(made.json()["id"])
        assert len(client.get("/fhir/Patient?_count=5", headers=headers).json()["entry"]) == 5
        app.outcome(client.get("/fhir/Patient?_count=6", headers=headers), 400, "GATEWAY_MAX_RESPONSE_BYTES")
        # Includes count: 5 Patients fit, 5 Patients and their Organization do not (by number here).
        with_org = "/fhir/Patient?_count=5&_include=Patient:organization"
        assert client.get(with_org, headers=headers).status_code == 200
        page = client.get("/fhir/Organization?_revinclude=Patient:organization", headers=headers)
        app.outcome(page, 400, "GATEWAY_MAX_RESPONSE_BYTES")
        # History: each version is counted as it is stored.
        assert client.get("/fhir/Patient/_history?_count=5", headers=headers).status_code == 200
        app.outcome(
            client.get("/fhir/Patient/_history?_count=6", headers=headers),
            400,
            "GATEWAY_MAX_RESPONSE_BYTES",
        )
        # The paging still works at a size that fits: every Patient, once each.
        seen: list[str] = []
        url = "/fhir/Patient?_count=4"
        while url:
            bundle = client.get(url.removeprefix("http://testserver"), headers=headers).json()
            seen += [e["resource"]["id"] for e in bundle.get("entry", [])]
            url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), "")
        assert sorted(seen) == sorted(ids)
    with bounded_app(database, max_response_resources=3) as app:
        for serial in range(4):
            app.client.post("/fhir/Patient", json=person(serial), headers=app.headers)
        assert app.client.get("/fhir/Patient?_count=3", headers=app.headers).status_code == 200
        app.outcome(
            app.client.get("/fhir/Patient?_count=4", headers=app.headers),
            400,
            "GATEWAY_MAX_RESPONSE_RESOURCES",
        )


def test_a_batch_shares_one_budget(database: Database) -> None:
    with bounded_app(database, max_response_bytes=10 * 1024) as app:
        client, headers = app.client, app.headers
        for serial in range(3):
            assert client.post("/fhir/Patient", json=person(serial), headers=headers).status_code == 201
        search = {"request": {"method": "GET", "url": "Patient?_count=3"}}
        # The first search spends ~6.7 of the 10 kB; this write's answer (~4.2 kB) does not fit beside it.
        write = {"resource": person(99, filler=4000), "request": {"method": "POST", "url": "Patient"}}
        batch = {"resourceType": "Bundle", "type": "batch", "entry": [search, search, write, search]}
        answer = client.post("/fhir", json=batch, headers=headers)
        assert answer.status_code == 200, answer.text
        entries = answer.json()["entry"]
        statuses = [e["response"]["status"][:3] for e in entries]
        assert statuses == ["200", "400", "400", "400"], statuses
        outcome = entries[1]["response"]["outcome"]["issue"][0]
        assert outcome["code"] == "too-costly" and "GATEWAY_MAX_RESPONSE_BYTES" in outcome["diagnostics"]
        # The write whose answer did not fit was not stored.
        found = client.get(f"/fhir/Patient?identifier={PNR}|191212120099", headers=headers).json()
        assert found.get("entry") is None
        # A transaction past the budget is undone whole.
        transaction = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": person(50 + i), "request": {"method": "POST", "url": "Patient"}}
                for i in range(5)
            ],
        }
        app.outcome(
            client.post("/fhir", json=transaction, headers=headers), 400, "GATEWAY_MAX_RESPONSE_BYTES"
        )
        assert client.get("/fhir/Patient?_summary=count", headers=headers).json()["total"] == 3
        # Each request has a budget of its own.
        assert client.get("/fhir/Patient?_count=3", headers=headers).status_code == 200


def test_what_a_client_may_not_see_costs_it_nothing(database: Database) -> None:
    """Organisation B's search is not refused for the size of organisation A's Patients it cannot see:
    the page's size is that of what B sees, so the budget tells B nothing of A's."""
    with bounded_app(database, max_response_bytes=8 * 1024) as app:
        client = app.client
        scopes = "system/*.cruds"
        a = register(app.services, scopes, org="SE2321000016-AAAA")
        b = register(app.services, scopes, org="SE2321000016-BBBB")
        a_headers, b_headers = bearer(a.token(client, scopes)), bearer(b.token(client, scopes))
        for serial in range(6):
            made = client.post("/fhir/Patient", json=person(serial), headers=a_headers)
            assert made.status_code == 201, made.text
        mine = client.post("/fhir/Patient", json=person(77), headers=b_headers)
        assert mine.status_code == 201, mine.text
        app.outcome(
            client.get("/fhir/Patient?_count=10", headers=a_headers), 400, "GATEWAY_MAX_RESPONSE_BYTES"
        )
        seen = client.get("/fhir/Patient?_count=10", headers=b_headers)
        assert seen.status_code == 200, seen.text
        assert [e["resource"]["id"] for e in seen.json()["entry"]] == [mine.json()["id"]]
        history = client.get("/fhir/Patient/_history?_count=10", headers=b_headers)
        assert history.status_code == 200 and len(history.json()["entry"]) == 1
