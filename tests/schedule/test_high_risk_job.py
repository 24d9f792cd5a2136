"""The scheduler's `high-risk` job (issue 19, docs/scheduling.md "High-risk identification") and
`gateway risk evaluate`: the first pass evaluates every patient, a later one only the patients whose
birth date or living-situation Observation crossed a rule's bound since (the rules' clock is the real
one, set here by patching it); a changed rule set makes the next pass whole again; the command proposes
what a changed rule set finds, for every patient or one. SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import resources
from gateway.cli import CLI_CONTEXT
from gateway.risk import evaluate, rules
from gateway.risk.assess import ASSESSMENT_ID
from gateway.risk.evaluate import months_before
from gateway.schedule import high_risk
from gateway.schedule.registry import JOBS, run_pass
from gateway.schedule.writer import Tally
from gateway.search.dates import utc_now
from gateway.services import Services
from gateway.store.repository import Repository
from gateway.workflow import value_sets
from tests.conftest import Database

GATEWAY = Path(sys.executable).with_name("gateway")
ALONE = {"coding": [{"system": "http://snomed.info/sct", "code": "105529008"}]}


@pytest.fixture
def services(database: Database) -> Iterator[Services]:
    database.clear()
    built = Services.build(database.settings(), engine=database.engine)
    yield built
    built.close()


class Clock:
    """The rules' clock (and the job's), moved by the test."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = utc_now().replace(hour=10)
        for module in (evaluate, high_risk):
            monkeypatch.setattr(module, "utc_now", lambda: self.now)

    def today(self) -> date:
        return self.now.date()


