"""Benchmark of the Beställningsportalen adapter: new and replayed (unchanged) orders per second, through
the REST entrance (a real `gateway serve`, see bench/adapter_runs.py; batches of `--batch` orders) and
the CLI path (a streamed JSON Lines file), on the database at DATABASE_URL (default: a fresh SQLite
file), with the peak RSS.

    python -m bench.adapters_orders --orders 10000            # the issue's figures
    python -m bench.adapters_orders --orders 50 --batch 25    # a smoke run

Each order writes ~8 resources (Binary, Patient, DeviceRequest, Observation, CarePlan, Provenance, a Task
for half of them, and the Organizations, Practitioners and roles the first time they are seen), and its
AuditEvents (one per interaction and patient). Figures go to docs/performance.md with the machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.progress import Progress

from bench.adapter_runs import Bench, Measured, own_peak_rss
from gateway.adapters.bestallningsportalen.cli import import_files, import_in_workers
from gateway.adapters.mapping import luhn_digit


def person(n: int) -> str:
    """A fictitious personnummer (born 1940-1999) with a correct Luhn digit."""
    nine = f"{40 + n % 60:02d}{1 + n % 12:02d}{1 + n % 28:02d}{n % 1000:03d}"
    return f"19{nine[:6]}-{nine[6:]}{luhn_digit(nine)}"


def orders(count: int, prefix: str) -> Iterator[dict[str, Any]]:
    for n in range(count):
        order: dict[str, Any] = {
            "ordernummer": f"{prefix}-{n:07d}",
            "version": 1,
            "ordertyp": "forskrivning",
            "status": "registrerad",
            "skapad": "2026-11-20T09:14:00+01:00",
            "patient": {"personnummer": person(n), "fornamn": "Test", "efternamn": f"Person{n}"},
            "registrerad_av": {"hsaid": f"SE2321000016-B{n % 50}", "namn": "Bea Ställare",
                               "enhet_hsaid": f"SE2321000016-U{n % 20}", "enhet_namn": f"Enhet {n % 20}"},
            "rader": [{"radnummer": 1, "artikelnummer": "730012", "benamning": "Syrgaskoncentrator",
                       "iso9999": "04 03 12", "antal": 1}],
            "uppfoljning": {"ansvarig_enhet_hsaid": f"SE2321000016-U{n % 20}",
                            "plan": [{"efter_dagar": 21, "satt": "aterbesok"}]},
            "egenvard": {"bedomning": "egenvard", "hanteras_av": ["patient"], "datum": "2026-11-18"},
        }  # fmt: skip
        if n % 2:
            order["forskrivare"] = {"hsaid": f"SE2321000016-F{n % 30}", "namn": "Frida Förskrivare",
                                    "yrke": "lakare", "enhet_hsaid": f"SE2321000016-U{n % 20}"}  # fmt: skip
        yield order


def ndjson(items: list[dict[str, Any]], batch: int) -> Iterator[str]:
    for i in range(0, len(items), batch):
        yield "\n".join(json.dumps(order) for order in items[i : i + batch])


def cli(bench: Bench, path: Path) -> Measured:
    started = time.perf_counter()
    with Progress(disable=True) as progress:
        tally = asyncio.run(import_files(bench.svc, [path], progress))
    bench.flush()
    return Measured(time.perf_counter() - started, tally["rejected"], own_peak_rss())


def cli_workers(bench: Bench, path: Path, workers: int = 2) -> Measured:
    """`gateway import orders --workers N`'s path; its worker processes find the database in the
    environment. Peak RSS: the main process's (it reads ahead; each worker is like the one-process CLI)."""
    os.environ |= {"DATABASE_URL": bench.url, "DATABASE_SCHEMA": bench.schema}
    started = time.perf_counter()
    with Progress(disable=True) as progress:
        tally = import_in_workers([path], progress, None, workers)
    return Measured(time.perf_counter() - started, tally["rejected"], own_peak_rss())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Bench.open(tmp) as bench:
        rest_items = list(orders(args.orders, "BENCH-R"))
        path, parallel = Path(tmp) / "orders.ndjson", Path(tmp) / "orders-workers.ndjson"
        for prefix, file in (("BENCH-C", path), ("BENCH-W", parallel)):
            with file.open("w", encoding="utf-8") as handle:
                for order in orders(args.orders, prefix):
                    handle.write(json.dumps(order) + "\n")
        url, kind = "/adapters/bestallningsportalen/orders", "application/x-ndjson"
        bench.report(
            args.orders,
            "orders",
            [
                ("REST new", lambda: bench.post(url, ndjson(rest_items, args.batch), kind)),
                ("REST replayed", lambda: bench.post(url, ndjson(rest_items, args.batch), kind)),
                ("CLI new", lambda: cli(bench, path)),
                ("CLI replayed", lambda: cli(bench, path)),
                ("CLI new, 2 workers", lambda: cli_workers(bench, parallel)),
                ("CLI replayed, 2 workers", lambda: cli_workers(bench, parallel)),
            ],
        )


if __name__ == "__main__":
    main()
