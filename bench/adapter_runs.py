"""What the adapter benchmarks share: a fresh database, posting batches through the REST entrance
(in-process ASGI), timing a run, and the peak RSS."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastapi.testclient import TestClient
from sqlalchemy import Engine

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
    def open(cls, tmp: str) -> Bench:
        """DATABASE_URL when set (an empty PostgreSQL database), else a fresh SQLite file in `tmp`;
        auth off (the token check is measured by bench/run.py), audit on as in production."""
        url = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp}/bench.db"
        engine = make_engine(url)
        migrate.upgrade(engine)
        return cls(Services.build(Settings(database_url=url, auth=False), engine=engine), engine)

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
        print(f"{count} {unit} on {self.engine.url.render_as_string(hide_password=True)}")
        for label, run in runs:
            seconds, rejected = run()
            print(f"{label:18} {count / seconds:9.1f} {unit}/s  ({seconds:.1f} s, {rejected} rejected)")
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        self.engine.dispose()
