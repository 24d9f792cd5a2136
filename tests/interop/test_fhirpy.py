"""The third-party client fhirpy against a real `gateway serve`: CRUD, conditional create, _include,
paging."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

from tests.api.helpers import PNR, patient, task

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _pnr(n: int) -> str:
    """A distinct personnummer-like identifier value per test patient."""
    return f"1990010{n:05d}"


def _client(base_url: str, **headers: str) -> SyncFHIRClient:
    return SyncFHIRClient(base_url, extra_headers=headers or None, requests_config={"timeout": 10})


def test_crud_through_fhirpy_resources(base_url: str) -> None:
    client = _client(base_url)
    created = client.resource("Patient", **patient(_pnr(1)))
    created.save()
    assert created.id and created["meta"]["versionId"] == "1"

    read = client.reference("Patient", created.id).to_resource()
    assert read["name"][0]["family"] == "Tolvansson"
    assert read["identifier"] == [{"system": PNR, "value": _pnr(1)}]

    read["name"][0]["family"] = "Ändrad"
    read.save()
    assert read["meta"]["versionId"] == "2"
    again = client.reference("Patient", created.id).to_resource()
    assert again["name"][0]["family"] == "Ändrad"
    assert again["meta"]["versionId"] == "2"
    assert [p.id for p in client.resources("Patient").search(family="Ändrad").fetch()] == [created.id]

    again.delete()  # type: ignore[no-untyped-call]
    with pytest.raises(ResourceNotFound):
        client.reference("Patient", created.id).to_resource()
    assert client.resources("Patient").fetch() == []


def test_conditional_create_with_if_none_exist(base_url: str) -> None:
    condition = f"identifier={PNR}|{_pnr(2)}"
    first = httpx.post(
        f"{base_url}/Patient",
        json=patient(_pnr(2)),
        headers={**FHIR_JSON, "If-None-Exist": condition},
        timeout=10,
    )
    assert first.status_code == 201, first.text
    second = httpx.post(
        f"{base_url}/Patient",
        json=patient(_pnr(2)),
        headers={**FHIR_JSON, "If-None-Exist": condition},
        timeout=10,
    )
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"]

    # fhirpy sends the header given to the client on its POST too; it gets the matched resource back
    conditional = _client(base_url, **{"If-None-Exist": condition})
    matched = conditional.resource("Patient", **patient(_pnr(2), family="Annan"))
    matched.save()
    assert matched.id == first.json()["id"]
    assert matched["name"][0]["family"] == "Tolvansson"

    found = _client(base_url).resources("Patient").search(identifier=f"{PNR}|{_pnr(2)}").fetch_all()
    assert [p.id for p in found] == [first.json()["id"]]


def _patients_and_tasks(client: SyncFHIRClient, patients: int, tasks_each: int) -> tuple[set[str], set[str]]:
    patient_ids: set[str] = set()
    task_ids: set[str] = set()
    for n in range(patients):
        created = client.resource("Patient", **patient(_pnr(100 + n), given=f"P{n}"))
        created.save()
        patient_ids.add(created.id)
        for _ in range(tasks_each):
            item = client.resource("Task", **task(created.id))
            item.save()
            task_ids.add(item.id)
    return patient_ids, task_ids


def test_search_with_include(base_url: str) -> None:
    client = _client(base_url)
    patient_ids, task_ids = _patients_and_tasks(client, patients=3, tasks_each=2)
    client.resource("Patient", **patient(_pnr(999), given="Utan uppgift")).save()

    bundle: Any = client.resources("Task").include("Task", "patient").fetch_raw()
    modes = Counter(
        (e["search"]["mode"], e["resource"]["resourceType"], e["resource"].id) for e in bundle["entry"]
    )
    assert all(count == 1 for count in modes.values()), modes
    assert {i for mode, t, i in modes if mode == "match" and t == "Task"} == task_ids
    assert {i for mode, t, i in modes if mode == "include" and t == "Patient"} == patient_ids
    assert {(mode, t) for mode, t, _ in modes} == {("match", "Task"), ("include", "Patient")}

    # fhirpy's fetch() keeps the Tasks only; every Task's patient is among the included resources
    fetched = client.resources("Task").include("Task", "patient").fetch()
    assert sorted(t.id for t in fetched) == sorted(task_ids)
    assert {t["for"]["reference"].split("/")[1] for t in fetched} == patient_ids


def test_paging_sees_every_resource_once(base_url: str) -> None:
    client = _client(base_url)
    created = {client.resource("Patient", **patient(_pnr(200 + n))).save().id for n in range(23)}

    pages = client.resources("Patient").limit(5)
    first: Any = pages.fetch_raw()
    assert len(first["entry"]) == 5
    assert any(link["relation"] == "next" for link in first["link"])

    everything = pages.fetch_all()
    ids = [p.id for p in everything]
    assert len(ids) == len(set(ids)) == 23
    assert set(ids) == created

    sorted_ids = [p.id for p in client.resources("Patient").sort("-_lastUpdated", "_id").limit(4)]
    assert Counter(sorted_ids) == Counter(created)


def test_paging_with_include_through_next_links(base_url: str) -> None:
    client = _client(base_url)
    patient_ids, task_ids = _patients_and_tasks(client, patients=4, tasks_each=3)

    url: str | None = f"{base_url}/Task?_include=Task:patient&_count=5"
    seen_tasks: list[str] = []
    included: set[str] = set()
    pages = 0
    with httpx.Client(headers={"Accept": "application/fhir+json"}, timeout=10) as http:
        while url:
            response = http.get(url)
            assert response.status_code == 200, response.text
            bundle = response.json()
            pages += 1
            matches = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "match"]
            includes = [e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "include"]
            seen_tasks.extend(t["id"] for t in matches)
            wanted = {t["for"]["reference"].split("/")[1] for t in matches}
            assert sorted(p["id"] for p in includes) == sorted(wanted)  # each once, and only those needed
            included |= wanted
            url = next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)
    assert pages == 3
    assert len(seen_tasks) == len(set(seen_tasks)) == 12
    assert set(seen_tasks) == task_ids
    assert included == patient_ids
