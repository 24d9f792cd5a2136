"""Who may do what with a Task (issue 18), as organisation-scoped clients: the owning unit completes or
rejects, appends notes and reassigns within its own organisation (an Organization, HealthcareService or
PractitionerRole of its own; 403 otherwise); the region's clients may do anything; others nothing."""

from __future__ import annotations

from typing import Any

from tests.workflow.journey import Journey, journey, reject, secured
from tests.workflow.test_fault_reports import fault, handled

__all__ = ["journey", "secured"]  # fixtures


def directory(j: Journey, home: dict[str, Any]) -> None:
    """What the region maintains: a home-care service of Kommun A, a nurse's role there, one of the MAH's."""
    j.put(
        "region",
        {"resourceType": "HealthcareService", "id": "ka-hemtjanst", "providedBy": {"reference": home["ka"]}},
    )
    j.put(
        "region",
        {"resourceType": "PractitionerRole", "id": "ka-ssk", "organization": {"reference": home["ka"]}},
    )
    j.put(
        "region",
        {"resourceType": "PractitionerRole", "id": "mah-tekn", "organization": {"reference": home["mah"]}},
    )
    j.put(
        "region",
        {
            "resourceType": "PractitionerRole",
            "id": "kb-ssk",
            "organization": {"reference": "Organization/kommun-b"},
        },
    )


def owner(value: str) -> list[dict[str, Any]]:
    return [{"op": "replace", "path": "/owner", "value": {"reference": value}}]


def test_the_owner_of_a_gateway_task_reassigns_within_its_organisation(journey: Journey) -> None:
    j = journey
    home = handled(j)
    directory(j, home)
    task = j.handover("ka", home["ka"])
    target = f"Task/{task['id']}"
    j.patch("ka", target, owner("HealthcareService/ka-hemtjanst"))
    j.patch("ka", target, owner("PractitionerRole/ka-ssk"))
    refused = j.patch("ka", target, owner("Organization/kommun-b"), 403)
    assert "owner" in refused["issue"][0]["diagnostics"]
    j.patch("ka", target, owner("PractitionerRole/kb-ssk"), 403)
    j.patch("ka", target, owner(home["mah"]), 403)
    # still the unit's: it notes and rejects
    note = {
        "text": "Patienten vårdas hos annan enhet.",
        "authorReference": {"reference": "PractitionerRole/ka-ssk"},
    }
    j.patch("ka", target, [{"op": "add", "path": "/note", "value": [note]}])
    j.patch("ka", target, reject("Fel mottagare"))
    j.get("kb", target, status=404)  # an outsider neither sees nor changes it
    j.patch("kb", target, owner("Organization/kommun-b"), 404)


def test_the_owner_of_a_fault_report_answers_and_reassigns_but_changes_nothing_else(journey: Journey) -> None:
    j = journey
    home = handled(j)
    directory(j, home)
    task = j.post("ka", fault(home["device"], home["ka"]))
    target = f"Task/{task['id']}"
    j.patch("ka", target, owner("Organization/kommun-b"), 403)  # the reporter does not redirect it
    j.patch("ka", target, owner(home["ka"]), 403)
    j.patch("mah", target, owner("PractitionerRole/mah-tekn"))
    j.patch("mah", target, owner(home["ka"]), 403)  # not to another organisation
    description = [{"op": "add", "path": "/description", "value": "Annat"}]
    j.patch("mah", target, description, 403)
    j.patch("mah", target, [{"op": "add", "path": "/businessStatus", "value": {"text": "Tekniker bokad"}}])
    j.patch("mah", target, [{"op": "replace", "path": "/status", "value": "completed"}])
    assert j.get("ka", target)["status"] == "completed"  # the reporter sees the answer


def test_the_region_may_do_anything(journey: Journey) -> None:
    j = journey
    home = handled(j)
    directory(j, home)
    task = j.handover("ka", home["ka"])
    target = f"Task/{task['id']}"
    j.patch("region", target, owner("Organization/kommun-b"))
    j.patch("region", target, [{"op": "add", "path": "/description", "value": "Ändrad av regionen"}])
    j.get("ka", target, status=404)  # no longer Kommun A's, and nothing else links it
