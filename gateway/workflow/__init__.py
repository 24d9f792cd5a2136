"""Workflow: business rules and reactions that plug into the write path (see gateway.hooks).

Each module keeps its own RULES and REACTIONS lists; Services.build installs them all."""

from __future__ import annotations

from gateway.hooks import Reaction, Rule
from gateway.workflow import care_transitions, follow_ups, orders


def default_rules() -> list[Rule]:
    return [*orders.RULES, *care_transitions.RULES]


def default_reactions() -> list[Reaction]:
    return [*orders.REACTIONS, *follow_ups.REACTIONS, *care_transitions.REACTIONS]
