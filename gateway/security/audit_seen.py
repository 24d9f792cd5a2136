"""An AuditEvent as an organisation's audit reader sees it (docs/security.md, Audit)."""

from __future__ import annotations

from sqlalchemy import Engine

from gateway.model.types import Json
from gateway.security.access_index import AccessIndex
from gateway.store.visibility import Visibility, visible_keys


def audit_as_seen(
    access: AccessIndex, engine: Engine, visibility: Visibility, organization: str | None, event: Json
) -> Json:
    """The network address only of its own clients' accesses (`organization`: the reader's HSA-id), and
    only the entities (resources, patients) it may read itself (`visibility`); the other party's client
    and organisation stay."""
    shown = dict(event)
    agents = [a for a in event.get("agent") or [] if isinstance(a, dict)]
    own = bool(organization) and any(
        access.rules.hsa_system == _identifier(a).get("system")
        and _identifier(a).get("value") == organization
        for a in agents
    )
    if not own:
        shown["agent"] = [{k: v for k, v in agent.items() if k != "network"} for agent in agents]
    entities = [e for e in event.get("entity") or [] if isinstance(e, dict)]
    keys: dict[int, tuple[str, str]] = {}
    for entity in entities:
        what = entity.get("what")
        reference = what.get("reference") if isinstance(what, dict) else None
        key = access.local(reference) if isinstance(reference, str) else None
        if key is not None:
            keys[id(entity)] = key
    if keys:
        with engine.connect() as connection:
            seen = visible_keys(connection, visibility, set(keys.values()), deleted=True)
        shown["entity"] = [e for e in entities if keys.get(id(e), ("", "")) in seen or id(e) not in keys]
    return shown


def _identifier(agent: Json) -> Json:
    who = agent.get("who")
    identifier = who.get("identifier") if isinstance(who, dict) else None
    return identifier if isinstance(identifier, dict) else {}
