"""Demographics per source (issue 16), end to end with auth on: the register and the portal as clients
bound to their sources, the hospital over MLLP, and the lung clinic reading the Patient with its own
organisation-scoped client. Each field of the Patient follows the newest source event that gave it a
value; a record without a value for a field (a register row, an order without an address) never blocks a
later one that has it; the address carries its municipality code once, under the gateway's url."""

from __future__ import annotations

import copy
from typing import Any

from typer.testing import CliRunner

from gateway.adapters.hl7v2.ack import read_ack
from gateway.adapters.hl7v2.mllp import ListenerSettings
from gateway.adapters.mapping import luhn_digit
from gateway.adapters.master_data import FIELD_TIME, MUNICIPALITY_CODE, OLD_MUNICIPALITY_CODE, event_times
from gateway.cli import app
from gateway.hooks import Principal, RequestContext
from gateway.services import Services
from tests.adapters.test_bestallningsportalen import golden
from tests.adapters.test_device_register import row_of
from tests.adapters.test_hl7v2_messages import adt
from tests.adapters.test_hl7v2_mllp import Running, exchange, hospital_senders
from tests.conftest import Database
from tests.security.conftest import bearer, organisation_policy
from tests.workflow.test_follow_up_dates import World, world
from tests.workflow.test_order_to_return_report import PERSONNUMMER, client_for, search, secured

__all__ = ["secured", "world"]  # fixtures

PID_ADDRESS = b"Storgatan 1^^Stockholm^^11122^SE^^^0180"


def patient(world: World) -> dict[str, Any]:
    """The Patient as the lung clinic reads it."""
    world.http.headers.update(world.lung)
    [found] = search(world.http, "Patient", identifier=PERSONNUMMER)
    return found


def home(found: dict[str, Any]) -> tuple[str, str, list[str]]:
    """(street, city, municipality codes) of the home address."""
    [address] = found["address"]
    codes = [e["valueCoding"]["code"] for e in address.get("extension", []) if e["url"] == MUNICIPALITY_CODE]
    assert not [e for e in address.get("extension", []) if e["url"] == OLD_MUNICIPALITY_CODE]
    return address["line"][0], address["city"], codes


def order(base: dict[str, Any], number: str, skapad: str, **patient_fields: Any) -> dict[str, Any]:
    """Another order for the same patient, placed at `skapad`, whose patient carries only these fields."""
    made = copy.deepcopy(base)
    made.update(ordernummer=number, skapad=skapad)
    made["patient"] = {"personnummer": base["patient"]["personnummer"], **patient_fields}
    return made


def test_each_field_follows_the_newest_event_that_gave_it_a_value(world: World, secured: Services) -> None:
    # the register places a unit with the patient first: a row without demographics (processing time:
    # now, after every order below was placed)
    world.rows(row_of("02"))
    first = golden("01")  # skapad 2026-11-20: Storgatan 1, Stockholm, 0180
    world.order(first)
    assert home(patient(world)) == ("Storgatan 1", "Stockholm", ["0180"])

    # a later order moves the patient: the register row's processing time does not block it
    moved = order(
        first,
        "BP-2026-005001",
        "2026-11-25T10:00:00+01:00",
        adress={"gata": "Nygatan 5", "postnummer": "11130", "ort": "Stockholm"},
    )
    world.order(moved)
    assert home(patient(world)) == ("Nygatan 5", "Stockholm", ["0180"])

    # a still later order with no address, only a phone number: it blocks nothing it does not carry
    world.order(order(first, "BP-2026-005002", "2026-11-30T10:00:00+01:00", telefon="070-1111111"))
    # the hospital's admission of 2026-11-27 gives a new address in Solna (kommunkod 0184)
    message = adt("A01", "MD-1", sent="20261127100000").replace(
        PID_ADDRESS, b"Hamngatan 3^^Solna^^16970^SE^^^0184"
    )
    mllp = Running(secured, ListenerSettings(port=0, senders=hospital_senders(secured)))
    try:
        [answer] = exchange(mllp.port, [message])
    finally:
        mllp.stop()
    assert read_ack(answer)[:2] == ("AA", "MD-1")
    found = patient(world)
    assert home(found) == ("Hamngatan 3", "Solna", ["0184"])
    assert found["telecom"][0]["value"] == "070-1111111"

    # an order placed before the admission, arriving late, changes neither the address nor the phone
    late = order(
        first,
        "BP-2026-005003",
        "2026-11-26T10:00:00+01:00",
        adress={"gata": "Gamla vägen 1", "ort": "Stockholm"},
        telefon="070-2222222",
    )
    world.order(late)
    found = patient(world)
    assert home(found) == ("Hamngatan 3", "Solna", ["0184"])
    assert found["telecom"][0]["value"] == "070-1111111"

    # a newer order giving only the municipality code changes the code, not the street
    world.order(order(first, "BP-2026-005004", "2026-12-01T10:00:00+01:00", kommunkod="0180"))
    found = patient(world)
    assert home(found) == ("Hamngatan 3", "Solna", ["0180"])
    times = event_times(found)
    assert times["address"] == "2026-11-27T10:00:00+01:00"  # the hospital's event (EVN-2, local time)
    assert times["address.municipality-code"] == "2026-12-01T10:00:00+01:00"
    assert times["telecom"] == "2026-11-30T10:00:00+01:00"
    assert times["name"] >= "2026-11-27"  # the admission repeated it: the newest event that gave it
    assert len([e for e in found["extension"] if e["url"] == FIELD_TIME]) == len(set(times.values()))


