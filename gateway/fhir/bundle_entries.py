"""The entries of a transaction or batch Bundle as read from it: the checks every entrance makes of the
Bundle, each entry's request parsed (`Entry`; a PATCH's JSON Patch from its Binary), fullUrls unique,
the references an entry's resource makes, the processing order, the validation of what the entries
write (before the unit of work), and errors that name the entry (`Bundle.entry[i]`)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from gateway.errors import FhirError, Issue, bad_request, too_large
from gateway.limits import numbers
from gateway.limits.depth import check_depth
from gateway.model.types import SUPPORTED, Json, is_valid_id, loads
from gateway.model.validate import validate
from gateway.pipeline import AUDIT_EVENT, Conflict, IdentifierTaken
from gateway.search.extract import IndexRows
from gateway.services import Services

T = TypeVar("T")


ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass
class Entry:
    index: int
    method: str
    url: str
    res_type: str
    res_id: str | None
    query: str | None
    resource: Json | None
    full_url: str | None
    if_none_exist: str | None
    if_match: int | None
    version: int | None = None  # GET [type]/[id]/_history/[vid]
    # Its resource's index rows but the references' (which the transaction rewrites), extracted with
    # its validation before the unit of work.
    indexed: IndexRows | None = None


def checked_bundle(svc: Services, bundle: Any) -> tuple[str, list[Any]]:
    """The Bundle's type and entries, after the checks every entrance makes."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("POST to the base takes a Bundle", "Bundle")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise bad_request(f"Bundle.type must be transaction or batch, not {kind}", "Bundle.type")
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise bad_request("Bundle.entry must be a list", "Bundle.entry")
    if len(raw_entries) > svc.settings.max_bundle_entries:
        raise too_large(
            f"The Bundle has {len(raw_entries)} entries; "
            f"this server takes at most {svc.settings.max_bundle_entries}"
        )
    return kind, raw_entries


def parse_entry(index: int, raw: Any, max_depth: int) -> Entry:
    """`max_depth`: how deep the JSON Patch of a PATCH entry may nest (GATEWAY_MAX_JSON_DEPTH)."""
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise bad_request(f"{where} has no request", f"{where}.request")
    req = raw["request"]
    method, url = req.get("method"), req.get("url")
    if method not in ORDER or not isinstance(url, str) or not url:
        raise bad_request(f"{where}.request needs a method (GET, POST, PUT, PATCH, DELETE) and a url", where)
    path, _, query = url.lstrip("/").partition("?")
    parts = path.split("/")
    res_type = parts[0]
    if res_type not in SUPPORTED:
        raise bad_request(f"{where}: resource type '{res_type}' is not supported", f"{where}.request.url")
    res_id = parts[1] if len(parts) > 1 else None
    if res_id is not None and not is_valid_id(res_id):
        raise bad_request(f"{where}: '{res_id}' is not a valid id", f"{where}.request.url")
    version = None
    if (
        len(parts) == 4
        and method in ("GET", "HEAD")
        and parts[2] == "_history"
        and numbers.is_whole(parts[3])
    ):
        version = numbers.version(parts[3]) or 0  # past the largest version: none (404), not an SQL error
    elif len(parts) > 2 or (method == "POST" and res_id is not None):
        raise bad_request(f"{where}: {method} {url} is not supported in a Bundle", f"{where}.request.url")
    resource = raw.get("resource")
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict):
            raise bad_request(f"{where} ({method}) has no resource", f"{where}.resource")
        if resource.get("resourceType") != res_type:
            raise bad_request(
                f"{where}: the resource is a {resource.get('resourceType')}, the url names {res_type}",
                f"{where}.resource.resourceType",
            )
    elif method == "PATCH":
        resource = _patch_body(resource, where, max_depth)
    else:
        resource = None
    if_match = req.get("ifMatch")
    expected = None
    if isinstance(if_match, str):
        text = if_match.removeprefix("W/").strip('"')
        if not numbers.is_whole(text):
            raise bad_request(f'{where}.request.ifMatch must be W/"n"', f"{where}.request.ifMatch")
        expected = numbers.version(text) or 0  # past the largest version: matches none (412)
    if_none_exist = req.get("ifNoneExist") if method == "POST" else None
    return Entry(
        index,
        method,
        url,
        res_type,
        res_id,
        query or None,
        resource,  # read only: `rewrite` builds the copy that is written
        raw.get("fullUrl"),
        if_none_exist.lstrip("?") if isinstance(if_none_exist, str) and if_none_exist else None,
        expected,
        version,
    )


