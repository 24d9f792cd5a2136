"""A subscription's criteria as queries: each subscription's made once as its client sees them (its
visibility and masking) and kept while that stays the same; a matcher run asks every subscription's at
once, as one `UNION ALL` per group of subscriptions, each part the subscription's own query of the
candidates' ids, so a run costs a few statements however many subscriptions there are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Select, bindparam, literal_column, select, union_all

from gateway.search.engine import Searcher
from gateway.search.parameters import Masking
from gateway.store.repository import R
from gateway.store.visibility import Visibility
from gateway.subscriptions import prefilter

MAX_IDS = 100  # candidates' ids in one statement (GATEWAY_MAX_SEARCH_VALUES' default)
GROUP = 50  # subscriptions in one statement
GROUPS_KEPT = 64  # statements of groups kept made


@dataclass(frozen=True)
class Plan:
    made_of: tuple[str, tuple[tuple[str, str], ...], Visibility, Masking | None]
    statement: Select[tuple[str]]  # the ids of `ids` that match
    needs: prefilter.Needs


def plan(
    searcher: Searcher,
    made_of: tuple[str, tuple[tuple[str, str], ...], Visibility, Masking | None],
    base_url: str,
) -> Plan:
    """The criteria (`res_type`, pairs) as a query of the ids given, with the reader's visibility and
    masking; what its reference clauses ask (prefilter). FhirError when the criteria cannot be read."""
    res_type, pairs, visibility, masking = made_of
    request = searcher.parse(res_type, list(pairs), base_url)
    request.visibility, request.masking = visibility, masking
    ids: Any = bindparam("ids", expanding=True, literal_execute=True)
    statement = select(R.c.res_id).where(searcher.planner.where(request), R.c.res_id.in_(ids))
    bases = searcher.planner.bases(base_url)
    return Plan(made_of, statement, prefilter.needs(request.clauses, bases))


Groups = dict[tuple[Plan, ...], Any]  # the statements of groups of plans made (a matcher's)


def matching(
    connection: Connection, wanted: Sequence[tuple[str, Plan, Sequence[Any]]], groups: Groups
) -> dict[str, set[str]]:
    """By subscription id: which of its candidates' ids (`res_id` of each) its plan matches now."""
    hits: dict[str, set[str]] = {}
    wanted = [entry for entry in wanted if entry[2]]
    for start in range(0, len(wanted), GROUP):
        group = wanted[start : start + GROUP]
        ids = sorted({row.res_id for _, _, rows in group for row in rows})
        statement = _union(tuple(plan for _, plan, _ in group), groups)
        for first in range(0, len(ids), MAX_IDS):
            for n, res_id in connection.execute(statement, {"ids": ids[first : first + MAX_IDS]}):
                hits.setdefault(group[int(n)][0], set()).add(str(res_id))
    return hits


def _union(plans: tuple[Plan, ...], groups: Groups) -> Any:
    """One statement for the group: (its index in the group, id) for every id each plan matches; the same
    statement for the same plans, which SQLAlchemy does not compile again."""
    found = groups.get(plans)
    if found is None:
        if len(groups) >= GROUPS_KEPT:
            groups.clear()
        parts = [
            plan.statement.with_only_columns(literal_column(str(n)).label("n"), R.c.res_id)
            for n, plan in enumerate(plans)
        ]
        found = groups[plans] = union_all(*parts) if len(parts) > 1 else parts[0]
    return found
