"""The rules and reactions Services.build installs: every workflow module's RULES and REACTIONS, and the
reactions built from settings (repeated faults, high risk)."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.adapters.directory.client_writes import client_field_times
from gateway.config import Settings
from gateway.hooks import Reaction, Rule
from gateway.risk.evaluate import Evaluator
from gateway.risk.reaction import RiskReaction
from gateway.risk.rules import load as load_risk_rules
from gateway.workflow import (
    care_transitions,
    faults,
    follow_ups,
    orders,
    recalls,
    risk_rules,
    scheduled_tasks,
)


def default_rules() -> list[Rule]:
    return [
        *orders.RULES,
        *care_transitions.RULES,
        *faults.RULES,
        *scheduled_tasks.RULES,
        *risk_rules.RULES,
        client_field_times,
    ]


def default_reactions(profiles_dir: Path | None, settings: Settings | None = None) -> list[Reaction]:
    """The reactions; the ValueSets they decide with are read from `profiles_dir` (GATEWAY_PROFILES_DIR),
    their thresholds from `settings` (the defaults without); the high-risk rules from
    mappings/risk/rules.yaml (GATEWAY_RISK_RULES), ages counted in the settings' local timezone."""
    settings = settings or Settings()
    repeated = faults.RepeatedFaults(
        settings.fault_report_threshold, settings.fault_report_days, settings.local_timezone
    )
    risk = RiskReaction(Evaluator(load_risk_rules(), profiles_dir, ZoneInfo(settings.local_timezone)))
    return [
        *orders.REACTIONS,
        *follow_ups.REACTIONS,
        *care_transitions.reactions(profiles_dir),
        repeated,
        recalls.recall_informs_handlers,
        *scheduled_tasks.REACTIONS,
        risk,
    ]
