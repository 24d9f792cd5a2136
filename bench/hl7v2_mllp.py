"""HL7 v2 over MLLP, end to end (parse → map → store → ACK), beside the bare hl7apy parse rate.

    python bench/hl7v2_mllp.py --messages 200 --connections 1 8 [--database-url URL]

Starts the listener in this process on a free port against a fresh SQLite file (or DATABASE_URL / the
given URL, in a fresh PostgreSQL schema), sends A01+A03 pairs for distinct fictitious patients over
N concurrent connections, and prints messages/s and the p95 ACK latency per connection count, and the
bare parse rate of the same messages measured in the same run."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from gateway.adapters.hl7v2.message import parse
from gateway.adapters.hl7v2.mllp import Listener, ListenerSettings, frame
from gateway.adapters.mapping import luhn_digit
from gateway.config import Settings
from gateway.services import Services
from gateway.store import migrate
from gateway.store.database import make_engine


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
    import socket

    with socket.create_connection(("127.0.0.1", port)) as sock:
        for message in batch:
            started = time.perf_counter()
            sock.sendall(frame(message))
            answer = b""
            while not answer.endswith(b"\x1c\r"):
                answer += sock.recv(65536)
            latencies.append(time.perf_counter() - started)
            assert b"MSA|AA" in answer, answer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    schema = ""
    if args.database_url.startswith("postgresql"):
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with create_engine(args.database_url).begin() as connection:
            connection.execute(text(f"CREATE SCHEMA {schema}"))
        url = args.database_url
    else:
        url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    engine = make_engine(url, schema)
    migrate.upgrade(engine)
    svc = Services.build(Settings(database_url=url, database_schema=schema, auth=False), engine=engine)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    listener = Listener(svc, ListenerSettings(port=0))
    asyncio.run_coroutine_threadsafe(listener.start(), loop).result()
    sample = messages(args.messages, "parse")
    started = time.perf_counter()
    for message in sample:
        parse(message)
    parse_rate = len(sample) / (time.perf_counter() - started)
    print(f"database {engine.url.render_as_string(hide_password=True)}")
    print(f"bare hl7apy parse: {parse_rate:.0f} messages/s (one core)")
    for connections in args.connections:
        batch = messages(args.messages, f"c{connections}-{uuid.uuid4().hex[:6]}")
        latencies: list[float] = []
        threads = [
            threading.Thread(target=client, args=(listener.port, batch[i::connections], latencies))
            for i in range(connections)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        p95 = statistics.quantiles(latencies, n=20)[-1] * 1000 if len(latencies) > 1 else 0.0
        print(
            f"{connections} connection(s): {len(batch) / elapsed:.0f} messages/s end to end, "
            f"p95 ACK latency {p95:.0f} ms ({len(batch)} messages)"
        )
    loop.call_soon_threadsafe(loop.stop)
    engine.dispose()
    if schema:
        with create_engine(args.database_url).begin() as connection:
            connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))


if __name__ == "__main__":
    main()
