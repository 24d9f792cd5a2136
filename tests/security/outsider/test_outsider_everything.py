"""The outsider and Patient/{id}/$everything: on the patients it may read, every page (by `_count`,
and the single Bundle) shows only what it may read, with totals, `next` links and cursors that count
and hold nothing else; on hidden patients, every parameter answers as for a patient that does not
exist."""

from __future__ import annotations

import pytest

from tests.security.outsider.compare import Answer
from tests.security.outsider.probes import check, compare_answers, reshape
from tests.security.outsider.test_outsider_paging import walk
from tests.security.outsider.world import World

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
QUERIES = ["", "?_count=1", "?_type=Observation,Device", "?start=2000-01-01&end=2100", "?_since=2000-01-01"]


def test_everything_of_the_outsiders_patients_shows_only_what_it_may_read(world: World) -> None:
    patients = world.facts.of_type(world.facts.visible, "Patient")
    assert patients, "the outsider reads no patient in the world"
    problems: list[str] = []
    for patient in patients:
        for count in (2, None):
            query = f"?_count={count}" if count else ""
            seen, found = walk(world, f"/fhir/{patient}/$everything{query}", count or 0)
            problems += found
            assert patient in seen
    check(problems)


@pytest.mark.parametrize("query", QUERIES)
def test_everything_of_a_hidden_patient_answers_as_an_unknown_one(world: World, query: str) -> None:
    facts = world.facts
    problems: list[str] = []
    for hidden in facts.of_type(facts.hidden - facts.exposed, "Patient")[:3]:
        target = hidden.split("/")[1]
        fresh = reshape(target, f"everything{query}")
        answers = [Answer.of(world.get(f"/fhir/Patient/{i}/$everything{query}")) for i in (target, fresh)]
        problems += compare_answers(world, answers[0], answers[1], [target], [fresh])
    check(problems)


def test_risk_assessments_show_only_the_basis_the_outsider_may_read(world: World) -> None:
    """The high-risk assessments (visible to every related organisation, named exception 6) name in
    `basis` only what the outsider may read itself; the same by read, search and $everything."""
    problems: list[str] = []
    bodies = [world.get("/fhir/RiskAssessment?_count=500").json()]
    bodies += [
        world.get(f"/fhir/{p}/$everything").json()
        for p in world.facts.of_type(world.facts.visible, "Patient")
    ]
    hidden = world.facts.hidden | world.facts.gone
    proposals = [
        e["resource"]
        for e in bodies[0].get("entry", [])
        if any(
            i.get("system", "").endswith("/identifier/risk-assessment")
            for i in e["resource"].get("identifier", [])
        )
    ]
    assert proposals, "the world holds no high-risk proposal the outsider reads (world_data.high_risk)"
    assert "Observation/obsh-ensamhemma" in hidden
    for body in bodies:
        for entry in body.get("entry", []):
            resource = entry.get("resource", {})
            if resource.get("resourceType") != "RiskAssessment":
                continue
            shown = {str(b.get("reference")) for b in resource.get("basis", [])}
            if shown & hidden:
                problems.append(f"RiskAssessment/{resource.get('id')} names {sorted(shown & hidden)[:4]}")
    check(problems)
