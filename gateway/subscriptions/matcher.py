"""The matcher: outbox rows → numbered events, each subscription evaluated as its client.

One matcher runs at a time (PostgreSQL: a transaction-scoped advisory lock, which another process skips;
SQLite: the writer's turn). It takes the outbox in `id` order, evaluates each live subscription's criteria
against the rows' resources with the visibility and masking of the subscription's client (organisation
policy, SMART scopes: `gateway/store/visibility.py`), appends an event with the subscription's next
number for every match, and deletes the rows, all in one transaction: a crash leaves the rows for the
next run and no event half-numbered. Events name type, id and version only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
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
from gateway.subscriptions.outbox import OUTBOX
from gateway.subscriptions.resource import STATE, SUBSCRIPTION
from gateway.subscriptions.topics import Topic

log = logging.getLogger("gateway.subscriptions")
EVENTS = cast(Table, SubscriptionEvent.__table__)
MARKS = cast(Table, ChangeMark.__table__)
ACTORS_MARK = "subscriptions.actors"
LIVE = ("requested", "active")
BATCH = 500
MAX_IDS = 100  # a search parameter's values (GATEWAY_MAX_SEARCH_VALUES' default)
_LOCK_KEY = 0x5B5C_0001  # the matcher's advisory lock (PostgreSQL)
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
    last_number: int


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

    def run_once(self, batch: int = BATCH) -> int:
        """Match one batch of outbox rows; the number of rows taken (0: the outbox is empty)."""
        engine = self.services.engine
        with (
            engine.connect().execution_options(**{WRITE_OPTION: True}) as connection,
            writer_turn(connection, True),
            connection.begin(),
        ):
            if connection.dialect.name == "postgresql":
                got = connection.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({_LOCK_KEY})").scalar()
                if not got:
                    return 0
            found = connection.execute(
                select(OUTBOX.c.id, OUTBOX.c.res_type, OUTBOX.c.res_id, OUTBOX.c.version_id, OUTBOX.c.method)
                .order_by(OUTBOX.c.id)
                .limit(batch)
            ).all()
            rows = [Row(int(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4])) for r in found]
            if not rows:
                return 0
            self._keep_actors(connection, rows)
            relevant = [row for row in rows if row.res_type not in NOT_MATCHED]
            if relevant:
                self._match(connection, relevant)
            # the rows taken, not every id up to the last: on PostgreSQL a lower id may commit meanwhile
            connection.execute(delete(OUTBOX).where(OUTBOX.c.id.in_([row.id for row in rows])))
            return len(rows)

    def _keep_actors(self, connection: Connection, rows: list[Row]) -> None:
        """Keep the memo of what names each subscriber's organisation only while nothing that names one
        has changed. Every committed change of an Organization, PractitionerRole, HealthcareService or
        CareTeam has an outbox row: while one is in the outbox (in this batch or after it: a stay may write
        the Task before its Organization) the memo is dropped and the names are found anew through this
        transaction; the run that takes one raises the `subscriptions.actors` mark, so every process's
        matcher drops its memo at its next run (one matcher runs at a time). A match missed on a stale
        memo would be lost for good."""
        taken = any(row.res_type in ACTORS for row in rows)
        pending = taken or (
            connection.execute(
                select(OUTBOX.c.id).where(OUTBOX.c.res_type.in_(sorted(ACTORS))).limit(1)
            ).first()
            is not None
        )
        mark = connection.execute(select(MARKS.c.value).where(MARKS.c.name == ACTORS_MARK)).scalar()
        if taken:
            if mark is None:
                connection.execute(insert(MARKS).values(name=ACTORS_MARK, value=1))
            else:
                connection.execute(
                    update(MARKS).where(MARKS.c.name == ACTORS_MARK).values(value=MARKS.c.value + 1)
                )
            mark = int(mark or 0) + 1
        if pending or mark != self._mark:
            self._actors.clear()
        self._mark = None if mark is None else int(mark)

    def _match(self, connection: Connection, rows: list[Row]) -> None:
        subs = self._live(connection, {row.res_type for row in rows})
        now = utc_now()
        events: list[dict[str, Any]] = []
        triggered: dict[tuple[str, Row], bool] = {}  # per topic and row, whatever the subscribers
        for sub in subs:
            mine = [row for row in rows if row.res_type == sub.res_type]
            try:
                matched = self._matching(connection, sub, mine, triggered)
            except FhirError as error:  # criteria no longer valid (a parameter removed): not this batch
                log.warning("Subscription/%s: criteria cannot be evaluated: %s", sub.sub_id, error)
                continue
            number = sub.last_number
            for row in mine:
                if row in matched:
                    number += 1
                    events.append(
                        {
                            "sub_id": sub.sub_id,
                            "number": number,
                            "res_type": row.res_type,
                            "res_id": row.res_id,
                            "version_id": row.version_id,
                            "occurred_at": now,
                        }
                    )
            if number != sub.last_number:
                connection.execute(
                    update(STATE).where(STATE.c.sub_id == sub.sub_id).values(last_number=number)
                )
        if events:
            connection.execute(insert(EVENTS), events)
        for sub in subs:  # found anew in this run: kept while the mark stands (_keep_actors)
            actors = found_actors(sub.context)
            if actors is not None:
                self._actors.setdefault(sub.context.principal.organization or "", actors)

    def _live(self, connection: Connection, types: set[str]) -> list[Live]:
        states = connection.execute(
            select(STATE).where(STATE.c.status.in_(LIVE)).order_by(STATE.c.sub_id)
        ).all()
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
            return Live(
                state.sub_id, context, topic.resource, topic.filters(resource), topic, int(state.last_number)
            )
        res_type, _, query = str(resource.get("criteria") or "").partition("?")
        pairs = parse_qsl(query, keep_blank_values=True)
        return Live(state.sub_id, context, res_type, pairs, None, int(state.last_number))

    def _matching(
        self, connection: Connection, sub: Live, rows: list[Row], triggered: dict[tuple[str, Row], bool]
    ) -> set[Row]:
        """The rows whose resource matches as the subscriber sees it now (current, visible, not masked
        values); a topic's trigger is checked on the version and the one before it, once per row and topic
        in `triggered` (the subscriber does not change it)."""
        live = [row for row in rows if row.method != "DELETE"]
        topic = sub.topic
        if topic is not None:
            for row in live:
                if (topic.url, row) not in triggered:
                    triggered[topic.url, row] = topic.triggered(
                        connection, row.res_type, row.res_id, row.version_id, row.method
                    )
            live = [row for row in live if triggered[topic.url, row]]
        if not live:
            return set()
        ids = sorted({row.res_id for row in live})
        matched: set[str] = set()
        policy = self.services.hooks.policy
        visibility = policy.visibility(sub.context)
        masking = policy.masking(sub.context)
        searcher = self.services.searcher
        for start in range(0, len(ids), MAX_IDS):
            chunk = ids[start : start + MAX_IDS]
            request = searcher.parse(
                sub.res_type, [*sub.pairs, ("_id", ",".join(chunk))], sub.context.base_url
            )
            request.visibility, request.masking = visibility, masking
            statement = select(R.c.res_id).where(searcher.planner.where(request))
            matched |= {str(r[0]) for r in connection.execute(statement)}
        return {row for row in live if row.res_id in matched}


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
