"""The transactional outbox: the write path's `notify` step (gateway/hooks.py, `Notifier`).

`store` runs in the write's own transaction and adds one `notify_outbox` row per resource version it
stored, whatever subscriptions exist (nothing per subscription at write time): a rolled-back write leaves
no row, a committed one cannot lose its row. `changed` runs after the commit and wakes this process's
matcher and deliverer, which otherwise look at the outbox every `poll_seconds` (other processes' writes).
"""

from __future__ import annotations

import threading
from typing import cast

from sqlalchemy import Connection, Table, insert

from gateway.hooks import Change
from gateway.search.dates import utc_now
from gateway.store.tables import NotifyOutbox

OUTBOX = cast(Table, NotifyOutbox.__table__)


class Outbox:
    def __init__(self) -> None:
        self.wake = threading.Event()

    def store(self, connection: Connection, changes: list[Change]) -> None:
        now = utc_now()
        rows = [
            {
                "res_type": change.res_type,
                "res_id": change.res_id,
                "version_id": change.version_id,
                "method": change.method,
                "stored_at": now,
            }
            for change in changes
        ]
        connection.execute(insert(OUTBOX), rows)

    def changed(self, changes: list[Change]) -> None:
        self.wake.set()
