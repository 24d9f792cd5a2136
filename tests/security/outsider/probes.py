"""Probe values and the differential check: a value taken from a hidden resource for one search parameter
(its index values, as the gateway's own extractor computes them), a fresh value of the same shape that
nothing holds, and the comparison of the outsider's two answers."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from gateway.model.types import Json
from gateway.search.extract import Extractor
from gateway.search.registry import SearchParam
from gateway.search.text import fold
from tests.security.outsider.cases import registry
from tests.security.outsider.compare import Answer, differences, leaks, normalise
from tests.security.outsider.world import World

Pairs = list[tuple[str, str]]
PREFIX = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=\d)")


@dataclass
class Probe:
    """A hidden value and its fresh counterpart. `expected` is what the outsider's search for the hidden
    value must match: nothing when only hidden resources hold the value (then its answer must equal the
    answer for the fresh value), else the outsider's own resources that share it (a small code domain:
    then the answer must be exactly those, as if the hidden resources did not exist)."""

    hidden: Pairs
    fresh: Pairs
    target: str  # the hidden resource the value is from
    expected: frozenset[str] = frozenset()

    @property
    def hidden_values(self) -> list[str]:
        return [v for _, v in self.hidden]

    @property
    def fresh_values(self) -> list[str]:
        return [v for _, v in self.fresh]


def reshape(value: str, seed: str) -> str:
    """A value of the same shape (each digit a digit, each letter a letter of its case, the rest kept),
    random from `seed`: what a fresh id, code or name looks like next to the hidden one."""
    rng = random.Random(seed)
    out = []
    for char in value:
        if char.isdigit():
            out.append(rng.choice("0123456789"))
        elif char.isascii() and char.islower():
            out.append(rng.choice("abcdefghijklmnopqrstuvwxyz"))
        elif char.isascii() and char.isupper():
            out.append(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        else:
            out.append(char)
    return "".join(out)


def fresh_of(param: SearchParam, value: str, seed: str) -> str:
    """The fresh counterpart of a search value: the same system, target type, prefix and format, with
    what identifies the hidden resource replaced (a date in 1907, where nothing is)."""
    if param.type == "date" or param.code == "_lastUpdated":
        prefix = PREFIX.match(value)
        head = prefix.group(0) if prefix else ""
        return head + "1907" + value[len(head) + 4 :]
    if param.type == "token" and "|" in value:
        system, _, code = value.partition("|")
        return f"{system}|{reshape(code, seed)}"
    if param.type == "reference" and "/" in value:
        kind, _, rest = value.rpartition("/")
        return f"{kind}/{reshape(rest, seed)}"
    if param.type == "uri":
        head, _, tail = value.rpartition("/")
        return f"{head}/{reshape(tail, seed)}" if head else reshape(value, seed)
    return reshape(value, seed)


def condition(pairs: Pairs) -> str:
    """Search criteria as a query string, percent-encoded (an If-None-Exist header holds ASCII only)."""
    return "&".join(f"{quote(k, safe=':.-_')}={quote(v, safe='|/:,.-_')}" for k, v in pairs)


def escape(value: str) -> str:
    return "".join("\\" + c if c in ",|$\\" else c for c in value)


def search_values(param: SearchParam, resource: Json, extractor: Extractor) -> Iterator[Pairs]:
    """Search values that find `resource` by `param`, most distinctive first."""
    code = param.code
    if code == "_id":
        yield [(code, str(resource["id"]))]
        return
    if code == "_lastUpdated":
        yield [(code, str(resource.get("meta", {}).get("lastUpdated", "")))]
        return
    if param.type == "date":
        for raw, _ in param.values(resource):
            if isinstance(raw, str):
                yield [(code, raw)]
            elif isinstance(raw, dict) and raw.get("start") and raw.get("end"):
                yield [(code, "ge" + raw["start"]), (code, "le" + raw["end"])]
            elif isinstance(raw, dict) and raw.get("event"):
                yield [(code, str(raw["event"][0]))]
        return
    rows = extractor.rows(resource)
    if param.type == "token":
        for row in rows.token:
            if row["param"] == code and row["code"]:
                value = escape(row["code"])
                yield [(code, f"{escape(row['system'])}|{value}" if row["system"] else value)]
    elif param.type == "string":
        for row in sorted(
            (r for r in rows.string if r["param"] == code), key=lambda r: -len(r["value_exact"])
        ):
            yield [(code, escape(row["value_exact"]))]
    elif param.type == "reference":
        for row in rows.reference:
            if row["param"] == code:
                if row["target_id"] and not row["url"]:
                    yield [(code, f"{row['target_type']}/{row['target_id']}")]
                elif row["url"]:
                    yield [(code, escape(row["url"]))]
    elif param.type == "number":
        for row in rows.number:
            if row["param"] == code:
                yield [(code, repr(row["value"]).rstrip("0").rstrip("."))]
    elif param.type == "uri":
        for row in rows.uri:
            if row["param"] == code:
                yield [(code, escape(row["value"]))]


def matches(bundle: Any) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in (bundle.get("entry", []) if isinstance(bundle, dict) else [])
        if "resource" in e and e.get("search", {}).get("mode", "match") == "match"
    }


def region_finds(world: World, res_type: str, pairs: Pairs) -> set[str]:
    response = world.client.get(
        f"/fhir/{res_type}", params=[*pairs, ("_count", "1000")], headers=world.region
    )
    assert response.status_code == 200, (
        f"the region-wide client's search {pairs} failed: {response.text[:500]}"
    )
    return matches(response.json())


def region_answer(world: World, res_type: str, pairs: Pairs) -> set[str] | None:
    """What the region-wide client's search finds; None when it is refused (a chain the server does not
    support on that parameter)."""
    response = world.client.get(
        f"/fhir/{res_type}", params=[*pairs, ("_count", "1000")], headers=world.region
    )
    return matches(response.json()) if response.status_code == 200 else None


def expected_for(world: World, res_type: str, pairs: Pairs) -> frozenset[str] | None:
    """What the outsider's search must match: what the region-wide client's finds, less what the outsider
    may not read; None when that search finds a resource the world does not say either way about."""
    facts = world.facts
    found = region_finds(world, res_type, pairs)
    if found - facts.visible - facts.hidden:
        return None
    return frozenset(found & facts.visible)


def _world_text(world: World) -> str:
    cached = world.cache.get("world text")
    if not isinstance(cached, str):
        cached = world.cache["world text"] = fold(json.dumps(world.facts.written, ensure_ascii=False))
    return cached


def _unheld(world: World, param: SearchParam, pairs: Pairs) -> bool | None:
    """Whether no resource of the world holds these fresh values (dates are in 1907, where nothing is);
    None when a value is too short to tell from the world's text (a one-letter code)."""
    if param.type == "date" or param.code == "_lastUpdated":
        return True
    text = _world_text(world)
    for _, value in pairs:
        core = value.rpartition("|")[2] if param.type == "token" else value
        core = core.rpartition("/")[2] if param.type in ("reference", "uri") else core
        core = fold(core.replace("\\", ""))
        if len(core) < 4:
            return None
        if core in text:
            return False
    return True


