"""Benchmark of the device register adapter: new and unchanged register rows per second for one CSV
export, through the REST entrance (a real `gateway serve`, bench/adapter_runs.py; `--batch` rows a
request, at most 10,000) and the CLI path (the file streamed as a full export), on DATABASE_URL (default:
a fresh SQLite file), with peak RSS.

    python -m bench.adapters_devices --rows 100000             # the issue's figures
    python -m bench.adapters_devices --rows 200 --batch 100    # a smoke run

Every other unit is on loan (`Utlånad`) to a patient, so half the rows also upsert a Patient and write a
DeviceUseStatement; each row writes its Provenance and raw row (Binary). The REST rows are MEDUSA's
units, the CLI's SESAM's (and LOKAL's with 2 worker processes), so no full export marks another run's
units missing. Run it at two sizes to see that memory stays flat in the file size (the CLI streams; each
REST request holds its own rows)."""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from rich.progress import Progress

from bench.adapter_runs import Bench, Measured, own_peak_rss
from bench.adapters_orders import person
from gateway.adapters.device_register.adapter import CLIENT
from gateway.adapters.device_register.cli import import_files, import_in_workers

HEADER = (
    "individnummer;register;serienummer;artikelnummer;benamning;iso9999;tillverkare;modell;status;"
    "agare_hsaid;patient_personnummer;forskrivning_ordernummer;utlamnad_datum;serviceintervall_manader;"
    "senaste_service;nasta_service;livslangd_ar;inkopsdatum;batteribackup;kopplad_till;leverantor_service"
)


def row(n: int, register: str) -> str:
    on_loan = n % 2 == 1
    status, patient, handed = (
        ("Utlånad", person(n).replace("-", ""), "2026-11-20") if on_loan else ("I lager", "", "")
    )
    return (
        f"{register[:3]}-{n:07d};{register};SN{n:08d};730012;Syrgaskoncentrator stationär;04 03 12;"
        f"Acme Medical;OC-5;{status};SE2321000016-MAH1;{patient};;{handed};12;2026-01-10;2027-01-10;7;"
        "2023-05-02;Nej;;"
    )


def csv_bodies(count: int, register: str, batch: int) -> Iterator[str]:
    for start in range(0, count, batch):
        lines = [row(n, register) for n in range(start, min(count, start + batch))]
        yield "\n".join([HEADER, *lines]) + "\n"


def cli(bench: Bench, path: Path) -> Measured:
    started = time.perf_counter()
    with Progress(disable=True) as progress:
        tally = asyncio.run(import_files(bench.svc, [path], "full", progress))
    bench.flush()
    return Measured(
        time.perf_counter() - started, tally["rejected"] + tally["rejected files"], own_peak_rss()
    )


def cli_workers(bench: Bench, path: Path, workers: int = 2) -> Measured:
    """`gateway import devices --mode full --workers N`'s path; its worker processes find the database in
    the environment. Peak RSS: the main process's (each worker is like the one-process CLI)."""
    os.environ |= {"DATABASE_URL": bench.url, "DATABASE_SCHEMA": bench.schema}
    started = time.perf_counter()
    context = CLIENT.context(bench.svc)
    with Progress(disable=True) as progress:
        work = import_in_workers(bench.svc, [path], "full", progress, context, None, workers)
        tally = asyncio.run(work)
    bench.flush()
    return Measured(
        time.perf_counter() - started, tally["rejected"] + tally["rejected files"], own_peak_rss()
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Bench.open(tmp) as bench:
        path, parallel = Path(tmp) / "register.csv", Path(tmp) / "register-workers.csv"
        for register, file in (("SESAM", path), ("LOKAL", parallel)):
            with file.open("w", encoding="utf-8") as handle:
                for body in csv_bodies(args.rows, register, args.rows):
                    handle.write(body)
        url, kind = "/adapters/device-register/records?mode=delta", "text/csv"
        rest = csv_bodies(args.rows, "MEDUSA", args.batch)
        bench.report(
            args.rows,
            "rows",
            [
                ("REST new", lambda: bench.post(url, rest, kind)),
                (
                    "REST unchanged",
                    lambda: bench.post(url, csv_bodies(args.rows, "MEDUSA", args.batch), kind),
                ),
                ("CLI new", lambda: cli(bench, path)),
                ("CLI unchanged", lambda: cli(bench, path)),
                ("CLI new, 2 workers", lambda: cli_workers(bench, parallel)),
                ("CLI unchanged, 2 workers", lambda: cli_workers(bench, parallel)),
            ],
        )


if __name__ == "__main__":
    main()
