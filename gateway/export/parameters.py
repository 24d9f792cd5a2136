"""The kick-off parameters of `$export` (Bulk Data Access IG 2.0.0), checked before a job is made: what
the job will export (`level`, `types`, `since`, `type_filters`), kept as JSON in its row.

`_type` names types the client's scopes let it search, each a type this server has (at Patient level, a
member of the Patient compartment); without it, every such type but AuditEvent and Binary. `_typeFilter`
is `Type?search` with the search parameters of that type (no result parameters: `_include`, `_sort`, …);
several for one type are ORed. A parameter the gateway does not support is a 400 naming it, unless the
client asked `Prefer: handling=lenient`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from gateway.errors import FhirError, bad_request, forbidden
from gateway.hooks import AccessPolicy, RequestContext
from gateway.model.types import SUPPORTED_TYPES
from gateway.search.dates import DateFormatError, date_range
from gateway.search.engine import Searcher
from gateway.search.everything import member_types
from gateway.search.parameters import SearchRequest

SYSTEM, PATIENT = "system", "patient"
FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
NDJSON = "application/fhir+ndjson"
# Left out unless named in `_type`: the audit trail and the adapters' raw inputs (as $everything does).
NOT_BY_DEFAULT = frozenset({"AuditEvent", "Binary"})
KNOWN = frozenset({"_outputFormat", "_since", "_type", "_typeFilter"})
IGNORED = frozenset({"_format", "_pretty"})  # the format of the kick-off's own error answers


@dataclass
class ExportParameters:
    level: str
    types: list[str]
    since: datetime | None = None
    type_filters: dict[str, list[str]] = field(default_factory=dict)
    output_format: str = NDJSON

    def to_json(self) -> str:
        return json.dumps(
            {
                "level": self.level,
                "types": self.types,
                "since": self.since.isoformat() if self.since else None,
                "type_filters": self.type_filters,
                "output_format": self.output_format,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ExportParameters:
        data = json.loads(text)
        since = datetime.fromisoformat(data["since"]) if data.get("since") else None
        return cls(
            str(data["level"]),
            [str(t) for t in data["types"]],
            since,
            {str(k): [str(q) for q in v] for k, v in data.get("type_filters", {}).items()},
            str(data.get("output_format", NDJSON)),
        )


def _values(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _allowed(policy: AccessPolicy, context: RequestContext, res_type: str) -> bool:
    try:
        policy.authorize_search(context, res_type)
    except FhirError:
        return False
    return True


def parse(
    pairs: Sequence[tuple[str, str]],
    level: str,
    policy: AccessPolicy,
    context: RequestContext,
    searcher: Searcher,
    zone: ZoneInfo,
    lenient: bool,
) -> ExportParameters:
    """The parameters of a kick-off, or a 400 naming the one that is wrong (403 for a type the scopes do
    not let the client search, as a search of it would be)."""
    possible = member_types() if level == PATIENT else list(SUPPORTED_TYPES)
    named: list[str] = []
    since: datetime | None = None
    output_format = NDJSON
    filters: list[str] = []
    for name, value in pairs:
        if name in IGNORED:
            continue
        if name not in KNOWN:
            if lenient:
                continue
            raise bad_request(f"$export does not support the parameter '{name}'", name)
        if name == "_outputFormat":
            if value not in FORMATS:
                message = f"_outputFormat: '{value}' is not supported (only {', '.join(sorted(FORMATS))})"
                raise bad_request(message, "_outputFormat")
        elif name == "_since":
            if since is not None:
                raise bad_request("_since may be given once", "_since")
            try:
                since = date_range(value, zone)[0]
            except DateFormatError as error:
                raise bad_request(f"_since: {error}", "_since") from error
        elif name == "_type":
            for res_type in _values(value) or [""]:
                if res_type not in possible:
                    where = "in the Patient compartment" if level == PATIENT else "a type this server has"
                    raise bad_request(f"_type: '{res_type}' is not {where}", "_type")
                if res_type not in named:
                    named.append(res_type)
        else:
            filters += _values(value)
    for res_type in named:
        policy.authorize_search(context, res_type)  # 403, as a search of that type
    if named:
        types = named
    else:
        types = [t for t in possible if t not in NOT_BY_DEFAULT and _allowed(policy, context, t)]
        if not types:
            raise forbidden("The access token's scopes let this client search no type it could export")
    found = ExportParameters(level, types, since, {}, output_format)
    for text in filters:
        res_type, query = _type_filter(text, types, searcher, context.base_url)
        found.type_filters.setdefault(res_type, []).append(query)
    return found


def _type_filter(text: str, types: list[str], searcher: Searcher, base: str) -> tuple[str, str]:
    res_type, mark, query = text.partition("?")
    if not mark or not query:
        raise bad_request(f"_typeFilter: '{text}' is not of the form Type?search", "_typeFilter")
    if res_type not in types:
        message = f"_typeFilter: '{res_type}' is not one of the types this export has"
        raise bad_request(message, "_typeFilter")
    pairs = parse_qsl(query, keep_blank_values=True)
    try:
        request = searcher.parse(res_type, pairs, base)
    except FhirError as error:
        detail = "; ".join(issue.diagnostics for issue in error.issues)
        raise bad_request(f"_typeFilter: {detail}", "_typeFilter") from error
    if request.unknown:
        message = f"_typeFilter: unknown search parameter(s) for {res_type}: {', '.join(request.unknown)}"
        raise bad_request(message, "_typeFilter")
    if _has_result_parameters(request, pairs):
        message = "_typeFilter: only search parameters, no result parameters (_include, _sort, _count, …)"
        raise bad_request(message, "_typeFilter")
    if not request.clauses:
        raise bad_request(f"_typeFilter: '{text}' selects nothing: give a search parameter", "_typeFilter")
    return res_type, query


def _has_result_parameters(request: SearchRequest, pairs: list[tuple[str, str]]) -> bool:
    if request.includes or request.revincludes or request.sort or request.elements:
        return True
    if request.summary_count or request.total_accurate or request.cursor:
        return True
    return any(name in ("_count", "_summary", "_total", "_elements", "_cursor") for name, _ in pairs)
