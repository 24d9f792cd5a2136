"""Write-time validation: the fhir.resources R4B parse, then what it does not check (required code
bindings, reference target types, id syntax). Every problem is an Issue naming the FHIR path."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from gateway import resources
from gateway.errors import Issue, bad_request, invalid_resource
from gateway.model.types import SUPPORTED, Json, is_valid_id, loads


@cache
def _definitions(name: str) -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = loads((resources.definitions() / name).read_bytes())
    return data


def _fhir_path(res_type: str, loc: tuple[int | str, ...]) -> str:
    path = res_type
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _walk(node: Any, segments: list[str], path: str) -> Iterator[tuple[str, Any]]:
    """Yield (FHIR path, value) for every value at `segments` below `node`, traversing lists."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _walk(item, segments, f"{path}[{i}]")
        return
    if not segments:
        yield path, node
        return
    if isinstance(node, dict) and segments[0] in node:
        yield from _walk(node[segments[0]], segments[1:], f"{path}.{segments[0]}")


def _binding_issues(res_type: str, resource: Json) -> Iterator[Issue]:
    for element, binding in _definitions("bindings.json").get(res_type, {}).items():
        codes = binding["codes"]
        for path, value in _walk(resource, element.split(".")[1:], res_type):
            if isinstance(value, str) and value not in codes:
                yield Issue(
                    "error",
                    "code-invalid",
                    f"'{value}' is not in the required value set {binding['valueSet']} for {element}",
                    (path,),
                )


def _reference_issues(res_type: str, resource: Json) -> Iterator[Issue]:
    for element, targets in _definitions("reference-targets.json").get(res_type, {}).items():
        if targets == ["*"]:
            continue
        for path, value in _walk(resource, element.split(".")[1:], res_type):
            reference = value.get("reference") if isinstance(value, dict) else None
            if not isinstance(reference, str) or reference.startswith(("#", "urn:")):
                continue
            target_type = reference_type(reference)
            if target_type is not None and target_type not in targets:
                yield Issue(
                    "error",
                    "invalid",
                    f"{element} may refer to {', '.join(targets)}, not {target_type}",
                    (f"{path}.reference",),
                )


def reference_type(reference: str) -> str | None:
    """The resource type a literal reference names (`Type/id`, `Type/id/_history/n`, or an absolute URL)."""
    parts = reference.split("?", maxsplit=1)[0].split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return parts[-2]
    return None


def validate(
    resource: Any, expected_type: str | None = None, expected_id: str | None = None, checked: bool = False
) -> Json:
    """Check a resource for storage; raise a 400 FhirError listing every problem found. `checked`: this
    content passed `validate` before, apart from references rewritten since (a transaction checks its
    entries before it takes the write lock), so only its type, id and references are checked again."""
    if not isinstance(resource, dict):
        raise bad_request("The body must be a JSON object holding a FHIR resource")
    res_type = resource.get("resourceType")
    if not isinstance(res_type, str) or not res_type:
        raise bad_request("The resource has no resourceType", "resourceType")
    if expected_type is not None and res_type != expected_type:
        raise bad_request(f"resourceType {res_type} does not match the URL's type {expected_type}", res_type)
    if res_type not in SUPPORTED:
        raise bad_request(f"Resource type {res_type} is not supported by this server", "resourceType")
    res_id = resource.get("id")
    if res_id is not None and (not isinstance(res_id, str) or not is_valid_id(res_id)):
        raise bad_request(f"'{res_id}' is not a valid resource id", f"{res_type}.id")
    if expected_id is not None and res_id != expected_id:
        raise bad_request(
            f"The resource id '{res_id}' does not match the id in the URL '{expected_id}'", f"{res_type}.id"
        )
    issues: list[Issue] = []
    if not checked:
        try:
            get_fhir_model_class(res_type).model_validate(resource)
        except ValidationError as error:
            for detail in error.errors():
                loc = tuple(part for part in detail["loc"] if part != "__root__")
                issues.append(Issue("error", "structure", detail["msg"], (_fhir_path(res_type, loc),)))
        issues.extend(_binding_issues(res_type, resource))
    issues.extend(_reference_issues(res_type, resource))
    if issues:
        raise invalid_resource(issues)
    return resource
