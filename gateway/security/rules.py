"""The access policy's rules: policy/access.yaml (GATEWAY_ACCESS_POLICY names another file), parsed and
checked at start-up. What each rule means is in docs/security.md ("Organisation policy")."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gateway.model.types import Json
from gateway.security.risk_confirmers import RiskConfirmers


@dataclass(frozen=True)
class Relationship:
    """A resource of `res_type` relates the actors it names in the `actor` search parameters (or, `via`
    a CareTeam, that team's participants) to the Patient in its `patient` search parameter. The relation
    ends when its `ends_element` takes one of `ends_values` (a Task completed), or when the resource stops
    naming the actor or the patient (a Device returned), and lapses `Rules.lasts_days` after. A client
    that is not trusted relates another unit by writing one only through its `referral` parameters (the
    owner of a Task it addresses to that unit)."""

    res_type: str
    actor: tuple[str, ...]
    patient: str
    via_param: str | None = None
    via_type: str | None = None
    ends_element: str = "status"
    ends_values: frozenset[str] = frozenset()
    referral: tuple[str, ...] = ()

    def ended(self, resource: Json) -> bool:
        return resource.get(self.ends_element) in self.ends_values


@dataclass(frozen=True)
class RestrictedOwner:
    element: str
    may_change: frozenset[str]
    may_append: frozenset[str] = frozenset()
    # Elements the owner may point at another unit of its own organisation (a Task's `owner`).
    may_reassign: frozenset[str] = frozenset()


@dataclass(frozen=True)
class TeamPlan:
    """A plan (CarePlan) its care team, and the unit called to it, may work on: these elements only."""

    may_change: frozenset[str]
    called_by: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class GatewayTasks:
    """Tasks the gateway sets up (by their code): what a client that is not exempt may change in one."""

    codes: frozenset[tuple[str, str]]
    may_change: frozenset[str]
    may_append: frozenset[str] = frozenset()
    may_reassign: frozenset[str] = frozenset()

    def covers(self, resource: Json | None) -> bool:
        if resource is None or resource.get("resourceType") != "Task":
            return False
        code = resource.get("code")
        codings = code.get("coding") if isinstance(code, dict) else None
        return any(coding(c) in self.codes for c in (codings if isinstance(codings, list) else []))


@dataclass(frozen=True)
class ClientHandovers:
    """Handovers a unit opens itself (policy `client_handovers`): Tasks with these codes a client that is
    not exempt may create, for a patient related to it through what a trusted writer wrote of one of
    `related_through`, owned by one of `receivers` a trusted writer wrote, giving only `may_give`."""

    codes: frozenset[tuple[str, str]] = frozenset()
    statuses: frozenset[str] = frozenset()
    related_through: tuple[str, ...] = ()
    receivers: frozenset[str] = frozenset()
    may_give: frozenset[str] = frozenset()

    def covers(self, resource: Json, gateway_codes: frozenset[tuple[str, str]]) -> bool:
        """Whether the Task's codes that are the gateway's are all ones a unit may open a Task with."""
        code = resource.get("code")
        codings = code.get("coding") if isinstance(code, dict) else None
        given = {coding(c) for c in (codings if isinstance(codings, list) else [])} & gateway_codes
        return bool(given) and given <= self.codes


@dataclass(frozen=True)
class Rules:
    """policy/access.yaml, parsed and checked."""

    hsa_system: str
    exempt_client_prefixes: tuple[str, ...]
    exempt_clients: frozenset[str]
    public_types: frozenset[str]
    relationships: tuple[Relationship, ...]
    lasts_days: int
    patient_elements: tuple[str, ...]
    link_elements: tuple[str, ...]
    patient_wide_types: frozenset[str]
    addressed_types: dict[str, str]
    ownership_elements: tuple[str, ...]
    restricted_owners: dict[str, RestrictedOwner]
    gateway_tasks: GatewayTasks
    team_plans: dict[str, TeamPlan]
    client_handovers: ClientHandovers
    protected_labels: frozenset[tuple[str, str]]
    masked_elements: tuple[str, ...]
    masked_parameters: frozenset[str]
    unmasked_clients: frozenset[str]
    unmasked_organizations: frozenset[str]
    identity_systems: frozenset[str]
    risk_confirmers: RiskConfirmers = field(default_factory=RiskConfirmers)

    def relationship(self, res_type: str) -> Relationship | None:
        return next((r for r in self.relationships if r.res_type == res_type), None)

    @classmethod
    def load(cls, path: Path) -> Rules:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the access policy must be a mapping")
        protected = data.get("protected_identity") or {}
        tasks = data.get("gateway_tasks") or {}
        handovers = data.get("client_handovers") or {}
        built = cls(
            hsa_system=str(data["hsa_system"]),
            exempt_client_prefixes=tuple(data.get("exempt_client_prefixes") or ()),
            exempt_clients=frozenset(data.get("exempt_clients") or ()),
            public_types=frozenset(data.get("public_types") or ()),
            relationships=tuple(_relationship(item) for item in data["relationships"]),
            lasts_days=int(data.get("relationship_lasts_days", 90)),
            patient_elements=tuple(data.get("patient_elements") or ()),
            link_elements=tuple(data.get("link_elements") or ()),
            patient_wide_types=frozenset(data.get("patient_wide_types") or ()),
            addressed_types={str(k): str(v) for k, v in (data.get("addressed_types") or {}).items()},
            ownership_elements=tuple(data.get("ownership_elements") or ()),
            restricted_owners={
                str(k): RestrictedOwner(
                    str(v["element"]),
                    frozenset(v["may_change"]),
                    frozenset(v.get("may_append") or ()),
                    frozenset(v.get("may_reassign") or ()),
                )
                for k, v in (data.get("restricted_owners") or {}).items()
            },
            gateway_tasks=GatewayTasks(
                frozenset((str(x["system"]), str(x["code"])) for x in tasks.get("codes") or ()),
                frozenset(str(e) for e in tasks.get("may_change") or ()),
                frozenset(str(e) for e in tasks.get("may_append") or ()),
                frozenset(str(e) for e in tasks.get("may_reassign") or ()),
            ),
            team_plans={
                str(k): TeamPlan(
                    frozenset(str(e) for e in v["may_change"]),
                    frozenset((str(x["system"]), str(x["code"])) for x in v.get("called_by") or ()),
                )
                for k, v in (data.get("team_plans") or {}).items()
            },
            client_handovers=ClientHandovers(
                frozenset((str(x["system"]), str(x["code"])) for x in handovers.get("codes") or ()),
                frozenset(str(s) for s in handovers.get("statuses") or ()),
                tuple(str(t) for t in handovers.get("related_through") or ()),
                frozenset(str(t) for t in handovers.get("receivers") or ()),
                frozenset(str(e) for e in handovers.get("may_give") or ()),
            ),
            protected_labels=frozenset(
                (str(x["system"]), str(x["code"])) for x in protected.get("labels") or ()
            ),
            masked_elements=tuple(protected.get("masked_elements") or ()),
            masked_parameters=frozenset(protected.get("masked_parameters") or ()),
            unmasked_clients=frozenset(protected.get("allow_clients") or ()),
            unmasked_organizations=frozenset(protected.get("allow_organizations") or ()),
            identity_systems=frozenset(str(s) for s in data.get("identity_systems") or ()),
            risk_confirmers=RiskConfirmers.parse(data.get("risk_confirmers")),
        )
        opened = built.client_handovers
        if not opened.codes <= built.gateway_tasks.codes:
            raise ValueError(f"{path}: client_handovers.codes must be codes of gateway_tasks")
        for res_type in opened.related_through:
            if built.relationship(res_type) is None:
                raise ValueError(
                    f"{path}: client_handovers.related_through: no relationship rule for {res_type}"
                )
        return built


def _relationship(item: dict[str, Any]) -> Relationship:
    via = item.get("via")
    actor = via["actor"] if via else item["actor"]
    ends = item.get("ends") or {}
    if len(ends) > 1:
        raise ValueError(f"relationship {item['type']}: `ends` names one element")
    element, values = next(iter(ends.items())) if ends else ("status", [])
    return Relationship(
        str(item["type"]),
        tuple(str(a) for a in actor),
        str(item["patient"]),
        str(via["param"]) if via else None,
        str(via["type"]) if via else None,
        str(element),
        frozenset(str(v) for v in values),
        tuple(str(r) for r in item.get("referral") or ()),
    )


def coding(label: Any) -> tuple[Any, Any]:
    return (label.get("system"), label.get("code")) if isinstance(label, dict) else (None, None)
