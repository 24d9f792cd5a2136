"""The ASGI application: FHIR REST under /fhir, operator endpoints, and errors as OperationOutcome."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__
from gateway.adapters import routes as adapter_routes
from gateway.adapters.bestallningsportalen import routes as bestallningsportalen_routes
from gateway.adapters.device_register import routes as device_register_routes
from gateway.adapters.hl7v2 import mllp
from gateway.adapters.hl7v2 import routes as hl7v2_routes
from gateway.config import Settings
from gateway.errors import FhirError, not_found, too_large
from gateway.export.worker import start_exporter
from gateway.fhir.outcome import error_response, handle_fhir_error, handle_unexpected
from gateway.fhir.routes import base_route, routes
from gateway.hooks import Hooks
from gateway.limits.middleware import RequestBounds
from gateway.schedule.clock import check_fake_clock
from gateway.schedule.runner import start_scheduler
from gateway.security.audit_requests import AuditRequests
from gateway.security.endpoints import check_base_url, check_key_secret, warn_if_off
from gateway.security.endpoints import router as security_router
from gateway.security.middleware import Authenticate
from gateway.security.proxies import ForwardedFor, TrustedProxies
from gateway.security.tokens import Authority
from gateway.services import Services
from gateway.subscriptions.delivery import start_deliverer
from gateway.telemetry import exposition, logs
from gateway.telemetry.metrics import watch_pool
from gateway.telemetry.requests import Observe

log = logging.getLogger("gateway")


class BodyLimit:
    """Refuse request bodies over the configured size with 413: at once when Content-Length says so,
    otherwise as soon as the streamed body passes the limit. Plain ASGI, so it costs nothing per request."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"The body exceeds the limit of {self.max_bytes} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await error_response(too_large(message))(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            event = await receive()
            received += len(event.get("body", b""))
            if received > self.max_bytes:
                raise too_large(message)
            return event

        await self.app(scope, limited, send)


class GatewayApp(FastAPI):
    """The app with `Observe` around everything, Starlette's error handling included: the request id is on
    every answer and every request is counted, a 500 as well."""

    def build_middleware_stack(self) -> ASGIApp:
        return Observe(super().build_middleware_stack())


def create_app(
    settings: Settings | None = None, hooks: Hooks | None = None, services: Services | None = None
) -> FastAPI:
    settings = settings or Settings.from_env()
    logs.quick()  # each request's log line costs less
    # Before anything is built: with auth on and no base URL, start-up stops here; so does a malformed
    # GATEWAY_TRUSTED_PROXIES entry.
    check_base_url(services.settings if services is not None else settings)
    check_key_secret(services.settings if services is not None else settings)  # PostgreSQL with auth on
    check_fake_clock(services.settings if services is not None else settings)  # GATEWAY_NOW with auth on
    trusted = TrustedProxies((services.settings if services is not None else settings).trusted_proxies)
    svc = services or Services.build(settings, hooks)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        watch_pool(svc.engine)  # gateway_db_pool_*
        exposition.forget_dead_processes()  # workers that died before this one started
        listener = await mllp.start_embedded(svc)  # GATEWAY_MLLP_PORT: MLLP on this event loop too
        deliverer = start_deliverer(svc)  # GATEWAY_NOTIFY: subscriptions delivered by this process too
        scheduler = start_scheduler(svc)  # GATEWAY_SCHEDULE_SECONDS: the scheduled jobs too
        exporter = start_exporter(svc)  # GATEWAY_EXPORT_POLL_SECONDS: bulk export jobs too
        try:
            yield
        finally:  # after uvicorn let the requests in flight finish: one more grace for the rest
            deadline = time.monotonic() + svc.settings.shutdown_grace_seconds
            if listener is not None:
                await listener.stop(svc.settings.shutdown_grace_seconds)  # ACKs in flight go out
            if deliverer is not None:
                await run_in_threadpool(deliverer.stop, max(0.0, deadline - time.monotonic()))
            if scheduler is not None:
                await run_in_threadpool(scheduler.stop, max(0.0, deadline - time.monotonic()))
            if exporter is not None:  # a job broken off mid-chunk is taken up again from its last chunk
                await run_in_threadpool(exporter.stop, max(0.0, deadline - time.monotonic()))
            await run_in_threadpool(svc.close)  # every audit record stored before the process ends
            exposition.forget_dead_processes(also=os.getpid())

    app = GatewayApp(
        title="FHIR home device gateway",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.services = svc
    app.state.authority = Authority(svc.settings, svc.engine)
    app.include_router(security_router)  # before the /fhir mount: it serves /fhir/.well-known/…
    app.router.routes.append(base_route())
    app.router.routes.append(Mount("/fhir", routes=routes()))
    app.include_router(adapter_routes.router)
    # the scope gateway/metrics with auth on (gateway/security/interactions.py); also on its own port
    app.add_route("/metrics", exposition.metrics, methods=["GET"], include_in_schema=False)
    for adapter_router in (
        bestallningsportalen_routes.router,
        device_register_routes.router,
        hl7v2_routes.router,
    ):
        app.include_router(adapter_router, prefix="/adapters")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if svc.settings.auth:  # added last, so it runs first: a refused request costs no body
        app.add_middleware(Authenticate, authority=app.state.authority)
    if svc.audit is not None:  # sees refused tokens, and refuses all while the queue is full
        app.add_middleware(AuditRequests, sink=svc.audit)
    if trusted.networks:  # around the others: the client's address behind a trusted proxy, for all the others
        app.add_middleware(ForwardedFor, trusted=trusted)
    # Around all: the response budget and statement deadline of each request, stopped on disconnect.
    app.add_middleware(RequestBounds, settings=svc.settings)
    warn_if_off(svc.settings)
    app.add_exception_handler(FhirError, handle_fhir_error)
    app.add_exception_handler(Exception, handle_unexpected)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        def ping() -> None:
            with svc.engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        try:
            await run_in_threadpool(ping)
        except Exception as error:  # the database does not answer: not ready
            log.warning("readiness check failed: %s", error)
            return JSONResponse({"status": "unavailable", "detail": "database"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.exception_handler(404)
    async def unknown_path(request: Request, _error: Exception) -> Response:
        return error_response(not_found(f"No endpoint at {request.url.path}"))

    return app
