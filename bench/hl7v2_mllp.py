"""HL7 v2 over MLLP, end to end (parse → map → store → ACK), beside the bare hl7apy parse rate.

    python bench/hl7v2_mllp.py --messages 200 --connections 1 8 [--database-url URL]

The listener runs in a process of its own (this file with `--serve`) on a free port, so that the
clients (threads of this process) neither share its interpreter lock nor count in its CPU time. It
writes to a fresh SQLite file and, when `--database-url` names PostgreSQL, then to a fresh schema of
that database too. For each database and connection count the clients send A01+A03 pairs for distinct
fictitious patients over N concurrent connections; it prints messages/s, the p95 ACK latency and the
listener's CPU time a message (user + system time of the listener process and its parse processes,
from /proc; PostgreSQL's own processes not included). It does so for each `--parse-processes` count
(default 0 and 1: `gateway mllp --parse-processes N`). Ten messages warm each listener up first and
are not counted. Beside it: the bare hl7apy parse rate of the same messages (`parse_message` with the
adapter's options) and the adapter's whole `parse` (hl7apy plus reading the fields), both measured in
this process, one core, by `time.process_time`."""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from hl7apy.consts import VALIDATION_LEVEL  # type: ignore[import-untyped]
from hl7apy.parser import parse_message  # type: ignore[import-untyped]
from sqlalchemy import create_engine, make_url, text

from gateway.adapters.hl7v2.message import parse
from gateway.adapters.hl7v2.mllp import Listener, ListenerSettings, frame
from gateway.adapters.mapping import luhn_digit
from gateway.config import Settings
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine

AIM = 0.8  # end to end ≥ AIM × the bare parse rate × the cores used (the aim)
WARM_UP = 10


def pnr(n: int) -> str:
    """A fictitious personnummer (born 1930-1999) with a correct Luhn digit."""
    body = f"{30 + n % 70:02d}{1 + n % 12:02d}{1 + n % 28:02d}{n % 1000:03d}"
    return f"19{body}{luhn_digit(body)}"


