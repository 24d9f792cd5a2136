"""Workflow rules and reactions for orders (Beställningsportalen), at the write path's hook points.

Rules (in the write's transaction, so they hold under concurrency, whoever writes):
- `source_versions`: a Provenance that records a source record's version (extension source-version)
  never goes back to an older version (409), and recording the same version again keeps the first
  `recorded`, so a replay that races its twin changes nothing.
- `source_records`: a raw source record kept as a Binary (tag source-record) is immutable: the same
  version sent with other content is refused (409); the same content in other bytes changes nothing.

Reaction:
- `confirm_prescriber`: a Task `confirm-prescriber` completed by its owner (or an exempt client) with an
  output valueReference to one of the owner's PractitionerRoles makes that role the requester of the
  order's DeviceRequests still tagged `unconfirmed-prescriber`, removes the tag, and records a Provenance
  of the change (the Task's owner verified, the prescriber is the author, the gateway performed it on
  behalf of the client that completed the Task). A role of another organisation is 422.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import quote
from uuid import uuid4

from gateway.errors import conflict, unprocessable
from gateway.hooks import Reaction, RequestContext, Rule
from gateway.model.types import Json, loads
from gateway.pipeline import UnitOfWork, WritePath
from gateway.search.dates import to_instant
from gateway.store.repository import Stored

BASE = "https://fhir.home-device-gateway.se"
TAGS = f"{BASE}/CodeSystem/adapter-tags"
TASK_CODES = f"{BASE}/CodeSystem/task-code"
SOURCE_VERSION = f"{BASE}/StructureDefinition/source-version"
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
CLIENT_SYSTEM = "urn:gateway:client-id"  # as in the AuditEvents (gateway.security.audit)


def _version(resource: Json | None) -> int | None:
    for extension in (resource or {}).get("extension", []):
        if extension.get("url") == SOURCE_VERSION and isinstance(extension.get("valueInteger"), int):
            return int(extension["valueInteger"])
    return None


def _tagged(resource: Json | None, code: str) -> bool:
    tags = ((resource or {}).get("meta") or {}).get("tag", [])
    return any(tag.get("system") == TAGS and tag.get("code") == code for tag in tags)


def source_versions(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
    if resource.get("resourceType") != "Provenance" or action != "update" or current is None:
        return resource
    new, held = _version(resource), _version(current)
    if new is None or held is None:
        return resource
    if new < held:
        raise conflict(
            f"Version {new} of the source record is older than the stored version {held}", "version"
        )
    if new == held and "recorded" in current:
        return {**resource, "recorded": current["recorded"]}
    return resource


def _decoded(resource: Json) -> Any:
    try:
        return loads(base64.b64decode(resource.get("data", ""), validate=True))
    except (ValueError, binascii.Error):
        return resource.get("data")


def source_records(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
    if resource.get("resourceType") != "Binary" or current is None or not _tagged(current, "source-record"):
        return resource
    if action == "delete":
        return resource
    if _decoded(resource) != _decoded(current):
        raise conflict("This version of the source record is stored with different content", "version")
    return current


def _order_requests(uow: UnitOfWork, write_path: WritePath, task: Json) -> list[Stored]:
    group = task.get("groupIdentifier") or {}
    found: dict[str, Stored] = {}
    if group.get("system") and group.get("value"):
        query = "group-identifier=" + quote(f"{group['system']}|{group['value']}", safe=":/|")
        for stored in write_path.searcher.match(uow.connection, "DeviceRequest", query, limit=10_000):
            found[stored.res_id] = stored
    for ref in [task.get("focus"), *task.get("basedOn", [])]:
        reference = str((ref or {}).get("reference", ""))
        if reference.startswith("DeviceRequest/"):
            held = uow.repository.current("DeviceRequest", reference.split("/")[1])
            if held is not None and not held.deleted:
                found.setdefault(held.res_id, held)
    return list(found.values())


def _confirmed(task: Json) -> Json | None:
    for output in task.get("output", []):
        ref = output.get("valueReference") or {}
        if str(ref.get("reference", "")).startswith("PractitionerRole/"):
            return {k: v for k, v in ref.items() if k in ("reference", "display")}
    return None


def _client(client_id: str, display: str | None = None) -> Json:
    """A registered client (or the gateway itself) as a logical reference to a Device: a system."""
    return {
        "type": "Device",
        "identifier": {"system": CLIENT_SYSTEM, "value": client_id},
        "display": display or client_id,
    }


def gateway_agent(context: RequestContext) -> Json:
    """The Provenance agent of a reaction's write: the gateway performed it, on behalf of the client
    whose write triggered it."""
    return {
        "type": {"coding": [{"system": PARTICIPANT, "code": "performer", "display": "Performer"}]},
        "who": _client(context.principal.client_id, "fhir-home-device-gateway"),
        "onBehalfOf": _client(context.requestor.client_id),
    }


def gateway_agent_for(context: RequestContext, organisation: Json) -> Json:
    """The Provenance agent of a scheduled job's write: the gateway performed it, on behalf of the
    Organization whose plan it is (gateway/schedule)."""
    return {
        "type": {"coding": [{"system": PARTICIPANT, "code": "performer", "display": "Performer"}]},
        "who": _client(context.principal.client_id, "fhir-home-device-gateway"),
        "onBehalfOf": organisation,
    }


def _just_completed_confirmation(stored: Stored, previous: Json | None) -> Json | None:
    """The confirm-prescriber Task that this write completed, if it is one."""
    if stored.res_type != "Task" or stored.deleted:
        return None
    task = stored.json()
    codes = (task.get("code") or {}).get("coding", [])
    if not any(c.get("system") == TASK_CODES and c.get("code") == "confirm-prescriber" for c in codes):
        return None
    if task.get("status") != "completed" or (previous or {}).get("status") == "completed":
        return None
    return task


def _local(reference: Any) -> str:
    """`Type/id` of a literal reference (relative, absolute or versioned), else ""."""
    parts = [p for p in str(reference or "").split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return "/".join(parts[-2:]) if len(parts) >= 2 else ""


def _of_the_owner(uow: UnitOfWork, task: Json, prescriber: Json) -> bool:
    """Whether the confirmed PractitionerRole is one of the Task owner's (the ordering unit's) people."""
    owner = _local((task.get("owner") or {}).get("reference"))
    role_id = _local(prescriber.get("reference")).removeprefix("PractitionerRole/")
    role = uow.repository.current("PractitionerRole", role_id) if role_id else None
    if not owner or role is None or role.deleted:
        return False
    return _local((role.json().get("organization") or {}).get("reference")) == owner


def _unconfirmed(uow: UnitOfWork, write_path: WritePath, task: Json) -> list[Stored]:
    """The order's DeviceRequests that still wait for their prescriber (tagged unconfirmed-prescriber)."""
    return [r for r in _order_requests(uow, write_path, task) if _tagged(r.json(), "unconfirmed-prescriber")]


