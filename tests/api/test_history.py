"""history: instance and type history, _since, _count and paging."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import ColumnElement, exists, not_

from gateway.app import create_app
from gateway.hooks import AllowAll, Hooks, RequestContext
from gateway.services import Services
from gateway.store.tables import StringIndex
from gateway.store.visibility import Visibility
from tests.api.helpers import create, patient
from tests.conftest import Database


def history(client: TestClient, url: str, **params: str) -> dict[str, Any]:
    response = client.get(url, params=params) if params else client.get(url)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "history"
    return body


def versions(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    """(id, version) of each entry, from the fullUrl and the etag (present for deletions too)."""
    return [(e["fullUrl"].rsplit("/", 1)[1], e["response"]["etag"][3:-1]) for e in bundle.get("entry", [])]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((li["url"] for li in bundle.get("link", []) if li["relation"] == relation), None)


def walk(
    client: TestClient, url: str, between_pages: Any = None, **params: str
) -> list[list[tuple[str, str]]]:
    pages = [versions(page := history(client, url, **params))]
    while (following := link(page, "next")) is not None:
        if between_pages is not None:
            between_pages()
        page = history(client, following)
        pages.append(versions(page))
        assert len(pages) < 20
    return pages


def test_instance_history_is_newest_first_with_deletions(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    client.put(f"/fhir/Patient/{pid}", json=patient(id=pid, family="Två"))
    client.delete(f"/fhir/Patient/{pid}")
    client.put(f"/fhir/Patient/{pid}", json=patient(id=pid, family="Åter"))
    bundle = history(client, f"/fhir/Patient/{pid}/_history")
    entries = bundle["entry"]
    assert versions(bundle) == [(pid, "4"), (pid, "3"), (pid, "2"), (pid, "1")]
    assert [e["request"]["method"] for e in entries] == ["PUT", "DELETE", "PUT", "POST"]
    assert [e["request"]["url"] for e in entries] == [f"Patient/{pid}"] * 3 + ["Patient"]
    assert entries[3]["response"]["status"] == "201 Created"
    assert entries[2]["response"]["status"] == "200 OK"
    assert "resource" not in entries[1]
    assert entries[1]["fullUrl"].endswith(f"/fhir/Patient/{pid}")
    assert entries[0]["resource"]["name"][0]["family"] == "Åter"
    assert entries[2]["resource"]["name"][0]["family"] == "Två"
    for e in entries:
        assert e["response"]["lastModified"].endswith("Z")
        if "resource" in e:
            assert e["response"]["lastModified"] == e["resource"]["meta"]["lastUpdated"]
            assert e["response"]["etag"] == f'W/"{e["resource"]["meta"]["versionId"]}"'
    assert link(bundle, "self") is not None
    assert link(bundle, "next") is None


def test_history_of_a_deleted_resource_is_still_available(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    client.delete(f"/fhir/Patient/{pid}")
    assert client.get(f"/fhir/Patient/{pid}").status_code == 410
    assert versions(history(client, f"/fhir/Patient/{pid}/_history")) == [(pid, "2"), (pid, "1")]


def test_update_as_create_is_reported_as_created(client: TestClient) -> None:
    client.put("/fhir/Patient/p1", json=patient(id="p1"))
    entry = history(client, "/fhir/Patient/p1/_history")["entry"][0]
    assert entry["request"] == {"method": "PUT", "url": "Patient/p1"}
    assert entry["response"]["status"] == "201 Created"


def test_unknown_resource_and_bad_parameters(client: TestClient) -> None:
    missing = client.get("/fhir/Patient/nope/_history")
    assert missing.status_code == 404
    assert missing.json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Medication/_history").status_code == 404
    assert client.get("/fhir/Patient/_history", params={"_count": "x"}).status_code == 400
    assert client.get("/fhir/Patient/_history", params={"_count": "-1"}).status_code == 400
    assert client.get("/fhir/Patient/_history", params={"_since": "yesterday"}).status_code == 400
    assert client.get("/fhir/Patient/_history", params={"_cursor": "abc"}).status_code == 400


def test_type_history(client: TestClient) -> None:
    a = create(client, patient())["id"]
    b = create(client, patient("201212121212"))["id"]
    client.put(f"/fhir/Patient/{a}", json=patient(id=a, family="Ny"))
    create(client, {"resourceType": "Organization", "name": "Kommunen"})
    bundle = history(client, "/fhir/Patient/_history")
    assert versions(bundle) == [(a, "2"), (b, "1"), (a, "1")]
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"Patient"}
    assert history(client, "/fhir/Task/_history").get("entry", []) == []


def test_since(client: TestClient) -> None:
    old = create(client, patient())["id"]
    time.sleep(0.01)
    new = create(client, patient("201212121212"))
    since = new["meta"]["lastUpdated"]
    client.put(f"/fhir/Patient/{new['id']}", json=patient("201212121212", id=new["id"], family="Ny"))
    expected = [(new["id"], "2"), (new["id"], "1")]
    assert versions(history(client, "/fhir/Patient/_history", _since=since)) == expected
    assert versions(history(client, f"/fhir/Patient/{old}/_history", _since=since)) == []
    # the same instant written with an offset
    instant = datetime.fromisoformat(since.replace("Z", "+00:00")).astimezone(timezone(timedelta(hours=2)))
    with_offset = instant.isoformat(timespec="milliseconds")
    assert "+02:00" in with_offset
    assert versions(history(client, "/fhir/Patient/_history", _since=with_offset)) == expected
    # _since is kept in the links
    paged = history(client, "/fhir/Patient/_history", _since=since, _count="1")
    assert versions(paged) == expected[:1]
    following = link(paged, "next")
    assert following is not None and "_since=" in following
    assert versions(history(client, following)) == expected[1:]
    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert history(client, "/fhir/Patient/_history", _since=future).get("entry", []) == []


def test_count_pages_walk_every_version_once_while_new_ones_arrive(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    for family in ("B", "C", "D", "E"):
        client.put(f"/fhir/Patient/{pid}", json=patient(id=pid, family=family))
    added = iter(["F", "G", "H", "I", "J"])

    def write_another() -> None:
        client.put(f"/fhir/Patient/{pid}", json=patient(id=pid, family=next(added)))

    pages = walk(client, f"/fhir/Patient/{pid}/_history", write_another, _count="2")
    assert pages == [
        [(pid, "5"), (pid, "4")],
        [(pid, "3"), (pid, "2")],
        [(pid, "1")],
    ]
    # the versions added meanwhile are there for the next walk
    assert [v for page in walk(client, f"/fhir/Patient/{pid}/_history", _count="3") for _, v in page] == [
        str(n) for n in range(7, 0, -1)
    ]


def test_type_history_paging_across_resources(client: TestClient) -> None:
    ids = [create(client, patient(f"19121212{n:04d}"))["id"] for n in range(5)]
    client.delete(f"/fhir/Patient/{ids[0]}")

    def create_another() -> None:
        create(client, patient(f"20121212{len(ids):04d}"))
        ids.append("later")

    pages = walk(client, "/fhir/Patient/_history", create_another, _count="2")
    seen = [item for page in pages for item in page]
    assert [len(page) for page in pages] == [2, 2, 2]
    assert seen == [(ids[0], "2")] + [(i, "1") for i in reversed(ids[:5])]


def test_count_zero_and_limits(client: TestClient) -> None:
    pid = create(client, patient())["id"]
    empty = history(client, f"/fhir/Patient/{pid}/_history", _count="0")
    assert empty.get("entry", []) == []
    assert link(empty, "next") is None
    limit = client.app.state.services.settings.max_page_size  # type: ignore[attr-defined]
    big = history(client, f"/fhir/Patient/{pid}/_history", _count=str(limit * 10))
    assert versions(big) == [(pid, "1")]


def test_transaction_writes_appear_in_history(client: TestClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
            {"resource": patient("201212121212", id="p2"), "request": {"method": "PUT", "url": "Patient/p2"}},
        ],
    }
    assert client.post("/fhir", json=bundle).status_code == 200
    entries = history(client, "/fhir/Patient/_history")["entry"]
    assert sorted(e["request"]["method"] for e in entries) == ["POST", "PUT"]
    assert {e["response"]["status"] for e in entries} == {"201 Created"}


@dataclass(frozen=True)
class NotDold:
    """Every resource but a Patient whose family name is Dold, as a condition of the query."""

    @property
    def everything(self) -> bool:
        return False

    def where(self, row: Any, res_type: str | None = None) -> ColumnElement[bool]:
        string = StringIndex.__table__
        dold = exists().where(
            string.c.rid == row.c.rid, string.c.param == "family", string.c.value_folded == "dold"
        )
        return not_(dold)


class HideDold(AllowAll):
    """Hides every Patient whose family name is Dold."""

    def visibility(self, context: RequestContext, writing: bool = False) -> Visibility:
        return NotDold()


def test_hidden_versions_do_not_end_the_paging(database: Database) -> None:
    database.clear()
    services = Services.build(database.settings(), Hooks(policy=HideDold()), engine=database.engine)
    with TestClient(create_app(services.settings, services=services)) as client:
        shown = [create(client, patient(f"19121212{n:04d}"))["id"] for n in range(3)]
        hidden = [create(client, patient(f"20121212{n:04d}", family="Dold"))["id"] for n in range(3)]
        pages = walk(client, "/fhir/Patient/_history", _count="2")
        assert [item for page in pages for item in page] == [(i, "1") for i in reversed(shown)]
        assert client.get(f"/fhir/Patient/{hidden[0]}/_history").status_code == 404
