"""Each HTTP request's bounds: its response budget and its statement deadline (set for everything that
runs for it, worker threads included), and a watch on its connection: when the client disconnects, the
statements running for it are stopped (gateway.limits.deadline). Plain ASGI."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import Settings
from gateway.limits import budget, deadline


class RequestBounds:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings = self.settings
        limit = deadline.Deadline(settings.statement_timeout)
        spend = budget.ResponseBudget(settings.max_response_bytes, settings.max_response_resources)
        # The request's messages pass through one reader, so a disconnect is seen while the app works
        # (it reads no more of them once it has the body). One message at a time: the body is read
        # no faster than the app takes it.
        messages: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)

        async def read() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    limit.cancel()
                    while True:  # as often as the app asks
                        await messages.put(message)
                await messages.put(message)

        reader = asyncio.ensure_future(read())
        try:
            with deadline.bounded(limit), budget.bounded(spend):
                await self.app(scope, messages.get, send)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
