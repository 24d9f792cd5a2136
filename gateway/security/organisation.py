"""The organisation policy: which resources a client's organisation may see and write. Its rules are data
(policy/access.yaml, gateway/security/rules.py), documented in docs/security.md; who an organisation is and
whom it is related to are queries in gateway/store/relations.py; what it sees is a condition in every
query (gateway/store/visibility.py). It is composed with the SMART ScopePolicy (`AllOf`): both must allow.

Who is exempt: the gateway's own writers (workflow reactions, adapters writing a bound source's records,
the CLI and the adapters' own clients) and the region's clients. Everyone else sees what their
organisation is related to, and writes only for patients it is related to, referencing only what it may
read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import Engine

from gateway.errors import forbidden, unknown_reference
from gateway.hooks import SCHEDULER_CLIENT, Permissive, RequestContext
from gateway.model.types import Json
from gateway.search.dates import utc_now
from gateway.search.parameters import Masking, split_token
from gateway.security.access_index import AccessIndex
from gateway.security.audit_seen import audit_as_seen
from gateway.security.handovers import authorize_client_handover
from gateway.security.masking import ProtectedIdentities
from gateway.security.restricted_changes import changed_elements, refused_changes
from gateway.security.restricted_changes import names as names_organisation
from gateway.security.risk_confirmers import as_seen, authorize_decision, kept_as_stored
from gateway.security.risk_confirmers import authorize_patch as authorize_assessment_patch
from gateway.security.rules import Rules, TeamPlan
from gateway.store import relations
from gateway.store.relations import TRUSTED, Actors, Writer, find_actors
from gateway.store.visibility import AUDIT_EVENT, EVERYTHING, ForOrganisation, Visibility, visible_keys

CACHE_KEY = "gateway.security.organisation.actors"
CONDITIONS_KEPT = 1000  # organisations whose visibility conditions a process keeps built
WROTE_KEY = "gateway.security.organisation.wrote-identity"
ACTORS_SECONDS = 5.0  # how long a process trusts what it found names an organisation
# Writing these can change who an organisation is (its Organization, PractitionerRoles, CareTeams).
IDENTITY_TYPES = frozenset({"Organization", "PractitionerRole", "CareTeam"})
SUBSCRIPTION = "Subscription"
OPEN_TASKS = ("draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold")


def found_actors(context: RequestContext) -> Actors | None:
    """What names the client's organisation as `OrganisationPolicy.actors` found it for this context's
    unit of work, if it has (the subscription matcher keeps it for its next runs)."""
    cached = context.cache.get(CACHE_KEY)
    if isinstance(cached, tuple) and cached[0] is context.connection and isinstance(cached[1], Actors):
        return cached[1]
    return None


def know_actors(context: RequestContext, actors: Actors | None) -> None:
    """`actors` names the client's organisation in this context's unit of work (the subscription matcher's
    memo, which it keeps true: gateway/subscriptions/matcher.py); None: find them anew, through the unit
    of work's connection, not from the process's memo."""
    if actors is None:
        context.cache.pop(CACHE_KEY, None)
        context.cache[WROTE_KEY] = True
    else:
        context.cache[CACHE_KEY] = (context.connection, actors)


class OrganisationPolicy(Permissive):
    def __init__(
        self,
        rules: Rules,
        engine: Engine,
        access: AccessIndex,
        region_clients: Iterable[str] = (),
        unmasked_clients: Iterable[str] = (),
    ) -> None:
        self.rules = rules
        self.engine = engine
        self.access = access
        self.region_clients = frozenset(region_clients)
        self.identities = ProtectedIdentities(rules, frozenset(unmasked_clients))
        self._conditions: dict[Actors, ForOrganisation] = {}
        self._actors: dict[str, tuple[float, Actors]] = {}  # by HSA-id: (found at, what names it)

    # -- who ----------------------------------------------------------------------------------------

    def internal(self, context: RequestContext) -> bool:
        """The gateway's own writers: a workflow reaction (on behalf of a client), an adapter writing the
        records of a source the client is bound to, the gateway's internal clients (`adapter:…`, `cli`)."""
        client = context.principal.client_id
        return (
            context.on_behalf_of is not None
            or context.source is not None
            or client in self.rules.exempt_clients
            or client.startswith(self.rules.exempt_client_prefixes)
            or client == SCHEDULER_CLIENT  # the scheduler's jobs, whatever the policy file says
        )

    def exempt(self, context: RequestContext) -> bool:
        """Not restricted by organisation: the gateway's own writers and the region's clients."""
        return self.internal(context) or context.principal.client_id in self.region_clients

    def actors(self, context: RequestContext) -> Actors:
        """What names the client's organisation: kept by the process for `ACTORS_SECONDS` (what another
        process writes of an organisation's Organization, PractitionerRoles and CareTeams counts here
        within that time), found anew in a request that wrote such a resource itself (through its unit
        of work's connection, so what its transaction wrote counts; a memo of another unit of work is not
        trusted)."""
        cached = found_actors(context)
        if cached is not None:
            return cached
        hsa = context.principal.organization or ""
        own_writes = bool(context.cache.get(WROTE_KEY))
        kept = self._actors.get(hsa)
        if kept is not None and not own_writes and time.monotonic() - kept[0] < ACTORS_SECONDS:
            found = kept[1]
        else:
            current = context.connection
            if current is not None and not current.closed:
                found = find_actors(current, hsa, self.rules.hsa_system)
            else:
                with self.engine.connect() as connection:
                    found = find_actors(connection, hsa, self.rules.hsa_system)
            if not own_writes:
                self._actors[hsa] = (time.monotonic(), found)
        context.cache[CACHE_KEY] = (context.connection, found)
        return found

    # -- reading ------------------------------------------------------------------------------------

    def visibility(self, context: RequestContext, writing: bool = False) -> Visibility:
        if self.exempt(context):
            return EVERYTHING
        actors = self.actors(context)
        found = self._conditions.get(actors)
        if found is None:  # built once per organisation (as it is now), and kept for its next requests
            if len(self._conditions) >= CONDITIONS_KEPT:
                self._conditions.clear()
            found = ForOrganisation(
                actors,
                self.rules.public_types | {SUBSCRIPTION},  # each client's own: SubscriptionOwners
                self.rules.patient_wide_types,
                frozenset(self.rules.addressed_types),
            )
            self._conditions[actors] = found
        return found

    def identity_query(self, res_type: str, query: str) -> bool:
        if res_type != "Patient":
            return False
        pairs = parse_qsl(query, keep_blank_values=True)
        if not pairs:
            return False
        for name, value in pairs:
            system, code = split_token(value)
            if name != "identifier" or system not in self.rules.identity_systems or not code or "," in value:
                return False
        return True

    # -- writing ------------------------------------------------------------------------------------

    def writer(self, context: RequestContext) -> Writer:
        return TRUSTED if self.exempt(context) else Writer(False, self.actors(context))

    def may_create_by_put(self, context: RequestContext) -> bool:
        return self.exempt(context)

    def authorize_write(
        self, context: RequestContext, action: str, resource: Json, current: Json | None
    ) -> None:
        if self.exempt(context) or resource.get("resourceType") == SUBSCRIPTION:
            return  # a subscription is its client's own (gateway/subscriptions/resource.py)
        actors = self.actors(context)
        if current is not None:
            self._authorize_change(actors, context, action, resource, current)
        self._authorize_gateway_task(actors, context, action, resource, current)
        if action != "delete":
            self._authorize_references(context, resource, current)
            self._authorize_content(context, actors, resource)
        if str(resource.get("resourceType")) in IDENTITY_TYPES:  # who it is may change
            context.cache.pop(CACHE_KEY, None)
            context.cache[WROTE_KEY] = True
            self._actors.pop(context.principal.organization or "", None)

    def _authorize_references(self, context: RequestContext, resource: Json, current: Json | None) -> None:
        """Every literal reference a write adds must name a current resource the writer may read, or a
        master-data type; a hidden id and one that does not exist get the same answer (422). References
        the version it replaces already had stay, and so do those to what this transaction creates under
        a `urn:uuid` (docs/security.md)."""
        res_type = str(resource.get("resourceType"))
        had = set(self.access.literal(current)) if current is not None else set()
        added = [
            (path, written, key)
            for path, written, key in self.access.literal_paths(resource, res_type)
            if key not in had and key not in context.bundle_targets and key[0] not in self.rules.public_types
        ]
        if not added:
            return
        connection = context.connection
        assert connection is not None, "writes run in a unit of work"
        seen = visible_keys(connection, self.visibility(context), {key for _, _, key in added})
        for path, written, key in added:
            if key not in seen:
                raise unknown_reference(path, written)

    def _authorize_content(self, context: RequestContext, actors: Actors, resource: Json) -> None:
        """What a client may create (or make a resource into): for patients it is related to, or, naming
        no patient, naming itself. A Task it addresses to another unit refers the patient on, which it
        may do only for a patient related to it by a trusted writer or its own registration."""
        res_type = str(resource.get("resourceType"))
        if res_type == "Patient" or self.is_itself(actors, resource):
            return  # identities are global; a duplicate identity is refused (docs/security.md)
        patients = self.access.patients(resource)
        if not patients:
            owners = {e: resource[e] for e in self.rules.ownership_elements if e in resource}
            if self.names(actors, owners) or self.names(actors, resource):
                return  # for no patient, it takes responsibility itself: a Task it requests
            raise forbidden(
                f"This {res_type} names no patient of this organisation, and does not name the organisation"
            )
        connection = context.connection
        assert connection is not None, "writes run in a unit of work"
        now = utc_now()
        if patients - relations.related_among(connection, actors, now, patients):
            raise forbidden(
                f"This organisation has no care relation with the patient of this {res_type}: it may write "
                "for a patient only while one is related to it (docs/security.md)"
            )
        refers = [
            f
            for f in self.access.facts(resource)
            if f.referral and (f.actor_type, f.actor_id) not in actors.refs()
        ]
        if refers and patients - relations.related_among(
            connection, actors, now, patients, relations.GRANTING
        ):
            raise forbidden(
                "A unit that was itself referred the patient may not refer the patient on: only one "
                "related to the patient by the region or the gateway, or that registered the patient, may"
            )

    def _works_on(self, actors: Actors, context: RequestContext, plan: TeamPlan, current: Json) -> bool:
        """Whether the organisation is on the plan's care team (a CareTeam a trusted writer, or it, wrote:
        `actors.groups`) or owns an open Task calling it to the plan (the SIP call)."""
        teams = {ref[1] for ref in self.access.literal(current.get("careTeam")) if ref[0] == "CareTeam"}
        if teams & actors.groups:
            return True
        connection = context.connection
        assert connection is not None, "writes run in a unit of work"
        focus = (str(current.get("resourceType")), str(current.get("id")))
        return relations.owns_task_about(connection, actors, focus, plan.called_by, OPEN_TASKS)

    def _authorize_change(
        self, actors: Actors, context: RequestContext, action: str, resource: Json, current: Json
    ) -> None:
        res_type = str(current.get("resourceType"))
        restricted = self.rules.restricted_owners.get(res_type)
        elements = [e for e in self.rules.ownership_elements if restricted is None or e != restricted.element]
        owners = {e: current[e] for e in elements if e in current}
        if self.is_itself(actors, current) or self.names(actors, owners):
            return
        plan = self.rules.team_plans.get(res_type)
        if plan is not None and self._works_on(actors, context, plan, current):
            if action == "delete":
                raise forbidden(f"The care team of a {res_type} may not delete it")
            refused = sorted(changed_elements(current, resource) - plan.may_change)
            if refused:
                raise forbidden(
                    f"The care team of a {res_type} may change only {', '.join(sorted(plan.may_change))};"
                    f" not {', '.join(refused)}"
                )
            return
        if restricted is not None and self.names(actors, current.get(restricted.element)):
            if action == "delete":
                raise forbidden(f"The owner of a {res_type} may not delete it")
            refused = refused_changes(
                self.access,
                actors,
                current,
                resource,
                restricted.may_change,
                restricted.may_append,
                restricted.may_reassign,
            )
            if refused:
                raise forbidden(
                    f"The owner of a {res_type} may change only {', '.join(sorted(restricted.may_change))}"
                    f", add to {', '.join(sorted(restricted.may_append))} and reassign "
                    f"{', '.join(sorted(restricted.may_reassign)) or 'nothing'} within its organisation"
                    " (an Organization, HealthcareService or PractitionerRole of its own); "
                    f"not {', '.join(refused)}"
                )
            return
        if res_type == "RiskAssessment" and action != "delete" and context.connection is not None:
            confirmers = self.rules.risk_confirmers  # the gateway's proposals only: another's is as above
            if authorize_decision(confirmers, self.names, context.connection, actors, current, resource):
                return  # what a decision may change: gateway/workflow/risk_rules.py
        raise forbidden(
            f"Only the organisation that authored, requested or owns this {res_type} may {action} it"
        )

    def _authorize_gateway_task(
        self, actors: Actors, context: RequestContext, action: str, resource: Json, current: Json | None
    ) -> None:
        """A Task with one of the gateway's codes (policy `gateway_tasks`) is set up only by the gateway's
        own writers and the region's clients, since reactions act on its answer: a client may not create
        one (but a handover it opens itself, `client_handovers`), give a Task such a code, or delete one,
        and in one it may change only what answers it."""
        tasks = self.rules.gateway_tasks
        if not (tasks.covers(resource) or tasks.covers(current)):
            return
        opened = self.rules.client_handovers
        if current is None and action == "create" and opened.covers(resource, tasks.codes):
            assert context.connection is not None, "writes run in a unit of work"
            authorize_client_handover(opened, self.access, self.names, context.connection, actors, resource)
            return
        if current is None or not tasks.covers(current):
            raise forbidden(
                "Tasks with this code are set up by the gateway's adapters and the region's clients only"
            )
        if action == "delete":
            raise forbidden("A Task the gateway set up may not be deleted by a client")
        refused = refused_changes(
            self.access, actors, current, resource, tasks.may_change, tasks.may_append, tasks.may_reassign
        )
        if refused:
            allowed = ", ".join(sorted(tasks.may_change))
            added = ", ".join(sorted(tasks.may_append))
            moved = ", ".join(sorted(tasks.may_reassign)) or "nothing"
            raise forbidden(
                f"In a Task the gateway set up a client may change only {allowed}, add to {added} and, as "
                f"its owner, reassign {moved} within its organisation; not {', '.join(refused)}"
            )

    def acts_for(self, context: RequestContext, node: object) -> bool:
        """Whether the client whose write this is (for a reaction's write, the client that triggered it)
        acts for what `node` references: it is exempt in its own right (an internal or region-wide
        client), or `node` names its organisation or one of its PractitionerRoles."""
        client = RequestContext(principal=context.requestor, connection=context.connection)
        if self.exempt(client):
            return True
        return self.names(self.actors(client), node)

    # -- in memory ------------------------------------------------------------------------------------

    def names(self, actors: Actors, node: Any) -> bool:
        """Whether `node` references the organisation or its PractitionerRoles (or a CareTeam it is on),
        literally or by HSA-id."""
        return names_organisation(self.access, actors, node)

    def is_itself(self, actors: Actors, resource: Json) -> bool:
        res_type = resource.get("resourceType")
        if res_type == "Organization" and actors.known:
            identifiers = resource.get("identifier")
            return resource.get("id") in actors.organizations or any(
                isinstance(i, dict)
                and i.get("system") == self.rules.hsa_system
                and i.get("value") == actors.hsa
                for i in (identifiers if isinstance(identifiers, list) else [])
            )
        return res_type == "PractitionerRole" and resource.get("id") in actors.roles

    # -- protected identities ---------------------------------------------------------------------------

    def authorize_patch(self, context: RequestContext, current: Json, operations: object) -> None:
        if current.get("resourceType") == "RiskAssessment" and not self.exempt(context):
            authorize_assessment_patch(operations)
        if self.identities.hidden_from(context, current, self.internal(context)):
            self.identities.authorize_patch(operations)

    def mask(self, context: RequestContext, resource: Json) -> Json:
        resource = self.identities.mask(context, resource)
        if resource.get("resourceType") == AUDIT_EVENT and not self.exempt(context):
            visibility = self.visibility(context)
            resource = audit_as_seen(
                self.access, self.engine, visibility, context.principal.organization, resource
            )
        elif resource.get("resourceType") == "RiskAssessment" and not self.exempt(context):
            resource = self._assessment_as_seen(context, resource)
        return resource

    def _assessment_as_seen(self, context: RequestContext, resource: Json) -> Json:
        """What a reader that is not region-wide is shown of a RiskAssessment (named exception 9): read
        through the unit of work's connection when there is one, so what its transaction wrote counts."""
        actors = self.actors(context)
        visibility = self.visibility(context)

        def own(node: Any) -> bool:
            return self.names(actors, node)

        current = context.connection
        if current is not None and not current.closed:
            return as_seen(self.access.local, current, visibility, own, resource)
        with self.engine.connect() as connection:
            return as_seen(self.access.local, connection, visibility, own, resource)

    @property
    def masks(self) -> bool:
        return True

    def masking(self, context: RequestContext) -> Masking | None:
        return self.identities.masking(context)

    def keep_hidden(self, context: RequestContext, resource: Json, current: Json | None) -> Json:
        if (
            current is not None
            and current.get("resourceType") == "RiskAssessment"
            and not self.exempt(context)
        ):
            # the basis entries and notes it was not shown are not the writer's to wipe (a decision
            # written back from what a confirming unit read keeps them)
            return kept_as_stored(self._assessment_as_seen(context, current), resource, current)
        if current is None or not self.identities.hidden_from(context, current, self.internal(context)):
            return resource
        return self.identities.keep_hidden(resource, current)
