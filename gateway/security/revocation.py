"""A token is honoured only while the client it names is: checked on every request, through a short cache.

A token of the gateway's own names a registered client: refused when that client is disabled
(`oauth_client.active`, `gateway clients disable ID`) or no longer registered (`gateway clients remove
ID`). A token of the external issuer names a client id (its `client_id`, else `azp`, else `sub`): refused
when that id is on the list of disabled client ids (`disabled_client`), or is a registered client that is
disabled. Each process looks a client id up at most every GATEWAY_CLIENT_STATUS_SECONDS (5 s), so a
change made in the database (by any process, or the `gateway clients` command) takes effect everywhere
within that many seconds.
"""

from __future__ import annotations

import time

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from gateway.hooks import Principal
from gateway.security import store
from gateway.security.oidc import Rejected

CACHE_SIZE = 10_000  # client ids remembered per process


class ClientRefused(Rejected):
    """The token verifies, but the client it names may not use it any more (disabled or removed). Its
    principal is known: the refusal is audited as that client's."""

    def __init__(self, message: str, principal: Principal) -> None:
        super().__init__(message)
        self.principal = principal


class ClientStatuses:
    def __init__(self, engine: Engine, seconds: float) -> None:
        self.engine = engine
        self.seconds = seconds
        self._known: dict[str, tuple[store.ClientStatus, float]] = {}

    async def status(self, client_id: str) -> store.ClientStatus:
        """The client id's status as looked up at most `seconds` ago (on the event loop; the database is
        read on a worker thread)."""
        known = self._known.get(client_id)
        now = time.monotonic()
        if known is not None and now - known[1] < self.seconds:
            return known[0]
        found = await run_in_threadpool(store.client_status, self.engine, client_id)
        if len(self._known) >= CACHE_SIZE:
            self._known.clear()
        self._known[client_id] = (found, now)
        return found

    async def check(self, principal: Principal, issued_here: bool) -> None:
        """Raise ClientRefused when tokens naming the principal's client are not honoured now.
        `issued_here`: a token of the gateway's own, which needs a registered client."""
        client_id = principal.client_id
        found = await self.status(client_id)
        if found.disabled or (found.registered and not found.active):
            raise ClientRefused(f"The token's client '{client_id}' is disabled", principal)
        if issued_here and not found.registered:
            raise ClientRefused(f"The token's client '{client_id}' is no longer registered", principal)
