"""Topic-based notifications (Subscriptions R5 Backport IG): history Bundles with a Parameters status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.subscriptions.endpoints import Target

if TYPE_CHECKING:
    from gateway.subscriptions.delivery import Deliverer
    from gateway.subscriptions.render import Built


def build(
    deliverer: Deliverer,
    connection: Connection,
    context: RequestContext,
    state: Any,
    resource: Json,
    target: Target,
) -> Built | None:
    return None
