"""The deliverer: in `gateway serve` (a thread beside the server) and `gateway notify` (on its own).

Each round it runs the matcher until the outbox is empty, then leases the subscriptions with something
due (an event after the last acknowledged one, a handshake, a heartbeat) whose retry time has come, and
hands each to a worker thread. Per subscription one attempt at a time, event N+1 never before N was
answered 2xx (at least once: a lost answer sends N again, with the same number). Failures are retried
with exponential backoff and jitter, capped (GATEWAY_NOTIFY_RETRY_CAP), until the oldest undelivered event
is older than GATEWAY_NOTIFY_MAX_AGE_DAYS: then the subscription goes to `error`. Leases expire, so a killed
process's subscriptions are taken over (PostgreSQL: taken with SKIP LOCKED, any number of processes). A
slow receiver holds at most GATEWAY_NOTIFY_ENDPOINT_CONCURRENCY workers, each for at most the timeout.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy import Connection, Update, and_, delete, func, or_, select, update

from gateway.hooks import GATEWAY_CLIENT, GATEWAY_SCOPES, AccessRecord, Principal, RequestContext
from gateway.model.types import Json
from gateway.periodic import Periodic
from gateway.search.dates import utc_now
from gateway.security.organisation import know_actors
from gateway.security.sealing import Sealer
from gateway.services import Services
from gateway.store.database import WRITE_OPTION, writer_turn
from gateway.store.repository import Repository
from gateway.subscriptions import endpoints, render
from gateway.subscriptions.matcher import EVENTS, LIVE, Matcher, subscriber
from gateway.subscriptions.outbox import Outbox
from gateway.subscriptions.resource import STATE, SUBSCRIPTION, timeout_of
from gateway.subscriptions.sender import NotSent, send
from gateway.subscriptions.topics import Topic
from gateway.telemetry.metrics import SUBSCRIPTION_BACKLOG, SUBSCRIPTION_DELIVERIES

log = logging.getLogger("gateway.subscriptions")
DELIVERED, FAILED = SUBSCRIPTION_DELIVERIES.labels("delivered"), SUBSCRIPTION_DELIVERIES.labels("failed")
RETENTION_EVERY = 300.0  # seconds between purges of events past their retention


class Deliverer(Periodic):
    def __init__(self, services: Services, topics: dict[str, Topic] | None = None) -> None:
        self.services = services
        self.settings = services.settings
        self.topics = services.topics if topics is None else topics
        self.matcher = Matcher(services, self.topics)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"
        notify = services.hooks.notify
        wake = notify.wake if isinstance(notify, Outbox) else threading.Event()
        super().__init__("subscription deliverer", self.settings.notify_poll_seconds, log, wake)
        self.pool = ThreadPoolExecutor(max(1, self.settings.notify_workers), thread_name_prefix="notify")
        self.busy: set[str] = set()
        self.slots: dict[tuple[str, str, int], int] = {}
        self.lock = threading.Lock()
        self.purged = 0.0
        self.sealer = Sealer.when_needed(self.settings)
        # long enough for one attempt (its timeout, rendering and writing): else another process takes
        # the subscription over while this one still delivers, and an event goes twice
        self.lease_seconds = self.settings.notify_lease_seconds or self.settings.notify_timeout * 3 + 30

    # -- the loop ------------------------------------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the round in progress (waiting for it `timeout` seconds at most) and the attempts
        under way (each bounded by its timeout)."""
        super().stop(timeout)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def round(self) -> None:
        self.step()

    def step(self) -> None:
        while self.matcher.run_once():
            pass
        for sub_id in self._lease():
            self.pool.submit(self._guarded, sub_id)
        self._purge()
        self._count_backlog()

    def _count_backlog(self) -> None:
        """gateway_subscription_backlog_events: the events the live subscriptions' subscribers have not
        acknowledged yet (one query a round)."""
        pending = func.coalesce(func.sum(STATE.c.last_number - STATE.c.acked), 0)
        with self.services.engine.connect() as connection:
            count = connection.execute(select(pending).where(STATE.c.status.in_(LIVE))).scalar()
        SUBSCRIPTION_BACKLOG.set(max(0, int(count or 0)))

    def _write(self) -> Any:
        return self.services.engine.connect().execution_options(**{WRITE_OPTION: True})

    def _lease(self) -> list[str]:
        with self.lock:
            room = max(0, self.settings.notify_workers * 2 - len(self.busy))
            busy = set(self.busy)
        if not room:
            return []
        now = utc_now()
        due = or_(
            STATE.c.acked < STATE.c.last_number,
            STATE.c.status == "requested",
            and_(
                STATE.c.heartbeat_seconds.is_not(None),
                STATE.c.status == "active",
                or_(STATE.c.last_sent.is_(None), STATE.c.last_sent < now - timedelta(seconds=1)),
            ),
        )
        query = (
            select(
                STATE.c.sub_id,
                STATE.c.status,
                STATE.c.heartbeat_seconds,
                STATE.c.last_sent,
                STATE.c.acked,
                STATE.c.last_number,
            )
            .where(
                STATE.c.status.in_(LIVE),
                due,
                or_(STATE.c.retry_at.is_(None), STATE.c.retry_at <= now),
                or_(STATE.c.lease_until.is_(None), STATE.c.lease_until < now),
            )
            .order_by(STATE.c.retry_at, STATE.c.sub_id)
            .limit(room + len(busy))
        )
        with self._write() as connection, writer_turn(connection, True), connection.begin():
            if connection.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = connection.execute(query).all()
            taken = [str(r.sub_id) for r in rows if str(r.sub_id) not in busy and _really_due(r, now)][:room]
            if taken:
                lease = now + timedelta(seconds=self.lease_seconds)
                connection.execute(
                    update(STATE)
                    .where(STATE.c.sub_id.in_(taken))
                    .values(lease_owner=self.owner, lease_until=lease)
                )
        with self.lock:
            self.busy |= set(taken)
        return taken

    def _guarded(self, sub_id: str) -> None:
        try:
            self.deliver(sub_id)
        except Exception:
            log.exception("Delivery of Subscription/%s failed", sub_id)
            self._release(sub_id, retry=True)
        finally:
            with self.lock:
                self.busy.discard(sub_id)
            self.wake.set()

    def _purge(self) -> None:
        clock = utc_now().timestamp()
        if clock - self.purged < RETENTION_EVERY:
            return
        self.purged = clock
        before = utc_now() - timedelta(days=self.settings.notify_retention_days)
        with self._write() as connection, writer_turn(connection, True), connection.begin():
            connection.execute(delete(EVENTS).where(EVENTS.c.occurred_at < before))

    # -- one subscription ----------------------------------------------------------------------------

    def deliver(self, sub_id: str) -> None:
        with self.services.engine.connect() as connection:
            state = connection.execute(select(STATE).where(STATE.c.sub_id == sub_id)).first()
            current = Repository(connection).current(SUBSCRIPTION, sub_id)
            off = None if state is None else self._off_reason(connection, state, current)
        if state is None or current is None or current.deleted or state.status not in LIVE:
            self._release(sub_id)
            return
        if off is not None:
            self.set_status(sub_id, "off", off)
            return
        resource = current.json()
        try:
            target = endpoints.normalize(str(resource["channel"]["endpoint"]))
        except (endpoints.EndpointRefused, KeyError, TypeError) as error:
            self.set_status(sub_id, "error", f"endpoint: {error}")
            return
        key = (target.scheme, target.host, target.port)
        with self.lock:
            if self.slots.get(key, 0) >= self.settings.notify_endpoint_concurrency:
                slot = False
            else:
                self.slots[key] = self.slots.get(key, 0) + 1
                slot = True
        if not slot:  # the endpoint is busy with other subscriptions' deliveries: later
            self._release(sub_id)
            return
        try:
            self._attempt(state, resource, target)
        finally:
            with self.lock:
                self.slots[key] -= 1

    def _off_reason(self, connection: Connection, state: Any, current: Any) -> str | None:
        if current is not None and not current.deleted:
            end = current.json().get("end")
            if isinstance(end, str) and render.passed(end):
                return "end passed"
        if self.settings.auth and not render.client_active(
            connection, str(state.client_id), bool(self.settings.oidc_issuer)
        ):
            return "client disabled or removed"
        return None

    def _attempt(self, state: Any, resource: Json, target: endpoints.Target) -> None:
        sub_id = str(state.sub_id)
        principal = subscriber(state)
        context = RequestContext(principal=principal, base_url=self.settings.base_url)
        with self.services.engine.connect() as connection:
            reg = (
                endpoints.registration(connection, principal.client_id)
                if self.settings.auth
                else endpoints.Registration(any_endpoint=True)
            )
            context.connection = connection
            # what names the subscriber's organisation: as the matcher's last run found it (it matched
            # this subscription's events so; kept true by the change mark, matcher.py), else found anew
            know_actors(context, self.matcher.actors_of(principal.organization))
            built = render.build(self, connection, context, state, resource, target)
            context.connection = None
        if built is None:  # nothing to send now (a classic subscription just activated)
            self._release(sub_id)
            return
        try:
            address = endpoints.resolve(target, reg, self.settings.allow_http_loopback)
        except endpoints.EndpointRefused as error:
            self.set_status(sub_id, "error", f"endpoint refused: {error}")
            return
        except ConnectionError as error:
            self._failed(state, str(error))
            return
        try:
            timeout = timeout_of(resource, self.settings.notify_timeout)
            status = send(target, address, built.request, reg, timeout)
        except NotSent as error:
            FAILED.inc()
            self._failed(state, f"not sent: {error}")
            return
        except OSError as error:
            self._audit(context, built, target, 504, str(error))
            FAILED.inc()
            self._failed(state, f"no answer: {error}")
            return
        self._audit(context, built, target, status, "")
        if 200 <= status < 300:
            DELIVERED.inc()
            self._succeeded(state, built)
        else:
            FAILED.inc()
            self._failed(state, f"answered {status}")

    def _audit(
        self, context: RequestContext, built: render.Built, target: Any, status: int, error: str
    ) -> None:
        """A disclosure under PDL: every attempt that sent a body (docs/security.md)."""
        if not built.request.body:
            return
        record = AccessRecord(
            "notify",
            None,
            [],
            status,
            context,
            f"Subscription/{built.sub_id} to {target.url}" + (f": {error}" if error else ""),
        )
        record.patients = built.patients
        record.resources = built.resources
        self.services.hooks.audit.record(record)

    def _succeeded(self, state: Any, built: render.Built) -> None:
        now = utc_now()
        values: dict[str, Any] = {
            "attempts": 0,
            "retry_at": None,
            "failing_since": None,
            "last_sent": now,
            "lease_owner": None,
            "lease_until": None,
        }
        if built.acked is not None:
            values["acked"] = built.acked
        with self._write() as connection, writer_turn(connection, True), connection.begin():
            connection.execute(self._mine(str(state.sub_id)).values(**values))
        if built.activate:
            self.set_status(str(state.sub_id), "active", None)

    def _failed(self, state: Any, reason: str) -> None:
        now = utc_now()
        attempts = int(state.attempts) + 1
        delay = min(self.settings.notify_retry_cap, 2.0 ** (attempts - 1)) * random.uniform(0.5, 1.0)
        since = state.failing_since or now
        with self.services.engine.connect() as connection:
            oldest = connection.execute(
                select(EVENTS.c.occurred_at).where(
                    EVENTS.c.sub_id == state.sub_id, EVENTS.c.number == int(state.acked) + 1
                )
            ).scalar()
        first = oldest or since
        if state.status == "requested" and state.topic:  # a handshake not answered 2xx
            self.set_status(str(state.sub_id), "error", f"handshake failed: {reason}")
            return
        if _age_days(first, now) > self.settings.notify_max_age_days:
            self.set_status(
                str(state.sub_id), "error", f"undelivered since {first:%Y-%m-%dT%H:%M:%SZ}: {reason}"
            )
            return
        with self._write() as connection, writer_turn(connection, True), connection.begin():
            connection.execute(
                self._mine(str(state.sub_id)).values(
                    attempts=attempts,
                    retry_at=now + timedelta(seconds=delay),
                    failing_since=since,
                    reason=reason,
                    lease_owner=None,
                    lease_until=None,
                )
            )

    def _release(self, sub_id: str, retry: bool = False) -> None:
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        if retry:
            values["retry_at"] = utc_now() + timedelta(seconds=self.settings.notify_retry_cap)
        with self._write() as connection, writer_turn(connection, True), connection.begin():
            connection.execute(self._mine(sub_id).values(**values))

    def _mine(self, sub_id: str) -> Update:
        """The subscription's state while this process holds its lease: a lease that expired and was taken
        over (a delivery slower than the lease) is the other process's to update."""
        return update(STATE).where(STATE.c.sub_id == sub_id, STATE.c.lease_owner == self.owner)

    def set_status(self, sub_id: str, status: str, reason: str | None) -> None:
        """The subscription's status, in its resource (a version written by the gateway) and its state."""
        set_status(self.services, sub_id, status, reason)


