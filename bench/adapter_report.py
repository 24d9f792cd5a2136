"""The adapter sections of docs/performance.md: each adapter benchmark run as its own process (so its
peak RSS is its own) on SQLite and on PostgreSQL, read from its `RESULT {json}` line.

Environment: BENCH_ORDERS (orders, default 10000), BENCH_ROWS (register rows, default 100000),
BENCH_MESSAGES (HL7 v2 messages, default 400)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

ORDERS = int(os.environ.get("BENCH_ORDERS", "10000"))
ROWS = int(os.environ.get("BENCH_ROWS", "100000"))
MESSAGES = int(os.environ.get("BENCH_MESSAGES", "400"))


def _run(module: str, args: list[str], database_url: str) -> dict[str, object] | None:
    env = dict(os.environ, DATABASE_URL=database_url)
    print(f"{module} {' '.join(args)} on {database_url or 'SQLite'}", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True, check=False
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, object] = json.loads(line.removeprefix("RESULT "))
            return result
    print(done.stdout[-2000:], done.stderr[-2000:], flush=True)
    return None


def _table(title: str, unit: str, results: list[dict[str, object]]) -> Iterator[str]:
    yield f"### {title}"
    yield ""
    yield f"| database | run | {unit}/s | seconds | rejected | peak RSS MiB | peak private MiB |"
    yield "|---|---|---:|---:|---:|---:|---:|"
    for result in results:
        runs = result["runs"]
        assert isinstance(runs, dict)
        for label, figures in runs.items():
            yield (
                f"| {result['database']} | {label} | {figures['per_second']:.0f} | {figures['seconds']:.1f} "
                f"| {figures['rejected']} | {figures['peak_rss_mib']} "
                f"| {figures.get('peak_private_mib', '')} |"
            )
    yield ""


CARRIED = "_Not re-run by the last `make bench` (BENCH_PARTS): the figures of an earlier run._"


def carried(document: str, heading: str) -> list[str]:
    """The section under `heading` of an earlier docs/performance.md (up to the next `## ` heading or the
    hand-written analysis), marked as carried over: for a `make bench` that leaves that part out."""
    generated = document.split("<!-- analysis -->", 1)[0].splitlines()
    if heading not in generated:
        return []
    start = generated.index(heading)
    end = next(
        (i for i in range(start + 1, len(generated)) if generated[i].startswith("## ")), len(generated)
    )
    body = [line for line in generated[start + 1 : end] if line != CARRIED]
    while body and not body[0].strip():
        body.pop(0)
    while body and not body[-1].strip():
        body.pop()
    return [heading, "", CARRIED, "", *body, ""]


def mllp_section(postgres_url: str | None) -> list[str]:
    """The HL7 v2 benchmark's own report (bench/hl7v2_mllp.py: it starts the listener process)."""
    args = ["--messages", str(MESSAGES), *(["--database-url", postgres_url] if postgres_url else [])]
    print(f"bench/hl7v2_mllp.py {' '.join(args)}", flush=True)
    done = subprocess.run(
        [sys.executable, "bench/hl7v2_mllp.py", *args], capture_output=True, text=True, check=False
    )
    shown = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode:
        shown.append(f"(failed: {done.stderr.strip().splitlines()[-1:]})")
    return [
        "## HL7 v2 over MLLP",
        "",
        f"bench/hl7v2_mllp.py, {MESSAGES} messages (A01 + A03 pairs) per run, listener in its own process,",
        "auth off, audit on; aim: end to end ≥ 0.8 × the bare parse rate × the cores.",
        "",
        "```",
        *shown,
        "```",
        "",
    ]


def adapter_sections(postgres_url: str | None) -> list[str]:
    """Markdown for the order and register adapters, on SQLite and (when given) PostgreSQL."""
    urls = ["", *([postgres_url] if postgres_url else [])]
    orders = [_run("bench.adapters_orders", ["--orders", str(ORDERS)], url) for url in urls]
    rows = [_run("bench.adapters_devices", ["--rows", str(ROWS)], url) for url in urls]
    lines = [
        "## Adapters",
        "",
        "The REST entrance: a real `gateway serve --workers 2` started for each run, fed by 2 concurrent",
        "HTTP clients (batches of 500 orders, 10,000 rows), timed until the server has stopped (it stops",
        "once every AuditEvent it queued is stored); peak RSS: its largest worker's. The CLI path: one file",
        "streamed in the benchmark's own process; peak RSS: that process's. With 2 workers: the path of",
        "`gateway import orders|devices --workers 2`, another file; peak RSS: the main process's, which",
        "reads ahead (each worker is like the one-process CLI). Auth off, audit on. PostgreSQL: the tables",
        "are analyzed every 15 s during a run, as autovacuum would (it is off on this machine's server).",
        "Peak private: the largest `RssAnon` (resident memory without mapped file pages such as SQLite's",
        "memory-mapped database, which peak RSS counts), sampled every 0.5 s, of the processes doing the",
        "work: the server's or the import workers', else the benchmark's own (which also holds what its",
        "earlier runs left cached): the figure to compare across file sizes for memory flat in file size.",
        "",
    ]
    lines += _table(
        f"Beställningsportalen orders ({ORDERS:,}, each ~8 resources)", "orders", [o for o in orders if o]
    )
    lines += _table(f"Device register rows ({ROWS:,}-row export)", "rows", [r for r in rows if r])
    return lines
