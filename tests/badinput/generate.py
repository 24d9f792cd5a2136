"""The corpus's inputs too large or too deep to keep as files, made on the fly (cases.yaml `generate`)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

GOLDEN_CSV = Path(__file__).parents[1] / "golden" / "device_register" / "01-i-lager.csv"
PNR = "http://electronichealth.se/identifier/personnummer"


def nested_arrays(levels: int) -> str:
    return "[" * levels + "]" * levels


def nested_objects(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


def big_text(size: int) -> str:
    return "x" * size


def nested_extension_patient(levels: int) -> str:
    node: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "x"}
    text = json.dumps(node)
    for _ in range(levels - 1):
        text = '{"url": "http://example.org/level", "extension": [' + text + "]}"
    return '{"resourceType": "Patient", "extension": [' + text + "]}"


def big_family_patient(size: int, res_id: str = "") -> str:
    patient: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": "x" * size}]}
    if res_id:
        patient["id"] = res_id
    return json.dumps(patient)


def repeated_parameters(name: str, count: int) -> str:
    return "&".join(f"{name}=v{i}" for i in range(count))


def many_values(name: str, count: int) -> str:
    return f"{name}=" + ",".join(f"{PNR}|19121212{i:04d}" for i in range(count))


def query(name: str, value: str) -> str:
    """`5000 nines`: a number of 5000 digits."""
    count, _, digit = value.partition(" ")
    digits = {"nines": "9", "ones": "1"}[digit]
    return f"{name}={digits * int(count)}"


def batch_of_reads(count: int) -> str:
    entry = {"request": {"method": "GET", "url": "Patient/p1"}}
    return json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [entry] * count})


def patch_nested(levels: int) -> str:
    return '[{"op": "add", "path": "/extension", "value": ' + nested_objects(levels) + "}]"


def batch_patch_nested(levels: int) -> str:
    data = base64.b64encode(patch_nested(levels).encode()).decode()
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}
    entry = {"resource": binary, "request": {"method": "PATCH", "url": "Patient/p1"}}
    return json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [entry]})


def patch_copy_bomb(count: int) -> str:
    """Each copy puts the whole name list into itself once more: doubling it `count` times."""
    first = {"op": "add", "path": "/name", "value": [{"family": "x" * 1000}]}
    return json.dumps([first] + [{"op": "copy", "from": "/name", "path": "/name/0"}] * count)


def nested_order(levels: int) -> str:
    return '{"ordernummer": "BP-1", "version": 1, "extra": ' + nested_arrays(levels) + "}"


def many_orders(count: int) -> str:
    return json.dumps([{"ordernummer": f"BP-{i}"} for i in range(count)])


def _csv(row: Callable[[str], str]) -> str:
    header, first = GOLDEN_CSV.read_text(encoding="utf-8").splitlines()[:2]
    return f"{header}\n{row(first)}\n"


def csv_big_cell(size: int) -> str:
    return _csv(lambda line: line.replace("Acme Medical", "A" * size))


def csv_nul_cell() -> str:
    return _csv(lambda line: line.replace("Acme Medical", "Ac\x00me"))


def hl7_segments(count: int) -> str:
    return "MSH|^~\\&|S|F|R|F|20260101||ADT^A01|1|P|2.5\r" + "NTE|1\r" * count


GENERATORS: dict[str, Callable[..., str]] = {
    function.__name__: function
    for function in (
        nested_arrays,
        nested_objects,
        big_text,
        nested_extension_patient,
        big_family_patient,
        repeated_parameters,
        many_values,
        query,
        batch_of_reads,
        patch_nested,
        batch_patch_nested,
        patch_copy_bomb,
        nested_order,
        many_orders,
        csv_big_cell,
        csv_nul_cell,
        hl7_segments,
    )
} | {"repeated_form": repeated_parameters}
