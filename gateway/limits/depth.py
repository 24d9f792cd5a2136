"""How deep JSON nests, checked at every entrance that parses JSON (REST bodies, JSON Patch documents in
Bundles, the adapters' orders): code that walks a resource recursively (a deep copy, the model's
validation) would otherwise run out of stack on a body nested a few hundred levels, a 500."""

from __future__ import annotations

from typing import Any

from gateway.errors import too_costly

# Bundle → entry → resource → extension → extension … stays far below it.
DEFAULT_MAX_DEPTH = 64
SETTING = "GATEWAY_MAX_JSON_DEPTH"


def depth_exceeds(value: Any, limit: int) -> bool:
    """Whether objects and arrays in `value` nest deeper than `limit` (a bare object or array is 1),
    without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        if not children:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def check_depth(value: Any, limit: int, what: str = "The JSON") -> None:
    """400 too-costly when `value` nests deeper than `limit`."""
    if isinstance(value, dict | list) and depth_exceeds(value, limit):
        raise too_costly(f"{what} nests deeper than {limit} levels ({SETTING})")
