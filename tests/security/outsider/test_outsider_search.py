"""The outsider (Kommun B's client) against every read interaction and every search parameter: for a hidden
resource, or a value only hidden resources hold, it gets the answer it gets for an id or value that does
not exist (same status, same body once ids, times and the probe values are normalised), and nothing of
what is hidden, in the body, the headers, the links or a decoded cursor."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import quote_plus

import pytest

from gateway.search.registry import SearchParam
from tests.security.outsider import cases
from tests.security.outsider.compare import Answer
from tests.security.outsider.probes import (
    NoValue,
    Pairs,
    Probe,
    compare_answers,
    condition,
    differential,
    expected_answer,
    expected_for,
    exposure,
    fresh_of,
    region_answer,
    region_finds,
    reshape,
    search_values,
    value_probe,
)
from tests.security.outsider.world import World
from tests.security.outsider.world_data import NOT_SEEDED, PUBLIC_TYPES

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
        problems += [f"{mode}: {p}" for p in differential(world, _search(world, res_type, mode), probe)]
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
        send = _search(world, res_type, "get")
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


# -- chains (one hop) and _has: the resources a chain passes are read as the outsider may read them -----


def _refs(world: World, res_type: str, code: str, ref: str) -> set[str]:
    param = cases.registry().get(res_type, code)
    assert param is not None
    return {
        str(v["reference"])
        for v, _ in param.values(world.facts.written[ref])
        if isinstance(v, dict)
        and isinstance(v.get("reference"), str)
        and (not param.targets or str(v["reference"]).split("/")[0] in param.targets)
    }


CHAIN_TRIES = 6


def chain_probe(world: World, res_type: str, code: str) -> Probe:
    """`Type?code:Target.param=value` with a value of a target that a resource of the world names through
    `code` (preferably a resource the outsider reads naming a hidden target). A chain passes only through
    targets the outsider may read, so the outsider must match exactly its own resources that name a
    target it reads with that value (`Probe.expected`, from the region-wide client's answers); when there
    are none, its answer must equal the answer for a fresh value."""
    facts = world.facts
    fallback: Probe | None = None
    tries = 0
    for source in facts.of_type(facts.visible, res_type) + facts.of_type(facts.hidden, res_type):
        for reference in sorted(_refs(world, res_type, code, source)):
            target_type, _, target_id = reference.partition("/")
            if reference in facts.visible and reference.split("/")[0] not in PUBLIC_TYPES:
                continue  # the outsider's own target: nothing hidden to probe through it
            if reference not in facts.written:
                # a type the server does not hold (Specimen, Condition): nothing to pass through, for
                # anyone; a hidden resource's id through it is answered as a fresh one
                if source not in facts.hidden:
                    continue
                chained = [(f"{code}:{target_type}._id", target_id)]
                return Probe(chained, [(chained[0][0], reshape(target_id, reference))], source)
            else:
                target_param = next(
                    (
                        p
                        for p in sorted(cases.registry().for_type(target_type).values(), key=_preference)
                        if p.indexed
                        and p.type != "reference"
                        and next(search_values(p, facts.written[reference], world.services.extractor), None)
                    ),
                    None,
                )
                if target_param is None:
                    continue
                inner = next(search_values(target_param, facts.written[reference], world.services.extractor))
            if target_param is None or tries >= CHAIN_TRIES:
                continue
            tries += 1
            chained = [(f"{code}:{target_type}.{k}", v) for k, v in inner]
            fresh = [(k, fresh_of(target_param, v, f"{res_type}.{code}{k}")) for k, v in chained]
            found = region_answer(world, res_type, chained)
            if not found:
                continue
            readable: set[str] = set()
            if found & facts.visible and target_type in cases.types_with("search-type"):
                readable = (region_answer(world, target_type, inner) or set()) & facts.visible
            expected = frozenset(
                s for s in found & facts.visible if _refs(world, res_type, code, s) & readable
            )
            probe = Probe(chained, fresh, source, expected)
            if not expected:
                return probe
            fallback = fallback or probe
    if fallback is not None:
        return fallback
    return logical_chain_probe(world, res_type, code)


def logical_chain_probe(world: World, res_type: str, code: str) -> Probe:
    """For a parameter the world's resources fill with no literal reference (a canonical URL, a logical
    reference by identifier, as AuditEvent.agent): a hidden resource's value of it, chained into the
    target's `url` or `identifier`, is answered as a fresh value (a chain resolves literal references)."""
    param = cases.registry().get(res_type, code)
    assert param is not None
    facts = world.facts
    for source in facts.of_type(facts.hidden, res_type):
        for value, _ in param.values(facts.written[source]):
            identifier = value.get("identifier") if isinstance(value, dict) else None
            if isinstance(value, str):
                name, held = "url", value
            elif isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
                name, held = "identifier", identifier["value"]
            elif isinstance(value, dict) and isinstance(value.get("display"), str):
                name, held = "identifier", value["display"]  # a name only (AuditEvent.source.observer)
            else:
                continue
            chained = f"{code}:{(param.targets or ('Resource',))[0]}.{name}"
            return Probe([(chained, held)], [(chained, reshape(held, chained))], source)
    raise AssertionError(
        f"the world holds no resource whose {res_type}.{code} names a target (world_data.py)"
    )


