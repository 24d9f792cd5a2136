"""What a full register export no longer lists: each such unit of its registers gets the tag
missing-from-register (never deleted), in the context of its source (register and owner).

The gateway itself (auth off, the CLI without `--client`) marks the whole register's units. A registered
client's export covers only the units of the owners its rows name and it is bound to (`REGISTER@owner`):
another owner's units are neither marked nor named in its answer, and an owner it names no row of is left
as it is."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from gateway.adapters import mapping as m
from gateway.adapters.binding import Bound, in_source
from gateway.adapters.device_register import to_fhir
from gateway.adapters.device_register.ledger import Ledger
from gateway.adapters.ids import SourceIds
from gateway.adapters.intake import entry, explain, found
from gateway.adapters.mapping import Found
from gateway.errors import FhirError, Issue
from gateway.fhir.transaction import process_bundle
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.search.dates import to_instant, utc_now
from gateway.security import sources
from gateway.services import Services


async def mark(svc: Services, context: RequestContext, bound: Bound, ledger: Ledger) -> list[Json]:
    """Mark what the export (`ledger`) lacks; one batch-response entry a unit marked (or refused)."""
    entries = []
    ids = SourceIds.of(svc.settings)
    for register, system in ledger.registers():
        owners = None
        if not bound.gateway:
            owners = {o for o in ledger.owners(system) if bound.admits(sources.device_register(register, o))}
            if not owners:
                continue
        for unit, owned_by in await run_in_threadpool(_unlisted, svc, context, ledger, system, owners):
            bundle = to_fhir.missing_bundle(unit, register, to_instant(utc_now()), ids)
            if bundle is None:
                continue
            source = sources.device_register(register, owned_by) if owned_by else _register(register)
            key = f"Device/{unit.res_id}"
            try:
                response = await process_bundle(svc, in_source(context, source), bundle, bodies=False)
            except FhirError as error:
                entries.append(entry(409 if error.status == 412 else error.status, explain(error, bundle)))
                continue
            location = response["entry"][0]["response"].get("location")
            message = f"{key} is not listed in this full export of {register}: tagged missing"
            entries.append(entry(200, [Issue("information", "informational", message, (key,))], location))
    return entries


def _register(register: str) -> str:
    """The source of a unit without a known owner (a stub an order made), marked by the gateway itself:
    the register alone."""
    return f"{sources.DEVICE_REGISTER}:{register.strip().upper()}"


def _unlisted(
    svc: Services, context: RequestContext, ledger: Ledger, system: str, owners: set[str] | None
) -> list[tuple[Found, str | None]]:
    """The register's units (a Device with an identifier in its system) of which the export lists none
    of their identifiers, with their owners' HSA-ids (None: no owner known); of `owners` only, unless
    None. Only those are read whole, so memory follows what is missing."""

    def work(uow: UnitOfWork) -> list[tuple[Found, str | None]]:
        missing = ledger.unlisted(system, uow.repository.claims_in("Device", system))
        units = [unit for stored in uow.repository.current_many(missing) if (unit := found(stored))]
        owned = _owners(uow, units)
        return [(unit, hsaid) for unit, hsaid in owned if owners is None or hsaid in owners]

    return svc.write_path.run(context, work, write=False)


def organization_id(reference: Json) -> str | None:
    """The id of the Organization a literal Reference names (`Organization/id`, absolute or versioned)."""
    target = str(reference.get("reference") or "").split("/_history/")[0]
    head, _, res_id = target.rpartition("/")
    return res_id if res_id and (head == "Organization" or head.endswith("/Organization")) else None


def _owners(uow: UnitOfWork, units: list[Found]) -> list[tuple[Found, str | None]]:
    """Each unit with its owner's HSA-id: the owner Reference's identifier, or its Organization's (read in
    one query for them all)."""
    wanted = {res_id for unit in units if (res_id := organization_id(unit.resource.get("owner") or {}))}
    hsaids: dict[str, str] = {}
    for (_, res_id), stored in uow.repository.current_of(("Organization", i) for i in sorted(wanted)).items():
        for identifier in stored.json().get("identifier", []):
            if identifier.get("system") == m.HSA and isinstance(identifier.get("value"), str):
                hsaids[res_id] = identifier["value"]
    owned: list[tuple[Found, str | None]] = []
    for unit in units:
        reference = unit.resource.get("owner") or {}
        identifier = reference.get("identifier") or {}
        hsaid = identifier.get("value") if identifier.get("system") == m.HSA else None
        res_id = organization_id(reference)
        owned.append((unit, hsaid or (hsaids.get(res_id) if res_id else None)))
    return owned
