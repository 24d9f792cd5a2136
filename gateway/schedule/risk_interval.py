"""Shorter intervals for confirmed high-risk patients (issue 19, finding 5; docs/risk.md, docs/scheduling.md).

Only a `final` high-risk RiskAssessment of the gateway (a clinician confirmed the proposal) counts: a
preliminary or cancelled one changes no date. For such a patient the follow-ups and controls not yet made
Tasks are planned with their interval multiplied by GATEWAY_RISK_INTERVAL_FACTOR (default 0.5): a date
moves earlier, never later, and never before today (a date already passed stays as planned). The Task
made carries a Swedish `note` saying why. This is the named exception to "only a changed plan moves a
date"; Tasks already made are never moved, and the Task ids stay those of the occurrence (no duplicates).
"""

from __future__ import annotations

import math
from datetime import date
from urllib.parse import quote

from gateway.model.types import Json
from gateway.risk.assess import ASSESSMENT_ID
from gateway.schedule.scan import scan
from gateway.schedule.writer import local
from gateway.services import Services


def factor(services: Services) -> float:
    """The configured factor, kept within (0, 1]: a wrong setting never moves a date later."""
    value = services.settings.risk_interval_factor
    return value if 0 < value <= 1 else 1.0


def confirmed(services: Services, patient: str | None = None) -> dict[str, str]:
    """`Patient/id` -> `RiskAssessment/id` of every patient (or of `patient` alone) whose gateway
    high-risk assessment is final (none when the factor is 1)."""
    if factor(services) >= 1:
        return {}
    found: dict[str, str] = {}
    query = "status=final" + ("&subject=" + quote(patient, safe="/") if patient else "")
    for stored in scan(services, "RiskAssessment", query):
        assessment = stored.json()
        if not any(i.get("system") == ASSESSMENT_ID for i in assessment.get("identifier") or []):
            continue
        patient = local((assessment.get("subject") or {}).get("reference"))
        if patient.startswith("Patient/"):
            found[patient] = f"RiskAssessment/{stored.res_id}"
    return found


def shorter(days: int, services: Services) -> int:
    """An interval of `days` shortened by the factor: at least one day, never longer."""
    return min(days, max(1, math.floor(days * factor(services))))


def moved(base: date, planned: date, today: date, services: Services) -> date:
    """The planned day of something planned `planned - base` days after `base`, the interval shortened:
    earlier, never later than planned and never before `today` (unless planned before it)."""
    if planned <= base:
        return planned
    earlier = base.toordinal() + shorter((planned - base).days, services)
    return min(planned, max(date.fromordinal(earlier), today))


def note(assessment: str, planned: date, day: date) -> Json:
    return {
        "text": (
            f"Tidigarelagd: patienten är bedömd som högriskpatient ({assessment}). "
            f"Planerad {planned.isoformat()}, tidigarelagd till {day.isoformat()}."
        )
    }