def _preference(param: SearchParam) -> tuple[int, str]:
    order = ["identifier", "name", "family", "birthdate", "code", "status", "date", "_id"]
    return (order.index(param.code) if param.code in order else len(order), param.code)


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
                target_type = reference.split("/")[0]
                key = f"_has:{res_type}:{code}:_id"
                probe = Probe(
                    [(key, source.split("/")[1])], [(key, reshape(source.split("/")[1], key))], source
                )
                check(differential(world, _search(world, target_type, "get"), probe))
                return
    pytest.skip(f"no hidden {res_type} names a resource the outsider reads through {code}")


# -- _include / _revinclude / :iterate: what they add is what the outsider may read ---------------------


REVINCLUDE_TARGETS = 2  # the types a revinclude is tried on, of those the hidden resources name


@pytest.mark.parametrize("case", cases.reference_params())
def test_include(world: World, case: str) -> None:
    res_type, code = case.split(".", 1)
    param = cases.registry().get(res_type, code)
    assert param is not None
    problems: list[str] = []
    # one URL each: `_include` (with an `:iterate` on the target where it has a reference parameter),
    # and `_revinclude` with its `:iterate`; each answer holds what the plain one does
    urls = [f"/fhir/{res_type}?_include={res_type}:{code}&_count=1000"]
    for target in param.targets or ():
        other = next((o for o in cases.registry().for_type(target).values() if o.type == "reference"), None)
        if other is not None:
            urls[0] += f"&_include:iterate={target}:{other.code}"
            break
    # revinclude: on the types this parameter refers to in the world's hidden resources
    targets = {
        str(v.get("reference", "")).split("/")[0]
        for ref in world.facts.of_type(world.facts.hidden, res_type)
        for v, _ in param.values(world.facts.written[ref])
        if isinstance(v, dict)
    } & {t for t in cases.types_with("search-type")}
    for target in sorted(targets)[:REVINCLUDE_TARGETS] or list(param.targets[:1]):
        urls.append(
            f"/fhir/{target}?_revinclude={res_type}:{code}&_revinclude:iterate={res_type}:{code}&_count=1000"
        )
    for url in urls:
        problems += [f"{url}: {p}" for p in exposure(world, Answer.of(world.get(url)))]
    check(problems)


# -- paging: every sortable parameter, either direction, through every page -----------------------------


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


SORT_KEYS = 4  # sort parameters per paging case


def sort_cases() -> list[str]:
    """Every sortable parameter, in `_sort` lists of up to SORT_KEYS of one type, ascending and
    descending in turn (`Task.status,-priority,...`): each key is a join and a cursor value of the
    query, so a hidden row that one let through would show in the pages, the total or the cursor."""
    by_type: dict[str, list[str]] = {}
    for i, case in enumerate(cases.sort_params()):
        res_type, code = case.split(".", 1)
        by_type.setdefault(res_type, []).append(f"-{code}" if i % 2 else code)
    return [
        f"{res_type}.{','.join(keys[i : i + SORT_KEYS])}"
        for res_type, keys in by_type.items()
        for i in range(0, len(keys), SORT_KEYS)
    ]


@pytest.mark.parametrize("case", sort_cases())
def test_sort_paging(world: World, case: str) -> None:
    """The outsider's resources over two pages (`_count` half of them): each served once, all served,
    nothing hidden in a page, a total or a cursor, a full page before each `next` link."""
    res_type, keys = case.split(".", 1)
    own = set(world.facts.of_type(world.facts.visible, res_type))
    count = max(1, (len(own) + 1) // 2)
    seen, problems = walk(world, f"/fhir/{res_type}?_sort={keys}&_count={count}&_total=accurate", count)
    if len(seen) != len(set(seen)):
        problems.append(f"_sort={keys}: an entry served twice")
    missing = own - set(seen)
    if missing:
        problems.append(
            f"_sort={keys}: {len(missing)} resources the outsider may read were never served: "
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
            f"{url_type}?{name}: {p}" for p in differential(world, _search(world, url_type, "get"), probe)
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