class NoValue(AssertionError):
    """No hidden resource of the world holds a searchable value of the parameter (only the gateway
    writes the type, and fills the element with what no search reads, or not at all)."""


def logical_probe(world: World, res_type: str, code: str, name: str | None) -> Probe | None:
    """For a reference parameter that hidden resources fill with logical references only (an identifier,
    as the gateway's AuditEvent.agent.who): the identifier's value, which no search resolves, is
    answered as a fresh one."""
    param = registry().get(res_type, code)
    if param is None or param.type != "reference":
        return None
    for ref in world.facts.of_type(world.facts.hidden, res_type):
        for value, _ in param.values(world.facts.written[ref]):
            identifier = value.get("identifier") if isinstance(value, dict) else None
            held = identifier.get("value") if isinstance(identifier, dict) else None
            if isinstance(held, str) and held:
                return Probe([(name or code, held)], [(name or code, reshape(held, ref))], ref)
    return None


PROBE_TRIES = 12  # region-wide searches spent at most to choose one parameter's probe


def value_probe(
    world: World, res_type: str, code: str, name: str | None = None, shared: bool = True
) -> Probe:
    """A hidden value of `res_type.code` and its fresh counterpart that nothing holds; `name` is the
    parameter name to send (a chain or a modifier), `code`'s by default. A value only hidden resources
    hold is preferred; else (with `shared`) one that hidden resources share with the outsider's own
    (`Probe.expected`). Fails the case when the world holds neither."""
    cache = world.cache
    key = f"{res_type}.{code}.{name}.{shared}"
    if key in cache:
        cached: Probe = cache[key]
        return cached
    param = registry().get(res_type, code)
    assert param is not None, f"{res_type}.{code} is not in the registry"
    facts = world.facts
    tried = 0
    fallback: Probe | None = None
    for ref in facts.of_type(facts.hidden, res_type):
        for pairs in search_values(param, facts.written[ref], world.services.extractor):
            if tried >= PROBE_TRIES:
                break
            fresh = [(k, fresh_of(param, v, f"{key}{i}")) for i, (k, v) in enumerate(pairs)]
            unheld = _unheld(world, param, fresh)
            if unheld is False:
                continue
            tried += 1
            if unheld is None and region_finds(world, res_type, fresh):
                continue
            found = region_finds(world, res_type, pairs)
            if ref not in found or found - facts.visible - facts.hidden - facts.gone:
                continue
            probe = Probe(
                [(name or k, v) for k, v in pairs],
                [(name or k, v) for k, v in fresh],
                ref,
                frozenset(found & facts.visible),
            )
            if not probe.expected:
                cache[key] = probe
                return probe
            if shared and fallback is None:
                fallback = probe
    if fallback is not None:
        cache[key] = fallback
        return fallback
    logical = logical_probe(world, res_type, code, name)
    if logical is not None:
        cache[key] = logical
        return logical
    extractor = world.services.extractor
    if not any(
        next(search_values(param, facts.written[r], extractor), None)
        for r in facts.of_type(facts.hidden, res_type)
    ):
        raise NoValue(f"no hidden {res_type} holds a searchable value of {code}")
    raise AssertionError(
        f"the world holds no value of {res_type}.{code} that finds hidden resources"
        f"{'' if shared else ' only'} (tests/security/outsider/world_data.py)"
    )


