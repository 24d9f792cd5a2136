"""A cheap test before a subscription's query: the reference clauses of its criteria (`owner=Organization/…`,
the topics' filters) name target ids, and a resource whose index has none of them for that parameter
cannot match. One query per matcher run reads the batch's reference index rows; a subscription none of
whose rows passes costs no query of its own. The test only leaves out what the query could not match
(it ignores target types, servers and visibility, which the query still checks), so it never loses an
event: with 100 municipalities' subscriptions, each a filter on its own Organization, a Task is queried
for one subscription instead of 100."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, select

from gateway.model.types import is_valid_id
from gateway.search.extract import parse_reference
from gateway.search.parameters import Clause
from gateway.store.repository import REF, R

Needs = tuple[tuple[str, frozenset[str]], ...]  # (parameter, target ids): each must have one of its ids
Found = dict[str, dict[str, set[str]]]  # by resource id: by parameter, the target ids its index has


def needs(clauses: Iterable[Clause], bases: tuple[str, ...]) -> Needs:
    """What the criteria's plain reference clauses ask of a match: no modifier but a type, no chain, every
    value naming a target id."""
    found = []
    for clause in clauses:
        if clause.param.type != "reference" or clause.modifier is not None or clause.chain is not None:
            continue
        ids = set()
        for value in clause.values:
            if "\\" in value:
                break
            target = value if is_valid_id(value) else parse_reference(value, bases).target_id
            if target is None:
                break
            ids.add(target)
        else:
            found.append((clause.param.code, frozenset(ids)))
    return tuple(found)


def references(connection: Connection, res_type: str, res_ids: Sequence[str], params: set[str]) -> Found:
    """The target ids the current index holds for `params` of these resources."""
    found: Found = defaultdict(lambda: defaultdict(set))
    if not params or not res_ids:
        return found
    rows = connection.execute(
        select(R.c.res_id, REF.c.param, REF.c.target_id)
        .join(REF, REF.c.rid == R.c.rid)
        .where(
            R.c.res_type == res_type,
            R.c.res_id.in_(sorted(set(res_ids))),
            REF.c.param.in_(sorted(params)),
            REF.c.target_id.is_not(None),
        )
    )
    for res_id, param, target_id in rows:
        found[str(res_id)][str(param)].add(str(target_id))
    return found


def may_match(need: Needs, res_id: str, found: Found) -> bool:
    held = found.get(res_id, {})
    return all(not ids.isdisjoint(held.get(param, ())) for param, ids in need)
