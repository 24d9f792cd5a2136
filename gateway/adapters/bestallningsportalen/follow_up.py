"""An order's follow-up plan (`uppfoljning`) → its CarePlan *followup*, version after version.

Each follow-up of the plan (`efter_dagar` + `satt`) is one planned activity, keyed by the activity's
element id (`uppfoljning-<efter_dagar>-<satt>`). Its date comes from the version that planned it (that
version's `skapad` + `efter_dagar`) and stays there: a later version with the same follow-up keeps the
stored activity as it is (date, status, what the responsible unit recorded), so a follow-up that is
overdue stays overdue. Only a changed plan changes activities: a follow-up the new plan adds is planned
from the new version's `skapad`; one it no longer has is ended (cancelled or stopped) with the coded reason
`plan-changed`; a changed responsible unit becomes the performer of the open ones. A cancelled order
(`makulerad`) ends every open follow-up with the reason `order-cancelled`; a pick-up does so with
`device-returned` (the reaction in gateway/workflow/follow_ups.py). Reasons: CodeSystem
follow-up-end-reason (profiles/), with a Swedish text."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from gateway.adapters import mapping as m
from gateway.model.types import Json

SOURCE = "bestallningsportalen"
END_REASON = f"{m.BASE}/CodeSystem/follow-up-end-reason"
END_REASONS = {
    "plan-changed": "Uppföljningen finns inte längre i planen",
    "plan-withdrawn": "Ordern har inte längre någon uppföljningsplan",
    "order-cancelled": "Ordern makulerades",
    "device-returned": "Hjälpmedlet hämtas tillbaka",
}
# ended by the plan itself: a plan that brings the follow-up back plans it again
REPLANNED = ("plan-changed", "plan-withdrawn")
CATEGORY = {"system": m.CAREPLAN_CATEGORY, "code": "device-follow-up", "display": "Uppföljning av hjälpmedel"}
_DESCRIBED = re.compile(r"^Uppföljning (\d+) dagar")


def key(item: Json) -> str:
    """The element id of the activity of one follow-up of the plan."""
    return f"uppfoljning-{item['efter_dagar']}-{item['satt']}"


def activity_key(activity: Json) -> str | None:
    """The follow-up a stored planned activity is of: its element id; for one stored before activities
    had ids, read from its method code and description."""
    detail = activity.get("detail")
    if not isinstance(detail, dict):
        return None
    if isinstance(activity.get("id"), str):
        return str(activity["id"])
    codes = [c.get("code") for c in (detail.get("code") or {}).get("coding", [])]
    days = _DESCRIBED.match(str(detail.get("description", "")))
    return f"uppfoljning-{days.group(1)}-{codes[0]}" if days and codes else None


def reason(code: str, text: str) -> Json:
    """A coded reason an activity ended, with the Swedish text saying which order and version."""
    return {"coding": [{"system": END_REASON, "code": code, "display": END_REASONS[code]}], "text": text}


def reason_code(activity: Json) -> str | None:
    codings = (((activity.get("detail") or {}).get("statusReason") or {}).get("coding")) or []
    return next((str(c.get("code")) for c in codings if c.get("system") == END_REASON), None)


def is_open(activity: Json) -> bool:
    """A planned activity not yet done or ended (care-plan-activity-status)."""
    detail = activity.get("detail")
    return isinstance(detail, dict) and detail.get("status") in m.tables(SOURCE)["withdrawn"]["activity"]


def end(activity: Json, why: Json) -> Json:
    """A planned activity not yet done, ended (`withdrawn.activity` in codes.yaml) with the reason `why`;
    anything else as it is."""
    if not is_open(activity):
        return activity
    detail = activity["detail"]
    ended = m.tables(SOURCE)["withdrawn"]["activity"][detail["status"]]
    return {**activity, "detail": {**detail, "status": ended, "statusReason": why}}


def _coding(code: str) -> Json:
    found: dict[str, Any] = m.code_map(SOURCE, "uppfoljningssatt")[code]
    coding: Json = {"system": f"{m.ORDER_CODES}-uppfoljningssatt", "code": code}
    if found.get("display"):
        coding["display"] = found["display"]
    return coding


def _planned(item: Json, start: date, unit: str) -> Json:
    return {
        "id": key(item),
        "detail": {
            "kind": "Appointment",
            "code": {"coding": [_coding(item["satt"])]},
            "status": "not-started",
            "scheduledPeriod": {"start": (start + timedelta(days=item["efter_dagar"])).isoformat()},
            "performer": [m.ref(unit)],
            "description": f"Uppföljning {item['efter_dagar']} dagar efter förskrivning",
        },
    }


def _standing(held: list[Json]) -> dict[str, int]:
    """The index of the activity that stands for each follow-up among the stored ones: the last with its
    key that the plan itself did not end (one a cancellation or a pick-up ended stays ended)."""
    found: dict[str, int] = {}
    for index, activity in enumerate(held):
        name = activity_key(activity)
        if name is not None and reason_code(activity) not in REPLANNED:
            found[name] = index
    return found


def careplan(
    order: Json,
    version: int,
    status: Json,
    plan_id: str,
    patient: str,
    unit: str,
    lines: list[str],
    current: Json | None,
) -> Json:
    """The follow-up CarePlan of this version of the order, laid over the stored one (`current`)."""
    number = order["ordernummer"]
    held = [a for a in (current or {}).get("activity", []) if "detail" in a]
    standing = _standing(held)
    wanted = {key(item): item for item in order["uppfoljning"]["plan"]}
    activities: list[Json] = []
    gone = reason("plan-changed", f"Version {version} av order {number} har inte längre denna uppföljning")
    for index, held_activity in enumerate(held):
        name = activity_key(held_activity)
        if name not in wanted or standing.get(name) != index:
            activities.append(end(held_activity, gone))
        elif is_open(held_activity):
            detail = {**held_activity["detail"], "performer": [m.ref(unit)]}
            activities.append({**held_activity, "detail": detail})
        else:
            activities.append(held_activity)
    start = date.fromisoformat(str(order["skapad"])[:10])
    activities += [_planned(item, start, unit) for name, item in wanted.items() if name not in standing]
    if status["careplan"] == "revoked":
        why = reason("order-cancelled", f"Order {number} makulerades (version {version})")
        activities = [end(activity, why) for activity in activities]
    resource: Json = {k: v for k, v in (current or {}).items() if k not in ("meta", "text")}
    resource.update(
        {
            "resourceType": "CarePlan",
            "id": plan_id,
            "status": status["careplan"],
            "intent": "plan",
            "category": [{"coding": [CATEGORY]}],
            "title": f"Uppföljning av beställning {number}",
            "subject": m.ref(patient),
            "created": (current or {}).get("created") or order["skapad"],
            "author": m.ref(unit),
            "activity": [*({"reference": m.ref(line)} for line in lines), *activities],
        }
    )
    return resource
