"""bench/wrk.py's figures and its Markdown for docs/performance.md: per scenario and client the
gateway's two runs (A1, A2) beside the ceiling's (B1, B2), and the searches' rate by the store's size."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bench.serving import tree_memory
from bench.wrk_output import WrkResult


@dataclass
class Memory:
    """The largest private (USS) and resident (RSS) memory of a server's processes, all together, seen
    after its runs, in MiB."""

    private: float = 0.0
    resident: float = 0.0
    processes: int = 0
    largest: float = 0.0  # the private memory of the largest process (a worker)
    pids: set[int] = field(default_factory=set)  # every process seen: more than `processes` when
    # uvicorn's supervisor replaced a worker (one that died or missed its health ping) between runs

    @property
    def replaced(self) -> int:
        return len(self.pids) - self.processes

    def sample(self, pid: int) -> None:
        found = tree_memory(pid)
        self.pids.update(each.pid for each in found)
        self.processes = max(self.processes, len(found))
        self.private = max(self.private, sum(each.private for each in found))
        self.resident = max(self.resident, sum(each.rss for each in found))
        self.largest = max(self.largest, *(each.private for each in found), 0.0)


@dataclass
class Row:
    scenario: str
    client: str
    gateway: list[WrkResult] = field(default_factory=list)  # A1, A2
    ceiling: list[WrkResult] = field(default_factory=list)  # B1, B2
    load_before: float = 0.0
    load_after: float = 0.0

    @property
    def failed(self) -> bool:
        return any(run.failed for run in self.gateway + self.ceiling)

    def line(self) -> str:
        rates = ", ".join(f"{run.per_second:.0f}" for run in self.gateway)
        bare = ", ".join(f"{run.per_second:.0f}" for run in self.ceiling)
        worst = max(run.p95_ms for run in self.gateway)
        return f"{self.scenario} as {self.client}: {rates} req/s (p95 ≤ {worst:.1f} ms), ceiling {bare}"


@dataclass
class Series:
    patients: int
    scenario: str
    client: str
    runs: list[WrkResult]

    @property
    def failed(self) -> bool:
        return any(run.failed for run in self.runs)

    def line(self) -> str:
        rates = ", ".join(f"{run.per_second:.0f}" for run in self.runs)
        return f"{self.patients} Patients, {self.scenario} as {self.client}: {rates} req/s"


def _non_2xx(runs: list[WrkResult]) -> str:
    count = sum(run.non_2xx + run.socket_errors for run in runs)
    return f"**{count} FAILED**" if count else "0"


def machine() -> str:
    """lscpu's model, cores and threads, and the memory, in one line."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return f"{os.cpu_count()} CPUs, {platform.processor()}"
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        total = int(meminfo.readline().split()[1]) / 1024 / 1024
    return (
        f"{fields.get('CPU(s)', '?').strip()} CPUs ({model}, {fields.get('Thread(s) per core', '?').strip()} "
        f"thread(s) per core), {total:.0f} GiB RAM, {platform.system()} {platform.release()}"
    )


def report(
    rows: list[Row],
    *,
    size: int,
    patients: int,
    organisation: str,
    related: int,
    seconds: float,
    workers: int,
    load: tuple[float, float],
    memory: tuple[Memory, Memory],
) -> str:
    gateway, bare = memory
    lines = [
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; machine: {machine()}.",
        f"- Store: PostgreSQL, {size:,} resources seeded ({patients:,} Patients, each with a Task, a "
        "DeviceRequest and a Provenance), ANALYZE after seeding.",
        f"- A: `gateway serve --workers {workers}`, auth and audit on (an AuditEvent per access); B: the "
        f"bare FastAPI app (bench/bare.py), `uvicorn --workers {workers}`, "
        "answering every scenario with a "
        "fixed body. Peer: none built on this machine.",
        f"- `wrk -t1 -c8 --latency -d {seconds:g}s`, bench/wrk/*.lua, after a 2 s warm-up of each server; "
        "order A1 B1 A2 B2 per scenario and client. The municipality's client acts for "
        f"{organisation} and draws from its {related} related patients and its own Tasks.",
        f"- Load average (1 min): {load[0]:.1f} at the start, {load[1]:.1f} at the end (the 2 cores are "
        "shared with wrk, PostgreSQL and other work).",
        f"- Memory, largest after a run, all processes of a server: gateway {gateway.processes} processes "
        f"{gateway.private:.0f} MiB private (USS; the largest process {gateway.largest:.0f} MiB), "
        f"{gateway.resident:.0f} MiB RSS, {gateway.replaced} worker(s) replaced during the runs; ceiling "
        f"{bare.private:.0f} MiB private, {bare.resident:.0f} MiB RSS.",
        "",
        "| scenario | client | gateway req/s A1, A2 | p50 / p95 / p99 ms | non-2xx | ceiling req/s B1, B2 "
        "| ratio | load |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        a = ", ".join(f"{run.per_second:,.0f}" for run in row.gateway)
        b = ", ".join(f"{run.per_second:,.0f}" for run in row.ceiling)
        mean_a = sum(run.per_second for run in row.gateway) / len(row.gateway)
        mean_b = sum(run.per_second for run in row.ceiling) / len(row.ceiling)
        worst = max(row.gateway, key=lambda run: run.p95_ms)
        lines.append(
            f"| {row.scenario} | {row.client} | {a} | {worst.p50_ms:.1f} / {worst.p95_ms:.1f} / "
            f"{worst.p99_ms:.1f} | {_non_2xx(row.gateway + row.ceiling)} | {b} | {mean_a / mean_b:.3f} "
            f"| {row.load_before:.1f} → {row.load_after:.1f} |"
        )
    lines.append("")
    lines.append("p50 / p95 / p99: of the gateway's run with the larger p95. Ratio: mean A over mean B.")
    return "\n".join(lines)


def sizes_table(series: list[Series], seconds: float, load: tuple[float, float]) -> str:
    """The searches by the store's size: each size seeded anew, the gateway only, two runs each."""
    lines = [
        f"The searches by the store's size (each store seeded anew, 4 resources per Patient; gateway "
        f"only, two `wrk -d {seconds:g}s` runs each; load average {load[0]:.1f} → {load[1]:.1f}):",
        "",
        "| Patients | scenario | client | req/s run 1, 2 | p95 ms | non-2xx |",
        "|---:|---|---|---:|---:|---:|",
    ]
    for item in series:
        rates = ", ".join(f"{run.per_second:.0f}" for run in item.runs)
        worst_p95 = max(run.p95_ms for run in item.runs)
        lines.append(
            f"| {item.patients:,} | {item.scenario} | {item.client} | {rates} | {worst_p95:.1f} "
            f"| {_non_2xx(item.runs)} |"
        )
    return "\n".join(lines)
