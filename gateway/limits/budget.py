"""The response budget: a response holds at most GATEWAY_MAX_RESPONSE_BYTES of stored resources (by the
length of their stored JSON) and at most GATEWAY_MAX_RESPONSE_RESOURCES of them; a batch's entries share
one budget. Each HTTP request gets its own (gateway.limits.middleware); what loads many resources for a
response (a search page and its includes, a history page) checks their stored sizes before it loads
them, and every resource a response shows is charged as it is put in (gateway.fhir.view.View). Outside
an HTTP request (the CLI, the MLLP listener) nothing is bounded here."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from gateway.errors import FhirError, too_costly

BYTES_SETTING = "GATEWAY_MAX_RESPONSE_BYTES"
RESOURCES_SETTING = "GATEWAY_MAX_RESPONSE_RESOURCES"


@dataclass
class ResponseBudget:
    max_bytes: int
    max_resources: int
    spent_bytes: int = 0
    spent_resources: int = 0
    # Once it has refused, it is spent: a batch's later entries are answered so without being run.
    refused: FhirError | None = None

    def check(self, sizes: Sequence[int]) -> None:
        """400 too-costly when resources of these sizes would not fit beside those charged so far."""
        if self.refused is not None:
            raise self.refused
        if self.spent_resources + len(sizes) > self.max_resources:
            self.refused = too_costly(
                f"The response would hold more than {self.max_resources} resources ({RESOURCES_SETTING}); "
                "ask for fewer (a smaller _count, fewer _include, fewer entries in a batch)"
            )
        elif self.spent_bytes + sum(sizes) > self.max_bytes:
            self.refused = too_costly(
                f"The response would be larger than {self.max_bytes} bytes of resources "
                f"({BYTES_SETTING}); ask for fewer (a smaller _count, fewer _include, fewer entries in a "
                "batch)"
            )
        if self.refused is not None:
            raise self.refused

    def charge(self, size: int) -> None:
        self.check((size,))
        self.spent_bytes += size
        self.spent_resources += 1


_current: ContextVar[ResponseBudget | None] = ContextVar("response_budget", default=None)


def current() -> ResponseBudget | None:
    return _current.get()


@contextmanager
def bounded(budget: ResponseBudget) -> Iterator[ResponseBudget]:
    """`budget` is the response budget of what runs inside (worker threads started inside share it)."""
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


def refused() -> FhirError | None:
    """The refusal of this request's budget, once it has refused (a batch answers its later entries so)."""
    budget = _current.get()
    return budget.refused if budget is not None else None


def check(sizes: Sequence[int]) -> None:
    """Before loading resources for a response: 400 when they would not fit in this request's budget."""
    budget = _current.get()
    if budget is not None and sizes:
        budget.check(sizes)


def charge(size: int) -> None:
    """A resource put into this request's response."""
    budget = _current.get()
    if budget is not None:
        budget.charge(size)
