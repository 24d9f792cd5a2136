"""What the outsider's write probes share: its own resources to write, the pairing of a hidden probe with
a fresh one, and the cleanup that deletes what a probe created (as the region-wide client), so probes do
not meet each other's writes."""

from __future__ import annotations

import copy
from typing import Any

from gateway.model.types import Json
from tests.security.outsider.compare import Answer
from tests.security.outsider.probes import Probe, compare_answers, reshape
from tests.security.outsider.world import World
from tests.security.outsider.world_data import world_resources


def own(world: World, res_type: str) -> Json:
    """A resource of the outsider's own of this type, as it was seeded (without id and meta)."""
    for item in world_resources():
        if item.flavour == "b" and item.resource["resourceType"] == res_type:
            body = copy.deepcopy(item.resource)
            for key in ("id", "meta", "identifier"):  # an identifier is claimed by one resource only
                body.pop(key, None)
            return body
    raise AssertionError(f"the world holds no {res_type} of the outsider's")


def cleanup(world: World, *answers: Answer) -> None:
    """Delete what a probe created or changed into being (a 201), so the next probe meets the same world."""
    for answer in answers:
        if answer.status == 201 and "location" in answer.headers:
            path = answer.headers["location"].split("/fhir", 1)[1].split("/_history")[0]
            world.client.delete(f"/fhir{path}", headers=world.region)
        if isinstance(answer.body, dict) and answer.body.get("resourceType") == "Bundle":
            for entry in answer.body.get("entry", []):
                location = entry.get("response", {}).get("location", "")
                if entry.get("response", {}).get("status", "").startswith("201") and location:
                    world.client.delete(f"/fhir/{location.split('/_history')[0]}", headers=world.region)


def pair(world: World, send: Any, probe: Probe) -> list[str]:
    hidden = Answer.of(send(probe.hidden_values[0]))
    fresh = Answer.of(send(probe.fresh_values[0]))
    cleanup(world, hidden, fresh)
    return compare_answers(world, hidden, fresh, probe.hidden_values, probe.fresh_values)


def secret_id(world: World, res_type: str, deleted: bool = False) -> Probe:
    pool = world.facts.gone if deleted else world.facts.hidden
    refs = [r for r in world.facts.of_type(pool, res_type) if r not in world.facts.exposed]
    assert refs, f"no {'deleted ' if deleted else ''}hidden {res_type} in the world"
    hidden = refs[0].split("/")[1]
    return Probe([("id", hidden)], [("id", reshape(hidden, res_type))], refs[0])


def bundle(kind: str, entries: list[Json]) -> Json:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}
