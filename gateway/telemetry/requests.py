"""Each HTTP request observed once, outermost: its request id (`X-Request-ID`, taken when it is safe,
else made; returned on every answer), its count and duration in the metrics, and one log line with the
keys docs/operations.md lists. Plain ASGI: a few microseconds a request, and a log line.

What a request is comes from its method and the shape of its path (`classify`), never from its values:
the interaction, a served resource type or `none`, and the route template (`/fhir/{type}/{id}`), so
neither the metrics nor the log carry an id, a query string or anything a client wrote."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.hooks import Principal
from gateway.telemetry.metrics import ADAPTERS, HTTP_DURATION, HTTP_REQUESTS, NONE, res_type_label

log = logging.getLogger("gateway.requests")

HEADER = b"x-request-id"
# A request id sent by the client is kept when it is short and plain (what proxies and tracing send:
# UUIDs, hex, dotted or dashed tokens); anything else is replaced by a fresh one.
SAFE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
STATE_KEY = "request_id"
INTERACTION_KEY = "interaction"  # a handler's own word on what the request was (transaction or batch)
# The operations served (gateway/fhir/routes.py; `$export` of the bulk export); any other $name is
# `$operation` in the route.
OPERATIONS = frozenset(
    {"$everything", "$device-list", "$status", "$events", "$export", "$export-status", "$export-file"}
)
PROBES = frozenset({"/healthz", "/readyz"})
WELL_KNOWN = "/fhir/.well-known/smart-configuration"
INSTANCE = {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
AUTH = frozenset({"/auth/token", "/auth/jwks"})


def request_id(scope: Scope) -> str:
    """The client's X-Request-ID when it is safe to repeat, else a new one (uuid4 hex)."""
    for name, value in scope["headers"]:
        if name == HEADER:
            if SAFE_ID.fullmatch(value):
                return bytes(value).decode("ascii")
            break
    return uuid.uuid4().hex


def classify(method: str, path: str) -> tuple[str, str, str]:
    """(interaction, resource type label, route template) of a request, from its method and path."""
    if path.startswith("/fhir"):
        return _fhir(method, path)
    if path.startswith("/adapters/"):
        name = path.split("/", 3)[2]
        return "adapter", NONE, f"/adapters/{name}" if name in ADAPTERS else "/adapters/{name}"
    if path.startswith("/auth/"):
        return ("token" if path == "/auth/token" else "auth"), NONE, path if path in AUTH else "/auth/..."
    if path in PROBES:
        return "probe", NONE, path
    if path == "/metrics":
        return "metrics", NONE, path
    return "other", NONE, "other"


def _fhir(method: str, path: str) -> tuple[str, str, str]:
    if path in ("/fhir", "/fhir/"):
        return ("transaction" if method == "POST" else "other"), NONE, "/fhir"
    if path == "/fhir/metadata":
        return "metadata", NONE, path
    if path == WELL_KNOWN:
        return "metadata", NONE, path
    parts = path[len("/fhir/") :].split("/")
    if not parts[-1]:
        parts.pop()  # a trailing slash
    if not parts or not parts[0]:
        return "other", NONE, "/fhir"
    if parts[0].startswith("$"):  # a system-level operation
        return "operation", NONE, "/fhir/" + _operation(parts[0])
    res_type = res_type_label(parts[0])
    rest = parts[1:]
    n = len(rest)
    if method == "HEAD":
        method = "GET"
    if n == 0:
        interaction = {"GET": "search-type", "POST": "create", "PUT": "update"}.get(method, "other")
        return interaction, res_type, "/fhir/{type}"
    if n == 1 and rest[0] == "_search":
        return ("search-type" if method == "POST" else "other"), res_type, "/fhir/{type}/_search"
    if n == 1 and rest[0] == "_history":
        return "history-type", res_type, "/fhir/{type}/_history"
    if n == 1 and rest[0].startswith("$"):
        return "operation", res_type, "/fhir/{type}/" + _operation(rest[0])
    if n == 1:
        interaction = INSTANCE.get(method, "other")
        return interaction, res_type, "/fhir/{type}/{id}"
    if n == 2 and rest[1] == "_history":
        return "history-instance", res_type, "/fhir/{type}/{id}/_history"
    if n == 3 and rest[1] == "_history":
        return "vread", res_type, "/fhir/{type}/{id}/_history/{vid}"
    if n == 2 and rest[1].startswith("$"):
        return "operation", res_type, "/fhir/{type}/{id}/" + _operation(rest[1])
    return "other", res_type, "/fhir/{type}/..."


def _operation(name: str) -> str:
    """An operation's name as served, or `$operation` (never what a client made up)."""
    return name if name in OPERATIONS else "$operation"


class Observe:
    """Outermost ASGI layer: request id, metrics and the request's log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope)
        state = scope.setdefault("state", {})
        state[STATE_KEY] = rid
        header = (HEADER, rid.encode("ascii"))
        status = 500  # unless an answer starts: the app failed before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._observed(scope, state, rid, status, time.perf_counter() - started)

    def _observed(self, scope: Scope, state: dict[str, Any], rid: str, status: int, seconds: float) -> None:
        method: str = scope["method"]
        interaction, res_type, route = classify(method, scope["path"])
        told = state.get(INTERACTION_KEY)
        if told in ("transaction", "batch"):
            interaction = told
        key = (interaction, res_type, str(status))
        children = self._children.get(key)
        if children is None:
            children = (HTTP_REQUESTS.labels(*key), HTTP_DURATION.labels(*key))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if log.isEnabledFor(logging.INFO):
            principal = state.get("principal")
            client_id = principal.client_id if isinstance(principal, Principal) else None
            fields = {
                "request_id": rid,
                "client_id": client_id or None,
                "method": method,
                "route": route,
                "interaction": interaction,
                "type": res_type,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
            }
            # made directly, not by log.info: no walk up the stack for the caller (a third of the cost)
            args = (method, route, status)
            line = log.makeRecord(log.name, logging.INFO, __file__, 0, "%s %s %d", args, None)
            line.__dict__["fields"] = fields
            log.handle(line)
