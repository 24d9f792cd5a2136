"""The outsider's transactions and batches: entries that read, write or condition on hidden ids and values
are answered as for ids and values that do not exist."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.model.types import Json
from tests.security.outsider import cases
from tests.security.outsider.compare import Answer
from tests.security.outsider.probes import check, compare_answers, value_probe
from tests.security.outsider.world import World
from tests.security.outsider.writing import bundle, cleanup, own, pair, secret_id

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# -- transactions and batches ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["transaction", "batch"])
@pytest.mark.parametrize("res_type", cases.written_types())
def test_bundle_entries_on_hidden_ids(world: World, res_type: str, kind: str) -> None:
    """GET (read, vread, history, search by the hidden id), PUT, PATCH and DELETE entries naming a hidden
    id, each alone in its Bundle, answered as for a fresh id."""
    probe = secret_id(world, res_type)
    body = own(world, res_type)
    patch_body = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": "W10="}
    entries: dict[str, Callable[[str], Json]] = {
        "read": lambda i: {"request": {"method": "GET", "url": f"{res_type}/{i}"}},
        "vread": lambda i: {"request": {"method": "GET", "url": f"{res_type}/{i}/_history/1"}},
        "history": lambda i: {"request": {"method": "GET", "url": f"{res_type}/{i}/_history"}},
        "search": lambda i: {"request": {"method": "GET", "url": f"{res_type}?_id={i}&_total=accurate"}},
        "put": lambda i: {
            "resource": {**body, "id": i},
            "request": {"method": "PUT", "url": f"{res_type}/{i}"},
        },
        "patch": lambda i: {"resource": patch_body, "request": {"method": "PATCH", "url": f"{res_type}/{i}"}},
        "delete": lambda i: {"request": {"method": "DELETE", "url": f"{res_type}/{i}"}},
    }
    problems = []
    for names, makes in _grouped(kind, entries):

        def send(res_id: str, makes: list[Callable[[str], Json]] = makes) -> Any:
            sent = bundle(kind, [make(res_id) for make in makes])
            return world.client.post("/fhir", json=sent, headers=world.outsider)

        problems += [f"{names}: {p}" for p in pair(world, send, probe)]
    check(problems)


def _grouped(
    kind: str, entries: dict[str, Callable[[str], Json]]
) -> list[tuple[str, list[Callable[[str], Json]]]]:
    """A batch's entries are answered one by one: all in one Bundle (its entry i is the i-th named);
    a transaction stops at its first failing entry: one Bundle each."""
    if kind == "batch":
        return [(", ".join(entries), list(entries.values()))]
    return [(name, [make]) for name, make in entries.items()]


@pytest.mark.parametrize("kind", ["transaction", "batch"])
@pytest.mark.parametrize("res_type", cases.written_types())
def test_bundle_conditions_on_hidden_values(world: World, res_type: str, kind: str) -> None:
    """ifNoneExist, a conditional update entry and a conditional reference on a hidden value (the type's
    first parameter with one, not the Patient identifier exception), answered as for a fresh value."""
    code = next(
        c.split(".", 1)[1]
        for c in cases.private_search_params()
        if c.startswith(res_type + ".")
        and c != "Patient.identifier"
        and not c.endswith("._lastUpdated")
        and not c.endswith("._id")
    )
    probe = value_probe(world, res_type, code, shared=False)
    body = own(world, res_type)
    task = own(world, "Task")

    def query(values: list[str]) -> str:
        return "&".join(f"{k}={v}" for (k, _), v in zip(probe.hidden, values, strict=True))

    entries: dict[str, Callable[[str], Json]] = {
        "ifNoneExist": lambda q: {
            "resource": body,
            "request": {"method": "POST", "url": res_type, "ifNoneExist": q},
        },
        "conditional update": lambda q: {
            "resource": body,
            "request": {"method": "PUT", "url": f"{res_type}?{q}"},
        },
        "conditional delete": lambda q: {"request": {"method": "DELETE", "url": f"{res_type}?{q}"}},
        "conditional reference": lambda q: {
            "resource": {**task, "focus": {"reference": f"{res_type}?{q}"}},
            "request": {"method": "POST", "url": "Task"},
        },
        "search": lambda q: {"request": {"method": "GET", "url": f"{res_type}?{q}&_total=accurate"}},
    }
    problems = []
    for name, makes in _grouped(kind, entries):
        hidden, fresh = (
            Answer.of(
                world.client.post(
                    "/fhir",
                    json=bundle(kind, [make(query(values)) for make in makes]),
                    headers=world.outsider,
                )
            )
            for values in (probe.hidden_values, probe.fresh_values)
        )
        cleanup(world, hidden, fresh)
        problems += [
            f"{name}: {p}"
            for p in compare_answers(world, hidden, fresh, probe.hidden_values, probe.fresh_values)
        ]
    check(problems)
