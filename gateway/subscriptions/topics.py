"""Subscription topics (the Subscriptions R5 Backport IG): data in profiles/, loaded once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from gateway.model.types import Json


@dataclass(frozen=True)
class Topic:
    url: str
    resource: str

    def filters(self, subscription: Json) -> list[tuple[str, str]]:
        return []

    def triggered(
        self, connection: Connection, res_type: str, res_id: str, version: int, method: str
    ) -> bool:
        return True


TOPICS: dict[str, Any] = {}
