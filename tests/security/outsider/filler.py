"""Gives a resource a value for a search parameter, generically: the parameter's FHIRPath branch (a plain
path, as the registry compiles it) is walked over the fhir.resources R4B model, creating each element
with the shape the model asks for (a list or not, the backbone, the choice type) and a leaf value made
by a `Values` source. So the adversarial world holds a value for (almost) every search parameter of
every supported type without a hand-written resource per parameter, and a new parameter gets one too.

A fill that the gateway's own validation refuses is undone: the caller tries another resource."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from gateway.errors import FhirError
from gateway.model.types import Json, loads
from gateway.model.validate import validate
from gateway.search.registry import Branch, SearchParam

_COMPLEX = re.compile(r"abc\.(\w+)Type\b")
_OF_TYPE = re.compile(r"^ofType\((\w+)\)$")
_WHERE = re.compile(r"^where\((\w+)\s*=\s*'([^'\\]*)'\)$")
_NAME = re.compile(r"^[A-Za-z_]\w*$")
# Annotated metadata class names of fhir_core's primitive types → FHIR primitive type names.
_PRIMITIVES = {
    "Boolean": "boolean",
    "Code": "code",
    "String": "string",
    "Markdown": "markdown",
    "Id": "id",
    "Uri": "uri",
    "Url": "url",
    "Canonical": "canonical",
    "Oid": "oid",
    "Uuid": "uuid",
    "Date": "date",
    "DateTime": "dateTime",
    "Instant": "instant",
    "Time": "time",
    "Integer": "integer",
    "Integer64": "integer",
    "PositiveInt": "positiveInt",
    "UnsignedInt": "unsignedInt",
    "Decimal": "decimal",
    "Base64Binary": "base64Binary",
}
# For a choice element without ofType: the variant a parameter of this type is most likely to read.
_PREFERRED = {
    "reference": ("Reference",),
    "token": ("CodeableConcept", "Coding", "Identifier", "String", "Boolean"),
    "string": ("String",),
    "date": ("DateTime", "Period", "Date", "Instant", "Timing"),
    "number": ("Decimal", "Integer", "Quantity"),
    "uri": ("Uri", "Canonical", "Url"),
}


@dataclass(frozen=True)
class Element:
    """One element of a model class: its JSON key, whether it repeats, and its type (a complex or
    backbone class name, or a FHIR primitive name)."""

    key: str
    repeats: bool
    kind: str
    primitive: bool


@cache
def _elements(class_name: str) -> dict[str, Element]:
    cls = get_fhir_model_class(class_name)
    found: dict[str, Element] = {}
    for name, info in cls.model_fields.items():
        alias = info.alias or name
        if alias.startswith("_") or name.endswith("__ext"):
            continue
        text = repr(info.annotation)
        repeats = "List[" in text or "list[" in text
        complex_match = _COMPLEX.search(text)
        if complex_match:
            found[alias] = Element(alias, repeats, complex_match.group(1), False)
            continue
        kind = next((v for k, v in _PRIMITIVES.items() if re.search(rf"\b{k}\(", text)), None)
        if kind is None and "bool" in text:
            kind = "boolean"
        if kind is not None:
            found[alias] = Element(alias, repeats, kind, True)
    return found


@cache
def _definitions(name: str) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = loads((resources.files("gateway") / "definitions" / name).read_bytes())
    return data


def required_codes(res_type: str, path: str) -> list[str]:
    binding = _definitions("bindings.json").get(res_type, {}).get(path)
    return list(binding["codes"]) if binding else []


def allowed_targets(res_type: str, path: str) -> list[str]:
    return list(_definitions("reference-targets.json").get(res_type, {}).get(path, ["*"]))


class Values:
    """Leaf values for one flavour of the world (the caller's source of names, codes, dates, refs)."""

    def leaf(self, kind: str, param: SearchParam, path: str, targets: list[str]) -> Any:
        raise NotImplementedError


def _split(expression: str) -> list[str] | None:
    words, depth, current = [], 0, ""
    for char in expression.strip():
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "." and depth == 0:
            words.append(current)
            current = ""
        else:
            current += char
    words.append(current)
    return words if depth == 0 and all(words) else None


def _steps(res_type: str, branch: Branch) -> list[tuple[str, str | None, list[tuple[str, str]]]] | None:
    """`Type.a.b.ofType(X).where(c='d')` → [(a, None, []), (b, X, [(c, d)])]; None when not a plain path."""
    expression = branch.expression.strip()
    while expression.startswith("(") and expression.endswith(")"):
        expression = expression[1:-1].strip()
    words = _split(expression)
    if not words:
        return None
    if words[0] == res_type:
        words = words[1:]
    steps: list[tuple[str, str | None, list[tuple[str, str]]]] = []
    for word in words:
        of_type, where = _OF_TYPE.match(word), _WHERE.match(word)
        if of_type and steps:
            name, _, wheres = steps[-1]
            steps[-1] = (name, of_type.group(1), wheres)
        elif where and steps:
            steps[-1][2].append((where.group(1), where.group(2)))
        elif _NAME.match(word):
            steps.append((word, None, []))
        else:
            return None
    return steps or None


def top_element(res_type: str, branch: Branch) -> str | None:
    """The resource's own element a branch starts at (`code` of `DeviceRequest.code.ofType(Reference)`)."""
    steps = _steps(res_type, branch)
    return steps[0][0] if steps else None


def _choice(elements: dict[str, Element], name: str, of_type: str | None, param_type: str) -> Element | None:
    if name in elements:
        return elements[name]
    variants = {
        key[len(name) :]: e
        for key, e in elements.items()
        if key.startswith(name) and key[len(name) :][:1].isupper()
    }
    if not variants:
        return None
    if of_type is not None:
        return variants.get(of_type[:1].upper() + of_type[1:])
    for suffix in _PREFERRED.get(param_type, ()):
        if suffix in variants:
            return variants[suffix]
    return next(iter(variants.values()))


def _choice_taken(node: Json, name: str, key: str) -> bool:
    return any(k != key and k.startswith(name) and k[len(name) :][:1].isupper() for k in node)


def fill(
    resource: Json, param: SearchParam, values: Values, check: Callable[[Json], bool] | None = None
) -> bool:
    """Give `resource` a value for `param` (in place); False, and unchanged, when no branch can be
    filled in a way the gateway accepts. A resource that has a value already is left as it is."""
    res_type = resource["resourceType"]
    if param.values(resource):
        return True
    for branch in param.branches.get(res_type, ()):
        attempt = copy.deepcopy(resource)
        filled = _fill_branch(attempt, res_type, branch, param, values) and bool(param.values(attempt))
        if filled and _repaired(attempt, param, values) and (check is None or check(attempt)):
            resource.clear()
            resource.update(attempt)
            return True
    return False


_REQUIRED = re.compile(r"required", re.IGNORECASE)
_PATH_PART = re.compile(r"\.(\w+)|\[(\d+)\]")


def _repaired(resource: Json, param: SearchParam, values: Values, rounds: int = 3) -> bool:
    """Whether the gateway accepts `resource`, once each element it says is required and missing (a
    backbone's `type` or `role` that the fill created without) has been given a value too."""
    for _ in range(rounds):
        try:
            validate(resource)
            return True
        except FhirError as error:
            issues = error.issues
        missing = [i.expression[0] for i in issues if i.expression and _REQUIRED.search(i.diagnostics)]
        if len(missing) < len(issues) or not all(
            _add_required(resource, path, param, values) for path in missing
        ):
            return False
    return False


def _add_required(resource: Json, path: str, param: SearchParam, values: Values) -> bool:
    res_type = resource["resourceType"]
    parts = [
        (name, int(index) if index else None) for name, index in _PATH_PART.findall(path[len(res_type) :])
    ]
    node: Any = resource
    class_name, plain = res_type, res_type
    for position, (name, index) in enumerate(parts):
        if index is not None:
            if not isinstance(node, list) or index >= len(node):
                return False
            node = node[index]
            continue
        element = _elements(class_name).get(name)
        if element is None or not isinstance(node, dict):
            return False
        plain = f"{plain}.{name}"
        if position == len(parts) - 1:
            targets = allowed_targets(res_type, plain) if element.kind == "Reference" else []
            leaf = values.leaf(element.kind, param, plain, [t for t in targets if t != "*"])
            if leaf is None:
                return False
            node[name] = [leaf] if element.repeats else leaf
            return True
        if name not in node:
            return False
        node, class_name = node[name], element.kind
    return False


def valid(resource: Json) -> bool:
    try:
        validate(resource)
    except FhirError:
        return False
    return True


def _fill_branch(resource: Json, res_type: str, branch: Branch, param: SearchParam, values: Values) -> bool:
    steps = _steps(res_type, branch)
    if steps is None:
        return False
    node: Json = resource
    class_name, path = res_type, res_type
    for index, (name, of_type, wheres) in enumerate(steps):
        elements = _elements(class_name)
        element = _choice(elements, name, of_type, param.type)
        if element is None:
            return False
        if name not in elements and _choice_taken(node, name, element.key):
            return False  # another variant of the choice element is there already
        path = f"{path}.{name}"
        last = index == len(steps) - 1
        if last:
            kind = element.kind
            if kind == "Reference" and branch.target_type is not None:
                targets = [branch.target_type]
            elif kind == "Reference":
                allowed = allowed_targets(res_type, path)
                if "*" in allowed:
                    targets = list(param.targets)
                else:
                    targets = [t for t in allowed if not param.targets or t in param.targets] or allowed
            else:
                targets = []
            leaf = values.leaf(kind, param, path, targets)
            if leaf is None:
                return False
            if isinstance(leaf, dict):
                for field_name, literal in wheres:
                    leaf[field_name] = literal
            elif wheres:
                return False
            if element.repeats:
                node.setdefault(element.key, []).append(leaf)
            elif element.key in node:
                return False
            else:
                node[element.key] = leaf
            return True
        if element.primitive:
            return False
        child: Json | None = None
        existing = node.get(element.key)
        if element.repeats:
            items = existing if isinstance(existing, list) else []
            child = next(
                (i for i in items if isinstance(i, dict) and all(i.get(f) == v for f, v in wheres)), None
            )
            if child is None:
                child = {f: v for f, v in wheres}
                node.setdefault(element.key, []).append(child)
        elif isinstance(existing, dict):
            child = existing
        elif existing is None:
            child = {f: v for f, v in wheres}
            node[element.key] = child
        else:
            return False
        node, class_name = child, element.kind
        if class_name in ("Reference",):
            return False
    return False
