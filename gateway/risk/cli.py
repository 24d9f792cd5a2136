"""`gateway risk evaluate [--patient ID]`: the high-risk rules for one patient or all of them, as the
gateway (the scheduler's pass calls the same `risk_pass`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from gateway.config import Settings
from gateway.risk.reaction import risk_pass
from gateway.services import Services

risk_app = typer.Typer(help="High-risk identification (mappings/risk/rules.yaml).", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


@risk_app.command("evaluate")
def evaluate(
    patient: Annotated[str | None, typer.Option(help="Only this Patient id.")] = None,
) -> None:
    """Evaluate the high-risk rules and write the RiskAssessments and Flags that change."""
    svc = Services.build(Settings.from_env())
    try:
        counts = risk_pass(svc, patient)
    finally:
        svc.close()
    summary = ", ".join(f"{name} {count}" for name, count in sorted(counts.items())) or "no patients"
    console.print(f"risk evaluate: {summary}")
