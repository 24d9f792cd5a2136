"""Search clauses as SQL over the index tables: each clause is a set of `rid`s, clauses are ANDed, the
values within one clause ORed. Sorting and keyset paging work on the same select."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
)

from gateway.errors import bad_request
from gateway.model.types import SUPPORTED, is_valid_id
from gateway.search.dates import MIN, DateFormatError, date_range, shift, utc_now
from gateway.search.extract import parse_reference
from gateway.search.parameters import PREFIXES, Clause, Masking, SearchRequest, split_token, unescape
from gateway.search.registry import COLUMN_PARAMS, SearchParam
from gateway.search.text import fold
from gateway.store.repository import R
from gateway.store.sizes import content_size
from gateway.store.tables import (
    DateIndex,
    NumberIndex,
    ReferenceIndex,
    StringIndex,
    TokenIndex,
    UriIndex,
)
from gateway.store.visibility import labelled

TABLES: dict[str, Any] = {
    "token": TokenIndex.__table__,
    "string": StringIndex.__table__,
    "reference": ReferenceIndex.__table__,
    "date": DateIndex.__table__,
    "number": NumberIndex.__table__,
    "uri": UriIndex.__table__,
}
# More clauses checked per candidate than this, and each is kept a subplan (`clause`, `fenced`); fewer
# are left to PostgreSQL to join as it sees fit (PostgreSQL's join_collapse_limit is 8).
FENCE_AFTER = 8
SORT_COLUMNS = {"token": "code", "string": "value_folded", "date": "low", "number": "value", "uri": "value"}
NULL_SORT = {"token": "", "string": "", "date": MIN, "number": -1e300, "uri": ""}


@dataclass(frozen=True)
class Planner:
    zone: ZoneInfo
    base_url: str

    # -- matching ---------------------------------------------------------------------------------

    def bases(self, request_base: str = "") -> tuple[str, ...]:
        """This server's base URLs: the configured one and the one the request came in on."""
        candidates = (self.base_url.rstrip("/"), request_base.rstrip("/"))
        return tuple(dict.fromkeys(base for base in candidates if base))

    def where(self, request: SearchRequest) -> ColumnElement[bool]:
        bases = self.bases(request.base_url)
        conditions = [R.c.deleted == false()]
        # One clause that matches index rows drives the query: `rid IN (its index rows)`, which already
        # names the type, so the type test on `resource` is left out and the database starts from that
        # index instead of scanning every resource of the type (SQLite otherwise does just that). The
        # other clauses are checked per candidate (EXISTS on the index rows of that rid), so their
        # matches are never materialised. The one expected to match fewest drives (`_selectivity`);
        # PostgreSQL may still start from another (docs/storage.md, "Search indexes").
        driving = [c for c in request.clauses if _selects_by_index(c)]
        driver = min(driving, key=_selectivity) if driving else None
        if driver is None:
            conditions.append(R.c.res_type == request.res_type)
        fenced = len(driving) > FENCE_AFTER
        for clause in request.clauses:
            correlated = clause is not driver and _selects_by_index(clause)
            conditions.append(self.clause(request.res_type, clause, bases, correlated, request, R, fenced))
        if not request.visibility.everything:
            conditions.append(request.visibility.where(R, request.res_type))
        if _looks_into_masked(request.res_type, request.clauses, request.masking):
            assert request.masking is not None
            conditions.append(not_(labelled(R.c.rid, request.masking.labels)))
        return and_(*conditions)

    def clause(
        self,
        res_type: str,
        clause: Clause,
        bases: tuple[str, ...] | None = None,
        correlated: bool = False,
        request: SearchRequest | None = None,
        row: Any = R,
        fenced: bool = False,
    ) -> ColumnElement[bool]:
        """The clause as a condition on `row` (`resource` or an alias); `correlated` checks it per row
        (EXISTS) instead of selecting every matching index row (IN). A chain passes only through what
        `request` may see (its visibility and masking)."""
        if bases is None:
            bases = self.bases()
        param = clause.param
        if param.code == "_id":
            matched = row.c.res_id.in_([unescape(v) for v in clause.values])
            return not_(matched) if clause.modifier == "not" else matched  # type: ignore[no-any-return]
        if param.code == "_lastUpdated":
            return or_(
                *(
                    self._date(row.c.last_updated, row.c.last_updated, unescape(v), point=True)
                    for v in clause.values
                )
            )
        table = TABLES[param.type]
        scope = and_(table.c.res_type == res_type, table.c.param == param.code)
        if clause.modifier == "missing":
            present = row.c.rid.in_(select(table.c.rid).where(scope))
            return or_(*(not_(present) if v == "true" else present for v in clause.values))
        if clause.chain is not None:
            return self._chained(clause, scope, bases, request, row)
        if clause.modifier == "not":
            matches = or_(*(self._token(table, v) for v in clause.values))
            return row.c.rid.not_in(select(table.c.rid).where(scope, matches))  # type: ignore[no-any-return]
        if param.type == "reference" and len(clause.values) > 1:
            matches = self._references(table, clause, bases)
        else:
            matches = or_(*(self._value(param, clause, table, v, bases) for v in clause.values))
        if correlated and fenced:
            # OFFSET 0 keeps PostgreSQL from pulling the EXISTS up into a semi-join: with many clauses
            # it plans their join orders, which grows steeply with their number (49 clauses: ~5 s of
            # planning); as a subplan run per candidate row, planning stays linear.
            found = select(table.c.rid).where(table.c.rid == row.c.rid, scope, matches).offset(0)
            return found.exists()
        if correlated:
            return exists().where(table.c.rid == row.c.rid, scope, matches)
        return row.c.rid.in_(select(table.c.rid).where(scope, matches))  # type: ignore[no-any-return]

    def _value(
        self, param: SearchParam, clause: Clause, table: Any, raw: str, bases: tuple[str, ...]
    ) -> ColumnElement[bool]:
        if param.type == "token":
            return self._token(table, raw)
        value = unescape(raw)
        if param.type == "string":
            if clause.modifier == "exact":
                return table.c.value_exact == value  # type: ignore[no-any-return]
            pattern = _like_escape(fold(value))
            if clause.modifier == "contains":
                return table.c.value_folded.like(f"%{pattern}%", escape="\\")  # type: ignore[no-any-return]
            return table.c.value_folded.like(f"{pattern}%", escape="\\")  # type: ignore[no-any-return]
        if param.type == "reference":
            return self._reference(table, value, clause.type_modifier, bases)
        if param.type == "date":
            return self._date(table.c.low, table.c.high, value)
        if param.type == "number":
            return _number(table.c.value, value)
        if param.type == "uri":
            if clause.modifier == "below":
                return table.c.value.like(f"{_like_escape(value)}%", escape="\\")  # type: ignore[no-any-return]
            return table.c.value == value  # type: ignore[no-any-return]
        raise bad_request(f"Search parameter type {param.type} is not supported")

    @staticmethod
    def _token(table: Any, value: str) -> ColumnElement[bool]:
        system, code = split_token(value)
        if system is None:
            return table.c.code == code  # type: ignore[no-any-return]
        if not system:
            return and_(table.c.system.is_(None), table.c.code == code)
        if not code:
            return table.c.system == system  # type: ignore[no-any-return]
        return and_(table.c.system == system, table.c.code == code)

    def _reference(
        self, table: Any, value: str, type_modifier: str | None, bases: tuple[str, ...]
    ) -> ColumnElement[bool]:
        """`Type/id`, a bare id, or a URL: this server's URLs mean local `Type/id`; other FHIR servers'
        `…/Type/id` URLs and other URLs or URNs match references written that way."""
        if is_valid_id(value):
            condition = and_(table.c.target_id == value, local_reference(table, bases))
            if type_modifier:
                condition = and_(condition, table.c.target_type == type_modifier)
            return condition
        key = parse_reference(value, bases)
        if type_modifier and key.target_type is not None and key.target_type != type_modifier:
            return false()
        if key.target_id is None:
            if key.server is None:
                return false()
            return and_(table.c.url == key.server, table.c.target_id.is_(None))
        at = local_reference(table, bases) if key.server is None else table.c.url == key.server
        return and_(table.c.target_type == key.target_type, table.c.target_id == key.target_id, at)

    def _references(self, table: Any, clause: Clause, bases: tuple[str, ...]) -> ColumnElement[bool]:
        """Many values of one reference clause: the local `Type/id` ones as one `target_id IN (…)` per
        type (a condition per value makes a statement that costs more to build than to run), the others
        one by one as `_reference` matches them."""
        local: dict[str, list[str]] = {}
        others = []
        for raw in clause.values:
            value = unescape(raw)
            key = parse_reference(value, bases)
            typed = key.target_type is not None and key.target_id is not None and key.server is None
            if typed and not is_valid_id(value) and clause.type_modifier in (None, key.target_type):
                local.setdefault(str(key.target_type), []).append(str(key.target_id))
            else:
                others.append(self._reference(table, value, clause.type_modifier, bases))
        grouped = [
            and_(table.c.target_type == res_type, table.c.target_id.in_(ids), local_reference(table, bases))
            for res_type, ids in local.items()
        ]
        return or_(*grouped, *others)

    def _chained(
        self,
        clause: Clause,
        scope: ColumnElement[bool],
        bases: tuple[str, ...],
        request: SearchRequest | None,
        row: Any,
    ) -> ColumnElement[bool]:
        """`param:Type.inner=value`: references to targets that match `inner`, among the targets the
        client may see (and not by what a mask hides from it)."""
        assert clause.chain is not None
        table = TABLES["reference"]
        if clause.chain.target_type:
            target_types = [clause.chain.target_type]
        else:  # no type given: every target type this server can hold
            target_types = [t for t in clause.param.targets if t in SUPPORTED]
        inner = Clause(clause.chain.param, clause.values, clause.chain.modifier)
        visibility = request.visibility if request is not None else None
        masking = request.masking if request is not None else None
        options = []
        for target_type in target_types:
            target = R.alias()
            conditions = [
                target.c.res_type == target_type,
                target.c.deleted == false(),
                self.clause(target_type, inner, bases, row=target),
            ]
            if visibility is not None and not visibility.everything:
                conditions.append(visibility.where(target, target_type))
            if _looks_into_masked(target_type, [inner], masking):
                assert masking is not None
                conditions.append(not_(labelled(target.c.rid, masking.labels)))
            targets = select(target.c.res_id).where(*conditions)
            options.append(and_(table.c.target_type == target_type, table.c.target_id.in_(targets)))
        matched = select(table.c.rid).where(scope, local_reference(table, bases), or_(*options))
        return row.c.rid.in_(matched)  # type: ignore[no-any-return]

    def _date(self, low: Any, high: Any, value: str, point: bool = False) -> ColumnElement[bool]:
        """The spec's prefix semantics on ranges; a `point` (an instant such as _lastUpdated) is the
        range [t, t + 1 tick), so `high > x` becomes `t >= x` and `high <= x` becomes `t < x`."""
        prefix, text = _prefix(value)
        try:
            s_low, s_high = date_range(text, self.zone)
        except DateFormatError as error:
            raise bad_request(str(error)) from error

        def high_above(x: datetime) -> ColumnElement[bool]:
            return (low >= x) if point else (high > x)  # type: ignore[no-any-return]

        def high_within(x: datetime) -> ColumnElement[bool]:
            return (low < x) if point else (high <= x)  # type: ignore[no-any-return]

        contained = and_(low >= s_low, high_within(s_high))
        if prefix == "eq":
            return contained
        if prefix == "ne":
            return not_(contained)
        if prefix == "gt":
            return high_above(s_high)
        if prefix == "lt":
            return low < s_low  # type: ignore[no-any-return]
        if prefix == "ge":
            return or_(high_above(s_high), contained)
        if prefix == "le":
            return or_(low < s_low, contained)
        if prefix == "sa":
            return low >= s_high  # type: ignore[no-any-return]
        if prefix == "eb":
            return high_within(s_low)
        # ap: within 10% of the distance between now and the value, at least the value's own range.
        gap = abs(utc_now() - s_low) / 10
        return and_(low < shift(s_high, gap), high_above(shift(s_low, -gap)))

    # -- ordering and paging ----------------------------------------------------------------------

    def sort_keys(self, request: SearchRequest) -> list[tuple[Any, bool, str]]:
        """(expression, descending, kind) per sort key; `rid` last, so the order is total."""
        keys: list[tuple[Any, bool, str]] = []
        for param, descending in request.sort:
            if param.code == "_id":
                keys.append((R.c.res_id, descending, "string"))
            elif param.code == "_lastUpdated":
                keys.append((R.c.last_updated, descending, "date"))
            else:
                table = TABLES[param.type]
                column = table.c[SORT_COLUMNS[param.type]]
                aggregate = func.max(column) if descending else func.min(column)
                values = select(aggregate).where(table.c.rid == R.c.rid, table.c.param == param.code)
                masked = request.masking
                if masked is not None and param.code in masked.params:
                    values = values.where(not_(labelled(table.c.rid, masked.labels)))
                sub = values.scalar_subquery()
                keys.append((func.coalesce(sub, literal(NULL_SORT[param.type])), descending, param.type))
        keys.append((R.c.rid, False, "number"))
        return keys

    def page(self, request: SearchRequest, backwards: bool, cursor: list[Any] | None) -> Select[Any]:
        """rid, the sort keys, and the stored size (for the response budget, before anything is read)."""
        keys = self.sort_keys(request)
        columns = (R.c.rid, *(key for key, _, _ in keys), content_size(R.c.content))
        statement = select(*columns).where(self.where(request))
        if cursor is not None:
            statement = statement.where(_after(keys, cursor, backwards))
        order = [(key.desc() if descending != backwards else key.asc()) for key, descending, _ in keys]
        return statement.order_by(*order).limit(request.count + 1)