def differential(
    world: World,
    send: Callable[[Pairs], Any],
    probe: Probe,
    extra_tokens: tuple[list[str], list[str]] = ([], []),
) -> list[str]:
    """Send the hidden probe as the outsider and check its answer: equal to the answer for the fresh
    probe when only hidden resources hold the value, else exactly the expected matches and total;
    nothing hidden in it either way."""
    hidden = Answer.of(send(probe.hidden))
    if probe.expected:
        return expected_answer(world, hidden, probe.expected, probe.hidden_values + extra_tokens[0])
    fresh = Answer.of(send(probe.fresh))
    return compare_answers(
        world, hidden, fresh, probe.hidden_values + extra_tokens[0], probe.fresh_values + extra_tokens[1]
    )


def expected_answer(world: World, answer: Answer, expected: frozenset[str], allowed: list[str]) -> list[str]:
    """A search answer that must match exactly `expected` (in its entries, or its total alone for
    `_summary=count`), and show nothing hidden."""
    problems = exposure(world, answer, allowed)
    if answer.status != 200 or not isinstance(answer.body, dict):
        return [*problems, f"status {answer.status}: {answer.text[:300]}"]
    total = answer.body.get("total")
    if "entry" in answer.body or total is None:
        got = matches(answer.body)
        if got != expected:
            problems.append(
                f"matches {sorted(got)[:4]} ({len(got)}), not the outsider's own {sorted(expected)[:4]} "
                f"({len(expected)})"
            )
    if total is not None and total != len(expected):
        problems.append(f"total {total}, not {len(expected)} (the outsider's own matches)")
    return problems


def compare_answers(
    world: World, hidden: Answer, fresh: Answer, hidden_tokens: list[str], fresh_tokens: list[str]
) -> list[str]:
    problems = [
        f"differs: {d}" for d in differences(normalise(hidden, hidden_tokens), normalise(fresh, fresh_tokens))
    ]
    leaked = leaks(hidden, world.facts.secrets, allowed=hidden_tokens)
    if leaked:
        problems.append(f"hidden values in the answer: {leaked[:6]}")
    if hidden.status >= 500 or fresh.status >= 500:
        problems.append(f"server error {hidden.status}/{fresh.status}")
    return problems


def shown_refs(body: Any) -> set[str]:
    """Every resource an answer carries (matches, includes, transaction/batch entries, nested Bundles)."""
    found: set[str] = set()
    if isinstance(body, dict):
        if (
            isinstance(body.get("resourceType"), str)
            and isinstance(body.get("id"), str)
            and body["resourceType"] not in ("Bundle", "OperationOutcome")
        ):
            found.add(f"{body['resourceType']}/{body['id']}")
        for value in body.values():
            found |= shown_refs(value)
    elif isinstance(body, list):
        for item in body:
            found |= shown_refs(item)
    return found


def exposure(world: World, answer: Answer, allowed: list[str] | None = None) -> list[str]:
    """What an outsider's answer shows that it may not: hidden (or deleted hidden) resources, and secrets."""
    problems = []
    shown = shown_refs(answer.body) & (world.facts.hidden | world.facts.gone)
    if shown:
        problems.append(f"hidden resources shown: {sorted(shown)[:6]}")
    leaked = leaks(answer, world.facts.secrets, allowed=allowed or [])
    if leaked:
        problems.append(f"hidden values in the answer: {leaked[:6]}")
    if answer.status >= 500:
        problems.append(f"server error {answer.status}")
    return problems


def check(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


def searcher(world: World, res_type: str, mode: str) -> Callable[[Pairs], Any]:
    """A sender of searches as the outsider: GET with `_total=accurate`, POST `_search` (form-encoded)
    or GET with `_summary=count`."""

    def send(pairs: Pairs) -> Any:
        if mode == "post":
            body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in pairs)
            form = {**world.outsider, "Content-Type": "application/x-www-form-urlencoded"}
            return world.client.post(f"/fhir/{res_type}/_search", content=body, headers=form)
        extra = [("_summary", "count")] if mode == "count" else [("_total", "accurate")]
        return world.get(f"/fhir/{res_type}", params=[*pairs, *extra])

    return send
