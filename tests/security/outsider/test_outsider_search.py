"""The outsider (Kommun B's client) against every read interaction and every search parameter: for a hidden
resource, or a value only hidden resources hold, it gets the answer it gets for an id or value that does
not exist (same status, same body once ids, times and the probe values are normalised), and nothing of
what is hidden, in the body, the headers, the links or a decoded cursor; for a value it shares with
hidden resources, exactly its own matches. References followed: test_outsider_chains.py; paging:
test_outsider_paging.py."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from tests.security.outsider import cases
from tests.security.outsider.compare import Answer
from tests.security.outsider.probes import (
    NoValue,
    Pairs,
    Probe,
    check,
    compare_answers,
    condition,
    differential,
    expected_answer,
    expected_for,
    exposure,
    region_finds,
    reshape,
    search_values,
    searcher,
    value_probe,
)
from tests.security.outsider.world import World
from tests.security.outsider.world_data import NOT_SEEDED

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def secret_ref(world: World, res_type: str, deleted: bool = False) -> str:
    """A hidden resource of the type whose id the outsider has never been shown."""
    pool = world.facts.gone if deleted else world.facts.hidden
    refs = [r for r in world.facts.of_type(pool, res_type) if r not in world.facts.exposed]
    assert refs, f"the world holds no {'deleted ' if deleted else ''}hidden {res_type} (world_data.py)"
    return refs[0]


def id_probe(world: World, res_type: str, deleted: bool = False) -> Probe:
    hidden = secret_ref(world, res_type, deleted).split("/")[1]
    return Probe([("id", hidden)], [("id", reshape(hidden, res_type))], f"{res_type}/{hidden}")


# -- read, vread, instance history: a hidden id, and a deleted hidden id, read like an unknown one ------

READS = {
    "read": "/fhir/{type}/{id}",
    "vread": "/fhir/{type}/{id}/_history/1",
    "history": "/fhir/{type}/{id}/_history",
}


@pytest.mark.parametrize("interaction", ["read", "vread", "history"])
@pytest.mark.parametrize("res_type", cases.private_types_with("read"))
@pytest.mark.parametrize("state", ["hidden", "deleted"])
def test_read(world: World, res_type: str, interaction: str, state: str) -> None:
    if res_type == "AuditEvent" and state == "deleted":
        pytest.skip("AuditEvents cannot be deleted")
    probe = id_probe(world, res_type, deleted=state == "deleted")

    def send(pairs: Pairs) -> Any:
        return world.get(READS[interaction].format(type=res_type, id=pairs[0][1]))

    check(differential(world, send, probe))


# -- search, every parameter: a hidden value against a fresh one ----------------------------------------


# POST _search and _summary=count answer from the same query as GET with _total=accurate, and the modifiers
# (`:not`, `:exact`, `:contains`, `:missing`) are one code path per parameter type: they are checked for
# every parameter of these types, and for each type's first parameter of each kind; GET for all.
SAMPLED_TYPES = frozenset({"Patient", "Observation"})


@cache
def modifier_sample() -> frozenset[str]:
    firsts: dict[tuple[str, str], str] = {}
    for case in cases.private_search_params():
        res_type, code = case.split(".", 1)
        param = cases.registry().get(res_type, code)
        if param is not None and not code.startswith("_"):
            firsts.setdefault((res_type, param.type), case)
    sampled = {c for c in cases.private_search_params() if c.split(".")[0] in SAMPLED_TYPES}
    return frozenset(firsts.values()) | sampled


@pytest.mark.parametrize("case", cases.private_search_params())
def test_search(world: World, case: str) -> None:
    """GET (with `_total=accurate`); for the sampled parameters (modifier_sample) also POST `_search`,
    `_summary=count`, for a string `:exact` and `:contains` (a piece of the hidden value), for a token
    `:not`, and `:missing=false` showing nothing hidden."""
    res_type, code = case.split(".", 1)
    param = cases.registry().get(res_type, code)
    assert param is not None
    try:
        probe = value_probe(world, res_type, code)
    except NoValue:
        if res_type not in NOT_SEEDED:
            raise
        check(missing_only(world, res_type, code))
        return
    problems: list[str] = []
    for mode in ("get", "post", "count") if case in modifier_sample() else ("get",):
        problems += [f"{mode}: {p}" for p in differential(world, searcher(world, res_type, mode), probe)]
    name, value = probe.hidden[0]
    fresh = probe.fresh[0][1]
    variants: list[tuple[str, str, str]] = []
    if case not in modifier_sample():
        check(problems)
        return
    if param.type == "token" and code != "_id" and len(probe.hidden) == 1:
        variants.append((f"{name}:not", value, fresh))
    if param.type == "string":
        variants.append((f"{name}:exact", value, fresh))
        if len(value) >= 5:
            middle = slice(1, len(value) - 1)
            variants.append((f"{name}:contains", value[middle], fresh[middle]))
    for key, hidden_value, fresh_value in variants:
        # what the region-wide client's search finds that the outsider reads; `:not` finds its resources
        # for a fresh value too, so its answer is checked against that set, not the fresh answer
        expected = expected_for(world, res_type, [(key, hidden_value)])
        assert expected is not None, f"{key}={hidden_value} finds what the world does not classify"
        send = searcher(world, res_type, "get")
        if expected or key.endswith(":not"):
            answer = Answer.of(send([(key, hidden_value)]))
            problems += [f"{key}: {p}" for p in expected_answer(world, answer, expected, [hidden_value])]
            continue
        variant = Probe([(key, hidden_value)], [(key, fresh_value)], probe.target)
        problems += [f"{key}: {p}" for p in differential(world, send, variant)]
    if code not in ("_id", "_lastUpdated"):
        answer = Answer.of(
            world.get(f"/fhir/{res_type}", params={f"{code}:missing": "false", "_count": "1000"})
        )
        problems += [f":missing=false: {p}" for p in exposure(world, answer)]
    check(problems)


def missing_only(world: World, res_type: str, code: str) -> list[str]:
    """For a parameter of a type only the gateway writes (AuditEvent) that none of its resources fill:
    `:missing=true`, which finds the hidden resources too for the region-wide client, matches exactly
    the outsider's own, and `:missing=false` what the region's finds of them; nothing hidden shown."""
    problems = []
    key = f"{code}:missing"
    for value in ("true", "false"):
        found = region_finds(world, res_type, [(key, value)])
        if value == "true" and not found & world.facts.hidden:
            problems.append(f"{key}=true finds no hidden {res_type} for the region-wide client")
        answer = Answer.of(world.get(f"/fhir/{res_type}", params={key: value, "_total": "accurate"}))
        expected = frozenset(found & world.facts.visible)
        problems += [f"{key}={value}: {p}" for p in expected_answer(world, answer, expected, [])]
    return problems


# -- masked values of a protected identity the outsider reads ------------------------------------------


MASKED = [
    "name",
    "family",
    "given",
    "phonetic",
    "address",
    "address-city",
    "address-postalcode",
    "telecom",
    "phone",
]


@pytest.mark.parametrize("code", MASKED)
def test_masked_parameters(world: World, code: str) -> None:
    """A value masked in a protected patient the outsider reads confirms nothing: not by search, not by a
    chain through a resource that names the patient, not by a conditional create."""
    protected = world.facts.protected_visible
    assert protected, "the world holds no protected patient the outsider reads (world_data.py)"
    param = cases.registry().get("Patient", code)
    assert param is not None
    values = list(search_values(param, world.facts.written[protected], world.services.extractor))
    assert values, f"the protected patient has no value for {code}"
    pairs = values[0]
    fresh = [(k, reshape(v, code)) for k, v in pairs]
    problems: list[str] = []
    for url_type, name in (
        ("Patient", code),
        ("Task", f"patient:Patient.{code}"),
        ("Observation", f"subject:Patient.{code}"),
    ):
        probe = Probe([(name, v) for _, v in pairs], [(name, v) for _, v in fresh], protected)
        problems += [
            f"{url_type}?{name}: {p}" for p in differential(world, searcher(world, url_type, "get"), probe)
        ]
    body = {"resourceType": "Patient", "name": [{"family": "Provsson"}]}
    hidden = Answer.of(
        world.client.post(
            "/fhir/Patient", json=body, headers={**world.outsider, "If-None-Exist": condition(pairs)}
        )
    )
    fresh_answer = Answer.of(
        world.client.post(
            "/fhir/Patient", json=body, headers={**world.outsider, "If-None-Exist": condition(fresh)}
        )
    )
    problems += [
        f"If-None-Exist: {p}"
        for p in compare_answers(world, hidden, fresh_answer, [v for _, v in pairs], [v for _, v in fresh])
    ]
    for answer in (hidden, fresh_answer):
        if answer.status == 201:
            world.client.delete(
                answer.headers["location"].split("/fhir")[1].split("/_history")[0], headers=world.region
            )
    check(problems)
