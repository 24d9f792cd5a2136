"""Parsing of search URLs into clauses (what to match) and result parameters (how to return it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.errors import bad_request, too_costly
from gateway.limits import numbers
from gateway.model.types import SUPPORTED
from gateway.search.registry import Registry, SearchParam
from gateway.store.visibility import EVERYTHING, Visibility

RESULT_PARAMS = frozenset(
    {"_count", "_sort", "_include", "_revinclude", "_summary", "_total", "_elements", "_cursor"}
)
# Accepted everywhere and not about matching.
IGNORED_PARAMS = frozenset({"_format", "_pretty"})
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MODIFIERS_BY_TYPE = {
    "token": {"not", "missing"},
    "string": {"exact", "contains", "missing"},
    "reference": {"missing"},
    "date": {"missing"},
    "number": {"missing"},
    "uri": {"below", "missing"},
}


@dataclass(frozen=True)
class SearchLimits:
    """What one search may ask (docs/operations.md, "Limits"): its parameters (every name=value pair but
    `_format` and `_pretty`), the values of one parameter (comma-separated, ORed; `_sort` keys too), and
    the criteria of a conditional operation's search (If-None-Exist, conditional update, a conditional
    reference). Past one → 400 too-costly."""

    parameters: int = 50
    values: int = 100
    criteria: int = 10


DEFAULT_SEARCH_LIMITS = SearchLimits()


@dataclass(frozen=True)
class Chain:
    """`subject:Patient.identifier=…`: the reference's target type and the parameter on the target,
    with that parameter's own modifier (`subject.name:exact=…`)."""

    target_type: str | None
    param: SearchParam
    modifier: str | None = None


@dataclass(frozen=True)
class Clause:
    """One `name[:modifier]=v1,v2` pair: the values are ORed; separate clauses are ANDed."""

    param: SearchParam
    values: tuple[str, ...]
    modifier: str | None = None
    type_modifier: str | None = None
    chain: Chain | None = None


@dataclass(frozen=True)
class Include:
    source_type: str
    param: SearchParam
    target_type: str | None
    iterate: bool = False


@dataclass(frozen=True)
class Masking:
    """Search parameters whose values an access policy hides from this client in some resources: those
    labelled (`meta.security`, indexed as `_security`) with one of `labels` (protected Patients) are not
    found by `params`, also through a chain, and sort as if they had no value for them, so neither a
    match nor an order tells what is hidden (a protected patient's name)."""

    params: frozenset[str]
    labels: frozenset[tuple[str, str]]


@dataclass
class SearchRequest:
    res_type: str
    clauses: list[Clause] = field(default_factory=list)
    count: int = 50
    sort: list[tuple[SearchParam, bool]] = field(default_factory=list)  # (param, descending)
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    summary_count: bool = False
    total_accurate: bool = False
    elements: list[str] = field(default_factory=list)
    cursor: str | None = None
    unknown: list[str] = field(default_factory=list)
    # The parameters understood, for the self link.
    used: list[tuple[str, str]] = field(default_factory=list)
    # This server's base URL as the client addressed it: references to it are local references.
    base_url: str = ""
    # Set by the caller from the access policy (`AccessPolicy.visibility`, `.masking`), never from the
    # URL: what the client may see, and what it may not search or sort by.
    visibility: Visibility = EVERYTHING
    masking: Masking | None = None
    # Binds the paging cursors to the client they were given to (its client id).
    cursor_binding: str = ""


ESCAPABLE = ",|$\\"


def split_values(value: str) -> tuple[str, ...]:
    """Split on commas not escaped by a backslash. The parts keep their escapes (`\\|` must still
    tell a literal pipe from a token's system separator); `unescape` removes them."""
    parts, current, escaped = [], "", False
    for char in value:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            current += char
            escaped = True
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return tuple(parts)


def unescape(value: str) -> str:
    """`\\,` `\\|` `\\$` `\\\\` stand for the character; any other backslash is itself."""
    result, i = "", 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value) and value[i + 1] in ESCAPABLE:
            result += value[i + 1]
            i += 2
        else:
            result += value[i]
            i += 1
    return result


def split_token(value: str) -> tuple[str | None, str]:
    """`system|code` at the first unescaped pipe, each part unescaped; (None, code) without a pipe."""
    i = 0
    while i < len(value):
        if value[i] == "\\":
            i += 2
            continue
        if value[i] == "|":
            return unescape(value[:i]), unescape(value[i + 1 :])
        i += 1
    return None, unescape(value)


def _parse_include(registry: Registry, value: str, revinclude: bool, iterate: bool) -> Include:
    parts = value.split(":")
    if len(parts) not in (2, 3):
        raise bad_request(f"_include/_revinclude value '{value}' must be SourceType:param[:TargetType]")
    param = registry.get(parts[0], parts[1])
    if param is None or param.type != "reference":
        raise bad_request(f"'{parts[1]}' is not a reference search parameter of {parts[0]}")
    return Include(parts[0], param, parts[2] if len(parts) == 3 else None, iterate)


def parse(
    registry: Registry,
    res_type: str,
    pairs: Sequence[tuple[str, str]],
    default_count: int,
    max_count: int,
    base_url: str = "",
    limits: SearchLimits = DEFAULT_SEARCH_LIMITS,
    conditional: bool = False,
) -> SearchRequest:
    """`conditional`: the search of a conditional operation, held to `limits.criteria` parameters."""
    request = SearchRequest(res_type, count=default_count, base_url=base_url.rstrip("/"))
    _check_limits(pairs, limits, conditional)
    for name, value in pairs:
        base, _, modifier = name.partition(":")
        if base in IGNORED_PARAMS:
            continue
        if base in RESULT_PARAMS:
            _check_text(name, value)
            _result_param(registry, request, base, modifier, value, max_count)
            request.used.append((name, value))
            continue
        clause = _clause(registry, res_type, name, value)
        if clause is None:
            request.unknown.append(name)
        else:
            _check_text(name, value)
            request.clauses.append(clause)
            request.used.append((name, value))
    return request


