"""The outsider and bulk `$export`, at every kick-off the CapabilityStatement lists (system, Patient): its
export holds exactly what it may read of the types exported (every current resource it reads, nothing
hidden, no hidden value); a `_typeFilter` on every reference parameter with a value only hidden resources
hold exports what the same filter with a fresh value does (nothing), and with a value it shares, exactly
its own; another client's job, status, files and cancel answer as an unknown job's. Each job is
cancelled after the case (the world is shared)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from gateway.export.jobs import new_job_id
from gateway.export.worker import Worker
from tests.security.outsider import cases
from tests.security.outsider.compare import Answer
from tests.security.outsider.probes import NoValue, Pairs, check, compare_answers, exposure, value_probe
from tests.security.outsider.world import World

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
LEFT_OUT = ("AuditEvent", "Binary")  # not exported unless named in _type


@dataclass
class Export:
    status_url: str
    manifest: dict[str, Any]
    file_urls: list[str]
    resources: dict[str, dict[str, Any]]
    answer: Answer  # everything the client was given, as one answer for the exposure check


def local(url: str) -> str:
    return url.replace("http://testserver", "")


def path_of(entrance: str) -> str:
    res_type, _, name = entrance.partition("$")
    return f"/fhir/{res_type}/${name}" if res_type else f"/fhir/${name}"


def run_export(world: World, entrance: str, query: str = "", who: dict[str, str] | None = None) -> Export:
    headers = who or world.outsider
    kicked = world.client.get(path_of(entrance) + query, headers={**headers, **ASYNC})
    assert kicked.status_code == 202, kicked.text
    status_url = local(kicked.headers["content-location"])
    Worker(world.services).run_once()
    status = world.client.get(status_url, headers=headers)
    assert status.status_code == 200, status.text
    manifest = status.json()
    # the manifest echoes the kick-off URL as sent (with the probe's value): checked apart, not as a leak
    assert manifest["request"] == f"http://testserver{path_of(entrance)}{query}"
    shown = {k: v for k, v in manifest.items() if k != "request"}
    texts = [json.dumps(shown), json.dumps(dict(status.headers))]
    resources: dict[str, dict[str, Any]] = {}
    urls = [local(item["url"]) for item in manifest["output"]]
    for url in urls:
        got = world.client.get(url, headers=headers)
        assert got.status_code == 200, got.text
        texts += [got.text, json.dumps(dict(got.headers))]
        for line in got.text.splitlines():
            resource = json.loads(line)
            resources[f"{resource['resourceType']}/{resource['id']}"] = resource
    body = {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources.values()]}
    answer = Answer(200, {}, "\n".join(texts), body)
    return Export(status_url, manifest, urls, resources, answer)


def cancel(world: World, export: Export, who: dict[str, str] | None = None) -> None:
    assert world.client.delete(export.status_url, headers=who or world.outsider).status_code == 202


@pytest.mark.parametrize("entrance", cases.export_entrances())
@pytest.mark.parametrize("query", ["", "?_type=Patient,Observation,Task,Device", "?_since=2000-01-01"])
def test_the_export_holds_exactly_what_the_outsider_may_read(world: World, entrance: str, query: str) -> None:
    export = run_export(world, entrance, query)
    try:
        problems = exposure(world, export.answer)
        facts = world.facts
        types = {item["type"] for item in export.manifest["output"]}
        if entrance == "$export" and not query:
            readable = {r for r in facts.visible if r.split("/")[0] not in LEFT_OUT}
            missing = readable - set(export.resources) - facts.gone
            if missing:
                problems.append(f"readable resources not exported: {sorted(missing)[:6]}")
        missing_of_types = {r for r in facts.visible if r.split("/")[0] in types and r in facts.stored} - set(
            export.resources
        )
        if entrance == "$export" and missing_of_types:
            problems.append(f"readable resources of exported types missing: {sorted(missing_of_types)[:6]}")
        check(problems)
    finally:
        cancel(world, export)


@pytest.mark.parametrize("case", cases.private_reference_params())
def test_type_filter_on_a_hidden_value_exports_as_a_fresh_one(world: World, case: str) -> None:
    res_type, code = case.split(".", 1)
    try:
        probe = value_probe(world, res_type, code)
    except NoValue as missing:
        pytest.skip(str(missing))

    def send(pairs: Pairs) -> Export:
        search = f"{res_type}?{urlencode(pairs)}"
        return run_export(world, "$export", f"?_type={res_type}&_typeFilter={quote(search, safe='')}")

    hidden = send(probe.hidden)
    fresh = send(probe.fresh)
    try:
        problems = exposure(world, hidden.answer, probe.hidden_values)
        if set(hidden.resources) != set(probe.expected):
            own = sorted(probe.expected)[:4]
            problems.append(f"exported {sorted(hidden.resources)[:4]}, not the outsider's own {own}")
        if fresh.resources:
            problems.append(f"a fresh value exported {sorted(fresh.resources)[:4]}")
        check(problems)
    finally:
        cancel(world, hidden)
        cancel(world, fresh)


def test_another_clients_job_answers_as_an_unknown_one(world: World) -> None:
    """Kommun A's job: its status, its files and its cancel, asked by the outsider, answer as a job that
    does not exist (same status, same body); A's job is untouched by it."""
    theirs = run_export(world, "$export", "?_type=Patient,Task", who=world.kommun_a)
    try:
        job_id = theirs.status_url.rsplit("/", 1)[1]
        fresh_id = new_job_id()
        assert theirs.file_urls, "Kommun A's export holds no file"
        problems: list[str] = []
        for url in [theirs.status_url, *theirs.file_urls]:
            hidden = Answer.of(world.get(url))
            unknown = Answer.of(world.get(url.replace(job_id, fresh_id)))
            problems += compare_answers(world, hidden, unknown, [job_id], [fresh_id])
        hidden = Answer.of(world.client.delete(theirs.status_url, headers=world.outsider))
        unknown = Answer.of(
            world.client.delete(theirs.status_url.replace(job_id, fresh_id), headers=world.outsider)
        )
        problems += compare_answers(world, hidden, unknown, [job_id], [fresh_id])
        if hidden.status != 404:
            problems.append(f"the outsider's cancel of another's job answered {hidden.status}")
        again = world.client.get(theirs.status_url, headers=world.kommun_a)
        if again.status_code != 200:
            problems.append(f"Kommun A's job was touched by the outsider: {again.status_code}")
        check(problems)
    finally:
        cancel(world, theirs, world.kommun_a)