def _after(keys: list[tuple[Any, bool, str]], cursor: list[Any], backwards: bool) -> ColumnElement[bool]:
    """Rows strictly after the cursor in sort order (before it when paging backwards)."""
    options = []
    for i, (key, descending, _) in enumerate(keys):
        equal_before = [keys[j][0] == cursor[j] for j in range(i)]
        forward = descending == backwards
        step = key > cursor[i] if forward else key < cursor[i]
        options.append(and_(*equal_before, step))
    return or_(*options)


def _looks_into_masked(res_type: str, clauses: Sequence[Clause], masking: Masking | None) -> bool:
    """Whether a search of `res_type` matches by a parameter whose values the mask hides (a Patient by
    `name`): then the masked resources are left out, so a match cannot confirm a hidden value."""
    if masking is None or res_type != "Patient":
        return False
    return any(clause.chain is None and clause.param.code in masking.params for clause in clauses)


def _selects_by_index(clause: Clause) -> bool:
    """Whether the clause is `rid IN (index rows of this type)`, so it implies the resource type."""
    return clause.param.code not in COLUMN_PARAMS and clause.modifier not in ("missing", "not")


def _selectivity(clause: Clause) -> int:
    """How many rows a clause is expected to match, as a rank (lowest first; ties keep the request's
    order): a reference names one target, a `system|code` token mostly one identifier, a string, date,
    number or uri a value among many, a bare code (`status`, `gender`) one of a handful."""
    if clause.param.type == "reference":
        return 0
    if clause.param.type == "token":
        return 1 if all(split_token(v)[0] for v in clause.values) else 3
    return 2


