"""`gateway import directory FILE…` as a command (issue 19): the `gateway` executable, run against the test
database, loads the sample HSA catalogue extract (exit 0; a second run changes nothing) and exits 1 naming
what it refused (file, line, field), the good units of the same file still written. The importer itself is
tested in process by tests/workflow/test_directory.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gateway.hooks import RequestContext
from gateway.services import Services
from gateway.store.repository import Stored
from tests.conftest import Database

GATEWAY = Path(sys.executable).with_name("gateway")
CONTEXT = RequestContext(base_url="http://test/fhir")
EXTRACT = Path(__file__).resolve().parents[1] / "golden" / "directory" / "hsa-katalog.jsonl"
HSA = "urn:oid:1.2.752.29.4.19"
CHANGED = "2026-10-01T08:00:00+02:00"


def import_directory(database: Database, *args: str) -> subprocess.CompletedProcess[str]:
    # a narrow console: each message must still come out on one line
    env = {**database.environment(), "PATH": str(GATEWAY.parent), "COLUMNS": "40"}
    return subprocess.run(
        [str(GATEWAY), "import", "directory", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def find(services: Services, res_type: str, query: str) -> list[Stored]:
    return services.write_path.run(
        CONTEXT, lambda uow: services.searcher.match(uow.connection, res_type, query, limit=100), write=False
    )


def unit(services: Services, hsa_id: str) -> dict[str, object] | None:
    found = find(services, "Organization", f"identifier={HSA}|{hsa_id}")
    assert len(found) <= 1, found
    return found[0].json() if found else None


def test_the_sample_extract_loads_and_a_second_run_changes_nothing(
    database: Database, services: Services
) -> None:
    done = import_directory(database, str(EXTRACT))
    assert done.returncode == 0, done.stderr
    [summary] = done.stderr.splitlines()  # nothing refused: the tally alone
    assert summary.startswith("directory: created ") and summary.endswith(", refused 0"), summary
    assert not summary.startswith("directory: created 0,"), summary
    hmc = unit(services, "SE2321000016-HMC2")
    region = find(services, "Organization", f"identifier={HSA}|SE2321000016-REGION")
    assert hmc is not None and len(region) == 1
    assert hmc["name"] == "Hjälpmedelscentralen Söder"
    assert hmc["partOf"] == {"reference": f"Organization/{region[0].res_id}"}
    assert hmc["telecom"] == [{"system": "phone", "value": "08-555 120 00"}]
    services_of_mah = find(services, "HealthcareService", "name=MAH felanmälan dygnet runt")
    assert len(services_of_mah) == 1

    again = import_directory(database, str(EXTRACT))
    assert again.returncode == 0, again.stderr
    assert "directory: created 0, updated 0, unchanged " in again.stderr, again.stderr
    assert len(find(services, "HealthcareService", "name=MAH felanmälan dygnet runt")) == 1


def test_a_refused_unit_exits_1_naming_file_line_and_field(
    database: Database, services: Services, tmp_path: Path
) -> None:
    extract = tmp_path / "katalog.jsonl"
    good = {"hsaId": "SE2321000016-OK01", "name": "Vårdcentralen Ok", "changed": CHANGED}
    late = {"days": ["mon"], "from": "25:00", "to": "16:00"}
    bad = {"hsaId": "SE2321000016-BAD1", "name": "Fel", "changed": CHANGED, "openingHours": [late]}
    extract.write_text(f"{json.dumps(good)}\n{json.dumps(bad)}\nnot json\n", encoding="utf-8")
    done = import_directory(database, str(extract))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert any(line.startswith("refused katalog.jsonl: line 2: openingHours[0].from") for line in lines), (
        done.stderr
    )
    assert any(line.startswith("refused katalog.jsonl: line 3: not valid JSON") for line in lines), (
        done.stderr
    )
    assert "directory: created 1, updated 0, unchanged 0, refused 2" in lines, done.stderr
    written = unit(services, "SE2321000016-OK01")
    assert written is not None and written["name"] == "Vårdcentralen Ok"
    assert unit(services, "SE2321000016-BAD1") is None

    # a file that is not there is a usage error (2), before anything is written
    missing = import_directory(database, str(tmp_path / "saknas.jsonl"), str(EXTRACT))
    assert missing.returncode == 2, missing.stderr
    assert "is not a file" in missing.stderr
    assert unit(services, "SE2321000016-HMC2") is None
