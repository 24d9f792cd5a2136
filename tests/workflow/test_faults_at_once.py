"""Repeated fault reports when the reports that reach the threshold are written at the same moment (two
processes, or threads, on PostgreSQL): each write's transaction counts the patient's reports
(gateway/workflow/faults.py); without taking turns per patient each counted without the other and the
repeated-faults report was never made (in most windows of this test)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest

from tests.workflow.journey import Journey, journey, secured
from tests.workflow.test_fault_reports import fault, handled

__all__ = ["journey", "secured"]  # fixtures
ROUNDS = 4


def test_the_reports_reaching_the_threshold_at_once_make_the_repeated_faults_report(
    journey: Journey, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = journey
    if j.services.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's writers take turns: the two writes never overlap")
    home = handled(j)
    for window in range(ROUNDS):  # windows of GATEWAY_FAULT_REPORT_DAYS (30) apart: a report each
        start = datetime(2027, 1, 10, 9, 0) + timedelta(days=40 * window)
        monkeypatch.setattr("gateway.pipeline.utc_now", lambda start=start: start)
        j.post("ka", fault(home["device"], home["ka"]))  # the first
        monkeypatch.setattr("gateway.pipeline.utc_now", lambda start=start: start + timedelta(days=1))
        barrier = threading.Barrier(2)

        def at_once(who: str, requester: str, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(timeout=30)
            j.post(who, fault(home["device"], requester))

        # the second and third at once, a day later: the municipality's again and the prescribing unit's
        with ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(at_once, "ka", home["ka"]), pool.submit(at_once, "lung", home["lung"])]
            for done in calls:
                done.result(timeout=60)
        assert len(j.reports("lung", home["prescriber"])) == window + 1
