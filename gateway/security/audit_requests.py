"""The audit trail's ASGI layer, outermost: requests wait for their audit records to be durable before
their response leaves; requests are refused up front while the audit queue is full (503); and the
requests that ended in an error no interaction recorded (refused tokens and scopes, unknown resources,
bad requests) are recorded, plus one `import` record per adapter request."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import FhirError
from gateway.fhir.outcome import error_response
from gateway.hooks import AccessRecord, Principal, RequestContext
from gateway.security.audit import PENDING, AuditQueue
from gateway.security.audit_event import AUDIT_TYPE, audit_unavailable

log = logging.getLogger("gateway.audit")


class AuditRequests:
    """ASGI, outermost: refuse requests while the audit queue is full (503), and audit the requests that
    ended in an error no interaction recorded (refused tokens and scopes, unknown resources, bad
    requests), plus one `import` record per adapter request."""

    def __init__(self, app: ASGIApp, sink: AuditQueue) -> None:
        self.app = app
        self.sink = sink

    @staticmethod
    def watched(path: str) -> bool:
        if path in ("/fhir/metadata", "/fhir/.well-known/smart-configuration"):
            return False
        return path.startswith(("/fhir/", "/adapters/")) or path in ("/fhir", "/auth/token")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.watched(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.sink.full():
            log.error("audit queue full: refused %s %s", scope["method"], scope["path"])
            await error_response(audit_unavailable())(scope, receive, send)
            return
        pending: list[Future[None]] = []
        token = PENDING.set(pending)
        refused = False  # the records could not be stored: a 503 went out instead of the app's answer

        async def watch(message: Message) -> None:
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start":
                recorded = self._after(scope, int(message["status"]))
                if not recorded or not await self._durable(pending, self.sink.wait_seconds):
                    refused = True
                    await error_response(audit_unavailable())(scope, receive, send)
                    return
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            PENDING.reset(token)

    @staticmethod
    async def _durable(pending: list[Future[None]], seconds: float) -> bool:
        """Wait until every record the request queued is committed (group commit: a few milliseconds)."""
        try:
            for future in list(pending):
                await asyncio.wait_for(asyncio.wrap_future(future), seconds)
        except Exception:
            log.exception("audit records of a request not stored: answered 503")
            return False
        return True

    def _after(self, scope: Scope, status: int) -> bool:
        """Queue the record of a request no interaction recorded (an error, a token issued) and each
        adapter request's `import` record; False when the queue refused it (the answer becomes 503)."""
        path: str = scope["path"]
        state = scope.get("state") or {}
        context = state.get("context")
        adapter = path.startswith("/adapters/")
        token = path == "/auth/token"
        if not adapter and not token and status < 400:
            return True
        if not adapter and isinstance(context, RequestContext) and context.audited:
            return True
        principal = state.get("principal")
        client = scope.get("client")
        fresh = RequestContext(
            principal=principal if isinstance(principal, Principal) else Principal(),
            base_url=context.base_url if isinstance(context, RequestContext) else "",
            source_address=client[0] if client else None,
            query=scope.get("query_string", b"").decode("latin-1") or None,
        )
        parts = [part for part in path.split("/") if part]
        res_type = parts[1] if path.startswith("/fhir/") and len(parts) > 1 else None
        res_ids = [parts[2]] if res_type and len(parts) > 2 and not parts[2].startswith("_") else []
        if adapter:
            interaction = "import"
        elif path == "/auth/token":
            interaction = "token"
        else:
            interaction = _interaction(scope["method"], parts)
        detail = f"{scope['method']} {path}"
        record = AccessRecord(interaction, res_type, res_ids, status, fresh, detail)
        try:
            self.sink.record(record)
        except FhirError:
            log.error("audit queue full: %s %s -> %s answered 503", scope["method"], path, status)
            return False
        return True


def changes_audit(method: str, path: str) -> bool:
    """Whether an HTTP request would create or change an AuditEvent (answered 405)."""
    parts = [part for part in path.split("/") if part]
    if len(parts) < 2 or parts[0] != "fhir" or parts[1] != AUDIT_TYPE:
        return False
    if method == "POST":
        return len(parts) == 2  # POST AuditEvent/_search is a search
    return method in ("PUT", "PATCH", "DELETE")


def _interaction(method: str, parts: list[str]) -> str:
    """The interaction of a /fhir request that failed before recording itself."""
    rest = parts[1:]
    if not rest:
        return "transaction" if method == "POST" else "unknown"
    if len(rest) == 1:
        return {"GET": "search", "POST": "create", "PUT": "update", "DELETE": "delete"}.get(method, "unknown")
    if rest[1] == "_search":
        return "search"
    if rest[1] == "_history" or (len(rest) > 2 and rest[2] == "_history"):
        return "vread" if len(rest) == 4 else "history"
    return {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "operation")
