"""The gateway's Prometheus metrics, defined once (docs/operations.md lists them).

Every label has a bounded set of values: interactions and steps are names from this code, resource types
only the served ones (else `none`), statuses HTTP codes, ACK codes, outcomes and job names from fixed
lists. No id, query string, identifier or free text is ever a label value.

Under `gateway serve --workers N` the values live in files of PROMETHEUS_MULTIPROC_DIR (prometheus-client's
multiprocess mode, set up by `serve`): each worker writes its own, a scrape sums them. Gauges that count
what a live process holds (`livesum`) drop a process once it is marked dead (`forget_dead_processes`)."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import Engine, event

from gateway.model.types import SUPPORTED

NONE = "none"
# A request's duration: from a point read (a millisecond) to a large search or transaction (seconds).
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A write path step: from microseconds (authorize) to a large index write.
STEP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)

HTTP_REQUESTS = Counter(
    "gateway_http_requests",
    "HTTP requests answered, by interaction, resource type and status",
    ["interaction", "type", "status"],
)
HTTP_DURATION = Histogram(
    "gateway_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by interaction, resource type and status",
    ["interaction", "type", "status"],
    buckets=REQUEST_BUCKETS,
)
WRITE_STEP = Histogram(
    "gateway_write_step_duration_seconds",
    "Time spent in each step of the write path (validate, authorize, store, index, audit, notify)",
    ["step"],
    buckets=STEP_BUCKETS,
)
STEPS = ("validate", "authorize", "store", "index", "audit", "notify")
VALIDATE, AUTHORIZE, STORE, INDEX, AUDIT, NOTIFY = (WRITE_STEP.labels(step) for step in STEPS)

AUDIT_BACKLOG = Gauge(
    "gateway_audit_queue_size",
    "Access records queued for the audit writer, not yet stored (503 when the queue is full)",
    multiprocess_mode="livesum",
)
AUDIT_RECORDS = Counter(
    "gateway_audit_records",
    "Access records the audit writer handled from its queue, by outcome (stored, failed)",
    ["outcome"],
)
MLLP_MESSAGES = Counter(
    "gateway_mllp_messages", "HL7 v2 messages answered over MLLP, by ACK code (AA, AE, AR)", ["ack"]
)
ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})
ADAPTER_RECORDS = Counter(
    "gateway_adapter_records",
    "Source records an adapter answered, by adapter and outcome (stored, rejected, failed)",
    ["adapter", "outcome"],
)
ADAPTERS = frozenset({"bestallningsportalen", "device-register", "hl7v2", "directory", "quarantine"})
SUBSCRIPTION_DELIVERIES = Counter(
    "gateway_subscription_deliveries",
    "Notification attempts sent to subscribers, by outcome (delivered, failed)",
    ["outcome"],
)
SUBSCRIPTION_BACKLOG = Gauge(
    "gateway_subscription_backlog_events",
    "Subscription events not yet acknowledged by their subscribers (live subscriptions), as last counted",
    multiprocess_mode="livemax",
)
SCHEDULE_RUNS = Counter(
    "gateway_schedule_runs",
    "Scheduled job runs, by job and outcome (done, failed, skipped: another process held the lease)",
    ["job", "outcome"],
)
SCHEDULE_DURATION = Histogram(
    "gateway_schedule_run_duration_seconds",
    "Time a scheduled job's run took, by job",
    ["job"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0),
)
DB_POOL_SIZE = Gauge(
    "gateway_db_pool_size",
    "Database connections the pools may hold open (pool size plus overflow), over the live processes",
    multiprocess_mode="livesum",
)
DB_POOL_CHECKED_OUT = Gauge(
    "gateway_db_pool_checked_out",
    "Database connections in use (checked out of the pools), over the live processes",
    multiprocess_mode="livesum",
)


def res_type_label(res_type: str | None) -> str:
    """A resource type as a label: a served type, else `none` (never what a client wrote)."""
    return res_type if res_type in SUPPORTED else NONE


def adapter_outcome(adapter: str, status: int) -> None:
    """Count one source record's answer: stored (2xx), rejected (4xx) or failed (5xx)."""
    outcome = "stored" if status < 400 else "rejected" if status < 500 else "failed"
    ADAPTER_RECORDS.labels(adapter if adapter in ADAPTERS else "other", outcome).inc()


def adapter_entries(adapter: str, entries: list[Any]) -> None:
    """Count the records of a `batch-response` (one entry per source record)."""
    for item in entries:
        status = str(item.get("response", {}).get("status", "500")) if isinstance(item, dict) else "500"
        code = status.split(" ", 1)[0]
        adapter_outcome(adapter, int(code) if code.isdigit() else 500)


def watch_pool(engine: Engine) -> None:
    """Keep the pool gauges true: its capacity now, its checked-out connections on every check-out and
    check-in (one cheap call each; pools without a count, such as SQLite's in-memory one, are skipped)."""
    pool = engine.pool
    if getattr(pool, "_gateway_watched", False):  # an engine shared by several apps (tests): once
        return
    size = getattr(pool, "size", None)
    checkedout = getattr(pool, "checkedout", None)
    if not callable(size) or not callable(checkedout):
        return
    overflow = getattr(pool, "_max_overflow", 0)
    DB_POOL_SIZE.set(int(size()) + max(0, int(overflow)))
    setattr(pool, "_gateway_watched", True)  # noqa: B010

    def count(*_args: Any) -> None:
        DB_POOL_CHECKED_OUT.set(int(checkedout()))

    event.listen(pool, "checkout", count)
    event.listen(pool, "checkin", count)


def multiprocess_dir() -> str | None:
    """The multiprocess directory, when the metrics live in files (several worker processes)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