def test_the_same_records_in_any_order_give_the_same_patient(world: World) -> None:
    """One patient's records sent newest first give what another's, sent oldest first, give."""
    first = golden("01")
    other = f"19500101-123{luhn_digit('500101123')}"

    def records(personnummer: str, prefix: str) -> list[dict[str, Any]]:
        base = {**first, "patient": {"personnummer": personnummer}}
        return [
            order(
                base, f"{prefix}1", "2026-11-21T10:00:00+01:00", adress={"gata": "A-gatan 1", "ort": "Solna"}
            ),
            order(base, f"{prefix}2", "2026-11-22T10:00:00+01:00", fornamn="Tolvan", efternamn="Tolvansson"),
            order(
                base, f"{prefix}3", "2026-11-23T10:00:00+01:00", adress={"gata": "B-gatan 2", "ort": "Solna"}
            ),
            order(base, f"{prefix}4", "2026-11-24T10:00:00+01:00", kommunkod="0184"),
            order(
                base, f"{prefix}5", "2026-11-25T10:00:00+01:00", adress={"gata": "B-gatan 2", "ort": "Solna"}
            ),
        ]

    for record in reversed(records(first["patient"]["personnummer"], "BP-2026-0051")):
        world.order(record)
    for record in records(other, "BP-2026-0052"):
        world.order(record)
    newest_first = patient(world)
    [oldest_first] = search(
        world.http, "Patient", identifier=f"{PERSONNUMMER.split('|')[0]}|{other.replace('-', '')}"
    )
    assert home(newest_first) == ("B-gatan 2", "Solna", ["0184"])
    for key in ("name", "address", "extension"):
        assert oldest_first[key] == newest_first[key]


# -- the upgrade: stored Patients in the old form rewritten through the write path --------------------

OLD_EVENT_TIME = "https://fhir.home-device-gateway.se/StructureDefinition/source-event-time"
KOMMUNKOD = "https://fhir.home-device-gateway.se/CodeSystem/kommunkod"


def _as_before(resource: dict[str, Any]) -> dict[str, Any]:
    """A Patient as the gateway stored it before issue 16: one source-event-time, and an HL7 message's
    municipality code under the old url beside the order's."""
    old = {k: v for k, v in resource.items() if k not in ("meta", "extension")}
    address = dict(old["address"][0])
    old_code = {"url": OLD_MUNICIPALITY_CODE, "valueCoding": {"system": KOMMUNKOD, "code": "0184"}}
    address["extension"] = [*address["extension"], old_code]
    old["address"] = [address]
    old["extension"] = [{"url": OLD_EVENT_TIME, "valueDateTime": "2026-11-20T09:14:00+01:00"}]
    return old


def test_the_upgrade_rewrites_stored_patients_through_the_write_path_with_provenance(
    world: World, secured: Services, database: Database
) -> None:
    world.order(golden("01"))
    stored = patient(world)
    context = RequestContext(principal=Principal(client_id="cli", scopes=frozenset({"system/*.cruds"})))
    secured.write_path.run(
        context, lambda uow: secured.write_path.update(uow, "Patient", stored["id"], _as_before(stored))
    )
    before = patient(world)
    assert len(before["address"][0]["extension"]) == 2

    env = {**database.environment(), "COLUMNS": "200"}
    dry = CliRunner().invoke(app, ["master-data", "normalize", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "Patient: read 1, would rewrite 1" in dry.output
    assert patient(world)["meta"]["versionId"] == before["meta"]["versionId"]

    done = CliRunner().invoke(app, ["master-data", "normalize", "--batch", "1"], env=env)
    assert done.exit_code == 0, done.output
    assert "Patient: read 1, rewrote 1" in done.output
    after = patient(world)
    assert home(after) == ("Storgatan 1", "Stockholm", ["0184"])  # the HL7 code, written last, once
    assert not [e for e in after["extension"] if e["url"] == OLD_EVENT_TIME]
    assert set(event_times(after).values()) == {"2026-11-20T09:14:00+01:00"}
    version = f"Patient/{after['id']}/_history/{after['meta']['versionId']}"
    # the region's own client (region-wide) reads the Provenance: it names none of the clinic's units
    region = client_for(secured, "region-forvaltning", "SE2321000016-REGION", "system/*.rs")
    organisation_policy(secured).region_clients = frozenset({"region-forvaltning"})
    world.http.headers.update(bearer(region.token(world.http, "system/*.rs")))
    found = search(world.http, "Provenance", target=f"Patient/{after['id']}")
    [provenance] = [p for p in found if {"reference": version} in p["target"]]
    replaced = f"Patient/{after['id']}/_history/{before['meta']['versionId']}"
    assert provenance["entity"] == [{"role": "revision", "what": {"reference": replaced}}]
    assert "kommunkoden" in provenance["reason"][0]["text"]

    again = CliRunner().invoke(app, ["master-data", "normalize"], env=env)
    assert again.exit_code == 0, again.output
    assert "Patient: read 1, rewrote 0" in again.output
    assert patient(world)["meta"]["versionId"] == after["meta"]["versionId"]
