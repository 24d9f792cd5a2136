"""Structured logs (docs/operations.md, Logs): one line per request with its request id, client,
interaction, type, status and duration; JSON off a terminal, text on one; `X-Request-ID` taken when safe
and returned on every answer. A real `gateway serve` with auth on goes through a scenario with seeded
patients (REST, searches by identifier and name, refusals, a transaction, MLLP and the HL7 entrance), and
not one of their personnummer or names is in its logs."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.adapters.hl7v2.ack import read_ack
from gateway.adapters.mapping import luhn_digit
from gateway.telemetry.logs import JsonFormatter, StderrHandler, TextFormatter, chosen
from tests.adapters.test_hl7v2_messages import adt
from tests.adapters.test_hl7v2_mllp import exchange
from tests.api.helpers import PNR, patient
from tests.conftest import Database
from tests.telemetry.served import KOMMUN_SCOPES, REGION_SCOPES, served

REQUEST_KEYS = {"request_id", "client_id", "interaction", "type", "status", "duration_ms"}
FAMILIES = ["Qvarnhjelm", "Ödmansgård", "Yxbergsson", "Fjällström", "Zetterqvik", "Humlegårdh", "Wibjörk"]
GIVENS = ["Hjördis", "Ingeborgh", "Torgny", "Ulrikah", "Vendela", "Sixten", "Märtha"]


def pnr(n: int) -> str:
    nine = f"4{n:01d}0101{n:02d}3"[:9]
    return "19" + nine + luhn_digit(nine)


PEOPLE = [(pnr(n), FAMILIES[n], GIVENS[n]) for n in range(7)]


def record(message: str, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("gateway.requests", logging.INFO, __file__, 1, message, (), None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_json_lines_carry_the_fields_and_never_an_exceptions_text() -> None:
    fields = {"request_id": "r1", "client_id": "c1", "interaction": "read", "type": "Patient"}
    line = json.loads(JsonFormatter().format(record("GET /fhir/{type}/{id} 200", fields=fields)))
    assert {"timestamp", "level", "logger", "message"} <= set(line) and line["request_id"] == "r1"
    try:
        raise ValueError("Tolvansson 191212121212")
    except ValueError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    text = JsonFormatter().format(failed)
    assert "191212121212" not in text and json.loads(text)["error"] == "ValueError"
    assert "key=" not in TextFormatter().format(record("x")) and " type=Patient" in TextFormatter().format(
        record("x", fields=fields)
    )


def test_the_format_follows_the_terminal_unless_set() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert chosen("auto", Terminal()) == "text"
    assert chosen("auto", io.StringIO()) == "json"
    assert chosen("json", Terminal()) == "json" and chosen("text", io.StringIO()) == "text"


def test_request_ids_are_taken_when_safe_and_made_otherwise(client: TestClient) -> None:
    kept = client.get("/fhir/metadata", headers={"X-Request-ID": "abc.DEF-123:4_5"})
    assert kept.headers["x-request-id"] == "abc.DEF-123:4_5"
    for unsafe in (b"with space", b"x" * 129, "ÅÄÖ".encode(), b"a\tb", b"a;b", b""):
        made = client.get("/fhir/metadata", headers={b"X-Request-ID": unsafe})
        assert len(made.headers["x-request-id"]) == 32 and made.headers["x-request-id"].encode() != unsafe
    assert len(client.get("/nowhere").headers["x-request-id"]) == 32  # on an error too


def scenario(run: Any) -> list[str]:
    """The requests of the scenario; the request ids the region sent."""
    region = run.headers(run.region, REGION_SCOPES)
    kommun = run.headers(run.kommun, KOMMUN_SCOPES)
    ids = []
    with httpx.Client(base_url=run.server.base_url, timeout=30) as http:
        for number, (number_pnr, family, given) in enumerate(PEOPLE[:4]):
            rid = f"scenario-{number}"
            made = http.post(
                "/Patient", json=patient(number_pnr, family, given), headers={**region, "X-Request-ID": rid}
            )
            assert made.status_code == 201, made.text
            assert made.headers["x-request-id"] == rid
            ids.append(made.json()["id"])
        first_pnr, first_family, first_given = PEOPLE[0]
        for pid in ids:
            assert http.get(f"/Patient/{pid}", headers=region).status_code == 200
        assert http.get(f"/Patient?identifier={PNR}|{first_pnr}", headers=region).json()["total"] == 1
        assert (
            http.get(f"/Patient?name={first_family}&given={first_given}", headers=region).status_code == 200
        )
        assert http.post("/Patient/_search", data={"family": first_family}, headers=region).status_code == 200
        again = http.post(
            "/Patient",
            json=patient(first_pnr, first_family, first_given),
            headers={**region, "If-None-Exist": f"identifier={PNR}|{first_pnr}"},
        )
        assert again.status_code == 200
        assert (
            http.post("/Patient", json=patient(first_pnr, "Annan", "Namn"), headers=region).status_code == 409
        )
        bad = patient(PEOPLE[1][0], PEOPLE[1][1], PEOPLE[1][2], birthDate=f"{PEOPLE[1][1]}-{PEOPLE[1][0]}")
        assert http.post("/Patient", json=bad, headers=region).status_code in (400, 422)
        broken = f'{{"resourceType": "Patient", "name": [{{"family": "{first_family}"'
        assert (
            http.post(
                "/Patient", content=broken, headers={**region, "Content-Type": "application/fhir+json"}
            ).status_code
            == 400
        )
        changed = {**patient(PEOPLE[2][0], PEOPLE[2][1], PEOPLE[2][2]), "id": ids[2], "gender": "female"}
        assert http.put(f"/Patient/{ids[2]}", json=changed, headers=region).status_code == 200
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": patient(*PEOPLE[4]),
                    "request": {
                        "method": "POST",
                        "url": "Patient",
                        "ifNoneExist": f"identifier={PNR}|{PEOPLE[4][0]}",
                    },
                }
            ],
        }
        assert http.post("", json=bundle, headers=region).status_code == 200
        # the municipality: sees none of them, and its write of a held identity is the named exception
        assert http.get(f"/Patient?identifier={PNR}|{first_pnr}", headers=kommun).json()["total"] == 0
        assert http.get(f"/Patient/{ids[0]}", headers=kommun).status_code == 404
        assert (
            http.post(
                "/Patient", json=patient(first_pnr, first_family, first_given), headers=kommun
            ).status_code
            == 409
        )
        assert http.get(f"{run.root}/metrics", headers=kommun).status_code == 403
        # no token, and a personnummer where an id goes
        assert http.get(f"/Patient?name={first_family}").status_code == 401
        assert http.get(f"/Patient/{first_pnr}", headers=region).status_code == 404
        hl7 = adt("A01", "OPS2", pnr=PEOPLE[6][0], family=PEOPLE[6][1], given=PEOPLE[6][2], visit="V-OPS-2")
        answer = http.post(
            f"{run.root}/adapters/hl7v2",
            content=hl7,
            headers={**region, "Content-Type": "application/hl7-v2"},
        )
        assert read_ack(answer.content)[0] == "AA"
        metrics = http.get(f"{run.root}/metrics", headers=region)
        assert metrics.status_code == 200
    [ack] = exchange(
        run.mllp_port,
        [adt("A01", "OPS1", pnr=PEOPLE[5][0], family=PEOPLE[5][1], given=PEOPLE[5][2], visit="V-OPS-1")],
    )
    assert read_ack(ack)[0] == "AA"
    return [metrics.text]


def test_the_scenarios_logs_name_no_patient(database: Database, tmp_path: Path) -> None:
    with served(database, tmp_path, mllp=True) as run:
        [metrics] = scenario(run)
        run.process.terminate()
        assert run.process.wait(timeout=30) == 0
        log = run.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len(lines) == len(log.splitlines())  # every line is JSON (stderr is no terminal)
    requests = [line for line in lines if line["logger"] == "gateway.requests"]
    assert len(requests) >= 25
    assert all(set(line) >= REQUEST_KEYS for line in requests)
    assert {line["request_id"] for line in requests} >= {f"scenario-{n}" for n in range(4)}
    assert {line["client_id"] for line in requests} >= {run.region.client_id, run.kommun.client_id}
    assert {line["interaction"] for line in requests} >= {
        "create",
        "read",
        "search-type",
        "transaction",
        "adapter",
    }
    for number, family, given in PEOPLE:
        for secret in (number, number[2:], f"{number[2:8]}-{number[8:]}", family, given):
            assert secret not in log, secret
            assert secret not in metrics, secret


def test_the_handler_writes_to_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream replaced and closed since logging was configured (a test runner's capture, say) is never
    written to: the handler follows sys.stderr."""
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter())
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    handler.emit(logging.LogRecord("gateway", logging.INFO, __file__, 1, "started", None, None))
    assert json.loads(second.getvalue())["message"] == "started"
