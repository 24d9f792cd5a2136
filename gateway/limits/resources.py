"""The largest resource: GATEWAY_MAX_RESOURCE_BYTES of JSON as stored, below the body limit (a 15 MiB
family name is not a Patient), checked on every write (REST, transaction and batch entries, patches,
the adapters' Bundles) before it is stored, with no NUL character in its strings; and a JSON Patch
applied within it and the depth limit."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer

from gateway.errors import FhirError, bad_request, too_costly, unprocessable
from gateway.limits.depth import DEFAULT_MAX_DEPTH, check_depth
from gateway.model.types import Json, dumps

SETTING = "GATEWAY_MAX_RESOURCE_BYTES"
# A NUL as JSON escapes it: `\u0000` after an even number of backslashes (`\\u0000` is a backslash).
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
DEFAULT_MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ResourceLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH

    def too_large(self, size: int, what: str = "The resource") -> FhirError:
        return too_costly(f"{what} is {size} bytes of JSON; at most {self.max_bytes} ({SETTING})", status=413)

    def check(self, resource: Json) -> None:
        """413 too-costly when the resource's JSON is larger than the limit; 400 when a string in it holds
        a NUL character, which no database stores in text (PostgreSQL refuses it: once a 500)."""
        content = dumps(resource)
        if len(content) > self.max_bytes:
            raise self.too_large(len(content), f"{resource.get('resourceType', 'The resource')}")
        if "\\u0000" in content and _NUL.search(content):
            what = resource.get("resourceType", "resource")
            raise bad_request(f"A string in the {what} holds a NUL character")

    def apply_patch(self, document: Json, operations: Any) -> Json:
        """`operations` (RFC 6902) applied to `document` (changed in place). A `copy` is the one operation
        that makes a document larger than the patch that asks for it (each can double it), so the copies'
        growth is added up, and the patch refused as soon as the result would pass the limit, before
        it is built; the result is held to the depth limit too."""
        if not isinstance(operations, list):
            raise bad_request("A JSON Patch document is a JSON array of operations")
        size = len(dumps(document))
        result: Any = document
        try:
            for operation in operations:
                if isinstance(operation, dict) and operation.get("op") == "copy":
                    copied = jsonpointer.resolve_pointer(result, str(operation.get("from", "")))
                    size += len(dumps(copied)) + len(str(operation.get("path", "")))
                    if size > self.max_bytes:
                        raise self.too_large(size, "The patched resource")
                result = jsonpatch.apply_patch(result, [operation], in_place=True)
        except (jsonpatch.InvalidJsonPatch, TypeError, AttributeError) as error:
            raise bad_request(f"Invalid JSON Patch: {error}") from error
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
            raise unprocessable(f"The patch cannot be applied: {error}") from error
        if not isinstance(result, dict):
            raise unprocessable("The patch replaces the resource by something that is not a JSON object")
        check_depth(result, self.max_depth, "The patched resource")
        return result


DEFAULT_LIMITS = ResourceLimits()
