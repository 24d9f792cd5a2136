"""The organisation policy: which patients, and which of their resources, a client's organisation may see
and change. Its rules are data (policy/access.yaml, documented in docs/security.md); this module applies
them. It is composed with the SMART ScopePolicy (`AllOf`): both must allow.

An organisation is "it" when an Organization carries the client's HSA-id as identifier; its PractitionerRoles
(organization = it) are its people. Its related patients are computed with a few indexed queries on the
reference and token index tables (`Relations`), through the unit of work's own connection (so what its
transaction wrote so far counts: a Task an earlier Bundle entry made), cached in the RequestContext for
that unit of work and dropped after each authorized write, since a write can change them. Everything else
is decided on the resource's JSON in memory.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Connection, Engine, and_, false, or_, select
from sqlalchemy.sql.elements import ColumnElement

from gateway.errors import forbidden, not_found
from gateway.hooks import AccessPolicy, RequestContext, acts_for, keep_hidden
from gateway.model.types import Json
from gateway.search.parameters import MaskedSort
from gateway.store.tables import ReferenceIndex, Resource, TokenIndex

CACHE_KEY = "gateway.security.organisation"
PROTECTED_KEY = "gateway.security.organisation.protected"
NEW_PATIENTS_KEY = "gateway.security.organisation.new-patients"
REDACTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"}

Ref = tuple[str, str]


@dataclass(frozen=True)
class Relationship:
    res_type: str
    actor: tuple[str, ...]
    patient: str
    via_param: str | None = None
    via_type: str | None = None


@dataclass(frozen=True)
class RestrictedOwner:
    element: str
    may_change: frozenset[str]


@dataclass(frozen=True)
class GatewayTasks:
    """Tasks the gateway sets up (by their code): what a client that is not exempt may change in one."""

    codes: frozenset[tuple[str, str]]
    may_change: frozenset[str]

    def covers(self, resource: Json | None) -> bool:
        if resource is None or resource.get("resourceType") != "Task":
            return False
        code = resource.get("code")
        codings = code.get("coding") if isinstance(code, dict) else None
        return any(_coding(c) in self.codes for c in (codings if isinstance(codings, list) else []))


@dataclass(frozen=True)
class Rules:
    """policy/access.yaml, parsed and checked."""

    hsa_system: str
    exempt_client_prefixes: tuple[str, ...]
    exempt_clients: frozenset[str]
    public_types: frozenset[str]
    relationships: tuple[Relationship, ...]
    patient_elements: tuple[str, ...]
    link_elements: tuple[str, ...]
    patient_wide_types: frozenset[str]
    addressed_types: dict[str, str]
    ownership_elements: tuple[str, ...]
    restricted_owners: dict[str, RestrictedOwner]
    gateway_tasks: GatewayTasks
    protected_labels: frozenset[tuple[str, str]]
    masked_elements: tuple[str, ...]
    masked_parameters: frozenset[str]
    unmasked_clients: frozenset[str]
    unmasked_organizations: frozenset[str]

    @classmethod
    def load(cls, path: Path) -> Rules:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the access policy must be a mapping")
        relationships = []
        for item in data["relationships"]:
            via = item.get("via")
            actor = via["actor"] if via else item["actor"]
            relationships.append(
                Relationship(
                    str(item["type"]),
                    tuple(str(a) for a in actor),
                    str(item["patient"]),
                    str(via["param"]) if via else None,
                    str(via["type"]) if via else None,
                )
            )
        protected = data.get("protected_identity") or {}
        tasks = data.get("gateway_tasks") or {}
        return cls(
            hsa_system=str(data["hsa_system"]),
            exempt_client_prefixes=tuple(data.get("exempt_client_prefixes") or ()),
            exempt_clients=frozenset(data.get("exempt_clients") or ()),
            public_types=frozenset(data.get("public_types") or ()),
            relationships=tuple(relationships),
            patient_elements=tuple(data.get("patient_elements") or ()),
            link_elements=tuple(data.get("link_elements") or ()),
            patient_wide_types=frozenset(data.get("patient_wide_types") or ()),
            addressed_types={str(k): str(v) for k, v in (data.get("addressed_types") or {}).items()},
            ownership_elements=tuple(data.get("ownership_elements") or ()),
            restricted_owners={
                str(k): RestrictedOwner(str(v["element"]), frozenset(v["may_change"]))
                for k, v in (data.get("restricted_owners") or {}).items()
            },
            gateway_tasks=GatewayTasks(
                frozenset((str(x["system"]), str(x["code"])) for x in tasks.get("codes") or ()),
                frozenset(str(e) for e in tasks.get("may_change") or ()),
            ),
            protected_labels=frozenset(
                (str(x["system"]), str(x["code"])) for x in protected.get("labels") or ()
            ),
            masked_elements=tuple(protected.get("masked_elements") or ()),
            masked_parameters=frozenset(protected.get("masked_parameters") or ()),
            unmasked_clients=frozenset(protected.get("allow_clients") or ()),
            unmasked_organizations=frozenset(protected.get("allow_organizations") or ()),
        )


# -- references in a resource ---------------------------------------------------------------------------


def parse_reference(value: str) -> Ref | None:
    """`Type/id`, `Type/id/_history/n` or an absolute URL ending so → (Type, id)."""
    parts = [p for p in value.split("?", maxsplit=1)[0].split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-2][:1].isupper():
        return None
    return parts[-2], parts[-1]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every Reference-like object (a dict with `reference` or `identifier`) under `node`."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str) or isinstance(node.get("identifier"), dict):
            yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def references(node: Any) -> Iterator[Ref]:
    for item in _walk(node):
        value = item.get("reference")
        if isinstance(value, str):
            found = parse_reference(value)
            if found is not None:
                yield found


def _hsa_identifiers(node: Any, system: str) -> Iterator[str]:
    """HSA-ids of logical references (Reference.identifier) under `node`."""
    for item in _walk(node):
        identifier = item.get("identifier")
        if isinstance(identifier, dict) and identifier.get("system") == system:
            value = identifier.get("value")
            if isinstance(value, str):
                yield value


# -- the organisation's relationships, per request ------------------------------------------------------


@dataclass
class Relations:
    """What one organisation is, and whom it is related to, as found in the database for this request."""

    hsa: str
    organizations: frozenset[str]
    roles: frozenset[str]
    practitioners: frozenset[str]
    patients: frozenset[str]
    # Groups it is in (a CareTeam with it as participant): what names them names it too.
    groups: frozenset[Ref] = frozenset()
    _linked: set[Ref] | None = field(default=None, repr=False)

    @property
    def actors(self) -> frozenset[Ref]:
        return frozenset(
            {("Organization", i) for i in self.organizations} | {("PractitionerRole", i) for i in self.roles}
        )

    @property
    def named(self) -> frozenset[Ref]:
        """What, referenced, names the organisation: itself, its people, its groups."""
        return self.actors | self.groups


REF = ReferenceIndex.__table__
TOKEN = TokenIndex.__table__
RESOURCE = Resource.__table__


def _actor_condition(ref: Any, organizations: Iterable[str], roles: Iterable[str]) -> ColumnElement[bool]:
    orgs, people = sorted(organizations), sorted(roles)
    parts: list[ColumnElement[bool]] = []
    if orgs:
        parts.append(and_(ref.c.target_type == "Organization", ref.c.target_id.in_(orgs)))
    if people:
        parts.append(and_(ref.c.target_type == "PractitionerRole", ref.c.target_id.in_(people)))
    return or_(*parts) if parts else false()


class OrganisationPolicy:
    def __init__(
        self,
        rules: Rules,
        engine: Engine,
        region_clients: Iterable[str] = (),
        unmasked_clients: Iterable[str] = (),
    ) -> None:
        self.rules = rules
        self.engine = engine
        self.region_clients = frozenset(region_clients)
        self.unmasked_clients = rules.unmasked_clients | frozenset(unmasked_clients)

    # -- who is exempt ------------------------------------------------------------------------------

    def exempt(self, context: RequestContext) -> bool:
        """The gateway's own writes (workflow reactions, on behalf of a client), the gateway's internal
        clients (`adapter:…`, `cli`) and the region's clients are not restricted by organisation."""
        if context.on_behalf_of is not None:
            return True
        client = context.principal.client_id
        return (
            client in self.rules.exempt_clients
            or client in self.region_clients
            or client.startswith(self.rules.exempt_client_prefixes)
        )

    # -- relationships -------------------------------------------------------------------------------

    @contextmanager
    def _connection(self, context: RequestContext) -> Iterator[Connection]:
        """The unit of work's connection, so the queries see what its transaction has written so far (a
        Task an earlier Bundle entry made); a connection of its own outside a unit of work."""
        current = context.connection
        if current is not None and not current.closed:
            yield current
            return
        with self.engine.connect() as connection:
            yield connection

    def _cached(self, context: RequestContext, key: str) -> object:
        """A memo of this request, if made in the unit of work running now: another one (a batch
        entry's, a re-run after a conflict) may not have kept the writes that memo saw."""
        cached = context.cache.get(key)
        if isinstance(cached, tuple) and cached[0] is context.connection:
            return cached[1]
        return None

    def relations(self, context: RequestContext) -> Relations:
        cached = self._cached(context, CACHE_KEY)
        if isinstance(cached, Relations):
            return cached
        with self._connection(context) as connection:
            found = self._compute(connection, context.principal.organization or "")
        context.cache[CACHE_KEY] = (context.connection, found)
        return found

    def _compute(self, connection: Connection, hsa: str) -> Relations:
        if not hsa:
            return Relations(hsa, frozenset(), frozenset(), frozenset(), frozenset())
        organizations = frozenset(
            connection.execute(
                select(RESOURCE.c.res_id)
                .join(TOKEN, TOKEN.c.rid == RESOURCE.c.rid)
                .where(
                    TOKEN.c.res_type == "Organization",
                    TOKEN.c.param == "identifier",
                    TOKEN.c.code == hsa,
                    TOKEN.c.system == self.rules.hsa_system,
                )
            ).scalars()
        )
        if not organizations:
            return Relations(hsa, frozenset(), frozenset(), frozenset(), frozenset())
        role = REF.alias("role")
        roles = {
            rid: res_id
            for rid, res_id in connection.execute(
                select(RESOURCE.c.rid, RESOURCE.c.res_id)
                .join(role, role.c.rid == RESOURCE.c.rid)
                .where(
                    role.c.res_type == "PractitionerRole",
                    role.c.param == "organization",
                    role.c.target_type == "Organization",
                    role.c.target_id.in_(sorted(organizations)),
                )
            )
        }
        practitioners: frozenset[str] = frozenset()
        if roles:
            practitioners = frozenset(
                connection.execute(
                    select(REF.c.target_id).where(
                        REF.c.rid.in_(sorted(roles)),
                        REF.c.param == "practitioner",
                        REF.c.target_type == "Practitioner",
                    )
                ).scalars()
            )
        patients = self._patients(connection, organizations, frozenset(roles.values()))
        groups = self._groups(connection, organizations, frozenset(roles.values()))
        return Relations(hsa, organizations, frozenset(roles.values()), practitioners, patients, groups)

    def _groups(
        self, connection: Any, organizations: frozenset[str], roles: frozenset[str]
    ) -> frozenset[Ref]:
        found: set[Ref] = set()
        for rule in self.rules.relationships:
            if rule.via_type is None:
                continue
            member = REF.alias("member")
            query = (
                select(RESOURCE.c.res_id)
                .join(member, member.c.rid == RESOURCE.c.rid)
                .where(
                    member.c.res_type == rule.via_type,
                    member.c.param.in_(rule.actor),
                    _actor_condition(member, organizations, roles),
                )
            )
            found.update((rule.via_type, str(res_id)) for res_id in connection.execute(query).scalars())
        return frozenset(found)

    def _patients(
        self, connection: Any, organizations: frozenset[str], roles: frozenset[str]
    ) -> frozenset[str]:
        queries = []
        for rule in self.rules.relationships:
            actor, patient = REF.alias("actor"), REF.alias("patient")
            if rule.via_param is None:
                queries.append(
                    select(patient.c.target_id)
                    .select_from(actor)
                    .join(patient, patient.c.rid == actor.c.rid)
                    .where(
                        actor.c.res_type == rule.res_type,
                        actor.c.param.in_(rule.actor),
                        _actor_condition(actor, organizations, roles),
                        patient.c.param == rule.patient,
                        patient.c.target_type == "Patient",
                    )
                )
                continue
            # e.g. CarePlan.care-team → a CareTeam whose participant is the organisation or its people
            team, link = RESOURCE.alias("team"), REF.alias("link")
            queries.append(
                select(patient.c.target_id)
                .select_from(actor)
                .join(team, team.c.rid == actor.c.rid)
                .join(
                    link,
                    and_(
                        link.c.res_type == rule.res_type,
                        link.c.param == rule.via_param,
                        link.c.target_type == rule.via_type,
                        link.c.target_id == team.c.res_id,
                    ),
                )
                .join(patient, patient.c.rid == link.c.rid)
                .where(
                    actor.c.res_type == rule.via_type,
                    actor.c.param.in_(rule.actor),
                    _actor_condition(actor, organizations, roles),
                    patient.c.param == rule.patient,
                    patient.c.target_type == "Patient",
                )
            )
        found: set[str] = set()
        for query in queries:
            found.update(str(value) for value in connection.execute(query).scalars() if value)
        return frozenset(found)

    def linked(self, context: RequestContext, relations: Relations) -> set[Ref]:
        """What the resources naming the organisation (for its patients, or for no patient) reference
        through the link elements: one query, on first need in the request."""
        if relations._linked is not None:
            return relations._linked
        linked: set[Ref] = set()
        if relations.organizations:
            naming = select(REF.c.rid).where(
                or_(
                    _actor_condition(REF, relations.organizations, relations.roles),
                    *(
                        and_(REF.c.target_type == t, REF.c.target_id == i)
                        for t, i in sorted(relations.groups)
                    ),
                )
            )
            with self._connection(context) as connection:
                rows = connection.execute(
                    select(RESOURCE.c.content).where(
                        RESOURCE.c.rid.in_(naming), RESOURCE.c.deleted == false()
                    )
                ).scalars()
                for content in rows:
                    resource = _json(content)
                    patients = self.patients_of(resource)
                    if patients and not patients & relations.patients:
                        continue
                    for element in self.rules.link_elements:
                        linked.update(references(resource.get(element)))
        relations._linked = linked
        return linked

    # -- a resource, in memory -------------------------------------------------------------------------

    def patients_of(self, resource: Json) -> set[str]:
        if resource.get("resourceType") == "Patient":
            return {str(resource.get("id"))}
        found: set[str] = set()
        for element in self.rules.patient_elements:
            value = resource.get(element)
            if isinstance(value, dict):
                value = [value]
            for item in value if isinstance(value, list) else []:
                if isinstance(item, dict) and isinstance(item.get("reference"), str):
                    ref = parse_reference(item["reference"])
                    if ref is not None and ref[0] == "Patient":
                        found.add(ref[1])
        return found

    def names(self, relations: Relations, node: Any, people: bool = False, groups: bool = False) -> bool:
        """Whether `node` references the organisation or its PractitionerRoles (with `people`, their
        Practitioners; with `groups`, its CareTeams), literally or by HSA-id."""
        if not relations.organizations:
            return False
        actors = relations.named if groups else relations.actors
        for ref in references(node):
            if ref in actors or (people and ref[0] == "Practitioner" and ref[1] in relations.practitioners):
                return True
        return relations.hsa in set(_hsa_identifiers(node, self.rules.hsa_system))

    def is_itself(self, relations: Relations, resource: Json) -> bool:
        res_type = resource.get("resourceType")
        if res_type == "Organization" and (
            resource.get("id") in relations.organizations
            or relations.hsa in _identifier_values(resource, self.rules.hsa_system)
        ):
            return bool(relations.hsa)
        return res_type == "PractitionerRole" and resource.get("id") in relations.roles

    def owners(self, resource: Json, elements: Iterable[str]) -> dict[str, Any]:
        return {e: resource[e] for e in elements if e in resource}

    # -- AccessPolicy ----------------------------------------------------------------------------------

    def can_read(self, context: RequestContext, resource: Json) -> bool:
        if self.exempt(context):
            return True
        res_type = str(resource.get("resourceType"))
        if res_type in self.rules.public_types:
            return True
        relations = self.relations(context)
        if not relations.organizations:
            return False
        if res_type == "Patient":
            return str(resource.get("id")) in relations.patients
        recipient = self.rules.addressed_types.get(res_type)
        if recipient is not None and self.names(relations, resource.get(recipient), people=True):
            return True
        patients = self.patients_of(resource)
        related = not patients or bool(patients & relations.patients)
        if related and self.names(relations, resource, groups=True):
            return True
        if patients and related and res_type in self.rules.patient_wide_types:
            return True
        return (res_type, str(resource.get("id"))) in self.linked(context, relations)

    def authorize_search(self, context: RequestContext, res_type: str) -> None:
        return None  # searching is allowed; what is found is filtered by can_read

    def authorize_write(
        self, context: RequestContext, action: str, resource: Json, current: Json | None
    ) -> None:
        if self.exempt(context):
            return
        relations = self.relations(context)
        res_type = str(resource.get("resourceType"))
        if current is not None:
            if not self.can_read(context, current):
                raise not_found(f"{res_type}/{resource.get('id')} is not known")
            self._authorize_change(relations, action, resource, current)
        self._authorize_gateway_task(action, resource, current)
        if action != "delete":
            self._authorize_content(context, relations, resource)
            self._note_new_patient(context, resource, current)
        # the write may change whom the organisation is related to, and which patients are protected
        context.cache.pop(CACHE_KEY, None)
        context.cache.pop(PROTECTED_KEY, None)

    def _authorize_content(self, context: RequestContext, relations: Relations, resource: Json) -> None:
        """What a client may create (or make a resource into): for patients it is already related to (or
        made in this unit of work), or, naming no patient, naming itself. Its own write never makes it
        related to a patient: that comes only from what others (and the gateway) wrote."""
        res_type = str(resource.get("resourceType"))
        if res_type == "Patient":
            return  # identities are global; a duplicate is refused by the identifier claim
        if self.is_itself(relations, resource):
            return
        patients = self.patients_of(resource)
        if patients:
            if patients - relations.patients - self._new_patients(context):
                raise forbidden(
                    f"This organisation has no relationship with the patient of this {res_type}: it may "
                    "write for a patient only once the patient is related to it by what others wrote "
                    "(or it created the Patient in this same request)"
                )
            return
        owners = self.owners(resource, self.rules.ownership_elements)
        if self.names(relations, owners) or self.names(relations, resource):
            return  # for no patient, it takes responsibility itself: a Task it requests
        raise forbidden(
            f"This {res_type} names no patient of this organisation, and does not name the organisation"
        )

    def _authorize_gateway_task(self, action: str, resource: Json, current: Json | None) -> None:
        """A Task with one of the gateway's codes (policy `gateway_tasks`) is set up only by the gateway's
        own writers and the region's clients, since reactions act on its answer: a client may not create
        one, give a Task such a code, or delete one, and in one it may change only what answers it."""
        tasks = self.rules.gateway_tasks
        if not (tasks.covers(resource) or tasks.covers(current)):
            return
        if current is None or not tasks.covers(current):
            raise forbidden(
                "Tasks with this code are set up by the gateway's adapters and the region's clients only"
            )
        if action == "delete":
            raise forbidden("A Task the gateway set up may not be deleted by a client")
        refused = sorted(_changed_elements(current, resource) - tasks.may_change)
        if refused:
            allowed = ", ".join(sorted(tasks.may_change))
            raise forbidden(
                f"In a Task the gateway set up a client may change only {allowed}; not {', '.join(refused)}"
            )

    def _new_patients(self, context: RequestContext) -> frozenset[str]:
        """The Patients this client created in the unit of work running now (none else's data is about
        them, so resources for them may go in the same transaction)."""
        cached = self._cached(context, NEW_PATIENTS_KEY)
        return cached if isinstance(cached, frozenset) else frozenset()

    def _note_new_patient(self, context: RequestContext, resource: Json, current: Json | None) -> None:
        """Remember a Patient this client creates under an id never stored before (not one deleted: what
        others wrote about it may still be there)."""
        if resource.get("resourceType") != "Patient" or current is not None:
            return
        patient_id = str(resource.get("id"))
        query = select(RESOURCE.c.rid).where(
            RESOURCE.c.res_type == "Patient", RESOURCE.c.res_id == patient_id
        )
        with self._connection(context) as connection:
            if connection.execute(query.limit(1)).first() is not None:
                return
        context.cache[NEW_PATIENTS_KEY] = (context.connection, self._new_patients(context) | {patient_id})

    def acts_for(self, context: RequestContext, node: Any) -> bool:
        """Whether the client whose write this is (for a reaction's write, the client that triggered it)
        acts for what `node` references: it is exempt in its own right (an internal or region-wide
        client), or `node` names its organisation or one of its PractitionerRoles."""
        client = RequestContext(principal=context.requestor, connection=context.connection)
        if self.exempt(client):
            return True
        return self.names(self.relations(client), node)

    def _authorize_change(self, relations: Relations, action: str, resource: Json, current: Json) -> None:
        res_type = str(current.get("resourceType"))
        restricted = self.rules.restricted_owners.get(res_type)
        elements = [e for e in self.rules.ownership_elements if restricted is None or e != restricted.element]
        if self.is_itself(relations, current) or self.names(relations, self.owners(current, elements)):
            return
        if restricted is not None and self.names(relations, current.get(restricted.element)):
            if action == "delete":
                raise forbidden(f"The owner of a {res_type} may not delete it")
            changed = _changed_elements(current, resource)
            refused = sorted(changed - restricted.may_change)
            if refused:
                raise forbidden(
                    f"The owner of a {res_type} may change only {', '.join(sorted(restricted.may_change))};"
                    f" not {', '.join(refused)}"
                )
            return
        raise forbidden(
            f"Only the organisation that authored, requested or owns this {res_type} may {action} it"
        )

    # -- protected identity -----------------------------------------------------------------------------

    def _protected_patient(self, resource: Any) -> bool:
        return (
            isinstance(resource, dict)
            and resource.get("resourceType") == "Patient"
            and self.protected(resource)
        )

    def protected(self, resource: Json) -> bool:
        meta = resource.get("meta")
        labels = meta.get("security") if isinstance(meta, dict) else None
        for label in labels if isinstance(labels, list) else []:
            if (
                isinstance(label, dict)
                and (label.get("system"), label.get("code")) in self.rules.protected_labels
            ):
                return True
        return False

    def masked_match(self, context: RequestContext, resource: Json, parameters: list[str]) -> bool:
        """A masked Patient found by a masked parameter (`name`, `address-city`, …), or a resource found by
        one through a chain (`subject:Patient.name`) that references a protected patient, is left out."""
        looked = chained = False
        for name in parameters:
            if self.rules.masked_parameters & set(name.replace(":", ".").split(".")):
                looked = True
                chained = chained or "." in name or name.startswith("_has")
        if not looked or self.unmasked(context):
            return False
        if resource.get("resourceType") == "Patient":
            return self.protected(resource)
        if not chained:
            return False
        protected = self.protected_patients(context)
        return any(ref[0] == "Patient" and ref[1] in protected for ref in references(resource))

    def masked_sort(self, context: RequestContext, res_type: str) -> MaskedSort | None:
        """Sorting Patients by a masked parameter (`_sort=name`, `family`, `address`, …) orders the
        protected ones as if they had no value, unless the client sees them unmasked."""
        if res_type != "Patient" or self.unmasked(context):
            return None
        return MaskedSort(self.rules.masked_parameters, self.rules.protected_labels)

    def unmasked(self, context: RequestContext) -> bool:
        principal = context.principal
        return (
            principal.client_id in self.unmasked_clients
            or principal.organization in self.rules.unmasked_organizations
        )

    def masks_writes_of(self, context: RequestContext) -> bool:
        """Whether the client writes what it was served masked: it is not allowed to see protected
        identities, and it is not one of the gateway's own writers (adapters, `cli`, reactions), which
        build from what is stored."""
        client = context.principal.client_id
        internal = (
            context.on_behalf_of is not None
            or client in self.rules.exempt_clients
            or client.startswith(self.rules.exempt_client_prefixes)
        )
        return not internal and not self.unmasked(context)

    def _hidden(self, context: RequestContext, current: Json) -> bool:
        """Whether `current` is a protected Patient that `context` is served masked and writes as such."""
        return (
            current.get("resourceType") == "Patient"
            and self.protected(current)
            and self.masks_writes_of(context)
        )

    def keep_hidden(self, context: RequestContext, resource: Json, current: Json | None) -> Json:
        """An update of a protected Patient by a client that is served it masked keeps the stored masked
        elements (name, address, telecom, …) and protection labels: they are not the client's to change,
        and a PUT of what it read must not wipe them. The REDACTED label the mask added is dropped."""
        if current is None or not self._hidden(context, current):
            return resource
        masked = self.rules.masked_elements
        kept = {k: v for k, v in resource.items() if k not in masked}
        kept.update({k: v for k, v in current.items() if k in masked})
        meta = {k: v for k, v in (kept.get("meta") or {}).items() if k != "security"}
        labels = self._kept_labels(kept.get("meta") or {}, current.get("meta") or {})
        kept["meta"] = {**meta, "security": labels} if labels else meta
        return kept

    def _kept_labels(self, meta: Json, held: Json) -> list[Any]:
        """The client's security labels without REDACTED, and every stored protection label."""
        labels = [label for label in meta.get("security") or [] if _coding(label) != _coding(REDACTED)]
        stored = [label for label in held.get("security") or [] if label not in labels]
        return labels + [label for label in stored if _coding(label) in self.rules.protected_labels]

    def authorize_patch(self, context: RequestContext, current: Json, operations: Any) -> None:
        """A JSON Patch of a protected Patient that touches a masked element (any operation: test,
        replace, remove, add, move, copy; `path` or `from`), by a client served it masked, is refused
        before it is applied, whatever the values: a `test` would otherwise confirm a guess."""
        if not isinstance(operations, list) or not self._hidden(context, current):
            return
        masked = frozenset(self.rules.masked_elements)
        for operation in operations:
            pointers = [operation.get(key) for key in ("path", "from")] if isinstance(operation, dict) else []
            if any(isinstance(pointer, str) and _touches(pointer, masked) for pointer in pointers):
                raise forbidden(
                    "This Patient's protected elements are hidden from this client; a patch may not touch "
                    f"{', '.join(self.rules.masked_elements)} (nor the whole resource)"
                )

    def protected_patients(self, context: RequestContext) -> frozenset[str]:
        """The ids of every labelled Patient: one indexed query, on first need in the request."""
        cached = self._cached(context, PROTECTED_KEY)
        if isinstance(cached, frozenset):
            return cached
        labels = [
            and_(TOKEN.c.system == system, TOKEN.c.code == code)
            for system, code in sorted(self.rules.protected_labels)
        ]
        query = (
            select(RESOURCE.c.res_id)
            .join(TOKEN, TOKEN.c.rid == RESOURCE.c.rid)
            .where(TOKEN.c.res_type == "Patient", TOKEN.c.param == "_security", or_(false(), *labels))
        )
        with self._connection(context) as connection:
            found = frozenset(str(res_id) for res_id in connection.execute(query).scalars())
        context.cache[PROTECTED_KEY] = (context.connection, found)
        return found

    def mask(self, context: RequestContext, resource: Json) -> Json:
        """A Patient labelled sekretessmarkering or skyddad folkbokföring without name, address, telecom
        (and the other masked elements), unless the client or its organisation is explicitly allowed; so
        too a labelled Patient contained in any resource."""
        if self.unmasked(context):
            return resource
        contained = resource.get("contained")
        if isinstance(contained, list) and any(self._protected_patient(c) for c in contained):
            resource = {**resource, "contained": [self.mask(context, c) for c in contained]}
        if not self._protected_patient(resource):
            return resource
        masked = {k: v for k, v in resource.items() if k not in self.rules.masked_elements}
        meta = copy.deepcopy(masked.get("meta") or {})
        meta["security"] = [*meta.get("security", []), REDACTED]
        masked["meta"] = meta
        return masked


