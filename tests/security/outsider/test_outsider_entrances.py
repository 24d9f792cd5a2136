"""The outsider at the other entrances: the CapabilityStatement's cases are the suite's, every listed
operation, AuditEvent reads, the adapters' quarantine, and the adapter entrances answering records that
name another organisation's orders and devices."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.security.scopes import METRICS
from tests.security.outsider import cases
from tests.security.outsider.compare import Answer
from tests.security.outsider.probes import compare_answers, exposure, reshape
from tests.security.outsider.world import World, _register
from tests.security.outsider.world_data import HSA_B

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
GOLDEN = Path(__file__).resolve().parents[2] / "golden"


def check(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


def test_capabilities_are_the_cases(world: World) -> None:
    """The running app serves the CapabilityStatement the cases were generated from: every type,
    interaction, search parameter, include and operation it lists has its cases."""
    served = world.client.get("/fhir/metadata").json()
    generated = cases.metadata()
    for key in ("resource", "interaction", "operation"):
        served_part = served["rest"][0].get(key)
        generated_part = generated["rest"][0].get(key)
        assert json.dumps(served_part, sort_keys=True) == json.dumps(generated_part, sort_keys=True), key


@pytest.mark.parametrize("operation", cases.instance_operations())
def test_operation(world: World, operation: str) -> None:
    """Each listed operation on a hidden id (instance level) and a fresh one: the same answer."""
    res_type, _, name = operation.partition("$")
    if not res_type:
        hidden = world.client.post(
            f"/fhir/${name}", json={"resourceType": "Parameters"}, headers=world.outsider
        )
        check(exposure(world, Answer.of(hidden)))
        return
    target = sorted(world.facts.of_type(world.facts.hidden - world.facts.exposed, res_type))[0].split("/")[1]
    fresh = reshape(target, operation)
    answers = [Answer.of(world.get(f"/fhir/{res_type}/{i}/${name}")) for i in (target, fresh)]
    problems = compare_answers(world, answers[0], answers[1], [target], [fresh])
    # other formats too (Patient $device-list also answers a printable HTML page, by `_format` or Accept)
    pages = [Answer.of(world.get(f"/fhir/{res_type}/{i}/${name}?_format=html")) for i in (target, fresh)]
    html = {**world.outsider, "Accept": "text/html"}
    accepted = [Answer.of(world.get(f"/fhir/{res_type}/{i}/${name}", headers=html)) for i in (target, fresh)]
    problems += compare_answers(world, accepted[0], accepted[1], [target], [fresh])
    check(problems + compare_answers(world, pages[0], pages[1], [target], [fresh]))


def test_the_device_list_of_its_own_patients(world: World) -> None:
    """The outsider's device list of a patient it is related to, as a Bundle and as a page, shows nothing
    it may not read but the self-care assessments the listed requests name (docs/security.md, named
    exception: the device list), which it is then shown in full."""
    problems = []
    patients = sorted(world.facts.of_type(world.facts.visible, "Patient"))
    assert patients, "the world holds no patient of the outsider's"
    for patient in patients:
        answer = Answer.of(world.get(f"/fhir/{patient}/$device-list"))
        if answer.status != 200:
            problems.append(f"{patient}: {answer.status} {answer.text[:200]}")
            continue
        disclosed = [
            f"Observation/{e['resource']['id']}"
            for e in answer.body.get("entry", [])
            if e["resource"]["resourceType"] == "Observation"
        ]
        allowed = [*disclosed, *(leaf for ref in disclosed for leaf in _leaves(world.facts.stored.get(ref)))]
        body = {
            **answer.body,
            "entry": [
                e for e in answer.body["entry"] if e.get("fullUrl", "").split("/fhir/")[-1] not in disclosed
            ],
        }
        trimmed = Answer(answer.status, answer.headers, json.dumps(body), body, answer.decoded_cursors)
        problems += [f"{patient}: {p}" for p in exposure(world, trimmed, allowed)]
        page = Answer.of(world.get(f"/fhir/{patient}/$device-list?_format=html"))
        problems += [f"{patient} (page): {p}" for p in exposure(world, page, allowed)]
        accepted = world.get(
            f"/fhir/{patient}/$device-list", headers={**world.outsider, "Accept": "text/html"}
        )
        assert accepted.headers["content-type"].startswith("text/html"), accepted.headers
        problems += [f"{patient} (Accept): {p}" for p in exposure(world, Answer.of(accepted), allowed)]
    check(problems)


def _leaves(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() if key != "meta" for leaf in _leaves(value)]
    if isinstance(node, list):
        return [leaf for item in node for leaf in _leaves(item)]
    return [str(node)] if node is not None else []


def test_audit_reads(world: World) -> None:
    """An organisation's audit reader sees the AuditEvents of its own clients' accesses, not those of the
    clinic's or Kommun A's accesses to their patients: not by search, read, history or paging."""
    facts = world.facts
    hidden = facts.of_type(facts.hidden, "AuditEvent")
    own = facts.of_type(facts.visible, "AuditEvent")
    assert hidden and own, "the world holds no AuditEvents of both kinds (world.py seeds them)"
    problems = []
    served: set[str] = set()
    url: str | None = "/fhir/AuditEvent?_count=5&_total=accurate"
    while url:
        answer = Answer.of(world.get(url))
        problems += exposure(world, answer)
        served |= {f"AuditEvent/{e['resource']['id']}" for e in answer.body.get("entry", [])}
        url = next(
            (
                x["url"].replace("http://testserver", "")
                for x in answer.body.get("link", [])
                if x["relation"] == "next"
            ),
            None,
        )
    if set(own) - served:
        problems.append(f"its own clients' AuditEvents not served: {len(set(own) - served)}")
    for ref in hidden[:5]:
        res_id = ref.split("/")[1]
        fresh = reshape(res_id, ref)
        for path in ("{}", "{}/_history", "{}/_history/1"):
            answers = [Answer.of(world.get("/fhir/AuditEvent/" + path.format(i))) for i in (res_id, fresh)]
            problems += compare_answers(world, answers[0], answers[1], [res_id], [fresh])
    hidden_patients = {p for p in facts.hidden if p.startswith("Patient/")}
    for patient in sorted(hidden_patients)[:3]:
        fresh = "Patient/" + reshape(patient.split("/")[1], patient)
        answers = [
            Answer.of(world.get("/fhir/AuditEvent", params={"entity": p, "_total": "accurate"}))
            for p in (patient, fresh)
        ]
        problems += compare_answers(world, answers[0], answers[1], [patient], [fresh])
    check(problems)


def test_quarantine_items_belong_to_their_sender(world: World) -> None:
    """The quarantine listing shows the outsider its own rejected inputs only: not Kommun A's."""
    problems = []
    for query in (
        "",
        "?status=all",
        "?adapter=bestallningsportalen&status=all",
        "?status=all&limit=1000&after=0",
    ):
        answer = Answer.of(world.client.get(f"/adapters/quarantine{query}", headers=world.outsider_adapters))
        if answer.status != 200:
            problems.append(f"{query}: {answer.status} {answer.text[:200]}")
            continue
        problems += [f"{query}: {p}" for p in exposure(world, answer)]
        listed = {int(item["id"]) for item in answer.body.get("items", [])}
        theirs, mine = set(world.facts.quarantined.get("a", [])), set(world.facts.quarantined.get("b", []))
        assert theirs and mine, "the world holds no quarantined order of Kommun A's and the outsider's"
        if listed & theirs:
            problems.append(f"{query}: Kommun A's items are listed: {sorted(listed & theirs)}")
        if query and not mine <= listed:
            problems.append(f"{query}: the outsider's own items are not listed")
    check(problems)


