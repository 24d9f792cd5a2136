"""Workflow rules and reactions for orders."""

from __future__ import annotations

from gateway.hooks import Reaction, Rule

RULES: list[Rule] = []
REACTIONS: list[Reaction] = []
