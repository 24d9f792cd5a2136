"""The outsider's paging: every sortable parameter in `_sort`, and type history, over pages whose size,
`total`, `next` links and cursors count and show only what the outsider may read."""

from __future__ import annotations

from typing import Any

import pytest

from tests.security.outsider import cases
from tests.security.outsider.compare import Answer
from tests.security.outsider.probes import (
    check,
    exposure,
)
from tests.security.outsider.world import World

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# -- paging: every sortable parameter, either direction, through every page -----------------------------


def _entry_ref(entry: dict[str, Any]) -> str:
    """The resource an entry is about: its resource, or for a deletion in a history (the outsider's own
    probes' writes, deleted again) the request's url."""
    if "resource" in entry:
        return f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
    return "/".join(str(entry.get("request", {}).get("url", "")).split("/")[:2])


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
            _entry_ref(e)
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
