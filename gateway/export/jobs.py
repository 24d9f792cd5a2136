"""Export jobs and their output in the database (tables `export_job`, `export_output`), so any process
answers a status URL and serves the files, and a worker that dies leaves a job another takes over.

A job is found only together with the client that asked for it: another client's job, an unknown one and
an expired one are alike not found. A worker holds a job by its lease (`worker_id` until `lease_until`);
every chunk it writes renews the lease in the same transaction, and is written only while the lease is
still its own (a job taken over or cancelled stops its old worker at its next chunk)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, and_, delete, func, insert, or_, select, update

from gateway.hooks import RequestContext
from gateway.search.dates import utc_now
from gateway.store.database import WRITE_OPTION, writer_turn
from gateway.store.tables import ExportJob, ExportOutput

JOB = cast(Table, ExportJob.__table__)
OUTPUT = cast(Table, ExportOutput.__table__)
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


@dataclass
class Progress:
    """Where a job has come to: the index of the type it is on, the last rid it wrote of it, the file it
    writes into (its number, how many resources it holds, its next part), and what each file holds."""

    type_index: int = 0
    after: int = 0
    file_number: int = 0
    file_count: int = 0
    part: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)  # {"type", "number", "count"}

    def close_file(self) -> None:
        """The next resources go into a new file (when the current one holds any)."""
        if self.file_count:
            self.file_number, self.file_count, self.part = self.file_number + 1, 0, 0

    def next_type(self) -> None:
        self.close_file()
        self.type_index, self.after = self.type_index + 1, 0

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> Progress:
        return cls(**json.loads(text)) if text else cls()


@dataclass
class Job:
    job_id: str
    client_id: str
    organization: str | None
    person: str | None
    scopes: str
    purpose: str
    base_url: str
    source_address: str | None
    request: str
    parameters: str
    status: str
    message: str | None
    progress: Progress
    exported: int
    transaction_time: datetime
    created_at: datetime
    finished_at: datetime | None
    expires_at: datetime
    worker_id: str | None
    lease_until: datetime | None


def new_job_id() -> str:
    """An unguessable id (256 random bits): the status and file URLs name it."""
    return secrets.token_urlsafe(32)


def new_job(context: RequestContext, request: str, parameters: str, retention_hours: float) -> Job:
    """A job waiting for a worker, for the client of `context` as it is now (its organisation, scopes)."""
    now = utc_now()
    principal = context.principal
    return Job(
        job_id=new_job_id(),
        client_id=principal.client_id,
        organization=principal.organization,
        person=principal.person,
        scopes=" ".join(sorted(principal.scopes)),
        purpose=principal.purpose,
        base_url=context.base_url,
        source_address=(context.source_address or "")[:64] or None,
        request=request,
        parameters=parameters,
        status=QUEUED,
        message=None,
        progress=Progress(),
        exported=0,
        transaction_time=now,
        created_at=now,
        finished_at=None,
        expires_at=now + timedelta(hours=retention_hours),
        worker_id=None,
        lease_until=None,
    )


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction from its start (SQLite: in turn with the other writers), committed at the end."""
    with (
        engine.connect().execution_options(**{WRITE_OPTION: True}) as connection,
        writer_turn(connection, True),
        connection.begin(),
    ):
        yield connection


def _job(row: Any) -> Job:
    values = dict(row._mapping)
    values["progress"] = Progress.from_json(values["progress"])
    return Job(**values)


def create(connection: Connection, job: Job) -> None:
    values = dict(job.__dict__)
    values["progress"] = job.progress.to_json()
    connection.execute(insert(JOB).values(**values))


def find(connection: Connection, job_id: str, client_id: str, now: datetime) -> Job | None:
    """The client's own job, unexpired; None for another client's, an unknown or an expired one."""
    row = connection.execute(
        select(JOB).where(JOB.c.job_id == job_id, JOB.c.client_id == client_id, JOB.c.expires_at > now)
    ).first()
    return _job(row) if row is not None else None


