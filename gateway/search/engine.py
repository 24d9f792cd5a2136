"""Running searches: matches for one page (keyset paging), _include/_revinclude, totals, and the
small `match` used by conditional create, update and references."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import Connection, and_, false, func, or_, select

from gateway.errors import bad_request
from gateway.limits import budget
from gateway.search.cursor import Cursors
from gateway.search.parameters import (
    DEFAULT_SEARCH_LIMITS,
    Include,
    Masking,
    SearchLimits,
    SearchRequest,
    parse,
    split_token,
    split_values,
)
from gateway.search.query import TABLES, Planner, local_reference
from gateway.search.registry import Registry
from gateway.store.repository import R, Repository, Stored
from gateway.store.sizes import current_sizes
from gateway.store.visibility import EVERYTHING, Visibility

# How many times `:iterate` includes are followed from what the previous round included.
MAX_ITERATIONS = 8


CLAIM_LENGTH = 255  # identifier_claim.system and .value (gateway/store/tables.py)


@dataclass
class Page:
    matches: list[Stored]
    included: list[Stored] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None
    previous_cursor: str | None = None


class Searcher:
    def __init__(
        self,
        registry: Registry,
        planner: Planner,
        default_count: int,
        max_count: int,
        cursors: Cursors,
        limits: SearchLimits = DEFAULT_SEARCH_LIMITS,
    ) -> None:
        self.registry = registry
        self.planner = planner
        self.default_count = default_count
        self.max_count = max_count
        self.cursors = cursors
        self.limits = limits

    def parse(
        self,
        res_type: str,
        pairs: Sequence[tuple[str, str]],
        base_url: str = "",
        conditional: bool = False,
    ) -> SearchRequest:
        """`base_url` is this server's base as the client addressed it (references to it are local);
        `conditional`: a conditional operation's search (GATEWAY_MAX_CONDITIONAL_CRITERIA)."""
        return parse(
            self.registry,
            res_type,
            pairs,
            self.default_count,
            self.max_count,
            base_url,
            self.limits,
            conditional,
        )

    def count(self, connection: Connection, request: SearchRequest) -> int:
        statement = select(func.count()).select_from(R).where(self.planner.where(request))
        return int(connection.execute(statement).scalar_one())

    def search(self, connection: Connection, request: SearchRequest) -> Page:
        """One page of what `request` matches among what its visibility lets the client see: the page
        holds `count` of them when there are that many, the total counts only them, and the cursors
        (sealed, bound to the client and the search) hold the sort values of rows it was served."""
        if request.summary_count:
            return Page([], total=self.count(connection, request))
        keys = self.planner.sort_keys(request)
        binding = binding_of(request)
        backwards, cursor = False, None
        if request.cursor:
            backwards, cursor = self.cursors.open([kind for _, _, kind in keys], request.cursor, binding)
        found = list(connection.execute(self.planner.page(request, backwards, cursor)).all())
        more = len(found) > request.count
        found = found[: request.count]
        if backwards:
            found.reverse()
        sizes = [int(row[-1] or 0) for row in found]
        budget.check(sizes)  # the response budget, before the resources are read
        rows = [row[:-1] for row in found]  # rid and sort keys
        page = Page(Repository(connection).current_many([row[0] for row in rows]))
        has_next = True if backwards else more
        has_previous = more if backwards else cursor is not None
        if rows and has_next:
            page.next_cursor = self.cursors.seal(list(rows[-1][1:]), False, binding)
        if rows and has_previous:
            page.previous_cursor = self.cursors.seal(list(rows[0][1:]), True, binding)
        if request.total_accurate:
            page.total = self.count(connection, request)
        elif cursor is None and not more:
            page.total = len(rows)
        page.included = self._included(connection, page.matches, request, sizes)
        return page

    def match(
        self,
        connection: Connection,
        res_type: str,
        query: str,
        limit: int = 2,
        base_url: str = "",
        visibility: Visibility = EVERYTHING,
        masking: Masking | None = None,
    ) -> list[Stored]:
        """Resources matching a conditional query (`identifier=sys|val`) among those `visibility` lets
        the client see, not by what `masking` hides from it; unknown parameters are errors."""
        pairs = parse_qsl(query, keep_blank_values=True)
        if visibility.everything:
            claimed = self._claimed(connection, res_type, pairs)
            if claimed is not None:
                return claimed
        request = self.parse(res_type, pairs, base_url, conditional=True)
        request.visibility, request.masking = visibility, masking
        if request.unknown:
            raise bad_request(f"Unknown search parameter(s) in the condition: {', '.join(request.unknown)}")
        if not request.clauses:
            raise bad_request(f"The condition '{query}' selects nothing: give at least one search parameter")
        statement = select(R.c.rid).where(self.planner.where(request)).order_by(R.c.rid).limit(limit)
        rids = [row[0] for row in connection.execute(statement)]
        return Repository(connection).current_many(rids)

    def _claimed(
        self, connection: Connection, res_type: str, pairs: Sequence[tuple[str, str]]
    ) -> list[Stored] | None:
        """`identifier=system|value` alone, the most common condition by far, answered from the identifier
        claims (unique per type, system and value, kept with every write) instead of a planned search.
        None when the condition is anything else, or `identifier` searches more than `<Type>.identifier`."""
        if len(pairs) != 1 or pairs[0][0] != "identifier" or len(split_values(pairs[0][1])) != 1:
            return None  # another parameter, a modifier, or several values (an OR list)
        param = self.registry.get(res_type, "identifier")
        if param is None or param.expression != f"{res_type}.identifier":
            return None
        system, value = split_token(pairs[0][1])
        if not system or not value or len(system) > CLAIM_LENGTH or len(value) > CLAIM_LENGTH:
            return None
        return list(Repository(connection).held_by([(res_type, system, value)]).values())

    # -- _include and _revinclude -------------------------------------------------------------------

    def _included(
        self, connection: Connection, matches: list[Stored], request: SearchRequest, sizes: list[int]
    ) -> list[Stored]:
        """`sizes`: what the page holds so far, for the response budget (extended by each round)."""
        if not matches or not (request.includes or request.revincludes):
            return []
        seen = {(m.res_type, m.res_id) for m in matches}
        found = self._round(connection, matches, request, seen, False, sizes)
        if any(i.iterate for i in request.includes + request.revincludes):
            latest = found
            for _ in range(MAX_ITERATIONS):
                latest = self._round(connection, latest, request, seen, True, sizes)
                if not latest:
                    break
                found += latest
        return found

    def _round(
        self,
        connection: Connection,
        sources: list[Stored],
        request: SearchRequest,
        seen: set[tuple[str, str]],
        iterate_only: bool,
        sizes: list[int],
    ) -> list[Stored]:
        rids: list[int] = []
        bases = self.planner.bases(request.base_url)
        for include in request.includes:
            if include.iterate or not iterate_only:
                rids += self._forward(connection, include, sources, bases, request.visibility)
        for include in request.revincludes:
            if include.iterate or not iterate_only:
                rids += self._reverse(connection, include, sources, bases, request.visibility)
        result = []
        rids = list(dict.fromkeys(rids))
        if budget.current() is not None:
            sizes += [size for t, i, size in current_sizes(connection, rids) if (t, i) not in seen]
            budget.check(sizes)
        for stored in Repository(connection).current_many(rids):
            key = (stored.res_type, stored.res_id)
            if key not in seen and not stored.deleted:
                seen.add(key)
                result.append(stored)
        return result

    @staticmethod
    def _forward(
        connection: Connection,
        include: Include,
        sources: list[Stored],
        bases: tuple[str, ...],
        visibility: Visibility,
    ) -> list[int]:
        table = TABLES["reference"]
        source_rids = [s.rid for s in sources if s.res_type == include.source_type]
        if not source_rids:
            return []
        condition = and_(
            table.c.rid.in_(source_rids),
            table.c.param == include.param.code,
            table.c.res_type == include.source_type,
        )
        if include.target_type:
            condition = and_(condition, table.c.target_type == include.target_type)
        targets = select(table.c.target_type, table.c.target_id).where(
            condition, table.c.target_id.is_not(None), local_reference(table, bases)
        )
        pairs = list(connection.execute(targets).all())
        if not pairs:
            return []
        statement = select(R.c.rid).where(
            or_(*(and_(R.c.res_type == t, R.c.res_id == i) for t, i in set(pairs))),
            R.c.deleted == false(),
            visibility.where(R),
        )
        return [row[0] for row in connection.execute(statement)]

    @staticmethod
    def _reverse(
        connection: Connection,
        include: Include,
        sources: list[Stored],
        bases: tuple[str, ...],
        visibility: Visibility,
    ) -> list[int]:
        table = TABLES["reference"]
        options = [
            and_(table.c.target_type == s.res_type, table.c.target_id == s.res_id)
            for s in sources
            if include.target_type is None or include.target_type == s.res_type
        ]
        if not options:
            return []
        statement = select(table.c.rid).where(
            table.c.res_type == include.source_type,
            table.c.param == include.param.code,
            local_reference(table, bases),
            or_(*options),
        )
        if not visibility.everything:
            statement = select(R.c.rid).where(
                R.c.rid.in_(statement), R.c.deleted == false(), visibility.where(R, include.source_type)
            )
        return [row[0] for row in connection.execute(statement)]


def binding_of(request: SearchRequest) -> str:
    """What a cursor is bound to: the client, the type and the search (its parameters but the cursor's
    own and the page size)."""
    pairs = sorted((k, v) for k, v in request.used if k not in ("_cursor", "_count"))
    return "\n".join([request.cursor_binding, request.res_type, urlencode(pairs)])
