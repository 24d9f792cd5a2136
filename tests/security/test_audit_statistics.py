"""The planner's statistics beside the audit trail (issue 21): AuditEvents share the index tables with the
clinical resources and outnumber them, yet after ANALYZE PostgreSQL's estimate of a clinical search's
index rows stays near the rows there are (migration 0010's statistics objects, docs/storage.md); and on
such a store the audit trail is searched as before: `AuditEvent?patient=`, `_include`, paging, and the
audit-read rule (docs/security.md)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, text

from bench.audit_stats import add_audit_events
from bench.seed import ORGANIZATIONS, seed
from gateway.app import create_app
from gateway.services import Services
from tests.conftest import Database
from tests.security.conftest import bearer, register

PATIENTS = 1000
AUDIT_EVENTS = 12_000  # ~12 a patient: the index tables hold several times more audit rows than clinical
FACTOR = 3.0  # an estimate within 3x of the rows found
# (what, the index lookup of a clinical search)
LOOKUPS = [
    (
        "Patient gender=female",
        "SELECT rid FROM idx_token WHERE res_type = 'Patient' AND param = 'gender' AND code = 'female'",
    ),
    (
        "Task status=requested",
        "SELECT rid FROM idx_token WHERE res_type = 'Task' AND param = 'status' AND code = 'requested'",
    ),
    (
        "Task owner, type",
        "SELECT rid FROM idx_reference WHERE res_type = 'Task' AND param = 'owner' "
        "AND target_type = 'Organization'",
    ),
    (
        "Patient birthdate",
        "SELECT rid FROM idx_date WHERE res_type = 'Patient' AND param = 'birthdate'",
    ),
]


@pytest.fixture(scope="module")
def mixed(database: Database) -> Database:
    """A store of ~4,000 clinical resources and 12,000 AuditEvents (their index rows several times the
    clinical ones), analysed. PostgreSQL only: SQLite keeps no such statistics."""
    if database.backend != "postgresql":
        pytest.skip("PostgreSQL only: the planner statistics of migration 0010 exist there alone")
    database.clear()
    services = Services.build(database.settings(), engine=database.engine)
    try:
        seed(services, ORGANIZATIONS + 4 * PATIENTS)
        add_audit_events(services, AUDIT_EVENTS, PATIENTS)
    finally:
        services.close()
    with database.engine.begin() as connection:
        for table in ("resource", "idx_token", "idx_string", "idx_reference", "idx_date"):
            connection.execute(text(f"ANALYZE {table}"))
    return database


def estimate(connection: Connection, sql: str) -> float:
    plan: dict[str, Any] = connection.execute(text(f"EXPLAIN (FORMAT JSON) {sql}")).scalar_one()[0]
    return float(plan["Plan"]["Plan Rows"])


def test_the_audit_trail_outnumbers_the_clinical_rows(mixed: Database) -> None:
    count = "SELECT count(*) FILTER (WHERE res_type = 'AuditEvent'), count(*) FROM idx_token"
    with mixed.engine.connect() as connection:
        audit, rows = connection.execute(text(count)).one()
    assert audit > 2 * (rows - audit)


@pytest.mark.parametrize(("what", "sql"), LOOKUPS, ids=[what for what, _ in LOOKUPS])
def test_a_clinical_lookups_estimate_is_near_its_rows(mixed: Database, what: str, sql: str) -> None:
    with mixed.engine.connect() as connection:
        found = connection.execute(text(f"SELECT count(*) FROM ({sql}) AS rows")).scalar_one()
        expected = estimate(connection, sql)
    assert found > 100, what
    assert found / FACTOR <= expected <= found * FACTOR, f"{what}: estimated {expected:.0f}, found {found}"


def test_without_the_statistics_object_the_estimate_is_the_issues(mixed: Database) -> None:
    """The store reproduces the skew: without `st_token_lookup` (dropped and analysed in a transaction
    rolled back, so the other tests keep it) the female Patients are estimated a few at most."""
    _, sql = LOOKUPS[0]
    with mixed.engine.connect() as connection:
        with connection.begin() as transaction:
            connection.execute(text("DROP STATISTICS st_token_lookup"))
            connection.execute(text("ANALYZE idx_token"))
            without = estimate(connection, sql)
            transaction.rollback()
        found = connection.execute(text(f"SELECT count(*) FROM ({sql}) AS rows")).scalar_one()
        restored = estimate(connection, sql)
    assert without * FACTOR < found
    assert found / FACTOR <= restored <= found * FACTOR


def test_the_statistics_objects_are_there(mixed: Database) -> None:
    with mixed.engine.connect() as connection:
        names = set(
            connection.execute(
                text(
                    "SELECT stxname FROM pg_statistic_ext WHERE stxnamespace = current_schema()::regnamespace"
                )
            ).scalars()
        )
    assert {"st_token_lookup", "st_string_lookup", "st_reference_lookup"} <= names


def _pages(client: TestClient, headers: dict[str, str], url: str) -> list[dict[str, Any]]:
    """Every entry of a search, page by page through its `next` links."""
    entries: list[dict[str, Any]] = []
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        bundle = response.json()
        entries.extend(bundle.get("entry", []))
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), "")
    return entries


def test_a_patients_audit_trail_is_searched_paged_and_included_as_before(mixed: Database) -> None:
    services = Services.build(mixed.settings(auth=True), engine=mixed.engine)
    try:
        auditor = register(services, "gateway/audit.read system/Patient.rs", region=True)
        outsider = register(services, "gateway/audit.read system/Patient.rs", org="SE2321000016-UTOMST")
        with TestClient(create_app(services.settings, services=services)) as client:
            with mixed.engine.connect() as connection:
                recorded = connection.execute(
                    text(
                        "SELECT count(DISTINCT rid) FROM idx_reference WHERE res_type = 'AuditEvent' "
                        "AND param = 'patient' AND target_type = 'Patient' AND target_id = 'pat-5'"
                    )
                ).scalar_one()
            assert recorded > 3
            headers = bearer(auditor.token(client, "gateway/audit.read system/Patient.rs"))
            query = "/fhir/AuditEvent?patient=Patient/pat-5&_include=AuditEvent:patient&_count=3"
            entries = _pages(client, headers, query)
            matches = [e for e in entries if e["search"]["mode"] == "match"]
            included = {e["resource"]["id"] for e in entries if e["search"]["mode"] == "include"}
            assert len(matches) == recorded
            assert len({e["resource"]["id"] for e in matches}) == recorded
            assert all(e["resource"]["resourceType"] == "AuditEvent" for e in matches)
            assert included == {"pat-5"}
            # the audit-read rule: an unrelated organisation's auditor finds none of them
            other = bearer(outsider.token(client, "gateway/audit.read system/Patient.rs"))
            assert _pages(client, other, query) == []
    finally:
        services.close()
