"""End to end, through the real entrances: an order from Beställningsportalen whose prescriber is not the
person who registered it → admission and discharge over HL7 v2 → the handover Task carries the order's
DeviceRequest → the municipality rejects the handover through FHIR → the return report reaches the
actual prescriber, found by the prescriber's journal system with one search."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.adapters.hl7v2.ack import read_ack
from gateway.adapters.hl7v2.mllp import ListenerSettings
from gateway.adapters.hl7v2.senders import Senders
from gateway.app import create_app
from gateway.security import store
from gateway.security.scopes import ADAPTER_BESTALLNINGSPORTALEN
from gateway.services import Services
from tests.adapters.test_bestallningsportalen import URL, golden
from tests.adapters.test_hl7v2_messages import KOMMUN, adt, post
from tests.adapters.test_hl7v2_mllp import (
    HOSPITAL_CLIENT,
    HOSPITAL_HSA,
    Running,
    audit_events,
    exchange,
    hospital_senders,
)
from tests.conftest import Database
from tests.security.conftest import RegisteredClient, bearer, new_key

HSA = "urn:oid:1.2.752.29.4.19"
PERSONNUMMER = "http://electronichealth.se/identifier/personnummer|191212121212"
REASON = "Kommunen kan inte ta emot syrgaskoncentratorn: bostaden saknar elinstallation"


def search(client: TestClient, query: str, **params: str) -> list[dict[str, Any]]:
    response = client.get(f"/fhir/{query}", params=params)
    assert response.status_code == 200, response.text
    bundle = response.json()
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def read(client: TestClient, reference: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{reference}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def hsa_user(role: dict[str, Any]) -> str:
    """The person part of a PractitionerRole's `person@unit` identifier."""
    return str(role["identifier"][0]["value"]).split("@")[0]


def place_order(client: TestClient) -> tuple[dict[str, Any], str, str]:
    """The order through its REST entrance: (DeviceRequest, prescriber's role id, orderer's role id)."""
    order = golden("01")
    assert order["forskrivare"]["hsaid"] != order["registrerad_av"]["hsaid"]
    response = client.post(URL, json=order)
    assert response.status_code == 200, response.text
    [entry] = response.json()["entry"]
    assert entry["response"]["status"] == "201 Created", entry
    request = read(client, entry["response"]["location"].split("/_history")[0])
    prescriber = read(client, request["requester"]["reference"])
    assert hsa_user(prescriber) == order["forskrivare"]["hsaid"]
    [provenance] = search(client, "Provenance", target=f"DeviceRequest/{request['id']}")
    [enterer] = [a for a in provenance["agent"] if a["type"]["coding"][0]["code"] == "enterer"]
    orderer = read(client, enterer["who"]["reference"])
    assert hsa_user(orderer) == order["registrerad_av"]["hsaid"]
    return request, prescriber["id"], orderer["id"]


def municipal_handover(client: TestClient) -> dict[str, Any]:
    """The handover Task the municipality finds for itself: owned by its Organization (by HSA-id)."""
    [municipality] = search(client, "Organization", identifier=f"{HSA}|{KOMMUN}")
    [handover] = search(client, "Task", code="handover", owner=f"Organization/{municipality['id']}")
    return handover


