"""The one write path: validate → authorize → store → index → audit → notify.

Every write (REST create/update/patch/delete, each transaction or batch entry, every adapter Bundle)
goes through `WritePath` inside a `UnitOfWork`: one database transaction whose store and index rows
commit together. Audit and notify run when the unit of work ends (after commit, or after rollback for
audit). Conflicts the database detects (a version or identifier claimed concurrently) re-run the whole
unit of work, so conditional operations see the winner's row the second time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from time import perf_counter
from typing import Any, TypeVar
from uuid import uuid4

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from gateway.errors import (
    FhirError,
    bad_request,
    conflict,
    gone,
    not_found,
    precondition_failed,
)
from gateway.hooks import (
    AccessRecord,
    Hooks,
    RequestContext,
    combined,
)
from gateway.limits.resources import DEFAULT_LIMITS, ResourceLimits
from gateway.model.types import SERVER_IDS, Json
from gateway.model.validate import validate
from gateway.search.dates import utc_now
from gateway.search.engine import Searcher
from gateway.search.extract import Extractor, IndexRows
from gateway.security.access_index import AccessIndex
from gateway.store.database import WRITE_OPTION, writer_turn
from gateway.store.repository import StaleVersion, Stored, hold_index_writes
from gateway.store.visibility import visible_keys
from gateway.storing import Storing, serialize
from gateway.telemetry.metrics import AUDIT, AUTHORIZE, NOTIFY, VALIDATE
from gateway.unit_of_work import (
    Conflict,
    IdentifierTaken,
    UnitOfWork,
    WriteResult,
    concurrent,
    content_equal,
)
from gateway.write_audit import AUDIT_EVENT, after_commit, after_rollback, audit, not_audit

__all__ = [
    "AUDIT_EVENT",
    "Conflict",
    "IdentifierTaken",
    "UnitOfWork",
    "WritePath",
    "WriteResult",
    "content_equal",
]

T = TypeVar("T")
MAX_ATTEMPTS = 8
MAX_REACTION_DEPTH = 3


class WritePath:
    def __init__(
        self,
        engine: Engine,
        searcher: Searcher,
        extractor: Extractor,
        hooks: Hooks,
        access: AccessIndex,
        limits: ResourceLimits = DEFAULT_LIMITS,
    ) -> None:
        self.engine = engine
        self.limits = limits  # the largest resource stored, a patch's growth (gateway/limits/resources.py)
        hold_index_writes(engine)  # one multi-row INSERT per index table and unit of work
        self.searcher = searcher
        self.extractor = extractor
        self.hooks = hooks
        self.access = access  # the care relations a resource makes, its access rows (docs/security.md)
        self.lasts = timedelta(days=access.rules.lasts_days)
        self.storing = Storing(limits, extractor, hooks, access, self.lasts)  # store → index (storing.py)

    # -- units of work ------------------------------------------------------------------------------

    def run(
        self,
        context: RequestContext,
        work: Callable[[UnitOfWork], T],
        write: bool = True,
        point_read: bool = False,
    ) -> T:
        """Run `work` in one transaction; re-run it when the database reports a concurrent writer.

        A `point_read` (read, vread) on PostgreSQL runs in autocommit: each of its statements is its own
        transaction, as under READ COMMITTED each statement of a transaction has its own snapshot anyway,
        without the BEGIN and COMMIT round trips (docs/performance.md, Reads by id).

        An identifier found taken is re-run once (a conditional operation then finds the resource that
        took it); found taken again, it is a real duplicate and answered 409."""
        identifier_retried = False
        for attempt in range(MAX_ATTEMPTS):
            uow: UnitOfWork | None = None
            try:
                options: dict[str, Any] = {WRITE_OPTION: write}
                if point_read and not write and self.engine.dialect.name == "postgresql":
                    options["isolation_level"] = "AUTOCOMMIT"
                with (
                    self.engine.connect().execution_options(**options) as connection,
                    writer_turn(connection, write),
                    connection.begin(),
                ):
                    uow = UnitOfWork(connection, context, utc_now(), policy=self.hooks.policy)
                    context.connection = connection  # policies see this transaction's writes
                    result = work(uow)
                    if write:  # a write's AuditEvents commit with it (docs/security.md, Audit)
                        started = perf_counter()
                        self.hooks.audit.store(connection, combined(uow.records))
                        uow.audited = True
                        AUDIT.observe(perf_counter() - started)
                        if uow.changes:  # its outbox rows too: a rolled-back write notifies nobody
                            started = perf_counter()
                            self.hooks.notify.store(connection, uow.changes)
                            NOTIFY.observe(perf_counter() - started)
                after_commit(self.hooks, uow)
                return result
            except IdentifierTaken as error:
                if identifier_retried or attempt == MAX_ATTEMPTS - 1:
                    after_rollback(self.hooks, uow, 409)
                    raise conflict(str(error), error.expression) from error
                identifier_retried = True
            except (IntegrityError, StaleVersion, Conflict, OperationalError) as error:
                if isinstance(error, OperationalError) and not concurrent(error):
                    raise
                if attempt < MAX_ATTEMPTS - 1:
                    time.sleep(random.uniform(0, 0.002 * 2**attempt))  # back off, then re-run it all
                else:
                    after_rollback(self.hooks, uow, 409)
                    raise conflict(
                        f"The write conflicted with a concurrent one and was not stored: {error}"
                    ) from error
            except FhirError as error:
                after_rollback(self.hooks, uow, error.status)
                raise
        raise AssertionError("unreachable")

    # -- the steps ----------------------------------------------------------------------------------

    def match(self, uow: UnitOfWork, res_type: str, query: str, interaction: str) -> list[Stored]:
        """What a conditional query (If-None-Exist, conditional update, a transaction's conditional
        reference) matches among what `uow.context` may see, masked values unsearchable. A patient
        identity matched by a Patient the client may not see is the named exception: 409 duplicate."""
        policy = self.hooks.policy
        visibility = policy.visibility(uow.context, writing=interaction != "read")
        masking = policy.masking(uow.context)
        if interaction != "read":
            serialize(uow, res_type, query, visibility)
        found = self.searcher.match(uow.connection, res_type, query, visibility=visibility, masking=masking)
        if found or visibility.everything or not policy.identity_query(res_type, query):
            return found
        hidden = self.searcher.match(uow.connection, res_type, query)
        if hidden:
            self.storing.hidden_identity(uow, interaction, hidden[0].res_id)
        return found

    def visible(self, uow: UnitOfWork, stored: Stored | None) -> Stored | None:
        """`stored` if `uow.context` may see it as the target of a write, else None: a hidden resource
        is as good as none."""
        if stored is None:
            return None
        visibility = self.hooks.policy.visibility(uow.context, writing=True)
        if visibility.everything or visible_keys(
            uow.connection, visibility, [(stored.res_type, stored.res_id)]
        ):
            return stored
        if stored.deleted:  # a tombstone keeps the access rows of its last version (visible_keys: live)
            return uow.repository.current_visible(stored.res_type, stored.res_id, visibility)
        return None

    def _rules(self, uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
        for rule in self.hooks.rules:
            resource = rule(uow, action, resource, current)
        return resource

    def _react(self, uow: UnitOfWork, stored: Stored, previous: Json | None) -> None:
        if uow.reaction_depth >= MAX_REACTION_DEPTH:
            return
        uow.reaction_depth += 1
        acting, uow.context = uow.context, uow.context.for_reaction()  # the gateway writes, for the client
        try:
            for reaction in self.hooks.reactions:
                reaction(uow, self, stored, previous)
        finally:
            uow.context = acting
            uow.reaction_depth -= 1

    # -- interactions ---------------------------------------------------------------------------------

    def create(
        self,
        uow: UnitOfWork,
        resource: Any,
        if_none_exist: str | None = None,
        new_id: str | None = None,
        checked: bool = False,
        indexed: IndexRows | None = None,
    ) -> WriteResult:
        """`checked`: the caller validated the content before the unit of work (`validate`'s `checked`);
        `indexed`: its index rows but the references', extracted before the unit of work
        (`Storing.store`, gateway/storing.py)."""
        not_audit(resource.get("resourceType") if isinstance(resource, dict) else None)
        started = perf_counter()
        resource = validate(resource, checked=checked)
        VALIDATE.observe(perf_counter() - started)
        res_type = resource["resourceType"]
        if if_none_exist:
            found = self.match(uow, res_type, if_none_exist, "create")
            if len(found) > 1:
                raise precondition_failed(f"If-None-Exist '{if_none_exist}' matches more than one {res_type}")
            if found:
                audit(uow, "create", found[0], 200)
                return WriteResult(200, found[0], changed=False)
        resource = dict(resource)
        resource["id"] = new_id or str(uuid4())
        ruled = self._rules(uow, "create", resource, None)
        if ruled is not resource:  # a rule completed it: its index rows are extracted anew
            resource, indexed = ruled, None
        started = perf_counter()
        self.hooks.policy.authorize_write(uow.context, "create", resource, None)
        AUTHORIZE.observe(perf_counter() - started)
        stored = self.storing.store(uow, None, resource, "POST", indexed=indexed)
        audit(uow, "create", stored, 201, resource)
        self._react(uow, stored, None)
        return WriteResult(201, stored)

    def update(
        self,
        uow: UnitOfWork,
        res_type: str,
        res_id: str,
        resource: Any,
        if_match: int | None = None,
        checked: bool = False,
        indexed: IndexRows | None = None,
        interaction: str = "update",
        guard: int | None = None,
    ) -> WriteResult:
        """`checked`: the caller validated the content before the unit of work (`validate`'s `checked`);
        `indexed`: its index rows but the references', extracted before the unit of work
        (`Storing.store`, gateway/storing.py);
        `interaction`: what it is audited as (a JSON Patch's update is a `patch`); `guard`: the version
        the content was made from (a patch without If-Match): another version now re-runs the unit of
        work, so the patch is applied again to the newer one. A resource the
        client may not see is as good as none; only the gateway's own writers and region-wide clients
        create by PUT (others get the same 404 for an unknown, deleted or hidden id)."""
        not_audit(res_type)
        started = perf_counter()
        resource = validate(resource, res_type, res_id, checked=checked)
        VALIDATE.observe(perf_counter() - started)
        given = resource
        policy = self.hooks.policy
        current = self.visible(uow, uow.current_for_write(res_type, res_id))
        if (current is None or current.deleted) and not self.may_create_by_put(uow.context, res_type):
            raise not_found(f"{res_type}/{res_id} is not known")
        if guard is not None and (current is None or current.version_id != guard):
            raise Conflict(f"{res_type}/{res_id} changed while the patch was applied")
        if if_match is not None and (current is None or current.version_id != if_match):
            have = f"version {current.version_id}" if current else "no version"
            raise precondition_failed(
                f"If-Match expects version {if_match} of {res_type}/{res_id}; it has {have}"
            )
        existing = None if current is None or current.deleted else current.json()
        resource = policy.keep_hidden(uow.context, resource, existing)  # not the client's
        action = "update" if existing else "create"
        resource = self._rules(uow, action, resource, existing)
        if current is not None and existing is not None and content_equal(existing, resource):
            audit(uow, interaction, current, 200, existing)
            return WriteResult(200, current, changed=False)
        started = perf_counter()
        policy.authorize_write(uow.context, action, resource, existing)
        AUTHORIZE.observe(perf_counter() - started)
        indexed = indexed if resource is given else None  # kept hidden or completed: extracted anew
        stored = self.storing.store(uow, current, resource, "PUT", existing, indexed)
        status = 200 if existing is not None else 201
        audit(uow, interaction, stored, status, resource)
        self._react(uow, stored, existing)
        return WriteResult(status, stored)

    def conditional_update(
        self, uow: UnitOfWork, res_type: str, query: str, resource: Any, if_match: int | None = None
    ) -> WriteResult:
        found = self.match(uow, res_type, query, "update")
        if len(found) > 1:
            raise precondition_failed(f"The condition '{query}' matches more than one {res_type}")
        body_id = resource.get("id") if isinstance(resource, dict) else None
        if found:
            if body_id is not None and body_id != found[0].res_id:
                raise bad_request(
                    f"The resource id '{body_id}' differs from the matching {res_type}/{found[0].res_id}",
                    "id",
                )
            body = dict(resource)
            body["id"] = found[0].res_id
            return self.update(uow, res_type, found[0].res_id, body, if_match)
        if not self.may_create_by_put(uow.context, res_type):
            raise not_found(f"The condition '{query}' matches no {res_type} known here")
        body = dict(resource) if isinstance(resource, dict) else resource
        if isinstance(body, dict):
            body["id"] = body_id or str(uuid4())
        return self.update(uow, res_type, body["id"] if isinstance(body, dict) else "", body)

    def may_create_by_put(self, context: RequestContext, res_type: str) -> bool:
        """Whether `context` may create a `res_type` under an id it chooses: never where ids are the
        gateway's (`SERVER_IDS`), else as the policy says."""
        return res_type not in SERVER_IDS and self.hooks.policy.may_create_by_put(context)

    def patch(
        self, uow: UnitOfWork, res_type: str, res_id: str, operations: Any, if_match: int | None = None
    ) -> WriteResult:
        """Apply a JSON Patch to the current version and store the result as an update of that version.
        Audited as a `patch`, with its outcome also when it is refused (403) or cannot apply (422)."""
        not_audit(res_type)
        # locked (PostgreSQL): concurrent patches of one resource take turns instead of colliding
        current = self.visible(uow, uow.current_for_write(res_type, res_id))
        if current is None:
            raise not_found(f"{res_type}/{res_id} is not known")
        if current.deleted:
            raise gone(f"{res_type}/{res_id} was deleted (version {current.version_id})")
        try:
            if if_match is not None and current.version_id != if_match:
                raise precondition_failed(
                    f"If-Match expects version {if_match} of {res_type}/{res_id}; "
                    f"it has version {current.version_id}"
                )
            self.hooks.policy.authorize_patch(uow.context, current.json(), operations)  # before a `test`
            # applied to the resource as the client is shown it: what it is not shown is put back by the
            # policy as for an update (`keep_hidden`), and no path or `test` reaches it
            shown = self.hooks.policy.mask(uow.context, current.json())
            patched = self.limits.apply_patch(shown, operations)
            guard = None if if_match is not None else current.version_id
            return self.update(uow, res_type, res_id, patched, if_match, interaction="patch", guard=guard)
        except FhirError:
            if not any(r.interaction == "patch" and res_id in r.res_ids for r in uow.records):
                audit(uow, "patch", current, 200)  # its status is the failure's (`after_rollback`)
            raise

    def delete(self, uow: UnitOfWork, res_type: str, res_id: str) -> Stored | None:
        """Delete as a versioned tombstone; deleting what is absent, already deleted or hidden from the
        client is a no-op (audited all alike)."""
        not_audit(res_type)
        current = self.visible(uow, uow.current_for_write(res_type, res_id))
        if current is None or current.deleted:
            uow.records.append(
                AccessRecord("delete", res_type, [res_id], 200, uow.context, "nothing to delete")
            )
            return None
        self._rules(uow, "delete", current.json(), current.json())
        started = perf_counter()
        self.hooks.policy.authorize_write(uow.context, "delete", current.json(), current.json())
        AUTHORIZE.observe(perf_counter() - started)
        stored = self.storing.tombstone(uow, current)
        audit(uow, "delete", stored, 200, current.json())
        self._react(uow, stored, current.json())
        return stored

    def reindex(self, connection: Connection, stored: Stored, now: datetime) -> None:
        """A current resource's index rows and care relations computed anew from its content and who wrote
        it (`gateway reindex`; after the upgrade that brought care relations, their first computation).
        A Patient a client wrote is taken to be one it registered."""
        self.storing.reindex(connection, stored, now)

    # -- reads through the same policy ---------------------------------------------------------------

    def can_read(self, context: RequestContext, res_type: str, res_id: str) -> bool:
        """Whether `context` may see the current resource `res_type`/`res_id` (one query, through the
        context's unit of work when it runs in one)."""
        visibility = self.hooks.policy.visibility(context)
        if visibility.everything:
            return True
        key = (res_type, res_id)
        connection = context.connection
        if connection is not None and not connection.closed:
            return key in visible_keys(connection, visibility, [key])
        with self.engine.connect() as fresh:
            return key in visible_keys(fresh, visibility, [key])

    def read(self, uow: UnitOfWork, res_type: str, res_id: str) -> Stored:
        """The current version as `uow.context` may see it: a hidden id answers as an unknown one (both
        come from the one query that applies the reader's visibility). Audited, also when refused."""
        try:
            current = self._current(uow, res_type, res_id)
        except FhirError as error:
            uow.records.append(AccessRecord("read", res_type, [res_id], error.status, uow.context))
            raise
        audit(uow, "read", current, 200, current.json())
        return current

    def _current(self, uow: UnitOfWork, res_type: str, res_id: str) -> Stored:
        """The current version as `uow.context` may see it (404 hidden or unknown, 410 deleted)."""
        visibility = self.hooks.policy.visibility(uow.context)
        current = uow.repository.current_visible(res_type, res_id, visibility)
        if current is None:
            raise not_found(f"{res_type}/{res_id} is not known")
        if current.deleted:
            raise gone(f"{res_type}/{res_id} was deleted (version {current.version_id})")
        return current
