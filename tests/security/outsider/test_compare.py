"""The suite's own checks can fail: the scanner finds a planted value (also folded, URL-encoded, in a
header and in a decoded cursor), the normaliser tells different answers apart, and the filler and the
fresh values keep a value's shape."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import cast

import httpx

from gateway.search.registry import SearchParam
from tests.security.outsider.compare import Answer, differences, leaks, normalise
from tests.security.outsider.probes import expected_answer, fresh_of, reshape
from tests.security.outsider.world import World


def answer(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return Answer.of(httpx.Response(status, json=body, headers=headers or {}))


def cursor_link(values: list[object]) -> str:
    token = base64.urlsafe_b64encode(json.dumps({"b": False, "v": values}).encode()).decode().rstrip("=")
    return f"http://testserver/fhir/Patient?_sort=family&_cursor={token}"


def test_the_scanner_finds_a_planted_value() -> None:
    secret = "Hemligsdotter"
    assert leaks(answer({"name": [{"family": secret}]}), [secret]) == [secret]
    assert leaks(answer({"text": "hemligsdotter"}), [secret]) == [secret]  # folded, as the index keeps it
    assert leaks(
        answer({"link": [{"relation": "next", "url": cursor_link(["hemligsdotter"])}]}), [secret]
    ) == [secret]
    assert leaks(
        answer({}, headers={"Location": "http://testserver/fhir/Patient/Hemligsdotter"}), [secret]
    ) == [secret]
    encoded = "http://testserver/fhir/Patient?name=Hemligs%20dotter"
    assert leaks(answer({"link": [{"relation": "self", "url": encoded}]}), ["Hemligs dotter"]) == [
        "Hemligs dotter"
    ]
    assert leaks(answer({"name": "Öberg-Åsa"}), ["oberg-asa"]) == ["oberg-asa"]


def test_the_scanner_allows_what_the_request_named() -> None:
    body = {"issue": [{"diagnostics": "Patient/hid-123 is not known"}]}
    assert leaks(answer(body), ["hid-123"], allowed=["hid-123"]) == []
    assert leaks(answer(body), ["hid-123"]) == ["hid-123"]
    assert leaks(answer({"name": "Nobody"}), ["Hemligsdotter"]) == []


def test_the_normaliser_tells_answers_apart() -> None:
    hidden = answer({"issue": [{"code": "not-found", "diagnostics": "Task/abc is not known"}]}, 404)
    fresh = answer({"issue": [{"code": "not-found", "diagnostics": "Task/xyz is not known"}]}, 404)
    assert differences(normalise(hidden, ["abc"]), normalise(fresh, ["xyz"])) == []
    gone = answer({"issue": [{"code": "deleted", "diagnostics": "Task/abc was deleted"}]}, 410)
    found = differences(normalise(gone, ["abc"]), normalise(fresh, ["xyz"]))
    assert any("status" in line for line in found) and any("code" in line for line in found)
    counted = answer({"resourceType": "Bundle", "total": 1}), answer({"resourceType": "Bundle", "total": 0})
    assert differences(normalise(counted[0], ["a"]), normalise(counted[1], ["b"])) != []
    linked = (
        answer({}, headers={"Location": "http://testserver/fhir/Task/abc/_history/1"}),
        answer({}, headers={"Location": "http://testserver/fhir/Task/xyz/_history/1"}),
    )
    assert differences(normalise(linked[0], ["abc"]), normalise(linked[1], ["xyz"])) == []
    times = (
        answer(
            {
                "meta": {"lastUpdated": "2026-01-01T10:00:00.123+00:00"},
                "id": "0b6e8f7c-1d2a-4c5e-9f00-123456789abc",
            }
        ),
        answer(
            {
                "meta": {"lastUpdated": "2026-02-03T11:00:00+00:00"},
                "id": "9b6e8f7c-1d2a-4c5e-9f00-123456789abd",
            }
        ),
    )
    assert differences(normalise(times[0], []), normalise(times[1], [])) == []
    # a code is replaced as a word (not inside `status`), also right after a %-escape in a link
    coded = (
        answer({"status": "active", "link": [{"url": "http://testserver/fhir/Task?priority=x%7Cstat"}]}),
        answer({"status": "active", "link": [{"url": "http://testserver/fhir/Task?priority=x%7Cqwer"}]}),
    )
    assert differences(normalise(coded[0], ["stat"]), normalise(coded[1], ["qwer"])) == []
    assert "status" in json.dumps(normalise(coded[0], ["stat"])["body"])


def test_fresh_values_keep_the_shape() -> None:
    assert len(reshape("pat-h1X9", "s")) == 8 and reshape("pat-h1X9", "s") != "pat-h1X9"
    shaped = reshape("19301210037", "s")
    assert shaped.isdigit() and len(shaped) == 11
    token = SearchParam("identifier", "token", "", "", ("Patient",))
    system, _, code = fresh_of(
        token, "http://electronichealth.se/identifier/personnummer|193012100370", "x"
    ).partition("|")
    assert (
        system == "http://electronichealth.se/identifier/personnummer" and code.isdigit() and len(code) == 12
    )
    date = SearchParam("birthdate", "date", "", "", ("Patient",))
    assert fresh_of(date, "ge2031-05-06T10:11:12+01:00", "x") == "ge1907-05-06T10:11:12+01:00"
    reference = SearchParam("subject", "reference", "", "", ("Observation",))
    assert fresh_of(reference, "Patient/path-abc", "x").startswith("Patient/")


def test_the_expected_matches_check_tells_answers_apart() -> None:
    """A search for a value the outsider's own resources share with hidden ones must match exactly its own
    (and count them): an extra match, a missing one, a total counting the hidden, or a hidden value fail."""
    facts = SimpleNamespace(hidden={"Task/hid-1"}, gone=set(), secrets=["Hemligsdotter"])
    world = cast(World, SimpleNamespace(facts=facts))
    own = frozenset({"Task/b-1", "Task/b-2"})

    def bundle(*ids: str, total: int | None = None, extra: object = None) -> Answer:
        entries = [{"resource": {"resourceType": "Task", "id": i.split("/")[1]}} for i in ids]
        body: dict[str, object] = {"resourceType": "Bundle", "entry": entries, "note": extra}
        if total is not None:
            body["total"] = total
        return answer(body)

    assert expected_answer(world, bundle("Task/b-1", "Task/b-2", total=2), own, []) == []
    assert expected_answer(world, answer({"resourceType": "Bundle", "total": 2}), own, []) == []
    assert expected_answer(world, bundle("Task/b-1", total=1), own, [])
    assert expected_answer(world, bundle("Task/b-1", "Task/b-2", total=3), own, [])
    assert expected_answer(world, bundle("Task/b-1", "Task/b-2", "Task/hid-1", total=3), own, [])
    assert expected_answer(world, bundle("Task/b-1", "Task/b-2", extra="Hemligsdotter"), own, [])
    assert expected_answer(world, answer({"issue": []}, 400), own, [])
