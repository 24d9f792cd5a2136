"""Workflow: business rules and reactions that plug into the write path (see gateway.hooks).

Each module keeps its own RULES and REACTIONS lists; Services.build installs them all."""

from __future__ import annotations

from pathlib import Path

from gateway.adapters.directory.client_writes import client_field_times
from gateway.config import REPO_ROOT, Settings
from gateway.hooks import Reaction, Rule
from gateway.workflow import care_transitions, faults, follow_ups, orders, recalls, scheduled_tasks


def default_rules() -> list[Rule]:
    return [*orders.RULES, *care_transitions.RULES, *faults.RULES, *scheduled_tasks.RULES, client_field_times]


def default_reactions(
    profiles_dir: Path | None = REPO_ROOT / "profiles", settings: Settings | None = None
) -> list[Reaction]:
    """The reactions; the ValueSets they decide with are read from `profiles_dir` (GATEWAY_PROFILES_DIR),
    their thresholds from `settings` (the defaults without)."""
    settings = settings or Settings()
    repeated = faults.RepeatedFaults(
        settings.fault_report_threshold, settings.fault_report_days, settings.local_timezone
    )
    return [
        *orders.REACTIONS,
        *follow_ups.REACTIONS,
        *care_transitions.reactions(profiles_dir),
        repeated,
        recalls.recall_informs_handlers,
        *scheduled_tasks.REACTIONS,
    ]
