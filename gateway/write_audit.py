"""The write path's audit step: the access records of each interaction (`WritePath` in
gateway/pipeline.py), and what becomes of them when its unit of work commits or rolls back.

A write's records are stored in its transaction (`WritePath.run`); a read's are queued after commit,
durable before the answer leaves; a rolled-back unit of work's records carry the failure's status.
AuditEvents themselves are the gateway's own append-only records: no entrance creates or changes one.
"""

from __future__ import annotations

from gateway.errors import method_not_allowed
from gateway.hooks import AccessRecord, Hooks, combined, patients_of
from gateway.model.types import Json
from gateway.store.repository import Stored
from gateway.unit_of_work import UnitOfWork

AUDIT_EVENT = "AuditEvent"
WRITES = frozenset({"create", "update", "patch", "delete"})  # their records name the version written


def after_commit(hooks: Hooks, uow: UnitOfWork) -> None:
    try:
        if not uow.audited:  # a read's records: queued, durable before the answer leaves
            for record in combined(uow.records):
                hooks.audit.record(record)
    finally:  # what is committed is notified even when the audit queue refuses (503, fail closed)
        if uow.changes:
            hooks.notify.changed(uow.changes)


def after_rollback(hooks: Hooks, uow: UnitOfWork | None, status: int) -> None:
    if uow is None:
        return
    for record in uow.records:
        record.status = status if record.status < 400 else record.status
        record.detail = "rolled back"
    for record in combined(uow.records):
        hooks.audit.record(record)


def audit(
    uow: UnitOfWork, interaction: str, stored: Stored, status: int, resource: Json | None = None
) -> None:
    if resource is None and not stored.deleted:
        resource = stored.json()
    patients = patients_of(resource)
    record = AccessRecord(interaction, stored.res_type, [stored.res_id], status, uow.context)
    record.patients = patients
    if interaction in WRITES:
        record.versions = {f"{stored.res_type}/{stored.res_id}": stored.version_id}
        noted = uow.audit_notes.pop(f"{stored.res_type}/{stored.res_id}", None)
        if noted is not None:  # what a rule did for this write (return_reports.prescribers_as_recipients)
            record.detail, record.resources = noted[0], noted[1]
    uow.records.append(record)


def not_audit(res_type: object) -> None:
    """AuditEvents are the gateway's own append-only records: no entrance creates or changes one."""
    if res_type == AUDIT_EVENT:
        raise method_not_allowed("AuditEvents are written by the gateway only; they cannot be changed")
