"""Per-request plumbing: the Services of the running app and the RequestContext of this request."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from gateway.fhir.http import base_url
from gateway.hooks import Principal, RequestContext
from gateway.pipeline import UnitOfWork
from gateway.services import Services

T = TypeVar("T")


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def request_context(request: Request) -> RequestContext:
    context = getattr(request.state, "context", None)
    if context is None:
        # The authentication middleware (gateway.security) puts the token's Principal in request.state.
        principal = getattr(request.state, "principal", None)
        context = RequestContext(
            principal=principal if isinstance(principal, Principal) else Principal(),
            base_url=base_url(request, services(request).settings.base_url),
            source_address=request.client.host if request.client else None,
            query=str(request.url.query) or None,
        )
        request.state.context = context
    return context


async def run(
    request: Request, work: Callable[[UnitOfWork], T], write: bool = True, point_read: bool = False
) -> T:
    """Run `work` in one unit of work on a worker thread, so the event loop never waits on a long query.

    A `point_read` (one row by its unique key: read, vread) runs on the event loop itself: it takes well
    under a millisecond, and the hand-over to a thread and back cost more than the read (measured: a
    third fewer reads per second per worker; docs/performance.md)."""
    context = request_context(request)
    if point_read and not write:
        return services(request).write_path.run(context, work, write, point_read=True)
    return await run_in_threadpool(services(request).write_path.run, context, work, write)
