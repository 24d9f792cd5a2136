"""What the adapter benchmarks share: a fresh database (a SQLite file, or a fresh schema on the
PostgreSQL server at DATABASE_URL), posting batches through the REST entrance of a real `gateway serve`
(BENCH_WORKERS worker processes, default 2) from BENCH_ADAPTER_CLIENTS concurrent HTTP clients (default
2), timing each run, with the peak RSS and peak private memory (bench/serving.py). Each benchmark ends
with one `RESULT {json}` line that bench/run.py reads."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, text

from bench.serving import PrivatePeak, free_port, wait_ready, worker_peak_rss
from gateway.config import Settings
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine

WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
CLIENTS = int(os.environ.get("BENCH_ADAPTER_CLIENTS", "2"))
ANALYZE_SECONDS = 15  # PostgreSQL: how often the tables' statistics are refreshed during a run
GATEWAY = str(Path(sys.executable).parent / "gateway")


@dataclass(frozen=True)
class Measured:
    seconds: float
    rejected: int  # inputs not answered 200/201
    peak_rss_mib: float  # of the process(es) that did the work


Run = Callable[[], Measured]


def own_peak_rss() -> float:
    """This process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Bench:
    svc: Services
    engine: Engine
    url: str
    schema: str

    @classmethod
    @contextmanager
    def open(cls, tmp: str) -> Iterator[Bench]:
        """A fresh SQLite file in `tmp`, or a fresh schema (dropped afterwards) on the PostgreSQL server at
        DATABASE_URL; auth off (its cost is measured by bench/run.py), audit on as in production unless
        GATEWAY_AUDIT=off."""
        url = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp}/bench.db"
        schema = f"bench_{uuid.uuid4().hex[:8]}" if url.startswith("postgresql") else ""
        if schema:
            with create_engine(url).begin() as connection:
                connection.execute(text(f"CREATE SCHEMA {schema}"))
        engine = make_engine(url, schema)
        try:
            migrate.upgrade(engine)
            # As `gateway import` builds them: a full audit queue makes the CLI runs wait for its writer.
            # GATEWAY_AUDIT=off (as for the servers, which read it): the runs without the audit trail,
            # to tell its share.
            audit = os.environ.get("GATEWAY_AUDIT", "on") != "off"
            settings = Settings(database_url=url, database_schema=schema, auth=False, audit=audit).for_batch()
            yield cls(Services.build(settings, engine=engine), engine, url, schema)
        finally:
            engine.dispose()
            if schema:
                with create_engine(url).begin() as connection:
                    connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))

    def post(self, path: str, bodies: Iterable[str], content_type: str) -> Measured:
        """POST each body to the adapter entrance of a `gateway serve` started for this run, from CLIENTS
        concurrent clients. Timed from the first request until the server has stopped, which it does
        only when every AuditEvent it queued is stored: they are part of each input's cost."""
        port = free_port()
        env = dict(os.environ, DATABASE_URL=self.url, DATABASE_SCHEMA=self.schema, GATEWAY_AUTH="off")
        command = [GATEWAY, "serve", "--port", str(port), "--workers", str(WORKERS), "--no-upgrade"]
        server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}/readyz", server)
            started = time.perf_counter()
            rejected = _post_all(f"{base}{path}", iter(bodies), content_type)
            peak = max(worker_peak_rss(server.pid), default=0.0)
            server.terminate()
            server.wait(600)
            return Measured(time.perf_counter() - started, rejected, peak)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()

    @contextmanager
    def analyzing(self) -> Iterator[None]:
        """PostgreSQL: ANALYZE the tables every ANALYZE_SECONDS while a run goes on, as autovacuum does
        in a deployment (PostgreSQL's default). The benchmark machine's server runs with autovacuum off,
        and on tables grown from empty without statistics the planner takes an identifier or reference
        lookup of many values for a scan (~20 ms instead of ~1 ms at 300k index rows)."""
        if not self.schema:
            yield
            return
        stop = threading.Event()

        def analyze() -> None:
            while not stop.wait(ANALYZE_SECONDS):
                with self.engine.connect() as connection:
                    connection.execute(text("ANALYZE"))
                    connection.commit()

        thread = threading.Thread(target=analyze, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def flush(self) -> None:
        """Wait for the audit writer: its records are part of each input's cost."""
        if self.svc.audit is not None:
            self.svc.audit.flush()

    def report(self, count: int, unit: str, runs: list[tuple[str, Run]]) -> None:
        database = self.engine.url.render_as_string(hide_password=True)
        print(f"{count} {unit} on {database}", flush=True)
        results = {}
        for label, run in runs:
            with self.analyzing(), PrivatePeak() as private:
                measured = run()
            results[label] = {
                "per_second": count / measured.seconds,
                "seconds": measured.seconds,
                "rejected": measured.rejected,
                "peak_rss_mib": round(measured.peak_rss_mib),
                "peak_private_mib": round(private.mib),
            }
            print(
                f"{label:18} {count / measured.seconds:9.1f} {unit}/s  ({measured.seconds:.1f} s, "
                f"{measured.rejected} rejected, peak RSS {measured.peak_rss_mib:.0f} MiB, "
                f"private {private.mib:.0f} MiB)",
                flush=True,
            )
        summary = {"count": count, "unit": unit, "database": self.engine.dialect.name, "runs": results}
        summary |= {"workers": WORKERS, "clients": CLIENTS, "audit": self.svc.settings.audit}
        print("RESULT " + json.dumps(summary))


def _post_all(url: str, bodies: Iterator[str], content_type: str) -> int:
    """Send every body from CLIENTS threads, each taking the next body when its answer is in; the
    entries not answered 200 or 201."""
    lock = threading.Lock()
    rejected: list[int] = []
    failures: list[BaseException] = []

    def client() -> None:
        with httpx.Client(timeout=3600) as http:
            while True:
                with lock:
                    body = next(bodies, None)
                if body is None or failures:
                    return
                try:
                    answer = http.post(url, content=body.encode(), headers={"Content-Type": content_type})
                    answer.raise_for_status()
                except httpx.HTTPError as error:
                    failures.append(error)
                    return
                entries = answer.json()["entry"]
                rejected.append(sum(1 for e in entries if e["response"]["status"][:3] not in ("200", "201")))

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return sum(rejected)
