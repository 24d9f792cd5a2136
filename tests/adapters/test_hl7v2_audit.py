"""The audit trail of the commands, run as real processes: every `import` record (a message, a replayed
input, a register file rejected whole) and every write's record is in the database as soon as the
command has returned, since nothing is left behind in the background audit writer when a process ends.
And who `gateway import hl7` writes as; orders and register rows imported by worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters import quarantine
from gateway.adapters.bestallningsportalen import order_keys
from gateway.adapters.bestallningsportalen.adapter import CHUNK
from gateway.adapters.device_register.adapter import CHUNK as REGISTER_CHUNK
from gateway.adapters.hl7v2.ack import read_ack
from gateway.adapters.ids import SourceIds
from gateway.security import store
from gateway.security.audit_cli import verify
from gateway.security.scopes import ADAPTER_HL7V2
from gateway.services import Services
from gateway.store.repository import Repository
from tests.adapters.test_adapter_identity import entities, events, writers
from tests.adapters.test_bestallningsportalen import golden
from tests.adapters.test_device_register import HEADER, changed, row_of
from tests.adapters.test_hl7v2_cli import await_listener, free_port
from tests.adapters.test_hl7v2_messages import adt
from tests.adapters.test_hl7v2_mllp import HOSPITAL_CLIENT, HOSPITAL_HSA, exchange
from tests.conftest import Database

GATEWAY = Path(sys.executable).with_name("gateway")
DISCHARGE = adt("A03", "H2", sent="20261127120000", discharged="20261127110000")
UNITS = "https://fhir.home-device-gateway.se/identifier/individnummer"
BAD_PNR = adt("A01", "H3", pnr="191212121213", visit="V3")  # AE: the Luhn digit is wrong


@pytest.fixture
def clean(database: Database) -> Database:
    database.clear()
    return database


def environment(database: Database, **settings: str) -> dict[str, str]:
    return {**os.environ, **database.environment(), "GATEWAY_AUDIT": "on", "COLUMNS": "200", **settings}


def gateway(database: Database, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`gateway ARGS…` in its own process, with the audit trail on."""
    return subprocess.run(
        [str(GATEWAY), *args],
        env=environment(database, **settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def imports(database: Database) -> list[dict[str, Any]]:
    """The stored `import` AuditEvents, by their record time."""
    found = [event for event in events(database) if event["subtype"][0]["code"] == "import"]
    return sorted(found, key=lambda event: (event["recorded"], event["outcomeDesc"]))


def test_each_imported_message_is_audited_before_the_command_returns(clean: Database, tmp_path: Path) -> None:
    stay = tmp_path / "stay.hl7"
    stay.write_bytes(adt("A01", "H1") + DISCHARGE + BAD_PNR + b"MSH|^~\\&|ping")
    done = gateway(clean, "import", "hl7", str(stay))
    assert done.returncode == 1, done.stderr
    assert "accepted 2, duplicates 0, errors (AE, quarantined) 1, rejected (AR) 1" in done.stderr
    found = imports(clean)
    assert [event["outcomeDesc"].split(": ", 1)[1] for event in found] == [
        "message 1: 200",
        "message 2: 200",
        "message 3: 422",
        "message 4: 400",
    ]
    assert [event["outcome"] for event in found] == ["0", "0", "4", "4"]
    # the gateway's own creates (a high-risk proposal, docs/risk.md) name it as performer for the adapter
    created = [e for e in events(clean) if not _risk_proposal(e)]
    assert writers(found, "import") == writers(created, "create") == {"adapter:hl7v2"}
    admission = found[0]
    [patient] = entities(admission, "1")
    assert patient.startswith("Patient/")
    assert any(ref.startswith("Encounter/") for ref in entities(admission, "4"))
    assert {"system": "urn:oid:1.2.752.29.4.19", "value": HOSPITAL_HSA} in [
        agent["who"]["identifier"] for agent in admission["agent"]
    ], "written as the adapter for the sending facility"

    again = gateway(clean, "import", "hl7", str(stay))
    assert "duplicates 2" in again.stderr, again.stderr
    assert len(imports(clean)) == 8  # a duplicate changes nothing, and is audited all the same


def test_import_hl7_acts_as_a_named_registered_client(clean: Database, tmp_path: Path) -> None:
    message = tmp_path / "admission.hl7"
    message.write_bytes(adt("A01", "H1"))
    # Only the entrance scope: it implies the adapter's writes, as at the REST entrance.
    sources = [f"hl7v2:{HOSPITAL_HSA}"]
    store.add_client(
        clean.engine, "journal", HOSPITAL_HSA, {"keys": []}, [ADAPTER_HL7V2], HOSPITAL_CLIENT, sources
    )
    store.add_client(clean.engine, "other", HOSPITAL_HSA, {"keys": []}, ["system/*.cruds"], "other-client")
    for unusable in ("no-such-client", "other-client"):
        refused = gateway(clean, "import", "hl7", "--client", unusable, str(message))
        assert refused.returncode == 2 and "--client" in refused.stderr, refused.stderr
    done = gateway(
        clean,
        "import",
        "hl7",
        "--client",
        HOSPITAL_CLIENT,
        str(message),
        GATEWAY_AUTH="on",
        GATEWAY_REGION_CLIENTS=HOSPITAL_CLIENT,
        GATEWAY_CLIENT_PURPOSES=f"{HOSPITAL_CLIENT}=CAREMGT",
    )
    assert done.returncode == 0, done.stderr
    found = events(clean)
    assert writers(found, "create") == writers(found, "import") == {HOSPITAL_CLIENT}
    assert {event["purposeOfEvent"][0]["coding"][0]["code"] for event in found} == {"CAREMGT"}


def test_a_replay_is_audited_before_the_command_returns(clean: Database, tmp_path: Path) -> None:
    bad = tmp_path / "bad.hl7"
    bad.write_bytes(BAD_PNR)
    assert gateway(clean, "import", "hl7", str(bad)).returncode == 1
    [item] = quarantine.listing(clean.engine, "hl7v2")
    before = len(imports(clean))
    replayed = gateway(clean, "import", "--replay", str(item.id))
    assert replayed.returncode == 1 and "HL7 ACK AE for message H3" in replayed.stderr, replayed.stderr
    [record] = imports(clean)[before:]
    assert record["outcomeDesc"].endswith(f"gateway import --replay {item.id} (hl7v2): 422")
    assert record["outcome"] == "4"
    assert writers([record], "import") == {"adapter:hl7v2"}


def test_a_register_file_rejected_at_its_header_is_audited(clean: Database, tmp_path: Path) -> None:
    broken = tmp_path / "broken.csv"
    broken.write_text("not;a;register;header\n" + row_of("01") + "\n", encoding="utf-8")
    done = gateway(clean, "import", "devices", str(broken))
    assert done.returncode == 1 and "rejected whole" in done.stderr, done.stderr
    [record] = imports(clean)
    assert record["outcome"] == "4" and record["outcomeDesc"].endswith(": 400")
    assert f"gateway import devices {broken}: file rejected whole at its header" in record["outcomeDesc"]
    assert writers([record], "import") == {"adapter:device-register"}


def test_load_stores_its_audit_records_before_it_returns(clean: Database, tmp_path: Path) -> None:
    resources = tmp_path / "patients.ndjson"
    patient = {"resourceType": "Patient", "name": [{"family": "Tolvansson"}]}
    resources.write_text("\n".join(json.dumps(patient) for _ in range(3)) + "\n", encoding="utf-8")
    done = gateway(clean, "load", str(resources))
    assert done.returncode == 0, done.stderr
    creates = [event for event in events(clean) if event["subtype"][0]["code"] == "create"]
    assert len(creates) == 3


def test_mllp_stores_its_audit_records_when_terminated(clean: Database) -> None:
    port = free_port()
    command = [str(GATEWAY), "mllp", "--host", "127.0.0.1", "--port", str(port), "--no-upgrade"]
    process = subprocess.Popen(
        command, env=environment(clean), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        await_listener(port, process)
        answers = [read_ack(ack)[0] for ack in exchange(port, [adt("A01", "H1"), DISCHARGE])]
        assert answers == ["AA", "AA"]
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, log
    assert b"Traceback" not in log and b"stopped" in log
    found = imports(clean)
    assert len(found) == 2 and writers(found, "import") == {"adapter:hl7v2"}
    assert ["H1 from" in found[0]["outcomeDesc"], "H2 from" in found[1]["outcomeDesc"]] == [True, True]


def test_orders_imported_in_worker_processes_are_all_audited(clean: Database, tmp_path: Path) -> None:
    """`import orders --workers 2`: the answers one process gives, an `import` record per order stored
    before the command returns, and an order's two versions imported in file order (its ordernummer
    sends both to one worker)."""
    first = golden("01")
    second = {**first, "version": 2, "rader": [{**first["rader"][0], "antal": 3}]}
    path = tmp_path / "orders.ndjson"
    orders = [first, golden("02"), golden("03"), second]
    path.write_text("\n".join(json.dumps(order) for order in orders) + "\n{broken\n", encoding="utf-8")
    done = gateway(clean, "import", "orders", "--workers", "2", str(path))
    assert done.returncode == 1, done.stderr
    assert "orders: created 3, updated 1, unchanged 0, rejected 1" in done.stderr
    assert "orders.ndjson: order 5: 400 Bad Request" in done.stderr
    records = imports(clean)
    assert sorted(record["outcomeDesc"].split(": ")[-1] for record in records) == [
        "200", "201", "201", "201", "400"
    ]  # fmt: skip
    with clean.engine.connect() as connection:
        provenance = Repository(connection).current("Provenance", _provenance(clean, first))
    assert provenance is not None
    assert provenance.json()["extension"][0]["valueInteger"] == 2


def _provenance(database: Database, order: dict[str, Any]) -> str:
    """The Provenance id of an order, as the import's worker processes derive it (same secret)."""
    return order_keys.order_ids(SourceIds.of(database.settings()), order).provenance


def test_orders_beyond_a_chunk_are_imported_in_worker_processes_each_once(
    clean: Database, tmp_path: Path
) -> None:
    """More orders than a worker takes at once: each is imported once, answered in file order."""
    count = 2 * CHUNK + 7
    path = tmp_path / "orders.ndjson"
    orders = [{**golden("01"), "ordernummer": f"BP-W-{n:04d}"} for n in range(count)]
    path.write_text("\n".join(json.dumps(order) for order in orders) + "\n", encoding="utf-8")
    done = gateway(clean, "import", "orders", "--workers", "2", str(path))
    assert done.returncode == 0, done.stderr
    assert f"orders: created {count}, updated 0, unchanged 0, rejected 0" in done.stderr
    assert len(imports(clean)) == count
    with clean.engine.connect() as connection:
        stored = Repository(connection).current_of(("Provenance", _provenance(clean, o)) for o in orders)
    assert len(stored) == count


def test_register_rows_imported_in_worker_processes_answer_and_mark_as_one_process(
    clean: Database, tmp_path: Path
) -> None:
    """`import devices --mode full --workers 2`: every row answered once in file order and audited, a
    unit's conflicting second row still refused (a unit's rows go to one process), a file with a bad
    header rejected whole, the units the full export no longer lists marked missing after its rows, and
    a later file's rows imported as its own export."""
    earlier = tmp_path / "earlier.csv"
    earlier.write_text(f"{HEADER}\n{changed('01', individnummer='MAH-999999')}\n", encoding="utf-8")
    assert gateway(clean, "import", "devices", str(earlier)).returncode == 0
    count = 2 * REGISTER_CHUNK + 7
    rows = [changed("01", individnummer=f"MAH-{n:06d}") for n in range(count)]
    rows[5] = changed("01", individnummer="MAH-000005", status="Försvunnen")  # not a register status
    # MAH-000009 again, other content, its register spelt otherwise (the same unit, sent to the same process)
    rows.append(changed("01", individnummer="MAH-000009", register="Sesam", modell="OC-6"))
    export = tmp_path / "export.csv"
    export.write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    broken = tmp_path / "broken.csv"
    broken.write_text("not;a;register;export\n1;2;3;4\n", encoding="utf-8")
    # another register's export after them: its rows go to importers of its own in the worker processes
    # (each process closes the earlier file's), MAH-000009 there is another register's unit
    other = [changed("01", register="LOKAL", individnummer=f"MAH-{n:06d}") for n in (9, 10, 11)]
    lokal = tmp_path / "lokal.csv"
    lokal.write_text("\n".join([HEADER, *other]) + "\n", encoding="utf-8")
    files = [str(export), str(broken), str(lokal)]
    done = gateway(clean, "import", "devices", "--mode", "full", "--workers", "2", *files)
    assert done.returncode == 1, done.stderr
    summary = f"created {count + 2}, updated 0, unchanged 0, rejected 2, marked missing 1, rejected files 1"
    assert summary in done.stderr, done.stderr
    assert "export.csv: line 7: 400 Bad Request" in done.stderr
    assert f"export.csv: line {count + 2}: 409 Conflict" in done.stderr
    assert len(imports(clean)) == 1 + (count + 1) + 1 + 3  # the earlier row, every row, the broken file
    with clean.engine.connect() as connection:
        held = Repository(connection).held_by(
            [("Device", f"{UNITS}/sesam", f"MAH-{n:06d}") for n in (*range(count), 999999)]
        )
    assert len(held) == count  # all but the rejected MAH-000005, and the earlier unit
    missing = held[("Device", f"{UNITS}/sesam", "MAH-999999")].json()["meta"]["tag"]
    assert [tag["code"] for tag in missing] == ["missing-from-register"]


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_workers_die_with_a_killed_import_and_a_run_again_is_correct(clean: Database, tmp_path: Path) -> None:
    """`kill -9` of `gateway import orders --workers 2` mid-way: its worker processes end with it (none
    keeps a database connection), and running the import again stores every order once, every write
    with its AuditEvent."""
    count = 4 * CHUNK
    path = tmp_path / "orders.ndjson"
    orders = [{**golden("01"), "ordernummer": f"BP-K-{n:04d}"} for n in range(count)]
    path.write_text("\n".join(json.dumps(order) for order in orders) + "\n", encoding="utf-8")
    command = subprocess.Popen(
        [str(GATEWAY), "import", "orders", "--workers", "2", str(path)],
        env=environment(clean),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and len(workers) < 2:
        workers = [pid for pid in _children(command.pid) if _alive(pid)]
        time.sleep(0.05)
    while time.monotonic() < deadline and not imports(clean):
        time.sleep(0.05)  # mid-way: something is stored
    command.send_signal(signal.SIGKILL)
    command.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert workers and not any(_alive(pid) for pid in workers)
    done = gateway(clean, "import", "orders", "--workers", "2", str(path))
    assert done.returncode == 0, done.stderr
    with clean.engine.connect() as connection:
        stored = Repository(connection).current_of(("Provenance", _provenance(clean, o)) for o in orders)
    assert len(stored) == count
    services = Services.build(clean.settings(), engine=clean.engine)
    assert [p for p in verify(services, None).problems if "has no AuditEvent" in p] == []


def _risk_proposal(event: dict[str, Any]) -> bool:
    whats = [str(e.get("what", {}).get("reference", "")) for e in event.get("entity", [])]
    named = [w for w in whats if not w.startswith("Patient/")]
    return bool(named) and all(w.split("/")[0] in ("RiskAssessment", "Flag") for w in named)