def _check_limits(pairs: Sequence[tuple[str, str]], limits: SearchLimits, conditional: bool) -> None:
    counted = [name for name, _ in pairs if name.partition(":")[0] not in IGNORED_PARAMS]
    if conditional and len(counted) > limits.criteria:
        raise too_costly(
            f"The condition has {len(counted)} criteria; at most {limits.criteria} "
            "(GATEWAY_MAX_CONDITIONAL_CRITERIA)"
        )
    if len(counted) > limits.parameters:
        raise too_costly(
            f"The search has {len(counted)} parameters; at most {limits.parameters} "
            "(GATEWAY_MAX_SEARCH_PARAMETERS)"
        )
    for name, value in pairs:
        # A cheap bound first (escaped commas count too), then the values as split.
        if value.count(",") >= limits.values and len(split_values(value)) > limits.values:
            raise too_costly(
                f"'{name}' has more than {limits.values} values; at most {limits.values} a parameter "
                "(GATEWAY_MAX_SEARCH_VALUES)",
                name,
            )


def _check_text(name: str, value: str) -> None:
    """No database stores a NUL in text (PostgreSQL refuses it), so no value can hold one."""
    if "\x00" in value:
        raise bad_request(f"The value of '{name}' contains a NUL character", name)


def _result_param(
    registry: Registry, request: SearchRequest, name: str, modifier: str, value: str, max_count: int
) -> None:
    if name == "_count":
        count = numbers.count(value, max_count)
        if count is None:
            raise bad_request(f"_count must be a non-negative integer, not '{value}'", "_count")
        request.count = count
    elif name == "_sort":
        for key in value.split(","):
            descending = key.startswith("-")
            code = key.lstrip("-")
            param = registry.get(request.res_type, code)
            if param is None:
                raise bad_request(f"Cannot sort {request.res_type} by unknown parameter '{code}'", "_sort")
            if param.type not in ("token", "string", "date", "number", "uri"):
                raise bad_request(f"Sorting by the {param.type} parameter '{code}' is not supported", "_sort")
            request.sort.append((param, descending))
    elif name in ("_include", "_revinclude"):
        iterate = modifier in ("iterate", "recurse")
        include = _parse_include(registry, value, name == "_revinclude", iterate)
        (request.revincludes if name == "_revinclude" else request.includes).append(include)
    elif name == "_summary":
        if value == "count":
            request.summary_count = True
        elif value != "false":
            raise bad_request(f"_summary={value} is not supported (only count and false)", "_summary")
    elif name == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise bad_request(f"_total must be none, estimate or accurate, not '{value}'", "_total")
        request.total_accurate = value == "accurate"
    elif name == "_elements":
        request.elements = [element.strip() for element in value.split(",") if element.strip()]
    elif name == "_cursor":
        request.cursor = value


def _clause(registry: Registry, res_type: str, name: str, value: str) -> Clause | None:
    head, dot, chained = name.partition(".")
    code, _, modifier = head.partition(":")
    param = registry.get(res_type, code)
    if param is None:
        return None
    values = split_values(value)
    if dot:
        if param.type != "reference":
            raise bad_request(f"Only reference parameters can be chained, not '{code}'", name)
        target_type = modifier or (param.targets[0] if len(param.targets) == 1 else None)
        chain_code, _, chain_modifier = chained.partition(":")
        if "." in chain_code:
            raise bad_request(f"Only one level of chaining is supported: '{name}'", name)
        candidates = [target_type] if target_type else list(param.targets)
        target_param = next((p for t in candidates if (p := registry.get(t, chain_code)) is not None), None)
        if target_param is None:
            raise bad_request(f"Unknown chained parameter '{chain_code}' in '{name}'", name)
        if modifier:
            _check_type_modifier(param, modifier, name)
        inner = Clause(target_param, values, chain_modifier or None)
        _check_modifier(inner, name)
        chain = Chain(target_type, target_param, chain_modifier or None)
        return Clause(param, values, None, target_type, chain)
    type_modifier = None
    if param.type == "reference" and modifier and modifier != "missing":
        _check_type_modifier(param, modifier, name)
        type_modifier, modifier = modifier, ""
    clause = Clause(param, values, modifier or None, type_modifier)
    _check_modifier(clause, name)
    return clause


def _check_type_modifier(param: SearchParam, type_modifier: str, name: str) -> None:
    """A reference's `:[type]` modifier must name a type this server serves that the parameter may
    refer to; other modifiers (`:identifier`, `:above`, `:below`) are not supported."""
    if type_modifier not in SUPPORTED or (param.targets and type_modifier not in param.targets):
        raise bad_request(f"Modifier ':{type_modifier}' is not supported on '{param.code}'", name)


def _check_modifier(clause: Clause, name: str) -> None:
    if clause.modifier is None:
        return
    allowed = MODIFIERS_BY_TYPE.get(clause.param.type, set())
    if clause.param.code == "_id":
        allowed = {"not", "missing"} - {"missing"}
    if clause.modifier not in allowed:
        raise bad_request(f"Modifier ':{clause.modifier}' is not supported on '{clause.param.code}'", name)
    if clause.modifier == "missing" and any(v not in ("true", "false") for v in clause.values):
        raise bad_request(f"':missing' takes true or false in '{name}'", name)
