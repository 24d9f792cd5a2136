"""Simple FHIRPath search expressions evaluated by walking the resource's JSON.

Most SearchParameter expressions are plain paths (`Patient.name`, `Observation.value.ofType(Quantity)`,
`Patient.telecom.where(system='phone')`). Evaluating them through fhirpathpy builds a node tree of the
whole resource on every call, which made index extraction the largest cost of a write. A plain path is
compiled here into a list of steps over the JSON instead; anything else (functions, operators, indexes)
is left to fhirpathpy. Both give the same values (tests/unit/test_paths.py compares them on every
indexed parameter over the golden resources).

Choice elements (`value[x]`) are resolved with fhirpathpy's own R4 model: `Observation.value` reads every
`value<Type>` key, `Observation.value.ofType(Quantity)` only `valueQuantity`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhirpathpy.models import models

from gateway.model.types import Json

_MODEL = models["r4"]
_CHOICES: dict[str, list[str]] = _MODEL["choiceTypePaths"]
_TYPES: dict[str, str] = _MODEL["path2Type"]
_ELSEWHERE: dict[str, str] = _MODEL["pathsDefinedElsewhere"]
_NAME = re.compile(r"[A-Za-z_]\w*")
_OF_TYPE = re.compile(r"ofType\((\w+)\)")
_WHERE_EQUALS = re.compile(r"where\((\w+)\s*=\s*'([^'\\]*)'\)")
# Types that hold no children a path could step into further.
_UNTYPED = frozenset({"BackboneElement", "Element"})


@dataclass(frozen=True)
class _Step:
    keys: tuple[str, ...] = ()  # child keys to read (several for a choice element)
    where: tuple[str, str] | None = None  # keep only objects whose field equals a literal


def _split_steps(path: str) -> list[str] | None:
    """`A.b.where(c='d')` → ["A", "b", "where(c='d')"]; None when a dot sits inside parentheses."""
    steps, depth, current = [], 0, ""
    for char in path:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "." and depth == 0:
            steps.append(current)
            current = ""
        else:
            current += char
    steps.append(current)
    return steps if depth == 0 and all(steps) else None


def _strip_parentheses(path: str) -> str:
    path = path.strip()
    while path.startswith("(") and path.endswith(")") and _split_steps(path[1:-1]) is not None:
        path = path[1:-1].strip()
    return path


def _compile_steps(path: str) -> list[_Step] | None:
    words = _split_steps(_strip_parentheses(path))
    if words is None:
        return None
    if words[0][:1].isupper() and _NAME.fullmatch(words[0]):
        state: str | None = words.pop(0)
    else:
        state = "Resource"  # a root-less branch (`meta.tag`) applies to every resource type
    steps: list[_Step] = []
    index = 0
    while index < len(words):
        word = words[index]
        following = words[index + 1] if index + 1 < len(words) else None
        where = _WHERE_EQUALS.fullmatch(word)
        if where:
            steps.append(_Step(where=(where.group(1), where.group(2))))
            index += 1
            continue
        if not _NAME.fullmatch(word) or state is None:
            return None
        full = f"{state}.{word}"
        full = _ELSEWHERE.get(full, full)
        if full in _CHOICES:
            typed = _OF_TYPE.fullmatch(following) if following else None
            if typed:
                suffix = typed.group(1)[:1].upper() + typed.group(1)[1:]  # ofType(dateTime): valueDateTime
                if suffix not in _CHOICES[full]:
                    return None
                steps.append(_Step(keys=(word + suffix,)))
                state = typed.group(1)
                index += 2
            else:
                steps.append(_Step(keys=tuple(word + choice for choice in _CHOICES[full])))
                state = None  # the type varies: no further step can be resolved
                index += 1
            continue
        steps.append(_Step(keys=(word,)))
        element_type = _TYPES.get(full)
        state = full if element_type is None or element_type in _UNTYPED else element_type
        index += 1
    return steps


def _run(steps: list[_Step], resource: Json) -> list[Any]:
    nodes: list[Any] = [resource]
    for step in steps:
        if step.where is not None:
            field, literal = step.where
            nodes = [node for node in nodes if isinstance(node, dict) and node.get(field) == literal]
            continue
        found: list[Any] = []
        for node in nodes:
            if not isinstance(node, dict):
                continue
            for key in step.keys:
                value = node.get(key)
                if isinstance(value, list):
                    found.extend(item for item in value if item is not None)
                elif value is not None:
                    found.append(value)
        nodes = found
    return nodes


def root_keys(path: str) -> frozenset[str] | None:
    """The resource's top-level keys a plain path reads (`Patient.name.given` → {"name"}; a choice
    element, each of its keys): a resource with none of them has no value there. None when the
    expression needs fhirpathpy, or its first step is not a key."""
    steps = _compile_steps(path)
    if not steps or steps[0].where is not None:
        return None
    return frozenset(steps[0].keys)


def compile_path(path: str) -> Callable[[Json], list[Any]] | None:
    """A JSON-walking evaluator for a plain path, or None when the expression needs fhirpathpy."""
    steps = _compile_steps(path)
    if not steps:
        return None

    def evaluate(resource: Json) -> list[Any]:
        return _run(steps, resource)

    return evaluate
