"""The export worker: takes a job (gateway/export/jobs.py), reads what it exports as the client that asked
for it (the policy's visibility and masking in its queries, as that client's searches; `_typeFilter`
through the search engine's own planner), and stores the output in chunks, each in one transaction with
the job's progress, its lease's renewal and the AuditEvents of the patients it first names (one per
patient and export: the patient's access log, `AuditEvent?patient=…`, shows the export). A worker that
dies leaves its lease to expire; the next one goes on from the last chunk stored. It also deletes expired
jobs and their output.

Runs in `gateway serve` (a thread, every GATEWAY_EXPORT_POLL_SECONDS) and as `gateway export run-once`."""

from __future__ import annotations

import copy
import logging
import threading
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import ColumnElement, and_, false, or_, select, true
from sqlalchemy.exc import OperationalError

from gateway.export import jobs
from gateway.export.jobs import DONE, FAILED, Job
from gateway.export.parameters import PATIENT, ExportParameters
from gateway.hooks import AccessRecord, Principal, RequestContext, patients_of
from gateway.model.types import dumps, loads
from gateway.periodic import Periodic
from gateway.pipeline import UnitOfWork
from gateway.schedule.lease import holder_name
from gateway.search.dates import utc_now
from gateway.search.everything import REF, compartment
from gateway.search.query import local_reference
from gateway.security.store import ClientStatus, client_status
from gateway.services import Services
from gateway.store.repository import R
from gateway.store.visibility import Visibility

log = logging.getLogger("gateway.export")
OPERATION = "export"


class LeaseLost(Exception):
    """The job was cancelled, expired or taken over while this worker made it."""


class Stopping(Exception):
    """The process is shutting down: the job is left, from its last chunk, to the next worker."""


class ClientRefused(Exception):
    """The client that asked has been disabled (or deactivated) since the kick-off."""


def refused(status: ClientStatus) -> bool:
    """As token checks decide (gateway/security/revocation.py): a disabled id, or a registered client that
    is not active."""
    return status.disabled or (status.registered and not status.active)


def context_of(job: Job) -> RequestContext:
    """The client that asked, as it was at the kick-off (its organisation and scopes then)."""
    principal = Principal(
        client_id=job.client_id,
        organization=job.organization,
        person=job.person,
        scopes=frozenset(job.scopes.split()),
        purpose=job.purpose,
    )
    query = job.request.partition("?")[2] or None
    return RequestContext(
        principal=principal, base_url=job.base_url, source_address=job.source_address, query=query
    )


