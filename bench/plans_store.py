"""The store the search plans are measured on (bench/plans.py, tests/search_plans): bench/seed.py's
resources plus a Communication and an AuditEvent per patient, seeded, or seeded in part and copied in SQL
up to the size asked for; and the patient whose values the searches use."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import Engine, func, select, text

from bench.seed import ORGANIZATIONS, resources, seed
from gateway.model.types import Json
from gateway.services import Services
from gateway.store.repository import R
from gateway.store.tables import Base

ORGANIZATION = 7  # the municipality: org-7 (HSA-id SE2321000016-0007), as in bench/municipality.py
AUDIT_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"


def extra(count: int) -> Iterator[Json]:
    """The resources bench/seed.py writes for about `count`, with, per patient, a Communication to the
    owner of its Task and an AuditEvent of a read of it."""
    patients = 0
    for resource in resources(count):
        yield resource
        if resource["resourceType"] != "Task":
            continue
        patients += 1
        pid, owner = resource["for"]["reference"], resource["owner"]["reference"]
        n = int(pid.removeprefix("Patient/pat-"))
        yield {
            "resourceType": "Communication",
            "id": f"com-{n}",
            "status": "completed",
            "subject": {"reference": pid},
            "recipient": [{"reference": owner}],
            "sent": "2026-02-02T08:00:00+01:00",
            "payload": [{"contentString": "Hämtning bokad"}],
        }
        yield {
            "resourceType": "AuditEvent",
            "id": f"audit-{n}",
            "type": {"system": AUDIT_SYSTEM, "code": "110110"},
            "action": "R",
            "recorded": f"2026-{1 + n % 12:02d}-{1 + n % 28:02d}T09:00:00+01:00",
            "outcome": "0",
            "agent": [{"who": {"reference": owner}, "requestor": True}],
            "source": {"observer": {"display": "plans"}},
            "entity": [{"what": {"reference": pid}}],
        }


# What a copy of the seed changes (bench `replicate`): the ids of everything but the Organizations, the
# references to them and the identifier values; codes, names, dates and who owns what stay the same.
COPY_STEPS = [
    """INSERT INTO resource (rid, res_type, res_id, version_id, last_updated, deleted, content, writer)
    SELECT rid + :offset, res_type, res_id || :suffix, version_id, last_updated, deleted,
        jsonb_set(content::jsonb, '{id}', to_jsonb(res_id || :suffix))::text, writer
    FROM resource WHERE rid <= :top AND res_type <> 'Organization'""",
    """INSERT INTO idx_token (rid, res_type, param, system, code)
    SELECT rid + :offset, res_type, param, system,
        CASE WHEN param = 'identifier' THEN code || :suffix ELSE code END
    FROM idx_token WHERE rid <= :top AND res_type <> 'Organization'""",
    """INSERT INTO idx_string (rid, res_type, param, value_folded, value_exact)
    SELECT rid + :offset, res_type, param, value_folded, value_exact
    FROM idx_string WHERE rid <= :top AND res_type <> 'Organization'""",
    """INSERT INTO idx_reference (rid, res_type, param, target_type, target_id, url)
    SELECT rid + :offset, res_type, param, target_type,
        CASE WHEN url IS NULL AND target_type <> 'Organization' THEN target_id || :suffix
            ELSE target_id END, url
    FROM idx_reference WHERE rid <= :top AND res_type <> 'Organization'""",
    """INSERT INTO idx_date (rid, res_type, param, low, high)
    SELECT rid + :offset, res_type, param, low, high
    FROM idx_date WHERE rid <= :top AND res_type <> 'Organization'""",
    """INSERT INTO idx_number (rid, res_type, param, value)
    SELECT rid + :offset, res_type, param, value
    FROM idx_number WHERE rid <= :top AND res_type <> 'Organization'""",
    """INSERT INTO idx_uri (rid, res_type, param, value)
    SELECT rid + :offset, res_type, param, value
    FROM idx_uri WHERE rid <= :top AND res_type <> 'Organization'""",
    """INSERT INTO identifier_claim (res_type, system, value, rid)
    SELECT res_type, system, value || :suffix, rid + :offset
    FROM identifier_claim WHERE rid <= :top AND res_type <> 'Organization'""",
    """INSERT INTO care_relation (rid, actor_type, actor_id, patient_id, basis, until)
    SELECT rid + :offset, actor_type, actor_id, patient_id || :suffix, basis, until
    FROM care_relation WHERE rid <= :top""",
]


def replicate(engine: Engine, times: int) -> None:
    """PostgreSQL: the seeded store copied `times - 1` more times in SQL (ids suffixed `-rK`), for a large
    store in seconds instead of the seeder's hours (the JSON's references still name the originals; the
    plans, not the resources, are what this is for)."""
    with engine.begin() as connection:
        top = int(connection.execute(select(func.max(R.c.rid))).scalar_one())
        for k in range(1, times):
            values = {"offset": k * top, "suffix": f"-r{k}", "top": top}
            for step in COPY_STEPS:
                connection.execute(text(step), values)
        connection.execute(
            text("SELECT setval(pg_get_serial_sequence('resource', 'rid'), :top)"), {"top": times * top}
        )


def sample(engine: Engine) -> dict[str, str]:
    """The middle one of the municipality's patients (those the seed relates it to), with its family and
    given name, birth date and identifier."""
    with engine.connect() as connection:
        rid, pid = connection.execute(
            text(
                "SELECT rid, res_id FROM resource WHERE res_type = 'Patient' AND res_id IN "
                "(SELECT patient_id FROM care_relation WHERE actor_type = 'Organization' "
                "AND actor_id = :org) ORDER BY rid OFFSET (SELECT count(DISTINCT patient_id) / 2 "
                "FROM care_relation WHERE actor_type = 'Organization' AND actor_id = :org) LIMIT 1"
            ),
            {"org": f"org-{ORGANIZATION}"},
        ).one()
        values = {"rid": str(rid), "patient": str(pid)}
        for param in ("family", "given"):
            values[param] = str(
                connection.execute(
                    text("SELECT value_folded FROM idx_string WHERE rid = :rid AND param = :param"),
                    {"rid": rid, "param": param},
                ).scalar_one()
            )
        system, code = connection.execute(
            text("SELECT system, code FROM idx_token WHERE rid = :rid AND param = 'identifier'"), {"rid": rid}
        ).one()
        values["identifier"] = f"{system}|{code}"
        values["gender"] = str(
            connection.execute(
                text("SELECT code FROM idx_token WHERE rid = :rid AND param = 'gender'"), {"rid": rid}
            ).scalar_one()
        )
        values["task_code"] = str(
            connection.execute(
                text(
                    "SELECT t.code FROM idx_reference r JOIN idx_token t "
                    "ON t.rid = r.rid AND t.param = 'code' "
                    "WHERE r.res_type = 'Task' AND r.param = 'patient' AND r.target_id = :pid LIMIT 1"
                ),
                {"pid": pid},
            ).scalar_one()
        )
        values["birthdate"] = str(
            connection.execute(
                text("SELECT content::jsonb ->> 'birthDate' FROM resource WHERE rid = :rid"), {"rid": rid}
            ).scalar_one()
        )
    return values


def prepare(engine: Engine, services: Services, size: int, base: int = 0) -> int:
    """Seed the schema when it is empty (about `size` resources: `base` of them seeded, copied to `size`
    by `replicate`; no `base`: all seeded) and ANALYZE it; how many resources it holds."""
    with engine.connect() as connection:
        held = connection.execute(select(func.count()).select_from(R)).scalar_one()
    if not held:
        seeded = min(size, base or size)
        # 6 resources per patient: bench/seed.py's 4 (for `count`) and a Communication and an AuditEvent
        seed(services, 0, extra(ORGANIZATIONS + (seeded - ORGANIZATIONS) * 4 // 6))
        if seeded < size:
            replicate(engine, -(-size // seeded))
    with engine.begin() as connection:
        # this schema's tables only (a bare ANALYZE takes every schema of the database)
        connection.execute(text(f"ANALYZE {', '.join(t.name for t in Base.metadata.sorted_tables)}"))
        return int(connection.execute(select(func.count()).select_from(R)).scalar_one())
