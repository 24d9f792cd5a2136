"""Benchmark of the Beställningsportalen adapter: new and replayed (unchanged) orders per second, through
the REST entrance (in-process ASGI, batches of `--batch` orders) and the CLI path (a streamed JSON Lines
file), on the database at DATABASE_URL (default: a fresh SQLite file), with the peak RSS.

    python -m bench.adapters_orders --orders 10000            # the issue's figures
    python -m bench.adapters_orders --orders 50 --batch 25    # a smoke run

Each order writes ~12 resources (Binary, Patient, Organizations, Practitioners, roles, DeviceRequest,
Observation, CarePlan, Task, Provenance). Figures go to docs/performance.md by hand, with the machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from rich.progress import Progress

from gateway.adapters.bestallningsportalen.cli import import_files
from gateway.adapters.mapping import luhn_digit
from gateway.app import create_app
from gateway.config import Settings
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine


def person(n: int) -> str:
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


def rest(svc: Services, items: list[dict[str, Any]], batch: int) -> tuple[float, int]:
    rejected = 0
    with TestClient(create_app(svc.settings, services=svc)) as client:
        started = time.perf_counter()
        for i in range(0, len(items), batch):
            body = "\n".join(json.dumps(o) for o in items[i : i + batch])
            answer = client.post(
                "/adapters/bestallningsportalen/orders",
                content=body,
                headers={"Content-Type": "application/x-ndjson"},
            ).json()
            rejected += sum(1 for e in answer["entry"] if e["response"]["status"][:3] not in ("200", "201"))
        return time.perf_counter() - started, rejected


def cli(svc: Services, path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    with Progress(disable=True) as progress:
        tally = asyncio.run(import_files(svc, [path], progress))
    return time.perf_counter() - started, tally["rejected"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = Settings.from_env().database_url
        if "DATABASE_URL" not in __import__("os").environ:
            url = f"sqlite:///{tmp}/bench.db"
        settings = Settings(database_url=url, auth=False)
        engine = make_engine(url)
        migrate.upgrade(engine)
        svc = Services.build(settings, engine=engine)
        rest_items = list(orders(args.orders, f"BENCH-R{int(time.time())}"))
        path = Path(tmp) / "orders.ndjson"
        with path.open("w", encoding="utf-8") as handle:
            for order in orders(args.orders, f"BENCH-C{int(time.time())}"):
                handle.write(json.dumps(order) + "\n")
        print(f"{args.orders} orders on {engine.url.render_as_string(hide_password=True)}")
        runs: list[tuple[str, Callable[[], tuple[float, int]]]] = [
            ("REST new", lambda: rest(svc, rest_items, args.batch)),
            ("REST replayed", lambda: rest(svc, rest_items, args.batch)),
            ("CLI new", lambda: cli(svc, path)),
            ("CLI replayed", lambda: cli(svc, path)),
        ]
        for label, run in runs:
            seconds, rejected = run()
            print(f"{label:15} {args.orders / seconds:9.1f} orders/s  ({seconds:.1f} s, {rejected} rejected)")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS {peak:.0f} MiB")
        engine.dispose()


if __name__ == "__main__":
    main()
