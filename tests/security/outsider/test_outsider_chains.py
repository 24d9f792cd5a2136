"""The outsider's searches that follow references: chains (one hop) and `_has` pass only through
resources the outsider may read, and what `_include`, `_revinclude` and `:iterate` add is what it may
read: a hidden resource's value or id through them is answered as a fresh one, and nothing hidden shows."""

from __future__ import annotations

import pytest

from gateway.search.registry import SearchParam
from tests.security.outsider import cases
from tests.security.outsider.compare import Answer
from tests.security.outsider.probes import (
    Probe,
    check,
    differential,
    exposure,
    fresh_of,
    region_answer,
    reshape,
    search_values,
    searcher,
)
from tests.security.outsider.world import World
from tests.security.outsider.world_data import PUBLIC_TYPES

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

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
    check(differential(world, searcher(world, res_type, "get"), probe))


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
                check(differential(world, searcher(world, target_type, "get"), probe))
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
