"""Task answers from receivers: terminal states cannot be left, and a rejection needs its reason."""

from __future__ import annotations

from gateway.errors import unprocessable
from gateway.hooks import Rule
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork

TERMINAL = frozenset({"completed", "cancelled", "rejected", "failed", "entered-in-error"})


def terminal_states_stay(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
    if resource.get("resourceType") != "Task" or action == "delete":
        return resource
    before = (current or {}).get("status")
    after = resource.get("status")
    if before in TERMINAL and after != before:
        raise unprocessable(
            f"The Task is {before}, a terminal state; it cannot become {after}", "Task.status"
        )
    if after == "rejected" and before != "rejected" and not resource.get("statusReason"):
        raise unprocessable("A rejected Task needs a statusReason saying why", "Task.statusReason")
    return resource


RULES: list[Rule] = [terminal_states_stay]