def messages(count: int, run: str) -> list[bytes]:
    out = []
    for i in range(count // 2):
        number = pnr(i)
        for trigger, extra in (("A01", ""), ("A03", "20261127110000")):
            pv1 = ["PV1", "1", "I", "LUNG", "", "", "", "SE2321000016-D001^Läkare^Lars"] + [""] * 11
            pv1 += [f"V{run}-{i}"] + [""] * 24 + ["20261120080000", extra]
            out.append(
                "\r".join(
                    [
                        f"MSH|^~\\&|COSMIC|Karolinska^SE2321000016-KS01^L|GATEWAY|REGION|20261120081500||"
                        f"ADT^{trigger}^ADT_{trigger}|{run}-{i}-{trigger}|P|2.5|||||SWE|UNICODE UTF-8",
                        f"EVN|{trigger}|2026112{1 if trigger == 'A01' else 7}081500",
                        f"PID|1||{number}^^^&1.2.752.129.2.1.3.1&ISO^NNSWE||Testsson^Test{i}||{number[:8]}|M",
                        "|".join(pv1),
                        "ZSV|Y|0180^Stockholms stad^SE2120001100-SOC1|SE2321000016-VC01||||N",
                    ]
                ).encode()
                + b"\r"
            )
    return out


def client(port: int, batch: list[bytes], latencies: list[float]) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for message in batch:
            started = time.perf_counter()
            sock.sendall(frame(message))
            answer = b""
            while not answer.endswith(b"\x1c\r"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the listener closed the connection")
                answer += chunk
            latencies.append(time.perf_counter() - started)
            assert b"MSA|AA" in answer, answer


def rate(items: list[bytes], work: object) -> float:
    """Items a CPU second of this process (`time.process_time`): one core, whatever else runs."""
    assert callable(work)
    started = time.process_time()
    for item in items:
        work(item)
    return len(items) / (time.process_time() - started)


def bare_parse(message: bytes) -> None:
    parse_message(
        message.decode("utf-8"),
        find_groups=False,
        validation_level=VALIDATION_LEVEL.TOLERANT,
        force_validation=False,
    )


# -- the listener process ---------------------------------------------------------------------------


def serve(url: str, schema: str, parse_processes: int) -> None:
    """Run the listener on a free port; print `port N`; stop at the end of stdin."""
    engine = make_engine(url, schema)
    migrate.upgrade(engine)
    svc = Services.build(Settings(database_url=url, database_schema=schema, auth=False), engine=engine)

    async def run() -> None:
        listener = Listener(svc, ListenerSettings(port=0, parse_processes=parse_processes))
        await listener.start()
        print(f"port {listener.port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await listener.stop()
        closing = asyncio.all_tasks() - {asyncio.current_task()}
        if closing:  # the connections' own ends, before asyncio.run cancels them
            await asyncio.wait(closing, timeout=5)

    try:
        asyncio.run(run())
    finally:
        svc.close()
        engine.dispose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree = {pid}
    grown = True
    while grown:
        grown = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grown = True
    return sum(times.get(p, 0.0) for p in tree)


@dataclass
class Server:
    process: subprocess.Popen[str]
    port: int

    @classmethod
    def start(cls, url: str, schema: str, parse_processes: int) -> Server:
        command = [sys.executable, __file__, "--serve", "--database-url", url, "--schema", schema]
        command += ["--parse-processes", str(parse_processes)]
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("port "):
            raise RuntimeError(f"the listener process answered {line!r}")
        return cls(process, int(line.split()[1]))

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def load(server: Server, batch: list[bytes], connections: int) -> tuple[float, float, float]:
    """Messages/s, p95 ACK latency (ms) and listener CPU ms a message for `batch` over N connections."""
    latencies: list[float] = []
    threads = [
        threading.Thread(target=client, args=(server.port, batch[i::connections], latencies))
        for i in range(connections)
    ]
    cpu = server.cpu()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = server.cpu() - cpu
    if len(latencies) != len(batch):
        raise RuntimeError(f"{len(batch) - len(latencies)} messages were not acknowledged")
    p95 = statistics.quantiles(latencies, n=20)[-1] * 1000 if len(latencies) > 1 else 0.0
    return len(batch) / elapsed, p95, cpu / len(batch) * 1000


def database(url: str) -> tuple[str, str]:
    """(url, schema) of a fresh database: a new SQLite file, or a new schema of the PostgreSQL one."""
    if not url.startswith("postgresql"):
        return url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}", ""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with create_engine(url).begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    return url, schema


def run_database(url: str, schema: str, args: argparse.Namespace, aim: float) -> None:
    shown = make_url(url).render_as_string(hide_password=True)
    print(f"database {shown}" + (f" (schema {schema})" if schema else ""))
    try:
        for processes in args.parse_processes:
            server = Server.start(url, schema, processes)
            try:
                print(f" parse processes beside the listener: {processes}")
                load(server, messages(WARM_UP, f"w{uuid.uuid4().hex[:6]}"), 1)
                for connections in args.connections:
                    batch = messages(args.messages, f"c{connections}-{uuid.uuid4().hex[:6]}")
                    per_second, p95, cpu = load(server, batch, connections)
                    print(
                        f"  {connections} connection(s): {per_second:.0f} messages/s end to end "
                        f"({per_second / aim:.0%} of the aim), p95 ACK latency {p95:.0f} ms, "
                        f"listener CPU {cpu:.1f} ms a message ({len(batch)} messages)",
                        flush=True,
                    )
            finally:
                server.stop()
    finally:
        if schema:
            with create_engine(url).begin() as connection:
                connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--database-url", default="", help="PostgreSQL: measured beside SQLite")
    parser.add_argument(
        "--parse-processes",
        type=int,
        nargs="+",
        default=[0, 1],
        help="listener runs: parse processes beside the listener's own (gateway mllp --parse-processes)",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--schema", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.database_url, args.schema, args.parse_processes[0])
        return
    sample = messages(args.messages, "parse")
    rate(sample[:WARM_UP], parse)
    bare = rate(sample, bare_parse)
    adapter = rate(sample, parse)
    cores = len(os.sched_getaffinity(0))
    aim = AIM * bare * cores
    print(f"bare hl7apy parse: {bare:.0f} messages/s a core; the adapter's parse: {adapter:.0f} a core")
    print(f"aim: {AIM} × {bare:.0f} × {cores} cores = {aim:.0f} messages/s end to end")
    given = args.database_url
    urls = ["", given] if given.startswith("postgresql") else [given]
    for url in urls:
        run_database(*database(url), args, aim)


if __name__ == "__main__":
    main()
