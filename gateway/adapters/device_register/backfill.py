"""`gateway backfill device-lifetime` (issue 18): the lifetime end (lifetime.py) set on the Devices stored
before the register mapping wrote it, through the write path."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from gateway.adapters.device_register.lifetime import device_with_lifetime_end
from gateway.hooks import RequestContext
from gateway.pipeline import UnitOfWork
from gateway.services import Services
from gateway.store.repository import R, Repository


def backfill(
    svc: Services, context: RequestContext, batch: int = 500, progress: Callable[[int], None] | None = None
) -> tuple[int, int]:
    """Set the lifetime end on every stored Device that lacks it (or has it wrong), through the write path
    (validated, versioned, indexed, audited) in transactions of `batch` Devices, as the gateway on behalf
    of `context`'s client (so a Device an organisation's client wrote stays that client's write).
    Returns (Devices read, Devices changed); a second run changes nothing."""
    acting = context.for_reaction()
    seen = changed = 0
    last = 0
    while True:

        def work(uow: UnitOfWork, last: int = last) -> tuple[int, int, int]:
            rows = uow.connection.execute(
                select(R.c.rid)
                .where(R.c.rid > last, R.c.res_type == "Device", R.c.deleted.is_(False))
                .order_by(R.c.rid)
                .limit(batch)
            ).all()
            if not rows:
                return 0, 0, 0
            written = 0
            for stored in Repository(uow.connection).current_many([row[0] for row in rows]):
                updated = device_with_lifetime_end(stored.json())
                if updated is not None:
                    svc.write_path.update(uow, "Device", stored.res_id, updated, if_match=stored.version_id)
                    written += 1
            return int(rows[-1][0]), len(rows), written

        found_last, count, written = svc.write_path.run(acting, work)
        if count == 0:
            return seen, changed
        seen += count
        changed += written
        last = found_last
        if progress is not None:
            progress(count)
