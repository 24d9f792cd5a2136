"""What a resource says about who may see it, extracted at write time with its other index rows.

Two kinds of facts, both kept by the write path in the unit of work that stores the resource:
- access index rows: `idx_reference` rows under private parameters (not searchable: no SearchParameter
  has these codes), which the visibility conditions (gateway/store/visibility.py) join on:
  `_party` what it names anywhere (an Organization, PractitionerRole, HealthcareService or CareTeam,
  or an HSA-id by logical reference, `hsa`), `_patient` its patients, `_link` what it references
  through the link elements, `_recipient` whom it is addressed to, `_owner` who authored, requested or
  owns it;
- relationship facts (`Fact`), the care relations the policy's `relationships` rules make of it, which
  the write path stores in `care_relation` (gateway/store/relations.py) according to who wrote it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gateway.model.types import Json
from gateway.search.extract import parse_reference
from gateway.search.registry import Registry
from gateway.security.rules import Rules
from gateway.store.relations import HSA, Fact
from gateway.store.visibility import AGENT, AUDIT_EVENT, LINK, OWNER, PARTY, PATIENT, RECIPIENT

# The access rows a tombstone keeps, so a deleted resource stays as hidden (or as visible) as it was;
# what it linked to is no longer shared through it.
KEPT_ON_DELETE = frozenset({PARTY, PATIENT, RECIPIENT, OWNER, AGENT})
ACTORS = frozenset({"Organization", "PractitionerRole", "HealthcareService", "CareTeam"})
ADDRESSEES = frozenset({"Organization", "PractitionerRole", "Practitioner"})
OWNERS = frozenset({"Organization", "PractitionerRole", "HealthcareService"})
ID_LENGTH = 64  # idx_reference.target_id


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every Reference-like object (a dict with `reference` or `identifier`) under `node`."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str) or isinstance(node.get("identifier"), dict):
            yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


class AccessIndex:
    def __init__(self, rules: Rules, registry: Registry, base_url: str = "") -> None:
        self.rules = rules
        self.registry = registry
        self.bases = (base_url.rstrip("/"),) if base_url else ()

    # -- references -------------------------------------------------------------------------------------

    def local(self, value: str) -> tuple[str, str] | None:
        """A literal reference to a resource on this server as (Type, id); None for anything else (a
        contained `#id`, a URN, another server's URL)."""
        if not value or value.startswith("#"):
            return None
        key = parse_reference(value, self.bases)
        if key.server is not None or key.target_type is None or key.target_id is None:
            return None
        return key.target_type, key.target_id

    def named(self, node: Any, types: frozenset[str]) -> Iterator[tuple[str, str]]:
        """(Type, id) of the local references under `node` to these types, and (`hsa`, HSA-id) of its
        logical references by HSA-id."""
        for item in walk(node):
            reference = item.get("reference")
            if isinstance(reference, str):
                found = self.local(reference)
                if found is not None and found[0] in types:
                    yield found
            identifier = item.get("identifier")
            if isinstance(identifier, dict) and identifier.get("system") == self.rules.hsa_system:
                value = identifier.get("value")
                if isinstance(value, str) and value:
                    yield HSA, value

    def literal(self, node: Any) -> Iterator[tuple[str, str]]:
        """(Type, id) of every local literal reference under `node`."""
        for item in walk(node):
            reference = item.get("reference")
            found = self.local(reference) if isinstance(reference, str) else None
            if found is not None:
                yield found

    def literal_paths(self, node: Any, path: str) -> Iterator[tuple[str, str, tuple[str, str]]]:
        """(path, reference as written, (Type, id)) of every local literal reference under `node`, the
        path in the form OperationOutcome.issue.expression takes (`Task.input[0].valueReference`)."""
        if isinstance(node, dict):
            reference = node.get("reference")
            found = self.local(reference) if isinstance(reference, str) else None
            if found is not None and isinstance(reference, str):
                yield path, reference, found
            for key, value in node.items():
                yield from self.literal_paths(value, f"{path}.{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from self.literal_paths(value, f"{path}[{index}]")

    def patients(self, resource: Json) -> set[str]:
        """The ids of the Patients the resource is about (its patient elements); a Patient is itself."""
        if resource.get("resourceType") == "Patient":
            return {str(resource.get("id"))}
        return {res_id for _, res_id in self._patient_refs(resource)}

    # -- access index rows ------------------------------------------------------------------------------

    def rows(self, resource: Json) -> list[dict[str, Any]]:
        """The resource's access index rows (idx_reference rows without `rid`)."""
        res_type = str(resource["resourceType"])
        found: dict[tuple[str, str, str], None] = {}

        def add(param: str, targets: Iterator[tuple[str, str]]) -> None:
            for target_type, target_id in targets:
                if len(target_id) <= ID_LENGTH:
                    found[(param, target_type, target_id)] = None

        if res_type == AUDIT_EVENT:  # named by its agents only: what it records access to is not it
            add(AGENT, self.named([agent.get("who") for agent in resource.get("agent") or []], ACTORS))
        else:
            add(PARTY, self.named(resource, ACTORS))
            if res_type != "Patient":
                add(PATIENT, self._patient_refs(resource))
            for element in self.rules.link_elements:
                add(LINK, self.literal(resource.get(element)))
            addressed = self.rules.addressed_types.get(res_type)
            if addressed is not None:
                add(RECIPIENT, self.named(resource.get(addressed), ADDRESSEES))
            for element in self.rules.ownership_elements:
                add(OWNER, self.named(resource.get(element), OWNERS))
        return [
            {"res_type": res_type, "param": p, "target_type": t, "target_id": i, "url": None}
            for p, t, i in found
        ]

    def _patient_refs(self, resource: Json) -> Iterator[tuple[str, str]]:
        for element in self.rules.patient_elements:
            for res_type, res_id in self.literal(_top(resource.get(element))):
                if res_type == "Patient":
                    yield res_type, res_id

    # -- relationship facts -----------------------------------------------------------------------------

    def facts(self, resource: Json) -> list[Fact]:
        """The care relations the resource makes under the `relationships` rules (none for other types)."""
        rule = self.rules.relationship(str(resource.get("resourceType")))
        if rule is None:
            return []
        targets = self._param_targets(resource, rule.res_type, (rule.patient,), frozenset({"Patient"}))
        patients = sorted(target for target in targets if target[0] == "Patient")
        if not patients:
            return []
        params: tuple[str, ...] = rule.actor
        types = OWNERS
        if rule.via_param is not None and rule.via_type is not None:
            params, types = (rule.via_param,), frozenset({rule.via_type})
        ended = rule.ended(resource)
        found: dict[tuple[str, str, str], bool] = {}
        for param in params:
            referral = param in rule.referral
            for actor in self._param_targets(resource, rule.res_type, (param,), types):
                for patient in patients:
                    key = (actor[0], actor[1], patient[1])
                    found[key] = found.get(key, False) or referral
        return [Fact(t, i, p, ended, referral) for (t, i, p), referral in sorted(found.items())]

    def _param_targets(
        self, resource: Json, res_type: str, params: tuple[str, ...], types: frozenset[str]
    ) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for code in params:
            param = self.registry.get(res_type, code)
            if param is None:
                raise ValueError(f"access policy: {res_type} has no search parameter '{code}'")
            for value, _ in param.values(resource):
                found.update(self.named(value, types))
        return found


def _top(value: Any) -> Any:
    """An element's value as a list of its items (a single Reference, or a list of them)."""
    return [value] if isinstance(value, dict) else value if isinstance(value, list) else []
