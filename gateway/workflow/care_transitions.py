"""Workflow rules and reactions for care transitions."""

from __future__ import annotations

from gateway.hooks import Reaction, Rule

RULES: list[Rule] = []
REACTIONS: list[Reaction] = []