def _order(number: str, personnummer: str) -> bytes:
    order = json.loads(
        (GOLDEN / "bestallningsportalen" / "01-forskrivning-with-prescriber.order.json").read_text()
    )
    order["ordernummer"] = number
    order["patient"]["personnummer"] = personnummer
    order["version"] = 2
    return json.dumps(order).encode()


def test_order_entrance_answers(world: World) -> None:
    """An order naming the clinic's order number (or its patient) is answered to the outsider as one naming
    a number (a patient) nobody holds."""
    number, person = "BP-2026-004711", "19121212-1212"
    fresh_number, fresh_person = reshape(number, "order"), "19121212-1220"
    problems = []
    for hidden, fresh, tokens in (
        (_order(number, person), _order(fresh_number, person), ([number], [fresh_number])),
        (
            _order(fresh_number, person),
            _order(fresh_number, fresh_person),
            ([person, person.replace("-", "")], [fresh_person, fresh_person.replace("-", "")]),
        ),
    ):
        answers = [
            Answer.of(
                world.client.post(
                    "/adapters/bestallningsportalen/orders", content=body, headers=world.outsider_adapters
                )
            )
            for body in (hidden, fresh)
        ]
        problems += compare_answers(world, answers[0], answers[1], *tokens)
    check(problems)


def test_device_register_entrance_answers(world: World) -> None:
    """A register row naming the clinic's device (its serial number) is answered like one naming a serial
    number nobody holds."""
    csv = (GOLDEN / "device_register" / "02-utlanad.csv").read_text(encoding="utf-8")
    header, row = csv.strip().split("\n")[:2]
    fresh_row = row.replace("MAH-000123", "MAH-000917").replace("SN88231", "SN55210")

    def send(line: str) -> Any:
        return world.client.post(
            "/adapters/device-register/records?mode=delta",
            content=f"{header}\n{line}\n".encode(),
            headers=world.outsider_adapters,
        )

    answers = [Answer.of(send(line)) for line in (row, fresh_row)]
    check(
        compare_answers(world, answers[0], answers[1], ["MAH-000123", "SN88231"], ["MAH-000917", "SN55210"])
    )


def test_metrics_entrance(world: World) -> None:
    """GET /metrics: the outsider without the scope `gateway/metrics` is refused (403) and shown nothing;
    a client of its organisation granted the scope (the operator's scraper) reads counts by interaction,
    type and status only: no resource, id or value of what it may not read (docs/security.md, Scopes)."""
    refused = Answer.of(world.client.get("/metrics", headers=world.outsider))
    problems = exposure(world, refused)
    if refused.status != 403 or "gateway_" in refused.text:
        problems.append(f"without the scope: {refused.status} {refused.text[:200]}")
    scraper = _register(world.database.engine, HSA_B, METRICS)
    scraped = Answer.of(world.client.get("/metrics", headers=world.tokens.headers(scraper, METRICS)))
    problems += exposure(world, scraped)
    if scraped.status != 200 or "gateway_http_requests_total" not in scraped.text:
        problems.append(f"with the scope: {scraped.status} {scraped.text[:200]}")
    ids = {ref.split("/", 1)[1] for ref in world.facts.hidden | world.facts.gone}
    shown = sorted(i for i in ids if len(i) >= 8 and i in scraped.text)
    if shown:
        problems.append(f"hidden ids in the metrics: {shown[:6]}")
    check(problems)
