"""Index values extracted at write time: each search parameter's FHIRPath result, typed by the
parameter's type and the shape of the value, as rows for the typed index tables."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway.model.validate import reference_type
from gateway.search.dates import MAX, MIN, DateFormatError, date_range
from gateway.search.registry import Registry, SearchParam
from gateway.search.text import fold

CONTACT_SYSTEMS = frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"})


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
    def __init__(self, registry: Registry, zone: ZoneInfo, base_url: str = "") -> None:
        self.registry = registry
        self.zone = zone
        self.base_url = base_url.rstrip("/")

    def rows(self, resource: dict[str, Any]) -> IndexRows:
        res_type = resource["resourceType"]
        rows = IndexRows()
        for param in self.registry.indexed(res_type):
            self._add(rows, res_type, param, resource)
        return rows

    def _add(self, rows: IndexRows, res_type: str, param: SearchParam, resource: dict[str, Any]) -> None:
        key = {"res_type": res_type, "param": param.code}
        seen: set[Any] = set()

        def add(table: list[dict[str, Any]], **values: Any) -> None:
            marker = tuple(values.values())
            if marker not in seen:
                seen.add(marker)
                table.append(key | values)

        for value, target_type in param.values(resource):
            if param.type == "token":
                for system, code in _tokens(value):
                    add(rows.token, system=system, code=code[:255] if code else code)
            elif param.type == "string":
                for text in _strings(value):
                    add(rows.string, value_folded=fold(text), value_exact=text)
            elif param.type == "reference":
                self._reference(add, rows, value, target_type)
            elif param.type == "date":
                try:
                    for low, high in _dates(value, self.zone):
                        add(rows.date, low=low, high=high)
                except DateFormatError:
                    continue
            elif param.type == "number" and isinstance(value, int | float | str):
                try:
                    add(rows.number, value=float(value))
                except ValueError:
                    continue
            elif param.type == "uri" and isinstance(value, str):
                add(rows.uri, value=value[:512])

    def _reference(self, add: Any, rows: IndexRows, value: Any, target_type: str | None) -> None:
        reference = value.get("reference") if isinstance(value, dict) else value
        if not isinstance(reference, str) or reference.startswith("#"):
            return
        local = reference
        if self.base_url and reference.startswith(self.base_url + "/"):
            local = reference[len(self.base_url) + 1 :]
        ref_type = reference_type(local)
        if target_type is not None and ref_type != target_type:
            return
        parts = local.split("/")
        if ref_type is not None and "://" not in local and len(parts) in (2, 4):
            add(rows.reference, target_type=parts[0], target_id=parts[1], url=None)
        else:
            add(rows.reference, target_type=ref_type, target_id=None, url=reference)
