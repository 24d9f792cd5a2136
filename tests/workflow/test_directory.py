"""`gateway import directory` (issue 19): the HSA catalogue extract in tests/golden/directory gives the
units' names, phone numbers and opening hours through the write path, so the device list's "who to call"
is filled for the municipality; a later write by a region client wins by source time; a bad line is
refused naming its field, the others are written."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.adapters.directory.cli import import_directory_files
from tests.workflow.journey import Journey, journey, secured
from tests.workflow.test_device_list import HMC, LIST_URL, entries, seed

__all__ = ["journey", "secured"]  # fixtures

EXTRACT = Path(__file__).resolve().parents[1] / "golden" / "directory" / "hsa-katalog.jsonl"
MAH = "SE2321000016-MAH1"
CHANGED = "2026-10-01T08:00:00+02:00"
LATE = {"days": ["mon"], "from": "25:00", "to": "16:00"}


def test_the_directory_names_every_unit_and_who_to_call(journey: Journey) -> None:
    j = journey
    patient = seed(j)["patient"]
    tally, problems = import_directory_files(j.services, [EXTRACT], None)
    assert problems == []
    assert tally["created"] >= 4 and tally["updated"] >= 3  # the units the sources named, now described
    bundle = j.get("ka", LIST_URL.format(patient))
    [listed] = entries(bundle, "match")
    div = listed["text"]["div"]
    for text in (
        "Hjälpmedelscentralen Söder",  # the register's owner, a bare HSA-id before
        "08-555 120 00 (mån–tor 09:00–15:00; fre 09:00–12:00)",
        "MAH felanmälan dygnet runt, tel 08-123 456 99 (mån–sön dygnet runt)",
        "Lungmottagningens sjuksköterskor, tel 08-517 700 10 (mån–fre 08:30–11:30)",  # treatment questions
    ):
        assert text in div, (text, div)
    assert f"HSA-id {HMC}" not in div
    included = entries(bundle, "include")
    assert {"Location", "HealthcareService"} <= {r["resourceType"] for r in included}
    hmc = next(
        r
        for r in included
        if r["resourceType"] == "Organization" and r.get("name") == "Hjälpmedelscentralen Söder"
    )
    region = j.organization("SE2321000016-REGION")
    assert hmc["partOf"]["reference"] == f"Organization/{region}"

    # importing the same extract again changes nothing
    again, _ = import_directory_files(j.services, [EXTRACT], None)
    assert again["created"] == again["updated"] == 0 and again["unchanged"] > 0


def test_a_later_region_write_wins_an_older_extract_changes_nothing_it_wrote(
    journey: Journey, tmp_path: Path
) -> None:
    j = journey
    import_directory_files(j.services, [EXTRACT], None)
    mah = j.organization(MAH)
    phone = [{"op": "replace", "path": "/telecom", "value": [{"system": "phone", "value": "08-999 999 99"}]}]
    j.patch("region", f"Organization/{mah}", phone)
    older = tmp_path / "older.jsonl"
    line = (
        EXTRACT.read_text(encoding="utf-8")
        .splitlines()[1]
        .replace("2026-10-01T08:00:00+02:00", "2026-10-02T08:00:00+02:00")
    )
    older.write_text(line + "\n", encoding="utf-8")
    import_directory_files(j.services, [older], None)  # extracted before the region's write (today)
    assert j.get("region", f"Organization/{mah}")["telecom"][0]["value"] == "08-999 999 99"
    newer = tmp_path / "newer.jsonl"
    newer.write_text(
        line.replace("2026-10-02T08:00:00+02:00", "2099-01-01T08:00:00+01:00") + "\n", encoding="utf-8"
    )
    import_directory_files(j.services, [newer], None)
    assert j.get("region", f"Organization/{mah}")["telecom"][0]["value"] == "08-123 456 00"


def test_a_bad_line_is_refused_naming_the_field_the_others_are_written(
    journey: Journey, tmp_path: Path
) -> None:
    j = journey
    extract = tmp_path / "bad.jsonl"
    extract.write_text(
        "\n".join(
            [
                json.dumps({"hsaId": "SE2321000016-OK01", "name": "Vårdcentralen Ok", "changed": CHANGED}),
                json.dumps({"hsaId": "SE2321000016-BAD1", "name": "Fel", "openingHours": [LATE]}),
                '{"hsaId": "", "name": "Utan id"}',
                "not json",
                '{"hsaId": "SE2321000016-BAD2", "name": "Fel", "changed": "igår"}',
            ]
        ),
        encoding="utf-8",
    )
    tally, problems = import_directory_files(j.services, [extract], "2026-10-01T08:00:00+02:00")
    assert tally["created"] == 1 and tally["refused"] == 4
    assert any("line 2: openingHours[0].from" in p for p in problems), problems
    assert any("line 3: hsaId" in p for p in problems), problems
    assert any("line 4: not valid JSON" in p for p in problems), problems
    assert any("line 5: changed" in p for p in problems), problems
    assert j.search("region", "Organization?identifier=urn:oid:1.2.752.29.4.19|SE2321000016-OK01")
    assert not j.search("region", "Organization?identifier=urn:oid:1.2.752.29.4.19|SE2321000016-BAD1")