def unfinished(connection: Connection, client_id: str, now: datetime) -> int:
    """How many of the client's jobs wait or run (unexpired)."""
    statement = (
        select(func.count())
        .select_from(JOB)
        .where(JOB.c.client_id == client_id, JOB.c.status.in_([QUEUED, RUNNING]), JOB.c.expires_at > now)
    )
    return int(connection.execute(statement).scalar_one())


def remove(connection: Connection, job_id: str) -> None:
    """The job and all its output (a cancel, an expiry). The job row first: its lock waits for a worker's
    chunk being written, so the output deleted next includes that chunk (and the worker's next chunk
    finds the job gone and stops)."""
    connection.execute(delete(JOB).where(JOB.c.job_id == job_id))
    connection.execute(delete(OUTPUT).where(OUTPUT.c.job_id == job_id))


def claim(engine: Engine, worker_id: str, lease_seconds: float) -> Job | None:
    """Take the oldest job waiting, or running under an expired lease (its worker died), for this worker."""
    now = utc_now()
    free = and_(
        JOB.c.status.in_([QUEUED, RUNNING]),
        JOB.c.expires_at > now,
        or_(JOB.c.lease_until.is_(None), JOB.c.lease_until < now),
    )
    looked_for = select(JOB.c.job_id).where(free).order_by(JOB.c.created_at, JOB.c.job_id).limit(5)
    with engine.connect() as connection:  # a read first: an idle pass takes no write lock (SQLite)
        if connection.execute(looked_for).first() is None:
            return None
    with writing(engine) as connection:
        candidates = connection.execute(looked_for).all()
        for (job_id,) in candidates:
            taken = connection.execute(
                update(JOB)
                .where(JOB.c.job_id == job_id, free)
                .values(
                    worker_id=worker_id, lease_until=now + timedelta(seconds=lease_seconds), status=RUNNING
                )
            )
            if taken.rowcount == 1:
                row = connection.execute(select(JOB).where(JOB.c.job_id == job_id)).one()
                return _job(row)
    return None


def held(connection: Connection, job: Job, worker_id: str, lease_seconds: float, **values: Any) -> bool:
    """Renew the lease and set `values`, if the job is still this worker's (not cancelled, expired or
    taken over): False otherwise, and the caller's transaction is to be rolled back."""
    now = utc_now()
    changed = connection.execute(
        update(JOB)
        .where(JOB.c.job_id == job.job_id, JOB.c.worker_id == worker_id, JOB.c.status == RUNNING)
        .values(**{"lease_until": now + timedelta(seconds=lease_seconds), **values})
    )
    return changed.rowcount == 1


def add_output(
    connection: Connection, job_id: str, file_number: int, part: int, res_type: str, lines: list[str]
) -> None:
    connection.execute(
        insert(OUTPUT).values(
            job_id=job_id,
            file_number=file_number,
            part=part,
            res_type=res_type,
            count=len(lines),
            content="".join(line + "\n" for line in lines),
        )
    )


def parts(connection: Connection, job_id: str, file_number: int) -> list[int]:
    statement = (
        select(OUTPUT.c.part)
        .where(OUTPUT.c.job_id == job_id, OUTPUT.c.file_number == file_number)
        .order_by(OUTPUT.c.part)
    )
    return [int(row[0]) for row in connection.execute(statement)]


def part_content(connection: Connection, job_id: str, file_number: int, part: int) -> str | None:
    statement = select(OUTPUT.c.content).where(
        OUTPUT.c.job_id == job_id, OUTPUT.c.file_number == file_number, OUTPUT.c.part == part
    )
    found = connection.execute(statement).scalar()
    return str(found) if found is not None else None


def expired(connection: Connection, now: datetime, limit: int = 100) -> list[str]:
    statement = select(JOB.c.job_id).where(JOB.c.expires_at <= now).order_by(JOB.c.expires_at).limit(limit)
    return [str(row[0]) for row in connection.execute(statement)]


def output_rows(connection: Connection, job_id: str) -> int:
    statement = select(func.count()).select_from(OUTPUT).where(OUTPUT.c.job_id == job_id)
    return int(connection.execute(statement).scalar_one())


def select_job(job_id: str) -> Any:
    """The job's row (operators, the benchmark), whoever asked for it."""
    return select(JOB).where(JOB.c.job_id == job_id)
