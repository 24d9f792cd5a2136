"""Evaluating the high-risk rules for one patient, from what the gateway stores (its own reads: no
reader's visibility; what a client is shown of the result is the policy's business). Each rule fires
only on data present and names the resources it read to fire (the assessment's `basis`)."""

from __future__ import annotations

import calendar
import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

import fhirpathpy
from fhirpathpy.models import models
from sqlalchemy import Connection, Table, select

from gateway.model.types import Json
from gateway.risk.rules import Code, Rule, RuleSet
from gateway.search.dates import DateFormatError, date_range, utc_now
from gateway.store.repository import Repository, Stored
from gateway.store.tables import ReferenceIndex
from gateway.workflow import value_sets
from gateway.workflow.at_home import ACCESSORIES, devices_at_home, order_type

REF = cast(Table, ReferenceIndex.__table__)
FINAL = frozenset({"final", "amended"})
HELPING = frozenset({"accepted", "in-progress", "completed"})
# Dates without an offset, read as UTC for the window (months wide: an hour is nothing).
_UTC = ZoneInfo("UTC")
# The R4 model: without it FHIRPath does not resolve choice elements, and `extension.value` (the
# `valueBoolean` of `patient-interpreterRequired`) would be empty, so a rule testing it would never fire.
R4 = models["r4"]


def months_before(moment: datetime, months: int) -> datetime:
    """`moment` less `months` calendar months, the day clamped to the month's last (31 March less one
    month is 28 or 29 February): a rule's "within 12 months" is the calendar's, not 12 times 31 days."""
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return moment.replace(year=year, month=month + 1, day=min(moment.day, last))


@dataclass
class Fired:
    rule: Rule
    basis: list[str]


@dataclass
class Outcome:
    """The rules that fired for a patient and what they read; `raised`: their weights reach the threshold."""

    rule_set: RuleSet
    fired: list[Fired] = field(default_factory=list)

    @property
    def raised(self) -> bool:
        return sum(f.rule.weight for f in self.fired) >= self.rule_set.threshold

    @property
    def basis(self) -> list[str]:
        return list(dict.fromkeys(ref for f in self.fired for ref in f.basis))

    def digest(self) -> str:
        """Which rules fired on which resources: a new rule, or new data for a fired one, changes it."""
        text = "\n".join(sorted(f"{f.rule.code} {' '.join(sorted(f.basis))}" for f in self.fired))
        return hashlib.sha256(f"{self.rule_set.name} {self.rule_set.version}\n{text}".encode()).hexdigest()


class Evaluator:
    def __init__(self, rule_set: RuleSet, profiles_dir: Path | None, zone: Any) -> None:
        self.rule_set = rule_set
        self.profiles_dir = profiles_dir
        self.zone = zone
        self._value_sets: dict[str, frozenset[Code]] = {}

    def evaluate(self, connection: Connection, patient: Stored) -> Outcome:
        outcome = Outcome(self.rule_set)
        facts = Facts(connection, patient)
        for rule in self.rule_set.rules:
            basis = self._fires(rule, facts)
            if basis:
                outcome.fired.append(Fired(rule, basis))
        return outcome

    def relevant(self, resource: Json | None) -> bool:
        """Whether a written resource can change any rule's outcome: an Observation, Task or Condition
        only with the codes a rule looks for; the other types read (Patient, the devices) always."""
        if not resource:
            return False
        res_type = resource.get("resourceType")
        readers = [r for r in self.rule_set.rules if r.reads_type == res_type]
        if res_type in ("Device", "DeviceRequest", "DeviceUseStatement"):
            return True
        if res_type == "Patient":  # only what the patient rules read of it can change the outcome
            return any(self._patient_rule(rule, resource) for rule in readers)
        for rule in readers:
            if rule.kind == "living-situation":
                carried = _carried(resource)
                if carried & (rule.codes("situation_codes") | rule.codes("codes")):
                    return True
            elif rule.kind == "no-help-at-home":
                if set(codings(resource.get("code"))) & rule.codes("need"):
                    return True
            elif rule.kind == "condition":
                if _in(codings(resource.get("code")), self.value_set(str(rule.params["value_set"]))):
                    return True
            else:
                return True
        return False

    def _patient_rule(self, rule: Rule, patient: Json) -> bool:
        if rule.kind == "age":
            return bool(self._aged(rule, patient))
        if rule.kind == "fhirpath":
            return True in fhirpathpy.evaluate(patient, str(rule.params["expression"]), model=R4)
        return True

    def value_set(self, url: str) -> frozenset[Code]:
        if url not in self._value_sets:
            self._value_sets[url] = frozenset(value_sets.load(self.profiles_dir, url).displays)
        return self._value_sets[url]

    def _fires(self, rule: Rule, facts: Facts) -> list[str]:
        if rule.kind == "living-situation":
            return _living_alone(rule, facts.read(rule))
        if rule.kind == "condition":
            codes = self.value_set(str(rule.params["value_set"]))
            return [_ref(c) for c in facts.read(rule) if _active(c) and _in(codings(c.get("code")), codes)]
        if rule.kind == "no-help-at-home":
            return _no_help(rule, facts.read(rule))
        if rule.kind == "fhirpath":
            expression = str(rule.params["expression"])
            return [_ref(r) for r in facts.read(rule) if True in fhirpathpy.evaluate(r, expression, model=R4)]
        if rule.kind == "age":
            return self._aged(rule, facts.patient)
        if rule.kind == "devices":
            items = facts.devices()
            owners = {owner for _, owner, _ in items if owner}
            enough = len(items) >= int(rule.params["devices"]) and len(owners) >= int(rule.params["owners"])
            return [ref for ref, _, _ in items] if enough else []
        codes = self.value_set(str(rule.params["value_set"]))
        return [ref for ref, _, classes in facts.devices() if _in(classes, codes)]

    def _aged(self, rule: Rule, patient: Json) -> list[str]:
        born = patient.get("birthDate")
        if not isinstance(born, str) or len(born) < 4:
            return []
        try:  # a partial date counts from its last day: the age is reached for certain then
            if len(born) == 7:
                year, month = int(born[:4]), int(born[5:7])
                birth = date(year, month, calendar.monthrange(year, month)[1])
            else:
                birth = date.fromisoformat(born if len(born) == 10 else f"{born[:4]}-12-31")
        except ValueError:
            return []
        today = utc_now().replace(tzinfo=_UTC).astimezone(self.zone).date()
        years = today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))
        return [_ref(patient)] if years >= int(rule.params["years"]) else []