def patient(res_id: str, born: date, **more: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": res_id, "birthDate": born.isoformat(), **more}


def alone(res_id: str, patient_id: str, effective: datetime) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": res_id,
        "status": "final",
        "code": ALONE,
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": effective.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write(services: Services, *resources: dict[str, Any]) -> None:
    def work(uow: Any) -> None:
        for resource in resources:
            services.write_path.update(uow, resource["resourceType"], resource["id"], resource)

    services.write_path.run(CLI_CONTEXT, work)


def job(services: Services) -> Tally:
    found = run_pass(services, utc_now(), jobs=tuple(j for j in JOBS if j.name == high_risk.NAME))
    tally = found[high_risk.NAME]
    assert tally is not None
    return tally


def status(services: Services, patient_id: str) -> str | None:
    with services.engine.connect() as connection:
        held = Repository(connection).held_by([("RiskAssessment", ASSESSMENT_ID, patient_id)])
    found = held.get(("RiskAssessment", ASSESSMENT_ID, patient_id))
    return str(found.json()["status"]) if found is not None else None


def years_ago(day: date, years: int) -> date:
    return day.replace(year=day.year - years)


def test_a_pass_evaluates_only_whom_time_changed(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    today = clock.today()
    # turns 80 in two days: with the Observation (lives alone) it reaches the threshold then
    turning = patient("turning", years_ago(today, 80) + timedelta(days=2))
    # 85 and living alone, the Observation 12 calendar months less 3 days old: it leaves the window in 4
    # days (12 months of 31 days would keep it a week longer)
    lapsing = patient("lapsing", years_ago(today, 85))
    recent = months_before(clock.now, 12) + timedelta(days=3)
    bystanders = [patient(f"p{n}", years_ago(today, 40)) for n in range(5)]
    write(services, turning, lapsing, *bystanders)
    write(services, alone("o-turning", "turning", clock.now), alone("o-lapsing", "lapsing", recent))
    assert status(services, "turning") is None  # 79: not yet
    assert status(services, "lapsing") == "preliminary"  # proposed by the reaction at the write

    first = job(services)
    assert first.seen == 7  # the first pass: every patient
    assert job(services).seen == 0  # nothing crossed a bound since: nobody evaluated

    clock.now += timedelta(days=5)
    later = job(services)
    assert status(services, "turning") == "preliminary"  # reached 80: proposed
    assert status(services, "lapsing") == "cancelled"  # the Observation grew too old: withdrawn
    assert later.created == 1 and later.cancelled == 1
    assert later.seen == 2  # the bystanders were not evaluated
    assert job(services).seen == 0


def test_a_changed_rule_set_makes_the_pass_whole(
    services: Services, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clock = Clock(monkeypatch)
    write(services, *[patient(f"p{n}", years_ago(clock.today(), 85)) for n in range(3)])
    assert job(services).seen == 3
    assert job(services).seen == 0

    changed = yaml.safe_load(resources.risk_rules_file().read_text(encoding="utf-8"))
    changed["threshold"] = 1  # age alone is enough now
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(changed, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("GATEWAY_RISK_RULES", str(path))
    rules.load.cache_clear()
    try:
        again = job(services)
    finally:
        rules.load.cache_clear()
    assert again.seen == 3 and again.created == 3
    assert {status(services, f"p{n}") for n in range(3)} == {"preliminary"}


def test_a_changed_value_set_makes_the_pass_whole(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rules read ValueSets from profiles/ (`cognitive-decline`, `advanced-device-class`): a code
    added to one changes outcomes as a changed rule does, so the fingerprint covers their codes."""
    clock = Clock(monkeypatch)
    write(services, *[patient(f"p{n}", years_ago(clock.today(), 40)) for n in range(2)])
    profiles = services.settings.profiles_dir
    before = high_risk.fingerprint(rules.load(), profiles)
    assert job(services).seen == 2
    assert job(services).seen == 0

    loaded = value_sets.load

    def widened(profiles_dir: Path | None, url: str) -> value_sets.Codes:
        found = loaded(profiles_dir, url)
        if not url.endswith("/cognitive-decline"):
            return found
        return value_sets.Codes(url, {**found.displays, ("http://snomed.info/sct", "1234567"): "ny kod"})

    monkeypatch.setattr(value_sets, "load", widened)
    assert high_risk.fingerprint(rules.load(), profiles) != before
    assert job(services).seen == 2  # whole again
    assert job(services).seen == 0
    monkeypatch.setattr(value_sets, "load", loaded)
    assert high_risk.fingerprint(rules.load(), profiles) == before


@pytest.mark.parametrize(
    ("moment", "months", "expected"),
    [
        (datetime(2025, 3, 31, 10), 1, datetime(2025, 2, 28, 10)),
        (datetime(2024, 3, 31, 10), 1, datetime(2024, 2, 29, 10)),
        (datetime(2025, 1, 15, 10), 12, datetime(2024, 1, 15, 10)),
        (datetime(2025, 2, 10, 10), 14, datetime(2023, 12, 10, 10)),
        (datetime(2024, 2, 29, 10), 12, datetime(2023, 2, 28, 10)),
    ],
)
def test_months_are_calendar_months(moment: datetime, months: int, expected: datetime) -> None:
    assert months_before(moment, months) == expected


def test_gateway_risk_evaluate_for_every_patient_and_for_one(
    services: Services, database: Database, tmp_path: Path
) -> None:
    today = utc_now().date()
    write(services, *[patient(f"p{n}", years_ago(today, 85)) for n in range(3)])
    assert {status(services, f"p{n}") for n in range(3)} == {None}  # age alone is below the threshold

    changed = yaml.safe_load(resources.risk_rules_file().read_text(encoding="utf-8"))
    changed["threshold"] = 1
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(changed, allow_unicode=True), encoding="utf-8")
    env = {**database.environment(), "GATEWAY_RISK_RULES": str(path), "PATH": str(GATEWAY.parent)}

    def evaluate_(*args: str) -> str:
        done = subprocess.run(
            [str(GATEWAY), "risk", "evaluate", *args],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "proposed 1" in evaluate_("--patient", "p1")
    assert status(services, "p1") == "preliminary" and status(services, "p0") is None
    said = evaluate_()
    assert "proposed 2" in said and "unchanged 1" in said
    assert {status(services, f"p{n}") for n in range(3)} == {"preliminary"}


def test_a_birth_month_alone_counts_from_its_last_day(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`birthDate` "1946-05": 80 on 2026-05-31 for the age rule, and a later pass finds it then."""
    clock = Clock(monkeypatch)
    clock.now = datetime(2026, 5, 29, 10, 0)
    write(services, patient("month", date(1946, 5, 1)) | {"birthDate": "1946-05"})
    write(services, alone("o-month", "month", clock.now))
    assert job(services).seen == 1 and status(services, "month") is None  # 79 on 29 May
    clock.now = datetime(2026, 6, 1, 10, 0)
    assert job(services).seen == 1  # the birthday, somewhere in May: evaluated again
    assert status(services, "month") == "preliminary"
