"""Workflow: business rules and reactions that plug into the write path (see gateway.hooks).

Each module keeps its own RULES and REACTIONS lists; Services.build installs them all."""

from __future__ import annotations

from pathlib import Path

from gateway.config import REPO_ROOT
from gateway.hooks import Reaction, Rule
from gateway.workflow import care_transitions, follow_ups, orders, scheduled_tasks


def default_rules() -> list[Rule]:
    return [*orders.RULES, *care_transitions.RULES, *scheduled_tasks.RULES]


def default_reactions(profiles_dir: Path | None = REPO_ROOT / "profiles") -> list[Reaction]:
    """The reactions; the ValueSets they decide with are read from `profiles_dir` (GATEWAY_PROFILES_DIR)."""
    return [
        *orders.REACTIONS,
        *follow_ups.REACTIONS,
        *care_transitions.reactions(profiles_dir),
        *scheduled_tasks.REACTIONS,
    ]
