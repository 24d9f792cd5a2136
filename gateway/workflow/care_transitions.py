"""Workflow rules and reactions for care transitions (Lag 2017:612) and return reporting.

Task answers (tasks), SIP activation with consent (sip) and return reports (return_reports) each keep
their own lists; they are installed from here."""

from __future__ import annotations

from gateway.hooks import Reaction, Rule
from gateway.workflow import return_reports, sip, tasks

RULES: list[Rule] = [*tasks.RULES, *sip.RULES, *return_reports.RULES]
REACTIONS: list[Reaction] = [*return_reports.REACTIONS]
