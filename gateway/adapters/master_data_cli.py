"""`gateway master-data normalize`: stored master data rewritten in the current form, through the write path.

Patients stored before issue 16 may carry the address's municipality code under the HL7 v2 mapping's old
url (…/StructureDefinition/kommunkod), or twice (that url and municipality-code), and master data
(Patient, Organization, Practitioner, PractitionerRole) one resource-level source-event-time. The adapters
read both (gateway/adapters/master_data.py); this job writes each such resource again in the current form
(`master_data.normalized`: one municipality-code, a field-event-time per event time), in batches, each
batch one unit of work of the write path (validated, authorized, stored, indexed, audited) with one
Provenance naming every rewritten version and the version it replaced. Resources already in the current
form are not written: running it again changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from uuid import uuid4

import typer
from rich.console import Console
from sqlalchemy import select

from gateway.adapters import master_data
from gateway.config import Settings
from gateway.hooks import Principal, RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.search.dates import to_instant
from gateway.services import Services
from gateway.store.repository import R

TYPES = ("Patient", "Organization", "Practitioner", "PractitionerRole")
CONTEXT = RequestContext(principal=Principal(client_id="cli", scopes=frozenset({"system/*.cruds"})))
CLIENT_SYSTEM = "urn:gateway:client-id"
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
REASON = (
    "Huvuddata skrivs om i nuvarande form: kommunkoden en gång, under StructureDefinition/municipality-code, "
    "och varje fälts källhändelsetid i field-event-time (uppgradering, ärende 16)"
)

master_data_app = typer.Typer(help="Master data the adapters keep.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


@dataclass
class Tally:
    read: int = 0
    rewritten: int = 0


def _provenance(uow: UnitOfWork, changed: list[tuple[str, int, int]]) -> Json:
    """The Provenance of one batch: each new version its target, the version it replaced its entity."""
    who = {
        "type": "Device",
        "identifier": {"system": CLIENT_SYSTEM, "value": uow.context.principal.client_id},
        "display": "fhir-home-device-gateway (gateway master-data normalize)",
    }
    return {
        "resourceType": "Provenance",
        "id": str(uuid4()),
        "target": [{"reference": f"{key}/_history/{version}"} for key, _, version in changed],
        "recorded": to_instant(uow.now),
        "reason": [{"text": REASON}],
        "activity": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}]
        },
        "agent": [
            {
                "type": {"coding": [{"system": PARTICIPANT, "code": "performer", "display": "Performer"}]},
                "who": who,
            }
        ],
        "entity": [
            {"role": "revision", "what": {"reference": f"{key}/_history/{before}"}}
            for key, before, _ in changed
        ],
    }


def _batch(
    svc: Services, context: RequestContext, res_type: str, after: int, size: int, write: bool
) -> tuple[int | None, int, int]:
    """One batch of `res_type` after rid `after`: (last rid or None when done, read, rewritten)."""

    def work(uow: UnitOfWork) -> tuple[int | None, int, int]:
        statement = (
            select(R.c.rid)
            .where(R.c.res_type == res_type, R.c.rid > after, R.c.deleted.is_(False))
            .order_by(R.c.rid)
            .limit(size)
        )
        rids = [row[0] for row in uow.connection.execute(statement)]
        changed: list[tuple[str, int, int]] = []
        for stored in uow.repository.current_many(rids):
            resource = stored.json()
            rewritten = master_data.normalized(resource)
            if rewritten is resource:
                continue
            if not write:
                changed.append((f"{res_type}/{stored.res_id}", stored.version_id, stored.version_id))
                continue
            result = svc.write_path.update(
                uow, res_type, stored.res_id, rewritten, if_match=stored.version_id
            )
            if result.changed:
                key = f"{res_type}/{stored.res_id}"
                changed.append((key, stored.version_id, result.stored.version_id))
        if changed and write:
            svc.write_path.create(uow, _provenance(uow, changed))
        return (rids[-1] if rids else None), len(rids), len(changed)

    return svc.write_path.run(context, work, write)


def normalize_all(
    svc: Services, context: RequestContext = CONTEXT, batch: int = 200, write: bool = True
) -> dict[str, Tally]:
    """Every stored master-data resource not in the current form written in it; what was read and
    rewritten (or, with `write` False, would be), by type."""
    tallies: dict[str, Tally] = {}
    for res_type in TYPES:
        tally = tallies.setdefault(res_type, Tally())
        after: int | None = 0
        while after is not None:
            after, read, rewritten = _batch(svc, context, res_type, after, batch, write)
            tally.read += read
            tally.rewritten += rewritten
    return tallies


@master_data_app.command("normalize")
def normalize(
    batch: Annotated[int, typer.Option(help="Resources per unit of work.", min=1, max=5000)] = 200,
    dry_run: Annotated[bool, typer.Option(help="Count what would be rewritten; write nothing.")] = False,
) -> None:
    """Rewrite stored master data in the current form (upgrade to issue 16, docs/operations.md): the
    municipality code once under StructureDefinition/municipality-code, each field's source event time in
    field-event-time; through the write path, with a Provenance per batch. Safe to run again."""
    svc = Services.build(Settings.from_env())
    try:
        tallies = normalize_all(svc, batch=batch, write=not dry_run)
    finally:
        svc.close()  # every audit record stored before the command ends
        svc.engine.dispose()
    verb = "would rewrite" if dry_run else "rewrote"
    for res_type, tally in tallies.items():
        console.print(f"{res_type}: read {tally.read}, {verb} {tally.rewritten}")