class Worker:
    def __init__(
        self, services: Services, worker_id: str | None = None, stopping: threading.Event | None = None
    ) -> None:
        self.services = services
        self.stopping = stopping or threading.Event()
        self.worker_id = worker_id or holder_name()
        settings = services.settings
        self.lease_seconds = max(settings.export_lease_seconds, 1.0)
        self.chunk = settings.export_chunk_resources
        self.file_resources = settings.export_file_resources
        self.retention = timedelta(hours=settings.export_retention_hours)

    # -- a pass -------------------------------------------------------------------------------------

    def run_once(self) -> int:
        """Delete what has expired, then make every job there is to take; how many were finished."""
        self.clean()
        finished = 0
        while not self.stopping.is_set() and (job := self._claim()) is not None:
            if self.run_job(job):
                finished += 1
        return finished

    def clean(self) -> int:
        engine = self.services.engine
        with engine.connect() as connection:
            found = jobs.expired(connection, utc_now())
        for job_id in found:
            with jobs.writing(engine) as connection:
                jobs.remove(connection, job_id)
        return len(found)

    def _claim(self) -> Job | None:
        return jobs.claim(self.services.engine, self.worker_id, self.lease_seconds)

    # -- one job ------------------------------------------------------------------------------------

    def run_job(self, job: Job) -> bool:
        """Make the job from where it has come to; True once it is done (False: lost or failed)."""
        try:
            self._make(job)
        except LeaseLost:
            log.info("export job lost to a cancel, an expiry or another worker")
            return False
        except ClientRefused:  # nothing more read as a client that may no longer act
            with jobs.writing(self.services.engine) as connection:
                message = "The client that asked for the export has been disabled"
                self._held(
                    connection, job, status=FAILED, message=message, lease_until=None, expires_at=utc_now()
                )
            return False
        except Stopping:  # its lease given up at once: another process goes on from the last chunk
            with jobs.writing(self.services.engine) as connection:
                self._held(connection, job, lease_until=None)
            return False
        except OperationalError:  # the database away: the lease expires and the job is taken up again
            log.exception("export job interrupted")
            return False
        except Exception:
            log.exception("export job failed")
            with jobs.writing(self.services.engine) as connection:
                message = "The export failed (see the gateway's log)"
                self._held(connection, job, status=FAILED, message=message)
            return False
        return True

    def _make(self, job: Job) -> None:
        parameters = ExportParameters.from_json(job.parameters)
        context = context_of(job)
        progress = copy.deepcopy(job.progress)
        exported = job.exported
        audited: set[str] = set()
        while progress.type_index < len(parameters.types):
            if self.stopping.is_set():
                raise Stopping
            if refused(client_status(self.services.engine, job.client_id)):
                raise ClientRefused
            res_type = parameters.types[progress.type_index]
            room = min(self.chunk, self.file_resources - progress.file_count)
            after = progress.after

            def work(uow: UnitOfWork, res_type: str = res_type, after: int = after, room: int = room) -> Any:
                return self._read(uow, parameters, res_type, after, room)

            rows = self.services.write_path.run(context, work, write=False)
            following = copy.deepcopy(progress)
            lines: list[str] = []
            records: list[AccessRecord] = []
            number, part = following.file_number, following.part
            if rows:
                lines, patients = self._lines(context, rows)
                if following.file_count == 0:
                    following.files.append({"type": res_type, "number": number, "count": 0})
                following.files[-1]["count"] += len(lines)
                following.after = int(rows[-1][0])
                following.part += 1
                following.file_count += len(lines)
                if following.file_count >= self.file_resources:
                    following.close_file()
                exported += len(lines)
                records = [self._patient_record(context, job, p) for p in patients if p not in audited]
            if len(rows) < room:  # fewer than asked for, or none: the type is done, on to the next
                following.next_type()
            with jobs.writing(self.services.engine) as connection:
                if not self._held(connection, job, progress=following.to_json(), exported=exported):
                    raise LeaseLost
                if lines:
                    jobs.add_output(connection, job.job_id, number, part, res_type, lines)
                self.services.hooks.audit.store(connection, records)
            progress = following
            audited.update(r.patients[0] for r in records)
        self._finish(job, context, parameters, exported, len(audited))

    def _finish(
        self, job: Job, context: RequestContext, parameters: ExportParameters, exported: int, patients: int
    ) -> None:
        now = utc_now()
        detail = f"${OPERATION} {exported} resources of {len(parameters.types)} types, {patients} patients"
        record = AccessRecord(OPERATION, None, [], 200, context, detail)
        with jobs.writing(self.services.engine) as connection:
            done = self._held(
                connection,
                job,
                status=DONE,
                finished_at=now,
                expires_at=now + self.retention,
                lease_until=None,
            )
            if not done:
                raise LeaseLost
            self.services.hooks.audit.store(connection, [record])

    def _held(self, connection: Any, job: Job, **values: Any) -> bool:
        return jobs.held(connection, job, self.worker_id, self.lease_seconds, **values)

    @staticmethod
    def _patient_record(context: RequestContext, job: Job, patient: str) -> AccessRecord:
        record = AccessRecord(OPERATION, None, [], 200, context, f"${OPERATION} of {job.created_at:%Y-%m-%d}")
        record.patients = [patient]
        return record

    # -- reading ------------------------------------------------------------------------------------

    def _read(
        self, uow: UnitOfWork, parameters: ExportParameters, res_type: str, after: int, limit: int
    ) -> list[Any]:
        policy = self.services.hooks.policy
        visibility = policy.visibility(uow.context)
        condition = and_(
            self._condition(uow, parameters, res_type, visibility),
            R.c.rid > after,
        )
        statement = select(R.c.rid, R.c.content).where(condition).order_by(R.c.rid).limit(limit)
        return list(uow.connection.execute(statement).all())

    def _condition(
        self, uow: UnitOfWork, parameters: ExportParameters, res_type: str, visibility: Visibility
    ) -> ColumnElement[bool]:
        """What of `res_type` the export holds: current, visible to the client, changed since `_since`,
        at Patient level in some patient's compartment, matching one of the type's `_typeFilter`s."""
        searcher = self.services.searcher
        base = uow.context.base_url
        conditions: list[ColumnElement[bool]] = [
            R.c.res_type == res_type,
            R.c.deleted == false(),
            visibility.where(R, res_type),
        ]
        if parameters.since is not None:
            conditions.append(R.c.last_updated >= parameters.since)
        if parameters.level == PATIENT and res_type != "Patient":
            members = select(REF.c.rid).where(
                REF.c.res_type == res_type,
                REF.c.param.in_(compartment().get(res_type, ())),
                REF.c.target_type == "Patient",
                local_reference(REF, searcher.planner.bases(base)),
            )
            conditions.append(R.c.rid.in_(members))
        filters = parameters.type_filters.get(res_type, [])
        if filters:
            masking = self.services.hooks.policy.masking(uow.context)
            options = []
            for query in filters:
                request = searcher.parse(res_type, parse_qsl(query, keep_blank_values=True), base)
                request.visibility, request.masking = visibility, masking
                options.append(searcher.planner.where(request))
            conditions.append(or_(false(), *options))
        return and_(true(), *conditions)

    def _lines(self, context: RequestContext, rows: list[Any]) -> tuple[list[str], list[str]]:
        """The NDJSON lines as the client may see them (masked), and the patients they concern."""
        policy = self.services.hooks.policy
        lines: list[str] = []
        patients: list[str] = []
        for _rid, content in rows:
            resource = loads(content)
            for patient in patients_of(resource):
                if patient not in patients:
                    patients.append(patient)
            lines.append(dumps(policy.mask(context, resource)) if policy.masks else str(content))
        return lines, patients


class ExportRunner(Periodic):
    """The worker of `gateway serve`: a pass every GATEWAY_EXPORT_POLL_SECONDS. Stopped, it stops after
    the chunk in progress (its job's lease given up, so another process goes on with it at once)."""

    def __init__(self, services: Services) -> None:
        super().__init__("export worker", services.settings.export_poll_seconds, log)
        self.worker = Worker(services, stopping=self.stopping)

    def round(self) -> None:
        self.worker.run_once()


def start_exporter(services: Services) -> ExportRunner | None:
    if services.settings.export_poll_seconds <= 0:
        return None
    return ExportRunner(services).start()