def set_status(services: Services, sub_id: str, status: str, reason: str | None) -> None:
    gateway = Principal(client_id=GATEWAY_CLIENT, scopes=GATEWAY_SCOPES)
    context = RequestContext(principal=gateway, base_url=services.settings.base_url)
    write_path = services.write_path

    def work(uow: Any) -> None:
        current = uow.repository.current(SUBSCRIPTION, sub_id, lock=True)
        if current is not None and not current.deleted:
            body = current.json()
            body["status"] = status
            body.pop("error", None)
            if reason:
                body["error"] = reason
            write_path.update(uow, SUBSCRIPTION, sub_id, body)
        values: dict[str, Any] = {
            "status": status,
            "reason": reason,
            "lease_owner": None,
            "lease_until": None,
        }
        if status == "active":
            values |= {"attempts": 0, "retry_at": None, "failing_since": None}
        uow.connection.execute(update(STATE).where(STATE.c.sub_id == sub_id).values(**values))

    write_path.run(context, work)


def _age_days(since: datetime, now: datetime) -> float:
    return (now - since).total_seconds() / 86400


def _really_due(row: Any, now: datetime) -> bool:
    if row.status == "requested" or row.acked < row.last_number or row.heartbeat_seconds is None:
        return True
    return row.last_sent is None or row.last_sent + timedelta(seconds=int(row.heartbeat_seconds)) <= now


def start_deliverer(services: Services) -> Deliverer | None:
    """The deliverer of `gateway serve` (GATEWAY_NOTIFY on, the write path's outbox in place)."""
    if not services.settings.notify or not isinstance(services.hooks.notify, Outbox):
        return None
    return Deliverer(services).start()