def test_an_order_admission_discharge_and_municipal_rejection_reach_the_prescriber(
    client: TestClient,
) -> None:
    request, prescriber, orderer = place_order(client)
    assert request["status"] == "active"

    assert post(client, adt("A01", "E2E-1"))[:2] == ("AA", "E2E-1")
    discharge = adt("A03", "E2E-2", sent="20261127120000", discharged="20261127110000")
    assert post(client, discharge)[:2] == ("AA", "E2E-2")
    [patient] = search(client, "Patient", identifier=PERSONNUMMER)  # one patient for both sources
    assert request["subject"] == {"reference": f"Patient/{patient['id']}"}

    handover = municipal_handover(client)
    assert handover["for"] == {"reference": f"Patient/{patient['id']}"}
    inputs = [item["valueReference"]["reference"] for item in handover["input"]]
    assert f"DeviceRequest/{request['id']}" in inputs
    since = handover["meta"]["lastUpdated"]  # what the prescriber's system saw last
    assert (
        search(client, "Communication", recipient=f"PractitionerRole/{prescriber}", _lastUpdated=f"gt{since}")
        == []
    )

    rejection = [
        {"op": "replace", "path": "/status", "value": "rejected"},
        {"op": "add", "path": "/statusReason", "value": {"text": REASON}},
    ]
    response = client.patch(
        f"/fhir/Task/{handover['id']}",
        json=rejection,
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "rejected"

    [report] = search(
        client, "Communication", recipient=f"PractitionerRole/{prescriber}", _lastUpdated=f"gt{since}"
    )
    assert [r["reference"] for r in report["recipient"]] == [f"PractitionerRole/{prescriber}"]
    assert {"reference": f"DeviceRequest/{request['id']}"} in report["basedOn"]
    assert report["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert REASON in " ".join(p.get("contentString", "") for p in report["payload"])
    assert search(client, "Communication", recipient=f"PractitionerRole/{orderer}") == []


# -- the same scenario with security on: every party its own client, the hospital over MLLP -----------

LUNG = "SE2321000016-LUNG"
MUNICIPAL_SCOPES = "system/*.rus"


def client_for(
    services: Services, client_id: str, organization: str, scopes: str, sources: tuple[str, ...] = ()
) -> RegisteredClient:
    key = new_key("ES384")
    jwks = {"keys": [key.as_dict(private=False) | {"kid": key.kid}]}
    store.add_client(services.engine, client_id, organization, jwks, scopes.split(), client_id, sources)
    return RegisteredClient(client_id, key, "ES384")


@pytest.fixture
def secured(database: Database) -> Iterator[Services]:
    """Auth, the organisation policy and audit on; no client is region-wide: the hospital's journal
    system and the order portal write every organisation's data as the sources they are bound to."""
    database.clear()
    settings = database.settings(auth=True, organisation_policy=True, audit=True)
    built = Services.build(settings, engine=database.engine)
    yield built
    built.close()


def test_the_same_journey_with_each_party_as_its_own_client(secured: Services) -> None:
    portal = client_for(secured, "portal", LUNG, ADAPTER_BESTALLNINGSPORTALEN, ("bestallningsportalen:BP",))
    # it answers Tasks; the return report of its rejection is the gateway's, written on its behalf
    municipality = client_for(secured, "stockholm-stad", KOMMUN, MUNICIPAL_SCOPES)
    lung = client_for(secured, "lung-journal", LUNG, "system/*.rs")
    hospital_senders(secured)  # the hospital's journal system, mapped from its sending facility
    mllp = Running(secured, ListenerSettings(port=0, senders=Senders({HOSPITAL_HSA: HOSPITAL_CLIENT})))
    with TestClient(create_app(secured.settings, services=secured)) as http:
        try:
            http.headers.update(bearer(portal.token(http, ADAPTER_BESTALLNINGSPORTALEN)))
            [entry] = http.post(URL, json=golden("01")).json()["entry"]
            assert entry["response"]["status"] == "201 Created", entry
            request_ref = entry["response"]["location"].split("/_history")[0]
            discharge = adt("A03", "E2E-2", sent="20261127120000", discharged="20261127110000")
            answers = exchange(mllp.port, [adt("A01", "E2E-1"), discharge])
            assert [read_ack(a)[:2] for a in answers] == [("AA", "E2E-1"), ("AA", "E2E-2")]
        finally:
            mllp.stop()

        http.headers.update(bearer(municipality.token(http, MUNICIPAL_SCOPES)))
        handover = municipal_handover(http)
        assert request_ref in [item["valueReference"]["reference"] for item in handover["input"]]
        since = handover["meta"]["lastUpdated"]
        rejection = [
            {"op": "replace", "path": "/status", "value": "rejected"},
            {"op": "add", "path": "/statusReason", "value": {"text": REASON}},
        ]
        response = http.patch(
            f"/fhir/Task/{handover['id']}",
            json=rejection,
            headers={"Content-Type": "application/json-patch+json"},
        )
        assert response.status_code == 200, response.text

        http.headers.update(bearer(lung.token(http, "system/*.rs")))
        prescriber = read(http, request_ref)["requester"]["reference"]
        query = {"recipient": prescriber, "_lastUpdated": f"gt{since}"}
        [report] = search(http, "Communication", **query)
        assert {"reference": request_ref} in report["basedOn"]
        assert REASON in " ".join(p.get("contentString", "") for p in report["payload"])
    imports = audit_events(secured, "subtype=import")
    assert HOSPITAL_CLIENT in {e["agent"][0]["who"]["identifier"]["value"] for e in imports}