class Facts:
    """The patient's resources the rules read, each type read once."""

    def __init__(self, connection: Connection, patient: Stored) -> None:
        self.connection = connection
        self.patient = patient.json()
        self.patient_id = patient.res_id
        self._read: dict[tuple[str, str | None], list[Json]] = {}
        self._devices: list[tuple[str, str | None, list[Code]]] | None = None

    def read(self, rule: Rule) -> list[Json]:
        key = (rule.reads_type, rule.reads_param)
        if key not in self._read:
            if rule.reads_type == "Patient":
                self._read[key] = [self.patient]
            else:
                rids = select(REF.c.rid).where(
                    REF.c.res_type == rule.reads_type,
                    REF.c.param == (rule.reads_param or "patient"),
                    REF.c.target_type == "Patient",
                    REF.c.target_id == self.patient_id,
                )
                found = [int(row[0]) for row in self.connection.execute(rids)]
                stored = Repository(self.connection).current_many(sorted(set(found)))
                self._read[key] = [s.json() for s in stored if not s.deleted]
        return self._read[key]

    def devices(self) -> list[tuple[str, str | None, list[Code]]]:
        """(reference, owner, classes) of each device at home and each accessory order without a unit."""
        if self._devices is None:
            home = devices_at_home(self.connection, self.patient_id)
            found = [(_ref(d), _party(d.get("owner")), codings(d.get("type"))) for d in _json(home.devices)]
            for request in _json(home.requests):
                if order_type(request) == ACCESSORIES:
                    classes = codings(request.get("codeCodeableConcept"))
                    found.append((_ref(request), _party(request.get("performer")), classes))
            self._devices = found
        return self._devices


def _json(stored: list[Stored]) -> list[Json]:
    return [s.json() for s in stored]


def _ref(resource: Json) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _party(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    found = node.get("identifier")
    identifier = found if isinstance(found, dict) else {}
    return node.get("reference") or identifier.get("value") or None


def codings(concept: Any) -> list[Code]:
    found = concept.get("coding") if isinstance(concept, dict) else None
    items = concept if isinstance(concept, list) else [concept] if found is not None else []
    codes: list[Code] = []
    for item in items:
        for coding in (item.get("coding") if isinstance(item, dict) else None) or []:
            if isinstance(coding, dict) and coding.get("code"):
                codes.append((str(coding.get("system") or ""), str(coding["code"])))
    return codes


def _in(codes: list[Code], value_set: frozenset[Code]) -> bool:
    """In the ValueSet, or below one of its codes (ICD-10 `F00` takes `F00.1`, ISO 9999 `04 03`
    takes `04 03 12`)."""
    for system, code in codes:
        for listed_system, listed in value_set:
            if system == listed_system and (code == listed or code.startswith((listed + ".", listed + " "))):
                return True
    return False


def _active(condition: Json) -> bool:
    status = codings(condition.get("clinicalStatus"))
    verification = codings(condition.get("verificationStatus"))
    inactive = {"inactive", "resolved", "remission"}
    return not any(c in inactive for _, c in status) and not any(
        c in ("refuted", "entered-in-error") for _, c in verification
    )


def _effective(observation: Json) -> datetime | None:
    found = observation.get("effectivePeriod")
    period = found if isinstance(found, dict) else {}
    for value in (observation.get("effectiveDateTime"), period.get("end"), period.get("start")):
        if isinstance(value, str):
            try:
                return date_range(value, _UTC)[0]
            except DateFormatError:
                return None
    return None


def _carried(observation: Json) -> set[Code]:
    return set(codings(observation.get("code"))) | set(codings(observation.get("valueCodeableConcept")))


def _living_alone(rule: Rule, observations: list[Json]) -> list[str]:
    since = months_before(utc_now(), int(rule.params.get("months", 12)))
    situations = rule.codes("situation_codes") | rule.codes("codes")
    latest: tuple[datetime, Json] | None = None
    for obs in observations:
        carried = _carried(obs)
        moment = _effective(obs)
        if obs.get("status") not in FINAL or moment is None or moment < since or not carried & situations:
            continue
        if latest is None or moment > latest[0]:
            latest = (moment, obs)
    if latest is None:
        return []
    return [_ref(latest[1])] if _carried(latest[1]) & rule.codes("codes") else []


def _no_help(rule: Rule, tasks: list[Json]) -> list[str]:
    needs = [t for t in tasks if set(codings(t.get("code"))) & rule.codes("need")]
    cancelled = rule.codes("cancelled_by")

    def helps(task: Json) -> bool:
        items = [o for o in task.get("output") or [] if isinstance(o, dict)]
        outputs = [codings(o.get("valueCodeableConcept")) for o in items]
        said = set(codings(task.get("statusReason"))) | {c for found in outputs for c in found}
        return task.get("status") in HELPING and not said & cancelled

    if not needs or any(helps(t) for t in needs):
        return []
    return [_ref(t) for t in needs]