def _touches(pointer: str, elements: frozenset[str]) -> bool:
    """Whether a JSON Pointer reaches into one of the top-level `elements`, or is the whole document."""
    if not pointer:
        return True
    parts = pointer.split("/")
    top = parts[1] if len(parts) > 1 else parts[0]  # not a pointer ("name"): judged as if it were one
    return top.replace("~1", "/").replace("~0", "~") in elements


def _coding(label: Any) -> tuple[Any, Any]:
    return (label.get("system"), label.get("code")) if isinstance(label, dict) else (None, None)


def _json(content: str) -> Json:
    value = json.loads(content)
    return value if isinstance(value, dict) else {}


def _identifier_values(resource: Json, system: str) -> set[str]:
    identifiers = resource.get("identifier")
    found = set()
    for item in identifiers if isinstance(identifiers, list) else []:
        if isinstance(item, dict) and item.get("system") == system and isinstance(item.get("value"), str):
            found.add(item["value"])
    return found


def _changed_elements(before: Json, after: Json) -> set[str]:
    ignored = {"meta", "text", "id", "resourceType"}
    keys = (set(before) | set(after)) - ignored
    return {k for k in keys if before.get(k) != after.get(k)}


class AllOf:
    """Policies that must all allow: the SMART scopes and the organisation policy. Masks apply in turn."""

    def __init__(self, *policies: AccessPolicy) -> None:
        self.policies = policies

    def authorize_write(
        self, context: RequestContext, action: str, resource: Json, current: Json | None
    ) -> None:
        for policy in self.policies:
            policy.authorize_write(context, action, resource, current)

    def can_read(self, context: RequestContext, resource: Json) -> bool:
        return all(policy.can_read(context, resource) for policy in self.policies)

    def authorize_search(self, context: RequestContext, res_type: str) -> None:
        for policy in self.policies:
            policy.authorize_search(context, res_type)

    def mask(self, context: RequestContext, resource: Json) -> Json:
        for policy in self.policies:
            masking = getattr(policy, "mask", None)
            if masking is not None:
                resource = masking(context, resource)
        return resource

    def keep_hidden(self, context: RequestContext, resource: Json, current: Json | None) -> Json:
        for policy in self.policies:
            resource = keep_hidden(policy, context, resource, current)
        return resource

    def authorize_patch(self, context: RequestContext, current: Json, operations: Any) -> None:
        for policy in self.policies:
            check = getattr(policy, "authorize_patch", None)
            if check is not None:
                check(context, current, operations)

    def masked_sort(self, context: RequestContext, res_type: str) -> MaskedSort | None:
        """What any policy masks (the union hides at least what each one hides)."""
        params: frozenset[str] = frozenset()
        labels: frozenset[tuple[str, str]] = frozenset()
        for policy in self.policies:
            check = getattr(policy, "masked_sort", None)
            found = check(context, res_type) if check is not None else None
            if found is not None:
                params, labels = params | found.params, labels | found.labels
        return MaskedSort(params, labels) if params and labels else None

    def acts_for(self, context: RequestContext, node: Any) -> bool:
        return all(acts_for(policy, context, node) for policy in self.policies)

    def masked_match(self, context: RequestContext, resource: Json, parameters: list[str]) -> bool:
        for policy in self.policies:
            check = getattr(policy, "masked_match", None)
            if check is not None and check(context, resource, parameters):
                return True
        return False
