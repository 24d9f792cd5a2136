"""Each subsystem's metrics move when it works (docs/operations.md, Metrics): MLLP messages by ACK code
and the HL7 adapter's records by outcome, the audit writer's records and queue, the scheduler's runs,
subscription deliveries and their backlog."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from gateway.adapters.hl7v2.ack import read_ack
from gateway.hooks import AccessRecord, Principal, RequestContext
from gateway.schedule.registry import JOBS, run_pass
from gateway.search.dates import utc_now
from gateway.services import Services
from gateway.subscriptions.delivery import Deliverer
from tests.adapters.test_hl7v2_messages import adt
from tests.adapters.test_hl7v2_mllp import Running, exchange, mllp
from tests.conftest import Database
from tests.subscriptions.conftest import World, manual, receiver
from tests.subscriptions.receiver import Receiver
from tests.subscriptions.test_delivery_rules import active, drive, state

__all__ = ["manual", "mllp", "receiver"]  # fixtures of tests/adapters and tests/subscriptions


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_mllp_messages_by_ack_and_hl7_records_by_outcome(mllp: Running) -> None:
    before = {
        "AA": value("gateway_mllp_messages_total", ack="AA"),
        "AR": value("gateway_mllp_messages_total", ack="AR"),
        "stored": value("gateway_adapter_records_total", adapter="hl7v2", outcome="stored"),
        "rejected": value("gateway_adapter_records_total", adapter="hl7v2", outcome="rejected"),
    }
    accepted, unknown = exchange(mllp.port, [adt("A01", "M1"), adt("A01", "M2", facility="Okänd^SE999^L")])
    assert read_ack(accepted)[0] == "AA" and read_ack(unknown)[0] == "AR"
    assert value("gateway_mllp_messages_total", ack="AA") == before["AA"] + 1
    assert value("gateway_mllp_messages_total", ack="AR") == before["AR"] + 1
    assert value("gateway_adapter_records_total", adapter="hl7v2", outcome="stored") == before["stored"] + 1
    rejected = value("gateway_adapter_records_total", adapter="hl7v2", outcome="rejected")
    assert rejected == before["rejected"] + 1


@pytest.fixture
def audited(database: Database) -> Iterator[Services]:
    database.clear()
    built = Services.build(database.settings(audit=True), engine=database.engine)
    yield built
    built.close()


def test_the_audit_writers_records_and_queue(audited: Services) -> None:
    assert audited.audit is not None
    before = value("gateway_audit_records_total", outcome="stored")
    context = RequestContext(principal=Principal(client_id="ops-test"))
    with audited.audit.paused():  # the writer held: the records wait in the queue
        for n in range(3):
            audited.audit.record(AccessRecord("read", "Patient", [f"p{n}"], 200, context))
        assert value("gateway_audit_queue_size") == 3
    audited.audit.flush()
    assert value("gateway_audit_records_total", outcome="stored") == before + 3
    assert value("gateway_audit_queue_size") == 0


def test_scheduler_runs_by_job_and_outcome(services: Services) -> None:
    before = {job.name: value("gateway_schedule_runs_total", job=job.name, outcome="done") for job in JOBS}
    run_pass(services, utc_now())
    for job in JOBS:
        assert value("gateway_schedule_runs_total", job=job.name, outcome="done") == before[job.name] + 1
        assert value("gateway_schedule_run_duration_seconds_count", job=job.name) >= 1


@pytest.fixture
def deliverer(manual: World) -> Iterator[Deliverer]:
    made = Deliverer(manual.services)
    yield made
    made.stop()


def test_subscription_deliveries_and_backlog(manual: World, deliverer: Deliverer, receiver: Receiver) -> None:
    sub_id = active(manual, deliverer, receiver)
    delivered = value("gateway_subscription_deliveries_total", outcome="delivered")
    failed = value("gateway_subscription_deliveries_total", outcome="failed")
    receiver.status = 503
    manual.task("t1", "orgA", "pa")
    drive([deliverer], lambda: int(state(manual, sub_id)["attempts"] or 0) >= 1)  # type: ignore[call-overload]
    assert value("gateway_subscription_deliveries_total", outcome="failed") >= failed + 1
    assert value("gateway_subscription_backlog_events") == 1  # the event not yet acknowledged
    receiver.status = 200
    drive([deliverer], lambda: state(manual, sub_id)["acked"] == 1, timeout=20)
    deliverer.step()
    assert value("gateway_subscription_deliveries_total", outcome="delivered") >= delivered + 1
    assert value("gateway_subscription_backlog_events") == 0