def _prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value


def local_reference(table: Any, bases: tuple[str, ...]) -> ColumnElement[bool]:
    """Reference index rows that point at a resource on this server."""
    if not bases:
        return table.c.url.is_(None)  # type: ignore[no-any-return]
    return or_(table.c.url.is_(None), table.c.url.in_(bases))


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _number(column: Any, value: str) -> ColumnElement[bool]:
    prefix, text = _prefix(value)
    try:
        number = Decimal(text)
        if not number.is_finite():
            raise InvalidOperation("not finite")
        exponent = number.as_tuple().exponent
        half = Decimal(5) * Decimal(10) ** (Decimal(exponent if isinstance(exponent, int) else 0) - 1)
        low, high, exact = float(number - half), float(number + half), float(number)
    except ArithmeticError as error:  # InvalidOperation, Overflow
        raise bad_request(f"'{text}' is not a number this server can search on") from error
    if not all(math.isfinite(x) for x in (low, high, exact)):
        raise bad_request(f"'{text}' is not a finite number")
    conditions: dict[str, ColumnElement[bool]] = {
        "eq": and_(column >= low, column < high),
        "ne": or_(column < low, column >= high),
        "gt": column > exact,
        "lt": column < exact,
        "ge": column >= exact,
        "le": column <= exact,
        "sa": column > exact,
        "eb": column < exact,
        "ap": and_(column >= exact * 0.9, column <= exact * 1.1),
    }
    return conditions[prefix]
