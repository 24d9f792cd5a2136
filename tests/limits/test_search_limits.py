"""Limits of a search and of numbers through the real app, auth on: parameters per search, values per
parameter, criteria per conditional operation (400 too-costly naming the setting), searches at the limits
answered on both databases (no "Expression tree is too large"), and numbers past what SQL holds (versions,
`_count`, ids) answered as the numbers they are, never a 500."""

from __future__ import annotations

import time
from urllib.parse import quote

from tests.api.helpers import PNR, patient
from tests.conftest import Database
from tests.limits.conftest import bounded_app

HUGE = "9" * 30  # past 64 bits
DIGITS_5000 = "9" * 5000  # past what int() reads


def test_parameters_values_and_criteria_are_limited(database: Database) -> None:
    with bounded_app(database) as app:  # the defaults: 50 parameters, 100 values, 10 criteria
        client, headers = app.client, app.headers
        made = client.post("/fhir/Patient", json=patient(), headers=headers).json()
        started = time.monotonic()
        repeated = "&".join(f"family=Tolvansson{i}" for i in range(1000))
        app.outcome(
            client.get(f"/fhir/Patient?{repeated}", headers=headers), 400, "GATEWAY_MAX_SEARCH_PARAMETERS"
        )
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        app.outcome(
            client.post("/fhir/Patient/_search", content=repeated, headers={**headers, **form}),
            400,
            "GATEWAY_MAX_SEARCH_PARAMETERS",
        )
        many = ",".join(f"{PNR}|19121212{i:04d}" for i in range(300))
        app.outcome(
            client.get(f"/fhir/Patient?identifier={many}", headers=headers), 400, "GATEWAY_MAX_SEARCH_VALUES"
        )
        app.outcome(
            client.get(f"/fhir/Patient?_sort={','.join(['family'] * 101)}", headers=headers),
            400,
            "GATEWAY_MAX_SEARCH_VALUES",
        )
        assert time.monotonic() - started < 10  # refused before any query runs
        # At the limits: answered, on SQLite too (500 OR-ed values once made its expression tree too deep).
        at_limit = ",".join([f"{PNR}|19121212{i:04d}" for i in range(99)] + [f"{PNR}|191212121212"])
        found = client.get(f"/fhir/Patient?identifier={quote(at_limit)}", headers=headers)
        assert found.status_code == 200, found.text
        assert [e["resource"]["id"] for e in found.json()["entry"]] == [made["id"]]
        fifty = "&".join([f"identifier={quote(at_limit)}"] * 25 + ["family=Tolvansson"] * 25)
        found = client.post("/fhir/Patient/_search", content=fifty, headers={**headers, **form})
        assert found.status_code == 200, found.text
        assert len(found.json()["entry"]) == 1
        dates = ",".join(f"ge19{i % 100:02d}-01-01" for i in range(100))
        assert client.get(f"/fhir/Patient?birthdate={dates}", headers=headers).status_code == 200
        # Conditional operations: at most 10 criteria.
        criteria = "&".join(["family=Tolvansson"] * 11)
        conditional = {**headers, "If-None-Exist": criteria}
        app.outcome(
            client.post("/fhir/Patient", json=patient(pnr="191212121213"), headers=conditional),
            400,
            "GATEWAY_MAX_CONDITIONAL_CRITERIA",
        )
        app.outcome(
            client.put(f"/fhir/Patient?{criteria}", json=patient(), headers=headers),
            400,
            "GATEWAY_MAX_CONDITIONAL_CRITERIA",
        )
        reference = {"reference": f"Patient?{criteria}"}
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": {
                        "resourceType": "Flag",
                        "status": "active",
                        "code": {"text": "x"},
                        "subject": reference,
                    },
                    "request": {"method": "POST", "url": "Flag"},
                }
            ],
        }
        app.outcome(
            client.post("/fhir", json=bundle, headers=headers), 400, "GATEWAY_MAX_CONDITIONAL_CRITERIA"
        )
        ten = {**headers, "If-None-Exist": "&".join(["family=Tolvansson"] * 10)}
        assert client.post("/fhir/Patient", json=patient(), headers=ten).status_code == 200  # matched
        assert client.get("/fhir/Patient?_summary=count", headers=headers).json()["total"] == 1


def test_numbers_past_what_sql_holds_are_answered_as_numbers(database: Database) -> None:
    with bounded_app(database) as app:
        client, headers = app.client, app.headers
        pid = client.post("/fhir/Patient", json=patient(), headers=headers).json()["id"]
        for version in (HUGE, DIGITS_5000, "²", "0"):
            app.outcome(
                client.get(f"/fhir/Patient/{pid}/_history/{version}", headers=headers), 404, "not known"
            )
        for count in (HUGE, DIGITS_5000):
            assert client.get(f"/fhir/Patient?_count={count}", headers=headers).status_code == 200
            assert client.get(f"/fhir/Patient/_history?_count={count}", headers=headers).status_code == 200
        app.outcome(client.get("/fhir/Patient?_count=²", headers=headers), 400, "_count")
        app.outcome(client.get("/fhir/Patient/_history?_count=²", headers=headers), 400, "_count")
        for tag in (f'W/"{HUGE}"', f'W/"{DIGITS_5000}"', 'W/"²"'):
            match = {**headers, "If-Match": tag.encode("latin-1")}  # HTTP headers are Latin-1
            updated = client.put(f"/fhir/Patient/{pid}", json={**patient(), "id": pid}, headers=match)
            app.outcome(updated, 412)
        entries = [
            {"request": {"method": "GET", "url": f"Patient/{pid}/_history/{HUGE}"}},
            {"request": {"method": "GET", "url": f"Patient/{pid}/_history/{DIGITS_5000}"}},
            {
                "resource": {**patient(), "id": pid},
                "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": f'W/"{HUGE}"'},
            },
            {"request": {"method": "GET", "url": f"Patient?_count={HUGE}"}},
            {"request": {"method": "GET", "url": f"Patient/{pid}/_history/1"}},
        ]
        answer = client.post(
            "/fhir", json={"resourceType": "Bundle", "type": "batch", "entry": entries}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        assert [e["response"]["status"][:3] for e in answer.json()["entry"]] == [
            "404",
            "404",
            "412",
            "200",
            "200",
        ]
        for after in (HUGE, DIGITS_5000):
            listed = client.get(f"/adapters/quarantine?after={after}", headers=headers)
            assert listed.status_code == 200 and listed.json() == {"items": []}, listed.text
        app.outcome(client.get("/adapters/quarantine?after=²", headers=headers), 400, "after")
        app.outcome(client.get(f"/adapters/quarantine/{HUGE}", headers=headers), 404)
        for value in ("1e999999999", "-1e999999999", "9" * 5000, "1e-999999999"):
            response = client.get(f"/fhir/RiskAssessment?probability={value}", headers=headers)
            assert response.status_code in (200, 400), response.text
        assert client.get(f"/fhir/Patient/{pid}", headers=headers).json()["meta"]["versionId"] == "1"
