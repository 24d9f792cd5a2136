"""A closed-loop load generator: C concurrent keep-alive connections, each sending the next request as
soon as the previous answered, for a fixed time. It speaks just enough HTTP/1.1 (Content-Length bodies)
over asyncio streams to cost little CPU: it runs on the same 2 cores as the server, so every figure is a
lower bound for the server alone, and a general-purpose client (httpx) was itself the ceiling."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

Request = Callable[[int], tuple[str, str, bytes | None]]  # n → (method, path, body)


@dataclass
class Result:
    name: str
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p95_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _request_bytes(host: str, method: str, path: str, body: bytes | None, extra: str) -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nAccept: application/fhir+json\r\n{extra}"
        f"Content-Type: application/fhir+json\r\nContent-Length: {len(body or b'')}\r\n\r\n"
    )
    return head.encode() + (body or b"")


async def _response(reader: asyncio.StreamReader) -> int:
    """Read one response; return its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def _run(
    base: str,
    make: Request,
    clients: int,
    seconds: float,
    name: str,
    headers: dict[str, str],
    expect: int | None,
) -> Result:
    url = urlsplit(base)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    latencies: list[float] = []
    errors = 0
    counter = itertools.count()
    deadline = time.perf_counter() + seconds
    extra = "".join(f"{key}: {value}\r\n" for key, value in headers.items())

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < deadline:
                method, path, body = make(next(counter))
                start = time.perf_counter()
                writer.write(_request_bytes(f"{host}:{port}", method, path, body, extra))
                status = await _response(reader)
                latencies.append(time.perf_counter() - start)
                if (status != expect) if expect is not None else (status >= 400):
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return Result(name, len(latencies), errors, elapsed, statistics.median(ordered) * 1000, p95 * 1000)


def measure(
    base: str,
    name: str,
    make: Request,
    clients: int,
    seconds: float,
    warmup: float = 1.0,
    headers: dict[str, str] | None = None,
    expect: int | None = None,
) -> Result:
    """`make`'s requests for `seconds` after `warmup`; an error is an answer other than `expect` (when
    given: a scenario of 404s), else one of 400 or above."""
    asyncio.run(_run(base, make, clients, warmup, name, headers or {}, expect))
    return asyncio.run(_run(base, make, clients, seconds, name, headers or {}, expect))
