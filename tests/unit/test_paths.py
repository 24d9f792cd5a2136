"""The JSON-walking evaluator gives exactly what fhirpathpy gives, for every indexed search parameter
branch it takes over, on every resource of the golden files and on resources built to exercise choice
elements, `where` filters, primitive extensions and nested backbone elements."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo

import fhirpathpy
import pytest

from gateway.config import Settings
from gateway.model.types import Json
from gateway.search.extract import Extractor, IndexRows
from gateway.search.paths import compile_path
from gateway.search.registry import _FHIR_MODEL, Branch, Registry, SearchParam

GOLDEN = Path(__file__).parent.parent / "golden"

EXTENSION = {"url": "u", "valueCode": "x"}
BUILT: list[Json] = [
    # `X.ofType(dateTime)` / `ofType(string)`: a primitive type named in lower case, the key capitalised
    {"resourceType": "Observation", "status": "final", "code": {}, "valueDateTime": "2026-03-01T12:00:00Z"},
    {"resourceType": "Observation", "status": "final", "code": {}, "valueString": "Höger"},
    {"resourceType": "Patient", "deceasedDateTime": "2026-02-01"},
    {"resourceType": "DeviceRequest", "status": "active", "occurrenceDateTime": "2026-12-01"},
    {
        "resourceType": "Provenance",
        "occurredDateTime": "2026-11-01T10:00:00+01:00",
        "recorded": "2026-11-01T10:00:00Z",
    },
    {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}], "text": "x"},
        "valueQuantity": {"value": 1.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
        "effectivePeriod": {"start": "2026-01-01", "end": "2026-01-02T10:00:00+01:00"},
        "component": [
            {"code": {"coding": [{"code": "a"}]}, "valueCodeableConcept": {"coding": [{"code": "v"}]}},
            {"code": {"coding": [{"code": "b"}]}, "valueString": "text"},
            {"code": {"coding": [{"code": "c"}]}, "valueQuantity": {"value": 3}},
        ],
        "subject": {"reference": "Patient/p1"},
        "performer": [{"reference": "Practitioner/x"}, {"reference": "Organization/y"}],
        "meta": {"tag": [{"system": "s", "code": "t"}], "security": [{"code": "R"}]},
    },
    {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "only text"},
        "valueCodeableConcept": {"coding": [{"system": "s", "code": "c"}]},
        "effectiveDateTime": "2026-03-01T12:00:00Z",
    },
    {
        "resourceType": "Patient",
        "name": [{"family": "Å", "given": ["B", None], "_given": [None, {"extension": [EXTENSION]}]}],
        "telecom": [{"system": "phone", "value": "070"}, {"system": "email", "value": "a@b.se"}],
        "birthDate": "1950-01-01",
        "_birthDate": {"extension": [{"url": "u", "valueString": "x"}]},
        "deceasedBoolean": False,
        "address": [{"line": ["Gatan 1"], "city": "Sta", "postalCode": "111 11", "country": "SE"}],
        "generalPractitioner": [{"reference": "Organization/o1"}],
        "link": [{"other": {"reference": "Patient/p2"}, "type": "seealso"}],
    },
    {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p1"},
        "onsetAge": {"value": 60, "unit": "a"},
        "abatementString": "gone",
        "code": {"coding": [{"code": "c"}]},
        "evidence": [{"code": [{"coding": [{"code": "e"}]}], "detail": [{"reference": "Observation/o"}]}],
    },
    {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": "Patient/p1"},
        "restriction": {"period": {"end": "2026-11-25T12:00:00+01:00"}},
        "executionPeriod": {"start": "2026-11-20"},
        "input": [{"type": {"text": "x"}, "valueReference": {"reference": "Device/d1"}}],
        "businessStatus": {"coding": [{"code": "x"}]},
    },
]


def _golden_resources() -> Iterator[Json]:
    for path in sorted(GOLDEN.rglob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        bundle = document.get("bundle", document)
        for entry in bundle.get("entry", []) if isinstance(bundle, dict) else []:
            if isinstance(entry.get("resource"), dict):
                yield entry["resource"]


RESOURCES = [*BUILT, *_golden_resources()]
REGISTRY = Registry.load(Settings().profiles_dir)
EXTRACTOR = Extractor(REGISTRY, ZoneInfo(Settings().local_timezone))


def test_the_golden_files_give_resources_to_compare_on() -> None:
    assert len({resource["resourceType"] for resource in RESOURCES}) >= 12


def test_most_indexed_branches_are_walked_without_fhirpathpy() -> None:
    branches = {branch.expression for res_type in ("Patient", "Observation", "Task", "DeviceRequest")
                for param in REGISTRY.indexed(res_type) for branch in param.branches[res_type]}  # fmt: skip
    walked = [expression for expression in branches if compile_path(expression) is not None]
    assert len(walked) >= 0.9 * len(branches)


def _rows(param: SearchParam, res_type: str, branch: Branch, resource: Json) -> IndexRows:
    rows = IndexRows()
    only = replace(param, branches={res_type: [branch]})
    EXTRACTOR._add(rows, res_type, only, only.values(resource))
    return rows


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: str(r.get("resourceType")))
def test_walked_paths_index_what_fhirpathpy_indexes(resource: Json) -> None:
    res_type = resource["resourceType"]
    for param in REGISTRY.indexed(res_type):
        for branch in param.branches[res_type]:
            walk = compile_path(branch.expression)
            if walk is None:
                continue
            by_fhirpathpy = replace(branch, evaluate=fhirpathpy.compile(branch.expression, _FHIR_MODEL))
            expected = _rows(param, res_type, by_fhirpathpy, resource)
            assert _rows(param, res_type, replace(branch, evaluate=walk), resource) == expected, branch


@pytest.mark.parametrize(
    "expression",
    ["Patient.name.given.first()", "Patient.deceased.exists() and Patient.deceased != false",
     "Bundle.entry[0].resource", "Patient.extension('u').value", "Patient.name.where(use='x' or use='y')"],
)  # fmt: skip
def test_anything_beyond_a_plain_path_is_left_to_fhirpathpy(expression: str) -> None:
    assert compile_path(expression) is None
