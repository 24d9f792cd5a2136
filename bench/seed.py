"""Bulk seeder: generated Organizations, Patients, Tasks, DeviceRequests and Provenance, written straight
to the tables in large batches, with index rows (the access index rows among them) from the same
extraction the write path uses, and the care relations the write path keeps for what a trusted writer
writes (gateway/store/relations.py), so searches, and what an organisation's client sees, are exactly
what they would be after normal writes by the region. Only for benchmarks."""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import insert

from gateway.adapters.mapping import luhn_digit
from gateway.model.types import Json, dumps
from gateway.search.dates import to_instant, utc_now
from gateway.services import Services
from gateway.store import relations
from gateway.store.repository import _INDEX_TABLES, CLAIM, R, V
from gateway.store.tables import Base

PNR = "http://electronichealth.se/identifier/personnummer"
HSA = "urn:oid:1.2.752.29.4.19"
ORGANIZATIONS = 200
BATCH = 2000
STATUSES = ["requested", "accepted", "in-progress", "completed", "rejected"]
TASK_CODES = "http://hl7.org/fhir/CodeSystem/task-code"
TASK_KINDS = ["fulfill", "approve", "abort", "change", "resume"]


def family(n: int) -> str:
    """Patient `pat-n`'s family name."""
    return f"Efternamn{n % 5000}"


def gender(n: int) -> str:
    """Patient `pat-n`'s gender (issue 21's search `Patient?family&gender`): 4 in 7 female, whatever the
    family name."""
    return "female" if n % 7 % 2 == 0 else "male"


def luhn_pnr(n: int) -> str:
    """A fictitious personnummer (born 1930-1999) with a correct Luhn check digit."""
    year = 1930 + n % 70
    body = f"{year % 100:02d}{1 + n % 12:02d}{1 + n % 28:02d}{n % 1000:03d}"
    return f"{year // 100}{body}{luhn_digit(body)}"


def resources(count: int, seed: int = 7) -> Iterator[Json]:
    """About `count` resources: per patient a DeviceRequest, a Task and a Provenance (4 each)."""
    rng = random.Random(seed)
    for i in range(ORGANIZATIONS):
        yield {
            "resourceType": "Organization",
            "id": f"org-{i}",
            "name": f"Enhet {i}",
            "identifier": [{"system": HSA, "value": f"SE2321000016-{i:04d}"}],
        }
    patients = max(1, (count - ORGANIZATIONS) // 4)
    for n in range(patients):
        pid = f"pat-{n}"
        owner = f"Organization/org-{rng.randrange(ORGANIZATIONS)}"
        yield {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": PNR, "value": f"{luhn_pnr(n)}-{n}"}],
            "name": [{"family": family(n), "given": [f"Förnamn{n % 300}"]}],
            "gender": gender(n),
            "birthDate": f"{1930 + n % 70}-{1 + n % 12:02d}-{1 + n % 28:02d}",
        }
        yield {
            "resourceType": "DeviceRequest",
            "id": f"dr-{n}",
            "status": "active",
            "intent": "order",
            "codeCodeableConcept": {"text": "Syrgaskoncentrator"},
            "subject": {"reference": f"Patient/{pid}"},
            "requester": {"reference": f"Organization/org-{rng.randrange(ORGANIZATIONS)}"},
            "authoredOn": "2026-01-15T10:00:00+01:00",
        }
        yield {
            "resourceType": "Task",
            "id": f"task-{n}",
            "status": STATUSES[n % len(STATUSES)],
            "intent": "order",
            "for": {"reference": f"Patient/{pid}"},
            "owner": {"reference": owner},
            "focus": {"reference": f"DeviceRequest/dr-{n}"},
            "code": {"coding": [{"system": TASK_CODES, "code": TASK_KINDS[n % len(TASK_KINDS)]}]},
            "authoredOn": "2026-02-01T08:00:00+01:00",
            "restriction": {"period": {"end": f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}T12:00:00+01:00"}},
        }
        yield {
            "resourceType": "Provenance",
            "id": f"prov-{n}",
            "recorded": "2026-01-15T10:00:00+01:00",
            "target": [{"reference": f"DeviceRequest/dr-{n}"}, {"reference": f"Task/task-{n}"}],
            "agent": [{"who": {"reference": owner}}],
        }


def clear(services: Services) -> None:
    with services.engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())


def seed(services: Services, count: int, source: Iterable[Json] | None = None) -> int:
    """Insert about `count` resources (or those of `source`); returns how many."""
    now = utc_now() - timedelta(days=1)
    meta = {"versionId": "1", "lastUpdated": to_instant(now)}
    written = 0
    batch: list[Json] = []
    access = services.write_path.access
    lasts = services.write_path.lasts

    def flush() -> None:
        nonlocal written
        with services.engine.begin() as connection:
            rows: list[dict[str, Any]] = [
                {
                    "res_type": r["resourceType"],
                    "res_id": r["id"],
                    "version_id": 1,
                    "last_updated": now,
                    "deleted": False,
                    "content": dumps(r),
                }
                for r in batch
            ]
            connection.execute(insert(V), [row | {"method": "POST"} for row in rows])
            rids = connection.execute(
                insert(R).returning(R.c.rid, sort_by_parameter_order=True), rows
            ).scalars()
            index: dict[str, list[dict[str, Any]]] = {name: [] for name in _INDEX_TABLES}
            claims = []
            for rid, resource in zip(list(rids), batch, strict=True):
                extracted = services.extractor.rows(resource)
                if access.rules.relationship(resource["resourceType"]) is not None:
                    # as the write path keeps them (WritePath._relate) for a trusted writer's new resource
                    facts = access.facts(resource)
                    relations.replace(connection, rid, facts, relations.TRUSTED, now, lasts, fresh=True)
                for name in _INDEX_TABLES:
                    index[name].extend(row | {"rid": rid} for row in getattr(extracted, name))
                for identifier in resource.get("identifier", []):
                    claims.append(
                        {
                            "res_type": resource["resourceType"],
                            "system": identifier["system"],
                            "value": identifier["value"],
                            "rid": rid,
                        }
                    )
            for name, table in _INDEX_TABLES.items():
                if index[name]:
                    connection.execute(insert(table), index[name])
            if claims:
                connection.execute(insert(CLAIM), claims)
        written += len(batch)
        batch.clear()

    for resource in resources(count) if source is None else source:
        resource["meta"] = meta
        batch.append(resource)
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    return written
