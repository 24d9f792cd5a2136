"""Task answers from receivers: terminal states cannot be left, a rejection needs its reason, and a note
added to a Task is dated when it is written."""

from __future__ import annotations

from gateway.errors import unprocessable
from gateway.hooks import Rule
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.search.dates import to_instant

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


def notes_are_dated(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
    """A note added to a Task (an Annotation after those it had) without a `time` gets the time it is
    stored: the owner's remarks are dated by the gateway, not by what the client says."""
    if resource.get("resourceType") != "Task" or action == "delete":
        return resource
    notes = resource.get("note")
    before = (current or {}).get("note") or []
    if not isinstance(notes, list) or not isinstance(before, list) or len(notes) <= len(before):
        return resource
    if notes[: len(before)] != before:
        return resource
    added = [
        {**note, "time": to_instant(uow.now)} if isinstance(note, dict) and "time" not in note else note
        for note in notes[len(before) :]
    ]
    if added == notes[len(before) :]:
        return resource
    return {**resource, "note": [*before, *added]}


RULES: list[Rule] = [terminal_states_stay, notes_are_dated]
