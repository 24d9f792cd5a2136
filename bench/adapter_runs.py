"""What the adapter benchmarks share: a fresh database (a SQLite file, or a fresh schema on the
PostgreSQL server at DATABASE_URL), posting batches through the REST entrance (in-process ASGI), timing
each run, and the peak RSS. Each benchmark ends with one `RESULT {json}` line that bench/run.py reads."""

from __future__ import annotations

import json
import os
import resource
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text

from gateway.app import create_app
from gateway.config import Settings
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine

Run = Callable[[], tuple[float, int]]  # → (seconds, inputs rejected)


@dataclass
class Bench:
    svc: Services
    engine: Engine

    @classmethod
    @contextmanager
    def open(cls, tmp: str) -> Iterator[Bench]:
        """A fresh SQLite file in `tmp`, or a fresh schema (dropped afterwards) on the PostgreSQL server at
        DATABASE_URL; auth off (its cost is measured by bench/run.py), audit on as in production."""
        url = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp}/bench.db"
        schema = f"bench_{uuid.uuid4().hex[:8]}" if url.startswith("postgresql") else ""
        if schema:
            with create_engine(url).begin() as connection:
                connection.execute(text(f"CREATE SCHEMA {schema}"))
        engine = make_engine(url, schema)
        try:
            migrate.upgrade(engine)
            settings = Settings(database_url=url, database_schema=schema, auth=False)
            yield cls(Services.build(settings, engine=engine), engine)
        finally:
            engine.dispose()
            if schema:
                with create_engine(url).begin() as connection:
                    connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))

    def post(self, path: str, bodies: Iterable[str], content_type: str) -> tuple[float, int]:
        """POST each body to the adapter entrance; seconds taken and entries not answered 200/201."""
        rejected = 0
        with TestClient(create_app(self.svc.settings, services=self.svc)) as client:
            started = time.perf_counter()
            for body in bodies:
                answer = client.post(path, content=body.encode(), headers={"Content-Type": content_type})
                answer.raise_for_status()
                entries = answer.json()["entry"]
                rejected += sum(1 for e in entries if e["response"]["status"][:3] not in ("200", "201"))
            self.flush()
            return time.perf_counter() - started, rejected

    def flush(self) -> None:
        """Wait for the audit writer: its records are part of each input's cost."""
        if self.svc.audit is not None:
            self.svc.audit.flush()

    def report(self, count: int, unit: str, runs: list[tuple[str, Run]]) -> None:
        database = self.engine.url.render_as_string(hide_password=True)
        print(f"{count} {unit} on {database}", flush=True)
        results = {}
        for label, run in runs:
            seconds, rejected = run()
            results[label] = {"per_second": count / seconds, "seconds": seconds, "rejected": rejected}
            print(
                f"{label:18} {count / seconds:9.1f} {unit}/s  ({seconds:.1f} s, {rejected} rejected)",
                flush=True,
            )
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:.0f} MiB")
        summary = {"count": count, "unit": unit, "database": self.engine.dialect.name, "runs": results}
        print("RESULT " + json.dumps(summary | {"peak_rss_mib": round(peak)}))
