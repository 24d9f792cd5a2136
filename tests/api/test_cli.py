"""The `gateway` command: db upgrade, load (NDJSON and Bundles) and reindex, against both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner, Result

from gateway.cli import app
from gateway.hooks import RequestContext
from gateway.services import Services
from gateway.store.repository import Stored
from gateway.store.tables import Base
from tests.api.helpers import PNR, patient, task
from tests.conftest import Database

GATEWAY = Path(sys.executable).with_name("gateway")
CONTEXT = RequestContext(base_url="http://test/fhir")


def _invoke(database: Database, *args: str) -> Result:
    # a narrow console: messages must still come out one line each, paths unbroken
    env = {**database.environment(), "COLUMNS": "40"}
    return CliRunner().invoke(app, list(args), env=env)


def _find(services: Services, res_type: str, query: str) -> list[Stored]:
    return services.write_path.run(
        CONTEXT, lambda uow: services.searcher.match(uow.connection, res_type, query, limit=100), write=False
    )


def _write_ndjson(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_json(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_db_upgrade_is_idempotent(database: Database, services: Services) -> None:
    services.write_path.run(CONTEXT, lambda uow: services.write_path.create(uow, patient()))
    env = {**os.environ, **database.environment(), "COLUMNS": "40"}
    for _ in range(2):  # the fixture already migrated: both runs find nothing to do
        run = subprocess.run(
            [str(GATEWAY), "db", "upgrade"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert run.returncode == 0, run.stderr
        assert "is up to date" in run.stderr
    with database.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        for table in Base.metadata.sorted_tables:
            connection.execute(select(func.count()).select_from(table)).scalar_one()
    assert len(_find(services, "Patient", "family=Tolvansson")) == 1


def test_load_ndjson_keeps_good_lines_and_reports_bad_ones(
    database: Database, services: Services, tmp_path: Path
) -> None:
    path = _write_ndjson(
        tmp_path / "resources.ndjson",
        [
            json.dumps(patient("191212121212", family="Först")),
            '{"resourceType": "Patient", "name": [',
            "",
            json.dumps(patient("201212121212", birthDate="1912-13-45")),
            json.dumps(patient("199001011239", id="p-ndjson", family="Sist")),
        ],
    )
    result = _invoke(database, "load", str(path))
    assert result.exit_code == 1, result.output
    assert f"{path}: line 2:" in result.stderr
    assert f"{path}: line 4: 400" in result.stderr and "Patient.birthDate" in result.stderr
    assert "line 1:" not in result.stderr and "line 5:" not in result.stderr
    assert "loaded 2, rejected 2" in result.stderr
    assert len(_find(services, "Patient", "family=Först")) == 1
    assert [s.res_id for s in _find(services, "Patient", "family=Sist")] == ["p-ndjson"]
    assert _find(services, "Patient", f"identifier={PNR}|201212121212") == []


def test_load_ndjson_streams_without_reading_the_file_whole(
    database: Database, services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write_ndjson(
        tmp_path / "many.ndjson", [json.dumps(patient(f"1990010{n:05d}", family="Ström")) for n in range(30)]
    )

    for method in ("read_bytes", "read_text"):
        original = getattr(Path, method)

        def guarded(self: Path, *args: Any, original: Any = original, **kwargs: Any) -> Any:
            if self == path:
                raise AssertionError("NDJSON must be streamed, not read whole")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Path, method, guarded)
    result = _invoke(database, "load", str(path))
    assert result.exit_code == 0, result.output
    assert "loaded 30, rejected 0" in result.stderr
    assert len(_find(services, "Patient", "family=Ström")) == 30


def _transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }
    if full_url:
        item["fullUrl"] = full_url
    return item


def test_load_transaction_bundle_resolves_references(
    database: Database, services: Services, tmp_path: Path
) -> None:
    full_url = "urn:uuid:0b4c8a57-9f0e-4a55-8d3e-0f0d2a1c1e01"
    bundle = _transaction(
        _post(task("placeholder") | {"for": {"reference": full_url}}),
        _post(patient(family="Transaktion"), full_url),
    )
    result = _invoke(database, "load", str(_write_json(tmp_path / "transaction.json", bundle)))
    assert result.exit_code == 0, result.output
    assert "loaded 2, rejected 0" in result.stderr
    [stored_patient] = _find(services, "Patient", "family=Transaktion")
    [stored_task] = _find(services, "Task", f"patient={stored_patient.res_id}")
    assert stored_task.json()["for"] == {"reference": f"Patient/{stored_patient.res_id}"}


def test_load_failing_transaction_stores_nothing(
    database: Database, services: Services, tmp_path: Path
) -> None:
    bundle = _transaction(
        _post(patient(family="Ensam")),
        _post({"resourceType": "Task", "status": "bogus", "intent": "order"}),
    )
    result = _invoke(database, "load", str(_write_json(tmp_path / "transaction.json", bundle)))
    assert result.exit_code == 1, result.output
    assert "rolled back" in result.stderr and "Bundle.entry[1]" in result.stderr
    assert _find(services, "Patient", "family=Ensam") == []


def test_load_batch_and_collection_bundles(database: Database, services: Services, tmp_path: Path) -> None:
    batch = _transaction(
        _post(patient(family="Batch")),
        _post(patient("201212121212", birthDate="1912-13-45")),
        kind="batch",
    )
    collection = _transaction(
        {"resource": patient("199001011239", family="Samling")},
        {"resource": {"resourceType": "Patient", "gender": "nonsense"}},
        kind="collection",
    )
    batch_path = _write_json(tmp_path / "batch.json", batch)
    collection_path = _write_json(tmp_path / "collection.json", collection)
    result = _invoke(database, "load", str(batch_path), str(collection_path))
    assert result.exit_code == 1, result.output
    assert f"{batch_path}: entry 1: 400" in result.stderr
    assert f"{collection_path}: entry 1:" in result.stderr
    assert "loaded 2, rejected 2" in result.stderr
    assert len(_find(services, "Patient", "family=Batch")) == 1
    assert len(_find(services, "Patient", "family=Samling")) == 1


def test_reindex_restores_index_rows(database: Database, services: Services) -> None:
    created = services.write_path.run(
        CONTEXT, lambda uow: services.write_path.create(uow, patient(family="Indexerad"))
    )
    services.write_path.run(CONTEXT, lambda uow: services.write_path.create(uow, task(created.stored.res_id)))
    assert len(_find(services, "Patient", "family=Indexerad")) == 1
    with database.engine.begin() as connection:
        connection.execute(text("DELETE FROM idx_string"))
    assert _find(services, "Patient", "family=Indexerad") == []

    result = _invoke(database, "reindex", "--batch", "1")
    assert result.exit_code == 0, result.output
    assert "reindexed 2 resources" in result.stderr
    assert [s.res_id for s in _find(services, "Patient", "family=Indexerad")] == [created.stored.res_id]
    assert len(_find(services, "Task", f"patient={created.stored.res_id}")) == 1