def confirm_prescriber(uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Json | None) -> None:
    """Acts only on the answer of the Task's owner (or of an exempt client): the Task itself was set up by
    the gateway, since only its writers may give a Task this code (policy `gateway_tasks`), and only they
    may change its focus, basedOn and groupIdentifier. The confirmed role must be one of the owner's."""
    task = _just_completed_confirmation(stored, previous)
    prescriber = _confirmed(task) if task is not None else None
    if task is None or prescriber is None:
        return
    if not write_path.hooks.policy.acts_for(uow.context, task.get("owner")):
        return  # not the owner's answer: the gateway does nothing for it
    requests = _unconfirmed(uow, write_path, task)
    if not requests:
        return
    if not _of_the_owner(uow, task, prescriber):
        raise unprocessable(
            "The confirmed prescriber must be a PractitionerRole of the organisation that owns this Task",
            "Task.output",
        )
    changed = []
    for request in requests:
        resource = request.json()
        meta = dict(resource.get("meta") or {})
        tags = [
            t
            for t in meta.get("tag", [])
            if not (t.get("system") == TAGS and t.get("code") == "unconfirmed-prescriber")
        ]
        if tags:
            meta["tag"] = tags
        else:
            meta.pop("tag", None)
        updated = {**resource, "meta": meta, "requester": prescriber}
        result = write_path.update(uow, "DeviceRequest", request.res_id, updated)
        if result.changed:
            changed.append(f"DeviceRequest/{request.res_id}/_history/{result.stored.version_id}")
    if not changed:
        return
    agents: list[Json] = [
        {
            "type": {"coding": [{"system": PARTICIPANT, "code": "verifier", "display": "Verifier"}]},
            "who": task.get("owner") or {"display": uow.context.requestor.client_id},
        },
        {
            "type": {"coding": [{"system": PARTICIPANT, "code": "author", "display": "Author"}]},
            "who": prescriber,
        },
        gateway_agent(uow.context),
    ]
    provenance = {
        "resourceType": "Provenance",
        "id": str(uuid4()),
        "target": [{"reference": ref} for ref in changed],
        "recorded": to_instant(uow.now),
        "reason": [{"text": "The prescriber was confirmed"}],
        "activity": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}]
        },
        "agent": agents,
        "entity": [
            {"role": "source", "what": {"reference": f"Task/{stored.res_id}/_history/{stored.version_id}"}}
        ],
    }
    write_path.create(uow, provenance)


RULES: list[Rule] = [source_versions, source_records]
REACTIONS: list[Reaction] = [confirm_prescriber]
