"""Index values extracted at write time: each search parameter's FHIRPath result, typed by the
parameter's type and the shape of the value, as rows for the typed index tables."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from gateway.model.types import is_valid_id
from gateway.search.dates import MAX, MIN, DateFormatError, date_range
from gateway.search.registry import Registry, SearchParam
from gateway.search.text import fold

CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


@dataclass(frozen=True)
class ReferenceKey:
    """A literal reference as indexed: `Type/id` on this server has `server` None; `Type/id` at another
    FHIR server keeps that server's base in `server`; anything else (a URN, a URL that does not end in
    `Type/id`) is only `server`, the whole reference, with `target_type` when one can be told."""

    target_type: str | None
    target_id: str | None
    server: str | None


def _is_type(name: str) -> bool:
    return name[:1].isupper() and name.isalpha() and len(name) <= 64


def parse_reference(reference: str, bases: tuple[str, ...] = ()) -> ReferenceKey:
    """Split a reference (or a reference search value) the same way for indexing and searching.
    `bases` are this server's base URLs: absolute references under them are local. A version
    (`/_history/n`) is dropped: a search on a reference matches the resource, not a version."""
    local = reference
    for base in bases:
        if base and reference.startswith(base + "/"):
            local = reference[len(base) + 1 :]
            break
    absolute = "://" in local or local.startswith("urn:")
    parts = local.split("?", maxsplit=1)[0].split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if local.startswith("urn:") or len(parts) < 2 or not _is_type(parts[-2]):
        return ReferenceKey(None, None, reference)
    if not is_valid_id(parts[-1]) or (not absolute and len(parts) != 2):
        return ReferenceKey(parts[-2], None, reference)
    server = "/".join(parts[:-2]) if absolute else None
    return ReferenceKey(parts[-2], parts[-1], server)


@dataclass
class IndexRows:
    """Rows per index table, without `rid` (added when stored)."""

    token: list[dict[str, Any]] = field(default_factory=list)
    string: list[dict[str, Any]] = field(default_factory=list)
    reference: list[dict[str, Any]] = field(default_factory=list)
    date: list[dict[str, Any]] = field(default_factory=list)
    number: list[dict[str, Any]] = field(default_factory=list)
    uri: list[dict[str, Any]] = field(default_factory=list)


def _tokens(value: Any) -> Iterator[tuple[str | None, str | None]]:
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, str | int):
        yield None, str(value)
    elif isinstance(value, dict):
        if "coding" in value or ("text" in value and "code" not in value and "value" not in value):
            for coding in value.get("coding", []):
                yield from _tokens(coding)
        elif "code" in value:
            yield value.get("system"), value.get("code")
        elif "value" in value:
            system = value.get("system")
            if system in CONTACT_SYSTEMS and "assigner" not in value:
                system = None  # a ContactPoint: its system is not a URI
            yield system, str(value["value"])


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key in (
            "text",
            "family",
            "given",
            "prefix",
            "suffix",
            "line",
            "city",
            "district",
            "state",
            "postalCode",
            "country",
            "value",
            "display",
        ):
            item = value.get(key)
            if isinstance(item, list):
                yield from (part for part in item if isinstance(part, str))
            elif isinstance(item, str):
                yield item


def _dates(value: Any, zone: ZoneInfo) -> Iterator[tuple[datetime, datetime]]:
    if isinstance(value, str):
        yield date_range(value, zone)
    elif isinstance(value, dict):
        if "start" in value or "end" in value:
            low = date_range(value["start"], zone)[0] if value.get("start") else MIN
            high = date_range(value["end"], zone)[1] if value.get("end") else MAX
            yield low, high
        for event in value.get("event", []):
            yield date_range(event, zone)
        bounds = value.get("repeat", {}).get("boundsPeriod")
        if bounds:
            yield from _dates(bounds, zone)


class Extractor:
    def __init__(
        self,
        registry: Registry,
        zone: ZoneInfo,
        base_url: str = "",
        access: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None,
    ) -> None:
        """`access`: the access index rows of a resource (gateway.security.access_index), reference
        rows under private parameters, extracted with the references' rows."""
        self.registry = registry
        self.zone = zone
        self.base_url = base_url.rstrip("/")
        self.access = access

    def rows(self, resource: dict[str, Any], references: bool | None = None) -> IndexRows:
        """The resource's index rows; with `references` True only its reference parameters' (and its
        access rows), with False all the others' (which a reference rewritten to another target leaves
        as they are)."""
        res_type = resource["resourceType"]
        rows = IndexRows()
        for param in self.registry.indexed(res_type):
            if references is not None and (param.type == "reference") != references:
                continue
            values = param.values(resource)
            if values:
                self._add(rows, res_type, param, values)
        if self.access is not None and references is not False:
            rows.reference.extend(self.access(resource))
        return rows

    def completed(self, rows: IndexRows, resource: dict[str, Any]) -> IndexRows:
        """`rows` (a `rows(…, references=False)` of this content, before its references were rewritten)
        with the reference rows of `resource` as it is now."""
        return replace(rows, reference=self.rows(resource, references=True).reference)

    def _add(
        self, rows: IndexRows, res_type: str, param: SearchParam, values: list[tuple[Any, str | None]]
    ) -> None:
        """The index rows of one parameter's values, each distinct row once."""
        code, kind = param.code, param.type
        seen: set[Any] = set()
        if kind == "token":
            for value, _ in values:
                for system, whole in _tokens(value):
                    token = whole[:255] if whole else whole
                    if (system, token) not in seen:
                        seen.add((system, token))
                        rows.token.append(
                            {"res_type": res_type, "param": code, "system": system, "code": token}
                        )
        elif kind == "string":
            for value, _ in values:
                for text in _strings(value):
                    if text not in seen:
                        seen.add(text)
                        row = {"res_type": res_type, "param": code, "value_folded": fold(text)}
                        rows.string.append(row | {"value_exact": text})
        elif kind == "reference":
            for value, target_type in values:
                key = self._reference(value, target_type)
                if key is not None and key not in seen:
                    seen.add(key)
                    rows.reference.append(
                        {
                            "res_type": res_type,
                            "param": code,
                            "target_type": key.target_type,
                            "target_id": key.target_id,
                            "url": key.server,
                        }
                    )
        elif kind == "date":
            for value, _ in values:
                try:
                    for low, high in _dates(value, self.zone):
                        if (low, high) not in seen:
                            seen.add((low, high))
                            rows.date.append({"res_type": res_type, "param": code, "low": low, "high": high})
                except DateFormatError:
                    continue
        elif kind == "number":
            for value, _ in values:
                if not isinstance(value, int | float | Decimal | str):
                    continue
                try:
                    number = float(value)
                except ValueError:
                    continue
                if math.isfinite(number) and number not in seen:
                    seen.add(number)
                    rows.number.append({"res_type": res_type, "param": code, "value": number})
        elif kind == "uri":
            for value, _ in values:
                if isinstance(value, str) and value[:512] not in seen:
                    seen.add(value[:512])
                    rows.uri.append({"res_type": res_type, "param": code, "value": value[:512]})

    def _reference(self, value: Any, target_type: str | None) -> ReferenceKey | None:
        reference = value.get("reference") if isinstance(value, dict) else value
        if not isinstance(reference, str) or not reference or reference.startswith("#"):
            return None
        key = parse_reference(reference, (self.base_url,))
        if target_type is not None and key.target_type != target_type:
            return None
        return key
