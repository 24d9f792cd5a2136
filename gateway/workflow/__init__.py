"""Workflow: business rules and reactions that plug into the write path (see gateway.hooks).

Each module keeps its own RULES and REACTIONS lists; Services.build installs them all."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.config import REPO_ROOT
from gateway.hooks import Reaction, Rule
from gateway.risk.evaluate import Evaluator
from gateway.risk.reaction import RiskReaction
from gateway.risk.rules import load as load_risk_rules
from gateway.workflow import care_transitions, follow_ups, orders, risk_rules


def default_rules() -> list[Rule]:
    return [*orders.RULES, *care_transitions.RULES, *risk_rules.RULES]


def default_reactions(
    profiles_dir: Path | None = REPO_ROOT / "profiles", timezone: str = "Europe/Stockholm"
) -> list[Reaction]:
    """The reactions; the ValueSets they decide with are read from `profiles_dir` (GATEWAY_PROFILES_DIR);
    the high-risk rules from mappings/risk/rules.yaml (GATEWAY_RISK_RULES), ages counted in `timezone`."""
    risk = RiskReaction(Evaluator(load_risk_rules(), profiles_dir, ZoneInfo(timezone)))
    return [*orders.REACTIONS, *follow_ups.REACTIONS, *care_transitions.reactions(profiles_dir), risk]
