"""Job `high-risk` (issue 19, docs/risk.md): the high-risk rules for the patients whose outcome time may
have changed since the job's last complete pass. Every write of what the rules read is evaluated by the
reaction in its own transaction (gateway/risk/reaction.py), so between writes only the clock changes an
outcome: a patient reaching a rule's age, a living-situation Observation leaving a rule's window. A pass
evaluates those patients alone; a whole pass over every patient runs when the job has none on record
(its first pass) or the rule set changed since (its fingerprint: rules, parameters, version, and the
codes of the ValueSets in profiles/ the rules name, which decide as much as the rules do). The rules'
clock is the real one, never GATEWAY_NOW (docs/scheduling.md), and so are the windows here.

Each window reaches one day beyond both ends: evaluating a patient whose outcome did not change writes
nothing (`unchanged`), and a day covers zones and year-only birth dates."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.risk.evaluate import months_before
from gateway.risk.reaction import risk_pass
from gateway.risk.rules import RuleSet, load
from gateway.schedule.lease import Lease
from gateway.schedule.scan import scan
from gateway.schedule.writer import Tally, context_for, local
from gateway.search.dates import utc_now
from gateway.services import Services
from gateway.workflow import value_sets

NAME = "high-risk"
MARGIN = timedelta(days=1)


VALUE_SET_KINDS = frozenset({"condition", "device-class"})


def fingerprint(rule_set: RuleSet, profiles_dir: Path | None) -> str:
    """What a pass's outcomes depend on besides time and data: the rules with their parameters, and the
    codes of the ValueSets they name (read from profiles/ as the pass's evaluator reads them): a code
    added to `cognitive-decline` changes outcomes as surely as a changed rule, so it makes a pass whole."""
    urls = sorted({str(r.params["value_set"]) for r in rule_set.rules if r.kind in VALUE_SET_KINDS})
    codes = {url: sorted(value_sets.load(profiles_dir, url).displays) for url in urls}
    return hashlib.sha256(repr((rule_set, codes)).encode()).hexdigest()[:64]


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a year without it
        return day.replace(year=day.year - years, day=28)


def _ageing(services: Services, rule_set: RuleSet, since: datetime, until: datetime) -> set[str]:
    """Patients who reached an age rule's years between `since` and `until` (the zone's days)."""
    zone = ZoneInfo(services.settings.local_timezone)
    first = since.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone).date() - MARGIN
    last = until.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone).date() + MARGIN
    found: set[str] = set()
    for rule in rule_set.rules:
        if rule.kind == "age":
            years = int(rule.params["years"])
            window = f"birthdate=ge{_years_before(first, years)}&birthdate=le{_years_before(last, years)}"
            found.update(stored.res_id for stored in scan(services, "Patient", window))
    return found


def _lapsing(services: Services, rule_set: RuleSet, since: datetime, until: datetime) -> set[str]:
    """Patients with an Observation that left a living-situation rule's window (`months`) between `since`
    and `until`: effective then, `months` calendar months earlier (as the rule counts them)."""
    found: set[str] = set()
    for rule in rule_set.rules:
        if rule.kind == "living-situation":
            months = int(rule.params.get("months", 12))
            first = (months_before(since, months) - MARGIN).date()
            last = (months_before(until, months) + MARGIN).date()
            window = f"date=ge{first}&date=le{last}"
            for stored in scan(services, rule.reads_type, window):
                subject = local((stored.json().get("subject") or {}).get("reference"))
                if subject.startswith("Patient/"):
                    found.add(subject.removeprefix("Patient/"))
    return found


def run(services: Services, now: datetime, lease: Lease | None = None) -> Tally:
    """One pass (`now`, the jobs' clock, is not used: the rules read the real one)."""
    started = utc_now()
    rule_set = load()
    mark = fingerprint(rule_set, services.settings.profiles_dir)
    since, was = lease.last_done() if lease is not None else (None, None)
    going = lease.renew if lease is not None else None
    context = context_for(None)
    if since is None or was != mark:
        counts = risk_pass(services, context=context, going=going)
    else:
        patients = _ageing(services, rule_set, since, started) | _lapsing(services, rule_set, since, started)
        counts = risk_pass(services, context=context, patients=patients, going=going)
    made = Tally(created=counts.get("proposed", 0), updated=counts.get("updated", 0))
    made.cancelled, made.seen = counts.get("withdrawn", 0), sum(counts.values())
    if lease is not None:
        lease.done(started, mark)  # only while the lease is still ours: a pass cut short is not done
    return made
