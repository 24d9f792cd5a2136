"""The SearchParameter registry: the official R4 definitions shipped in gateway/definitions plus the
custom ones under profiles/, compiled once into per-type extractors.

FHIRPath `resolve()` is not available in fhirpathpy. Core expressions use it only as
`X.where(resolve() is Type)`, a type test on the reference; such a branch is compiled without the
`where` and its values are kept only when the reference names that type.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from gateway import resources
from gateway.model.types import SUPPORTED, Json, loads
from gateway.search.paths import compile_path, root_keys

INDEXED_TYPES = frozenset({"token", "string", "reference", "date", "number", "uri"})

# Served from the resource table's own columns, not from index rows.
COLUMN_PARAMS = frozenset({"_id", "_lastUpdated"})
_AS_TYPE = re.compile(r"\(([A-Za-z][\w.]*) as (\w+)\)")
_RESOLVE_IS = re.compile(r"\.where\(resolve\(\) is (\w+)\)")
# fhirpathpy does not take `Resource.` or `DomainResource.` as matching every resource type, so such
# a branch (`Resource.meta.tag`) is compiled relative to the resource itself (`meta.tag`).
_ABSTRACT_ROOT = re.compile(r"^(\(*\s*)(?:Resource|DomainResource)\.")
_FHIR_MODEL = models["r4"]


@dataclass(frozen=True)
class Branch:
    """One `|`-separated part of an expression, for one resource type."""

    expression: str
    evaluate: Callable[..., list[Any]]
    target_type: str | None = None
    # The top-level keys it reads, when known (a plain path): without any of them it selects nothing.
    roots: frozenset[str] | None = None


@dataclass
class SearchParam:
    code: str
    type: str
    url: str
    expression: str
    base: tuple[str, ...]
    targets: tuple[str, ...] = ()
    description: str = ""
    branches: dict[str, list[Branch]] = field(default_factory=dict)

    @property
    def indexed(self) -> bool:
        return self.type in INDEXED_TYPES and self.code not in COLUMN_PARAMS

    def values(self, resource: Json) -> list[tuple[Any, str | None]]:
        """Each value the expression selects in `resource`, with the target type its branch requires."""
        found: list[tuple[Any, str | None]] = []
        for branch in self.branches.get(resource["resourceType"], ()):
            if branch.roots is not None and not any(key in resource for key in branch.roots):
                continue
            target = branch.target_type
            found.extend((value, target) for value in branch.evaluate(resource))
        return found


def _split_union(expression: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in expression:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        if char == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return [part for part in parts if part]


def _root_type(branch: str) -> str:
    match = re.match(r"^\(*\s*(\w+)", branch)
    return match.group(1) if match else ""


@cache
def _compile(branch: str) -> Branch:
    """Compiled once per process: parsing FHIRPath is slow, and the definitions do not change."""
    target: str | None = None
    match = _RESOLVE_IS.search(branch)
    if match:
        target = match.group(1)
        branch = _RESOLVE_IS.sub("", branch)
    branch = _ABSTRACT_ROOT.sub(r"\1", branch)
    # `(X as T)` demands a single X in fhirpathpy, but X is often a collection (every component's
    # value); `X.ofType(T)` is what the definitions mean and takes collections.
    branch = _AS_TYPE.sub(r"\1.ofType(\2)", branch)
    plain = compile_path(branch)
    if plain is not None:
        return Branch(branch, plain, target, root_keys(branch))
    return Branch(branch, fhirpathpy.compile(branch, _FHIR_MODEL), target)


def _types_of(root: str) -> frozenset[str]:
    if root == "Resource":
        return SUPPORTED
    if root == "DomainResource":
        return SUPPORTED - {"Binary"}
    return frozenset({root}) & SUPPORTED


def _branches_for(expression: str) -> dict[str, list[Branch]]:
    by_type: dict[str, list[Branch]] = {}
    for part in _split_union(expression):
        types = _types_of(_root_type(part))
        if not types:
            continue
        compiled = _compile(part)
        for res_type in types:
            by_type.setdefault(res_type, []).append(compiled)
    return by_type


def _search_parameters(document: Json) -> Iterator[Json]:
    if document.get("resourceType") == "SearchParameter":
        yield document
    elif document.get("resourceType") == "Bundle":
        for entry in document.get("entry", []):
            yield from _search_parameters(entry.get("resource", {}))


@cache
def _official() -> tuple[Json, ...]:
    """The R4 definitions shipped with the gateway, read once per process (they are not modified)."""
    official = loads((resources.definitions() / "search-parameters.json").read_bytes())
    return tuple(_search_parameters(official))


class Registry:
    """Search parameters by resource type and code."""

    def __init__(self, definitions: Iterable[Json]) -> None:
        self._by_type: dict[str, dict[str, SearchParam]] = {res_type: {} for res_type in SUPPORTED}
        self._indexed: dict[str, list[SearchParam]] = {}
        self.custom_urls: set[str] = set()
        for definition in definitions:
            self.add(definition)

    def add(self, definition: Json) -> None:
        expression = definition.get("expression") or ""
        bases = tuple(definition.get("base", []))
        param = SearchParam(
            code=definition["code"],
            type=definition["type"],
            url=definition.get("url", ""),
            expression=expression,
            base=bases,
            targets=tuple(definition.get("target", [])),
            description=definition.get("description", ""),
        )
        if param.code in COLUMN_PARAMS:
            applies_to: Iterable[str] = SUPPORTED
        elif expression and param.type in INDEXED_TYPES:
            param.branches = _branches_for(expression)
            applies_to = param.branches
        else:
            return  # composite, special and quantity parameters are not supported (docs/search.md)
        for res_type in applies_to:
            self._by_type[res_type][param.code] = param
        self._indexed.clear()

    def get(self, res_type: str, code: str) -> SearchParam | None:
        return self._by_type.get(res_type, {}).get(code)

    def for_type(self, res_type: str) -> dict[str, SearchParam]:
        return self._by_type.get(res_type, {})

    def indexed(self, res_type: str) -> list[SearchParam]:
        found = self._indexed.get(res_type)
        if found is None:
            params = self._by_type.get(res_type, {}).values()
            found = self._indexed[res_type] = [param for param in params if param.indexed]
        return found

    @classmethod
    def load(cls, profiles_dir: Path | None) -> Registry:
        registry = cls(_official())
        if profiles_dir is not None and profiles_dir.is_dir():
            for path in sorted(profiles_dir.rglob("*.json")):
                for definition in _search_parameters(loads(path.read_bytes())):
                    registry.add(definition)
                    registry.custom_urls.add(definition.get("url", ""))
        return registry
