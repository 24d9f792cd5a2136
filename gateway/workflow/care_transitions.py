"""Workflow rules and reactions for care transitions (Lag 2017:612) and return reporting.

Task answers (tasks), SIP activation with consent (sip), handovers the gateway fills (handovers) and
return reports (return_reports) each keep their own; they are installed from here."""

from __future__ import annotations

from pathlib import Path

from gateway.hooks import Reaction, Rule
from gateway.workflow import handovers, return_reports, sip, tasks

RULES: list[Rule] = [*tasks.RULES, *sip.RULES, *return_reports.RULES]


def reactions(profiles_dir: Path | None) -> list[Reaction]:
    """The reactions; the return reports' ValueSet self-care-change is read from `profiles_dir`."""
    return [handovers.fill_handover_inputs, return_reports.HandoverAnswered.load(profiles_dir)]
