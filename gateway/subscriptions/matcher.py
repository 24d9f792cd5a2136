"""The matcher: outbox rows → numbered events, each subscription evaluated as its client.

One matcher runs at a time (PostgreSQL: a session advisory lock, which another process skips; SQLite: one
process delivers, and the delete of the rows taken tells if another took them first). A run takes the
outbox in `id` order and, reading outside the writer's turn, evaluates each live subscription's criteria
against the rows' resources with the visibility and masking of the subscription's client (organisation
policy, SMART scopes: `gateway/store/visibility.py`; the queries: criteria.py, prefilter.py); then, in
one write transaction, appends an event with the subscription's next number for every match and deletes
the rows: a crash leaves the rows for the next run and no event half-numbered. Events name type, id and
version only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl

from sqlalchemy import Connection, Table, delete, insert, select, update

from gateway.errors import FhirError
from gateway.hooks import Principal, RequestContext
from gateway.model.types import Json, loads
from gateway.search.dates import utc_now
from gateway.security.access_index import ACTORS
from gateway.security.organisation import found_actors, know_actors
from gateway.services import Services
from gateway.store.database import WRITE_OPTION, writer_turn
from gateway.store.relations import Actors
from gateway.store.repository import R, Repository
from gateway.store.tables import ChangeMark, SubscriptionEvent
from gateway.subscriptions import criteria, prefilter
from gateway.subscriptions.criteria import Plan
from gateway.subscriptions.outbox import OUTBOX
from gateway.subscriptions.resource import STATE, SUBSCRIPTION
from gateway.subscriptions.topics import Topic

log = logging.getLogger("gateway.subscriptions")
EVENTS = cast(Table, SubscriptionEvent.__table__)
MARKS = cast(Table, ChangeMark.__table__)
ACTORS_MARK = "subscriptions.actors"
LIVE = ("requested", "active")
BATCH = 500
_LOCK_KEY = 0x5B5C_0001  # the matcher's advisory lock (PostgreSQL), one per schema (_alone)
NOT_MATCHED = frozenset({SUBSCRIPTION, "AuditEvent"})


@dataclass(frozen=True)
class Row:
    id: int
    res_type: str
    res_id: str
    version_id: int
    method: str


@dataclass
class Live:
    """A live subscription as the matcher evaluates it."""

    sub_id: str
    context: RequestContext
    res_type: str
    pairs: list[tuple[str, str]]
    topic: Topic | None


class _TakenMeanwhile(Exception):
    """The outbox rows a run matched were taken by another matcher before it recorded them."""


@contextmanager
def _alone(connection: Connection) -> Iterator[bool]:
    """One matcher at a time: on PostgreSQL a session advisory lock held over both of a run's transactions
    (released at the end, or when the process's connection goes); elsewhere, where one process delivers,
    the rows' delete tells (_record)."""
    if connection.dialect.name != "postgresql":
        yield True
        return
    # advisory locks are per database: the schema in the key keeps gateways that share a database in
    # separate schemas (DATABASE_SCHEMA) from skipping each other's runs
    key = f"{_LOCK_KEY}, hashtext(current_schema())"
    got = bool(connection.exec_driver_sql(f"SELECT pg_try_advisory_lock({key})").scalar())
    connection.commit()
    try:
        yield got
    finally:
        if got:
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({key})")
            connection.commit()


def _actors_mark(connection: Connection) -> int | None:
    """The `subscriptions.actors` change mark (None: never raised)."""
    mark = connection.execute(select(MARKS.c.value).where(MARKS.c.name == ACTORS_MARK)).scalar()
    return None if mark is None else int(mark)


def subscriber(state: Any) -> Principal:
    return Principal(
        client_id=str(state.client_id),
        organization=state.organization,
        scopes=frozenset(str(state.scopes).split()),
    )


class Matcher:
    def __init__(self, services: Services, topics: dict[str, Topic]) -> None:
        self.services = services
        self.topics = topics
        self._actors: dict[str, Actors] = {}  # by HSA-id: what names a subscriber's organisation
        self._mark: int | None = None  # the `subscriptions.actors` change mark the memo was kept at
        self._plans: dict[str, Plan] = {}  # by subscription: its criteria's query (_plan)
        self._groups: criteria.Groups = {}

    def actors_of(self, organization: str | None) -> Actors | None:
        """What names the organisation as the last run found it, if it did (the deliverer's threads read
        it while the matcher's thread runs: one lookup, which a clear does not break)."""
        return self._actors.get(organization or "")

    def run_once(self, batch: int = BATCH) -> int:
        """Match one batch of outbox rows; the number of rows taken (0: the outbox is empty, or another
        process's matcher runs). The matching reads run outside the writer's turn (on SQLite, writes go on
        meanwhile); the events are numbered, and the rows deleted, in one short write transaction."""
        engine = self.services.engine
        with engine.connect() as reader, _alone(reader) as alone:
            if not alone:
                return 0
            with reader.begin():
                rows = self._taken(reader, batch)
                if not rows:
                    return 0
                self._keep_actors(reader, rows)
                relevant = [row for row in rows if row.res_type not in NOT_MATCHED]
                matches = self._match(reader, relevant) if relevant else []
            try:
                self._record(rows, matches)
            except _TakenMeanwhile:  # another process's matcher (SQLite, misconfigured): its rows now
                return 0
            return len(rows)

    def _taken(self, connection: Connection, batch: int) -> list[Row]:
        found = connection.execute(
            select(OUTBOX.c.id, OUTBOX.c.res_type, OUTBOX.c.res_id, OUTBOX.c.version_id, OUTBOX.c.method)
            .order_by(OUTBOX.c.id)
            .limit(batch)
        ).all()
        return [Row(int(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4])) for r in found]

    def _record(self, rows: list[Row], matches: list[tuple[str, list[Row]]]) -> None:
        """Number the matches after each subscription's last number, append them and delete the rows taken
        (not every id up to the last: on PostgreSQL a lower id may commit meanwhile), in one transaction;
        raise the change mark when the rows name organisations (_keep_actors)."""
        engine = self.services.engine
        with (
            engine.connect().execution_options(**{WRITE_OPTION: True}) as connection,
            writer_turn(connection, True),
            connection.begin(),
        ):
            deleted = connection.execute(delete(OUTBOX).where(OUTBOX.c.id.in_([row.id for row in rows])))
            if deleted.rowcount != len(rows):
                raise _TakenMeanwhile
            mark = self._raise_mark(connection) if any(row.res_type in ACTORS for row in rows) else None
            numbered = [sub_id for sub_id, mine in matches if mine]
            last = dict(
                connection.execute(
                    select(STATE.c.sub_id, STATE.c.last_number).where(STATE.c.sub_id.in_(numbered))
                ).all()
            )
            now = utc_now()
            events: list[dict[str, Any]] = []
            for sub_id, mine in matches:
                if not mine or sub_id not in last:
                    continue
                number = int(last[sub_id])
                for row in mine:
                    number += 1
                    events.append(
                        {
                            "sub_id": sub_id,
                            "number": number,
                            "res_type": row.res_type,
                            "res_id": row.res_id,
                            "version_id": row.version_id,
                            "occurred_at": now,
                        }
                    )
                connection.execute(update(STATE).where(STATE.c.sub_id == sub_id).values(last_number=number))
            if events:
                connection.execute(insert(EVENTS), events)
        if mark is not None:  # this run's memo was found after the rows that raised it had committed
            self._mark = mark

    def _keep_actors(self, connection: Connection, rows: list[Row]) -> None:
        """Keep the memo of what names each subscriber's organisation only while nothing that names one
        has changed. Every committed change of an Organization, PractitionerRole, HealthcareService or
        CareTeam has an outbox row: while one is in the outbox (in this batch or after it: a stay may write
        the Task before its Organization) the memo is dropped and the names are found anew through this
        run's reads; the run that takes one raises the `subscriptions.actors` mark (_record), so every
        process's matcher drops its memo at its next run (one matcher runs at a time). A match missed on
        a stale memo would be lost for good."""
        pending = any(row.res_type in ACTORS for row in rows) or (
            connection.execute(
                select(OUTBOX.c.id).where(OUTBOX.c.res_type.in_(sorted(ACTORS))).limit(1)
            ).first()
            is not None
        )
        mark = _actors_mark(connection)
        if pending or mark != self._mark:
            self._actors.clear()
        self._mark = mark

    @staticmethod
    def _raise_mark(connection: Connection) -> int:
        mark = _actors_mark(connection)
        if mark is None:
            connection.execute(insert(MARKS).values(name=ACTORS_MARK, value=1))
        else:
            connection.execute(
                update(MARKS).where(MARKS.c.name == ACTORS_MARK).values(value=MARKS.c.value + 1)
            )
        return (mark or 0) + 1

    def _match(self, connection: Connection, rows: list[Row]) -> list[tuple[str, list[Row]]]:
        """Each live subscription's matching rows, in outbox order, as its client sees them now."""
        subs = self._live(connection, {row.res_type for row in rows})
        triggered: dict[tuple[str, Row], bool] = {}  # per topic and row, whatever the subscribers
        plans: dict[str, Plan] = {}
        for sub in subs:
            try:
                plans[sub.sub_id] = self._plan(sub)
            except FhirError as error:  # criteria no longer valid (a parameter removed): not this batch
                log.warning("Subscription/%s: criteria cannot be evaluated: %s", sub.sub_id, error)
        found = self._references(connection, rows, subs, plans)
        candidates = {
            sub.sub_id: self._candidates(connection, sub, plans[sub.sub_id], rows, triggered, found)
            for sub in subs
            if sub.sub_id in plans
        }
        wanted = [(sub_id, plans[sub_id], rows) for sub_id, rows in candidates.items()]
        hits = criteria.matching(connection, wanted, self._groups)
        for sub in subs:  # found anew in this run: kept while the mark stands (_keep_actors)
            actors = found_actors(sub.context)
            if actors is not None:
                self._actors.setdefault(sub.context.principal.organization or "", actors)
        return [
            (sub_id, [row for row in rows if row.res_id in hits.get(sub_id, ())])
            for sub_id, rows in candidates.items()
        ]

    def _live(self, connection: Connection, types: set[str]) -> list[Live]:
        states = connection.execute(
            select(STATE).where(STATE.c.status.in_(LIVE)).order_by(STATE.c.sub_id)
        ).all()
        for gone in set(self._plans) - {str(state.sub_id) for state in states}:
            del self._plans[gone]
        if not states:
            return []
        contents = {
            str(r.res_id): loads(r.content)
            for r in connection.execute(
                select(R.c.res_id, R.c.content).where(
                    R.c.res_type == SUBSCRIPTION,
                    R.c.res_id.in_([s.sub_id for s in states]),
                    R.c.deleted.is_(False),
                )
            )
        }
        found = []
        for state in states:
            resource = contents.get(str(state.sub_id))
            if resource is None:
                continue
            live = self._parse(state, resource, connection)
            if live is not None and live.res_type in types:
                found.append(live)
        return found

    def _parse(self, state: Any, resource: Json, connection: Connection) -> Live | None:
        context = RequestContext(
            principal=subscriber(state), base_url=self.services.settings.base_url, connection=connection
        )
        # what names the subscriber's organisation: the matcher's memo while it is kept (_keep_actors),
        # else found anew through this transaction, never the process's memo of requests (ACTORS_SECONDS):
        # a batch may hold its new Organization (an HL7 discharge makes it with the Task)
        know_actors(context, self._actors.get(state.organization or ""))
        if state.topic:
            topic = self.topics.get(str(state.topic))
            if topic is None:
                return None
            return Live(state.sub_id, context, topic.resource, topic.filters(resource), topic)
        res_type, _, query = str(resource.get("criteria") or "").partition("?")
        pairs = parse_qsl(query, keep_blank_values=True)
        return Live(state.sub_id, context, res_type, pairs, None)

    def _plan(self, sub: Live) -> Plan:
        """The subscription's criteria as its client sees them (gateway/subscriptions/criteria.py): made
        again only when what it is made of changed (its criteria, what its client's organisation sees)."""
        policy = self.services.hooks.policy
        made_of = (
            sub.res_type,
            tuple(sub.pairs),
            policy.visibility(sub.context),
            policy.masking(sub.context),
        )
        kept = self._plans.get(sub.sub_id)
        if kept is None or kept.made_of != made_of:
            kept = self._plans[sub.sub_id] = criteria.plan(
                self.services.searcher, made_of, sub.context.base_url
            )
        return kept

    def _references(
        self, connection: Connection, rows: list[Row], subs: list[Live], plans: dict[str, Plan]
    ) -> dict[str, prefilter.Found]:
        """By type: the reference index rows the subscriptions' plain reference clauses test."""
        params: dict[str, set[str]] = {}
        for sub in subs:
            plan = plans.get(sub.sub_id)
            if plan is not None and plan.needs:
                params.setdefault(sub.res_type, set()).update(param for param, _ in plan.needs)
        return {
            res_type: prefilter.references(
                connection, res_type, [r.res_id for r in rows if r.res_type == res_type], wanted
            )
            for res_type, wanted in params.items()
        }

    def _candidates(
        self,
        connection: Connection,
        sub: Live,
        plan: Plan,
        rows: list[Row],
        triggered: dict[tuple[str, Row], bool],
        found: dict[str, prefilter.Found],
    ) -> list[Row]:
        """The rows the subscription's query is to test, in order: of its type, not deleted, its topic's
        trigger met (checked on the version and the one before it, once per row and topic in `triggered`:
        the subscriber does not change it), and what its reference clauses ask held (prefilter)."""
        live = [row for row in rows if row.res_type == sub.res_type and row.method != "DELETE"]
        topic = sub.topic
        if topic is not None:
            for row in live:
                if (topic.url, row) not in triggered:
                    triggered[topic.url, row] = topic.triggered(
                        connection, row.res_type, row.res_id, row.version_id, row.method
                    )
            live = [row for row in live if triggered[topic.url, row]]
        held = found.get(sub.res_type, {})
        return [row for row in live if prefilter.may_match(plan.needs, row.res_id, held)]


def versions(
    connection: Connection, keys: Sequence[tuple[str, str, int]]
) -> dict[tuple[str, str, int], Json]:
    repository = Repository(connection)
    found = {}
    for res_type, res_id, version in keys:
        stored = repository.version(res_type, res_id, version)
        if stored is not None and not stored.deleted:
            found[(res_type, res_id, version)] = stored.json()
    return found


Wake = Callable[[], None]
