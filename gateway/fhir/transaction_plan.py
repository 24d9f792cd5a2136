"""What a transaction decides before it writes (`Plan`): the id each POST and conditional PUT or PATCH
acts on, that no two entries change the same resource, and, as each entry is written, its references
rewritten: a `fullUrl` (`urn:uuid:…`) to `Type/id`, a conditional reference (`Patient?identifier=…`) to
its one match or to what another entry creates or updates under the same condition."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl
from uuid import uuid4

from gateway.errors import bad_request, not_found, precondition_failed
from gateway.fhir.bundle_entries import Entry
from gateway.model.types import SUPPORTED
from gateway.pipeline import UnitOfWork
from gateway.services import Services
from gateway.store.repository import Stored


@dataclass
class Plan:
    """What a transaction decided before writing: the id each entry acts on and what it stands for."""

    ids: dict[str, str] = field(default_factory=dict)  # fullUrl → Type/id
    targets: dict[int, str] = field(default_factory=dict)  # entry index → id it creates or changes
    matched: dict[int, Stored] = field(default_factory=dict)  # POST whose ifNoneExist found a resource
    aliases: dict[int, int] = field(default_factory=dict)  # POST whose ifNoneExist an earlier POST makes
    conditions: dict[tuple[str, tuple[tuple[str, str], ...]], str] = field(default_factory=dict)


def bundle_targets(plan: Plan) -> frozenset[tuple[str, str]]:
    """What the transaction's entries create or change under a `urn:uuid` fullUrl, as (Type, id)."""
    found = set()
    for full_url, target in plan.ids.items():
        res_type, _, res_id = target.partition("/")
        if full_url.startswith("urn:uuid:") and res_id:
            found.add((res_type, res_id))
    return frozenset(found)


def _condition(res_type: str, query: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return res_type, tuple(sorted(parse_qsl(query, keep_blank_values=True)))


def plan_entry(svc: Services, uow: UnitOfWork, e: Entry, plan: Plan) -> None:
    """Decide the id each POST and conditional PUT or PATCH will write to, before anything is written.
    Conditions match only what the client may see (`WritePath.match`)."""
    write_path = svc.write_path
    if e.method == "POST":
        if e.if_none_exist:
            found = write_path.match(uow, e.res_type, e.if_none_exist, "create")
            if len(found) > 1:
                raise precondition_failed(
                    f"ifNoneExist '{e.if_none_exist}' matches more than one {e.res_type}"
                )
            key = _condition(e.res_type, e.if_none_exist)
            if found:
                plan.matched[e.index] = found[0]
                plan.targets[e.index] = found[0].res_id
            elif key in plan.conditions:
                # An earlier entry of this Bundle creates what this one asks for: use it, as a replay would.
                first = next(i for i, t in plan.targets.items() if t == plan.conditions[key])
                plan.aliases[e.index] = first
                plan.targets[e.index] = plan.conditions[key]
            plan.targets.setdefault(e.index, str(uuid4()))
            plan.conditions.setdefault(key, plan.targets[e.index])
        else:
            plan.targets[e.index] = str(uuid4())
    elif e.method in ("PUT", "PATCH") and e.res_id is None:
        if not e.query:
            raise bad_request(f"{e.method} {e.url} needs an id or a search condition")
        found = write_path.match(uow, e.res_type, e.query, "update")
        if len(found) > 1:
            raise precondition_failed(f"The condition '{e.query}' matches more than one {e.res_type}")
        if not found and e.method == "PUT" and not write_path.may_create_by_put(uow.context, e.res_type):
            raise not_found(f"The condition '{e.query}' matches no {e.res_type} known here")
        if e.method == "PATCH":
            if not found:
                raise not_found(f"The condition '{e.query}' matches no {e.res_type}")
            plan.targets[e.index] = found[0].res_id
            return
        body_id = (e.resource or {}).get("id")
        if found and body_id is not None and body_id != found[0].res_id:
            raise bad_request(
                f"The resource id '{body_id}' differs from the matching {e.res_type}/{found[0].res_id}",
                "id",
            )
        plan.targets[e.index] = found[0].res_id if found else (body_id or str(uuid4()))
        plan.conditions.setdefault(_condition(e.res_type, e.query), plan.targets[e.index])


def check_overlap(entries: list[Entry], plan: Plan) -> None:
    """Two entries may not change the same resource (R4: identities in DELETE/POST/PUT/PATCH overlap)."""
    seen: dict[tuple[str, str], int] = {}
    for e in entries:
        if e.method in ("GET", "HEAD") or e.index in plan.matched or e.index in plan.aliases:
            continue
        target = plan.targets.get(e.index, e.res_id)
        if target is None:
            continue
        key = (e.res_type, target)
        if key in seen:
            raise bad_request(
                f"Bundle.entry[{e.index}] and Bundle.entry[{seen[key]}] both change "
                f"{e.res_type}/{target}; a transaction changes each resource once",
                f"Bundle.entry[{e.index}]",
            )
        seen[key] = e.index


def rewrite(svc: Services, uow: UnitOfWork, node: Any, plan: Plan) -> Any:
    """Replace references to a Bundle entry's fullUrl by Type/id, and resolve conditional references."""
    if isinstance(node, list):
        return [rewrite(svc, uow, item, plan) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: rewrite(svc, uow, value, plan) for key, value in node.items()}
    reference = result.get("reference")
    if isinstance(reference, str):
        if reference in plan.ids:
            result["reference"] = plan.ids[reference]
        elif reference.startswith(("urn:uuid:", "urn:oid:")):
            raise bad_request(f"The reference '{reference}' matches no fullUrl in the Bundle")
        elif "?" in reference and reference.split("?")[0] in SUPPORTED:
            result["reference"] = _resolve(svc, uow, reference, plan)
    return result


def _resolve(svc: Services, uow: UnitOfWork, reference: str, plan: Plan) -> str:
    """A conditional reference (`Patient?identifier=…`): exactly one match, in the database as the
    transaction has left it so far, or the resource another entry creates under the same condition."""
    res_type, _, query = reference.partition("?")
    found = svc.write_path.match(uow, res_type, query, "read")
    if len(found) > 1:
        raise precondition_failed(f"The conditional reference '{reference}' matches more than one {res_type}")
    if found:
        return f"{res_type}/{found[0].res_id}"
    planned = plan.conditions.get(_condition(res_type, query))
    if planned is None:
        raise precondition_failed(f"The conditional reference '{reference}' matches no {res_type}")
    return f"{res_type}/{planned}"