def check_full_urls(entries: list[Entry]) -> None:
    seen: dict[str, int] = {}
    for e in entries:
        if e.full_url is None:
            continue
        if e.full_url in seen:
            raise bad_request(
                f"Bundle.entry[{e.index}].fullUrl '{e.full_url}' is also the fullUrl of "
                f"Bundle.entry[{seen[e.full_url]}]",
                f"Bundle.entry[{e.index}].fullUrl",
            )
        seen[e.full_url] = e.index


def _patch_body(resource: Any, where: str, max_depth: int) -> Json:
    """PATCH entries carry the JSON Patch as a Binary (the spec's way for JSON Patch in Bundles)."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary" and "data" in resource:
        try:
            operations = loads(base64.b64decode(resource["data"], validate=True))
        except (ValueError, TypeError) as error:
            raise bad_request(f"{where}: the Binary does not hold a JSON Patch: {error}", where) from error
        if not isinstance(operations, list):
            raise bad_request(f"{where}: a JSON Patch is a list of operations", f"{where}.resource.data")
        check_depth(operations, max_depth, f"{where}: the JSON Patch")
        return {"patch": operations}
    raise bad_request(
        f"{where}: a PATCH entry carries its JSON Patch as a Binary resource", f"{where}.resource"
    )


def in_processing_order(entries: list[Entry]) -> list[Entry]:
    """DELETE, then POST, then PUT and PATCH, then GET (R4 transaction rules), each in Bundle order."""
    return sorted(entries, key=lambda x: (ORDER[x.method], x.index))


def validate_entries(svc: Services, entries: list[Entry]) -> None:
    """Validate the resources the entries write, in processing order, before the unit of work: not under
    SQLite's write lock, and once however often a conflict re-runs the unit of work. Rewriting their
    references changes nothing else of them, so the write path checks only the references again, and
    extracts only the references' index rows (`Entry.indexed` holds the others')."""
    for e in in_processing_order(entries):
        if e.method in ("POST", "PUT") and e.res_type != AUDIT_EVENT:  # AuditEvents: the write path refuses
            expected = (e.res_type, e.res_id) if e.method == "PUT" else (None, None)
            guarded(e, partial(validate, e.resource, *expected))
            assert e.resource is not None
            e.indexed = svc.write_path.extractor.rows(e.resource, references=False)


def guarded(e: Entry, step: Callable[[], T]) -> T:
    """Run one step of an entry; its errors name the entry."""
    try:
        return step()
    except FhirError as error:
        raise at_entry(error, e) from error
    except Conflict as error:
        raise Conflict(f"Bundle.entry[{e.index}] ({e.method} {e.url}): {error}") from error
    except IdentifierTaken as error:
        where = f"Bundle.entry[{e.index}]"
        raise IdentifierTaken(
            f"{where} ({e.method} {e.url}): {error}", _expression(error.expression, where, e)
        ) from error


def at_entry(error: FhirError, e: Entry) -> FhirError:
    where = f"Bundle.entry[{e.index}]"
    issues = []
    for issue in error.issues:
        expressions = tuple(_expression(x, where, e) for x in issue.expression) or (where,)
        diagnostics = issue.diagnostics
        if not diagnostics.startswith(where):
            diagnostics = f"{where} ({e.method} {e.url}): {diagnostics}"
        issues.append(Issue(issue.severity, issue.code, diagnostics, expressions))
    return FhirError(error.status, issues, error.headers)


def _expression(expression: str, where: str, e: Entry) -> str:
    """A path in the entry's resource (`Task.status`) as a path in the Bundle."""
    res_type = e.res_type
    if expression.startswith("Bundle."):
        return expression
    if e.method in ("GET", "HEAD", "DELETE"):  # a search parameter or the like: it is in the url
        return f"{where}.request.url"
    if expression == res_type or expression.startswith((f"{res_type}.", f"{res_type}[")):
        return f"{where}.resource{expression[len(res_type) :]}"
    return f"{where}.resource.{expression}"


def references(node: Any) -> list[str]:
    if isinstance(node, list):
        return [ref for item in node for ref in references(item)]
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [ref for value in node.values() for ref in references(value)]
    return []
