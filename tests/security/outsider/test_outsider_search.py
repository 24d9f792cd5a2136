"""The outsider (Kommun B's client) against every read interaction and every search parameter: for a hidden
resource, or a value only hidden resources hold, it gets the answer it gets for an id or value that does
not exist (same status, same body once ids, times and the probe values are normalised), and nothing of
what is hidden, in the body, the headers, the links or a decoded cursor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

import pytest

from tests.security.outsider import cases
from tests.security.outsider.compare import Answer
from tests.security.outsider.probes import (
    Pairs,
    Probe,
    compare_answers,
    differential,
    exposure,
    reshape,
    value_probe,
)
from tests.security.outsider.world import World

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


def check(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


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


def _search(world: World, res_type: str, mode: str) -> Callable[[Pairs], Any]:
    def send(pairs: Pairs) -> Any:
        if mode == "post":
            body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs)
            form = {**world.outsider, "Content-Type": "application/x-www-form-urlencoded"}
            return world.client.post(f"/fhir/{res_type}/_search", content=body, headers=form)
        extra = [("_summary", "count")] if mode == "count" else [("_total", "accurate")]
        return world.get(f"/fhir/{res_type}", params=[*pairs, *extra])

    return send


@pytest.mark.parametrize("case", cases.private_search_params())
def test_search(world: World, case: str) -> None:
    """GET (with `_total=accurate`), POST `_search` and `_summary=count`; for a string parameter also
    `:exact` and `:contains` (a piece of the hidden value), for a token `:not`; and `:missing=false`
    shows nothing hidden."""
    res_type, code = case.split(".", 1)
    param = cases.registry().get(res_type, code)
    assert param is not None
    probe = value_probe(world, res_type, code)
    problems: list[str] = []
    for mode in ("get", "post", "count"):
        problems += [f"{mode}: {p}" for p in differential(world, _search(world, res_type, mode), probe)]
    name, value = probe.hidden[0]
    fresh = probe.fresh[0][1]
    variants: list[tuple[str, str, str]] = []
    if param.type == "token" and code != "_id" and len(probe.hidden) == 1:
        variants.append((f"{name}:not", value, fresh))
    if param.type == "string":
        variants.append((f"{name}:exact", value, fresh))
        if len(value) >= 5:
            middle = slice(1, len(value) - 1)
            variants.append((f"{name}:contains", value[middle], fresh[middle]))
    for key, hidden_value, fresh_value in variants:
        variant = Probe([(key, hidden_value)], [(key, fresh_value)], probe.target)
        problems += [f"{key}: {p}" for p in differential(world, _search(world, res_type, "get"), variant)]
    if code not in ("_id", "_lastUpdated"):
        answer = Answer.of(
            world.get(f"/fhir/{res_type}", params={f"{code}:missing": "false", "_count": "1000"})
        )
        problems += [f":missing=false: {p}" for p in exposure(world, answer)]
    check(problems)


# -- chains (one hop) and _has: the resources a chain passes are read as the outsider may read them -----


def chain_probe(world: World, res_type: str, code: str) -> Probe:
    """`Type?code:Target.param=value`: a resource the outsider reads whose `code` names a hidden one (the
    value is the hidden target's), else a hidden resource's own target."""
    facts = world.facts
    param = cases.registry().get(res_type, code)
    assert param is not None
    sources = facts.of_type(facts.visible, res_type) + facts.of_type(facts.hidden, res_type)
    for source in sources:
        for value, _ in param.values(facts.stored[source]):
            reference = value.get("reference") if isinstance(value, dict) else None
            if (
                not isinstance(reference, str)
                or reference not in facts.stored
                or reference not in facts.hidden
            ):
                continue
            target_type = reference.split("/")[0]
            for target_param in sorted(
                cases.registry().for_type(target_type).values(), key=_chain_preference
            ):
                if not target_param.indexed or target_param.type == "reference":
                    continue
                try:
                    inner = value_probe(world, target_type, target_param.code)
                except AssertionError:
                    continue
                if inner.target != reference:
                    continue
                chained = f"{code}:{target_type}.{target_param.code}"
                return Probe(
                    [(chained, v) for _, v in inner.hidden], [(chained, v) for _, v in inner.fresh], source
                )
    raise AssertionError(
        f"the world holds no resource whose {res_type}.{code} names a hidden resource with a distinct value"
    )


def _chain_preference(param: object) -> tuple[int, str]:
    code = getattr(param, "code", "")
    order = ["identifier", "name", "family", "birthdate", "code", "status", "date"]
    return (order.index(code) if code in order else len(order), code)


@pytest.mark.parametrize("case", cases.private_reference_params())
def test_chain(world: World, case: str) -> None:
    res_type, code = case.split(".", 1)
    probe = chain_probe(world, res_type, code)
    check(differential(world, _search(world, res_type, "get"), probe))


@pytest.mark.parametrize("case", cases.private_reference_params())
def test_has(world: World, case: str) -> None:
    """`Target?_has:Type:code:param=value` with a hidden resource's value: answered like a fresh value
    (whether or not the server supports `_has`: ignored, refused or applied, the same either way)."""
    res_type, code = case.split(".", 1)
    param = cases.registry().get(res_type, code)
    assert param is not None
    facts = world.facts
    for source in facts.of_type(facts.hidden, res_type):
        for value, _ in param.values(facts.stored[source]):
            reference = value.get("reference") if isinstance(value, dict) else None
            if isinstance(reference, str) and reference in facts.visible:
                inner = value_probe(world, res_type, "_id")
                target_type = reference.split("/")[0]
                key = f"_has:{res_type}:{code}:_id"
                probe = Probe(
                    [(key, source.split("/")[1])], [(key, reshape(source.split("/")[1], key))], source
                )
                check(differential(world, _search(world, target_type, "get"), probe))
                assert inner is not None
                return
    pytest.skip(f"no hidden {res_type} names a resource the outsider reads through {code}")


# -- _include / _revinclude / :iterate: what they add is what the outsider may read ---------------------


@pytest.mark.parametrize("case", cases.reference_params())
def test_include(world: World, case: str) -> None:
    res_type, code = case.split(".", 1)
    param = cases.registry().get(res_type, code)
    assert param is not None
    problems: list[str] = []
    urls = [f"/fhir/{res_type}?_include={res_type}:{code}&_count=1000"]
    for target in param.targets or ():
        for other in cases.registry().for_type(target).values():
            if other.type == "reference" and other.code not in ("_id",):
                urls.append(f"{urls[0]}&_include:iterate={target}:{other.code}")
                break
        else:
            continue
        break
    # revinclude: on the types this parameter refers to in the world's hidden resources
    targets = {
        str(v.get("reference", "")).split("/")[0]
        for ref in world.facts.of_type(world.facts.hidden, res_type)
        for v, _ in param.values(world.facts.stored[ref])
        if isinstance(v, dict)
    } & {t for t in cases.types_with("search-type")}
    for target in sorted(targets) or list(param.targets[:1]):
        urls.append(f"/fhir/{target}?_revinclude={res_type}:{code}&_count=1000")
        urls.append(
            f"/fhir/{target}?_revinclude={res_type}:{code}&_revinclude:iterate={res_type}:{code}&_count=1000"
        )
    for url in urls:
        problems += [f"{url}: {p}" for p in exposure(world, Answer.of(world.get(url)))]
    check(problems)


# -- paging: every sortable parameter, both directions, through every page -----------------------------


def walk(world: World, url: str, count: int) -> tuple[list[str], list[str]]:
    """Every page of a search as the outsider: the matches in order, and what is wrong with the pages."""
    problems: list[str] = []
    seen: list[str] = []
    total: int | None = None
    for _ in range(60):
        answer = Answer.of(world.get(url))
        if answer.status != 200:
            return seen, [f"{url}: status {answer.status}: {answer.text[:300]}"]
        problems += [f"{url}: {p}" for p in exposure(world, answer)]
        body = answer.body
        page = [
            f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in body.get("entry", [])
            if e.get("search", {}).get("mode", "match") == "match" or "/_history" in url
        ]
        links = {link["relation"]: link["url"] for link in body.get("link", [])}
        total = body.get("total", total)
        seen += page
        if "next" not in links:
            break
        if len(page) != count:
            problems.append(f"a page with a next link holds {len(page)} entries, not {count}: {url}")
        url = links["next"].replace("http://testserver", "")
    else:
        problems.append(f"more than 60 pages: {url}")
    if total is not None and "/_history" not in url and total != len(set(seen)):
        problems.append(f"total {total}, but {len(set(seen))} entries were served over the pages")
    return seen, problems


@pytest.mark.parametrize("case", cases.sort_params())
def test_sort_paging(world: World, case: str) -> None:
    res_type, code = case.split(".", 1)
    problems: list[str] = []
    orders = []
    for key in (code, f"-{code}"):
        seen, found = walk(world, f"/fhir/{res_type}?_sort={key}&_count=2&_total=accurate", 2)
        problems += found
        orders.append(seen)
        if len(seen) != len(set(seen)):
            problems.append(f"_sort={key}: an entry served twice")
        missing = set(world.facts.of_type(world.facts.visible, res_type)) - set(seen)
        if missing:
            problems.append(
                f"_sort={key}: {len(missing)} resources the outsider may read were never served: "
                f"{sorted(missing)[:3]}"
            )
    check(problems)


@pytest.mark.parametrize("res_type", cases.types_with("history-type"))
def test_type_history_paging(world: World, res_type: str) -> None:
    _, problems = walk(world, f"/fhir/{res_type}/_history?_count=2", 2)
    counted = Answer.of(world.get(f"/fhir/{res_type}", params={"_summary": "count"}))
    problems += exposure(world, counted)
    served, more = walk(world, f"/fhir/{res_type}?_count=2", 2)
    problems += more
    if counted.status == 200 and counted.body.get("total") != len(set(served)):
        problems.append(f"_summary=count says {counted.body.get('total')}, paging serves {len(set(served))}")
    check(problems)


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
    from tests.security.outsider.probes import search_values

    values = list(search_values(param, world.facts.stored[protected], world.services.extractor))
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
            f"{url_type}?{name}: {p}" for p in differential(world, _search(world, url_type, "get"), probe)
        ]
    body = {"resourceType": "Patient", "name": [{"family": "Provsson"}]}
    condition = "&".join(f"{k}={v}" for k, v in pairs)
    fresh_condition = "&".join(f"{k}={v}" for k, v in fresh)
    hidden = Answer.of(
        world.client.post("/fhir/Patient", json=body, headers={**world.outsider, "If-None-Exist": condition})
    )
    fresh_answer = Answer.of(
        world.client.post(
            "/fhir/Patient", json=body, headers={**world.outsider, "If-None-Exist": fresh_condition}
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
