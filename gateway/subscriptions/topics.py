"""Subscription topics (the Subscriptions R5 Backport IG): data in profiles/, loaded once."""

from __future__ import annotations

TOPICS: dict[str, object] = {}
