"""A closed-loop load generator: C concurrent clients (asyncio + httpx keep-alive) each sending the
next request as soon as the previous answered, for a fixed time. It runs on the same 2 cores as the
server, so every figure is a lower bound for the server alone."""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

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


async def _run(base: str, name: str, make: Request, clients: int, seconds: float) -> Result:
    latencies: list[float] = []
    errors = 0
    counter = itertools.count()
    deadline = time.perf_counter() + seconds
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30, headers=headers) as client:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                method, path, body = make(next(counter))
                start = time.perf_counter()
                response = await client.request(method, path, content=body)
                latencies.append(time.perf_counter() - start)
                if response.status_code >= 400:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies) or [0.0]
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return Result(name, len(latencies), errors, elapsed, statistics.median(ordered) * 1000, p95 * 1000)


def measure(base: str, name: str, make: Request, clients: int, seconds: float, warmup: float = 1.0) -> Result:
    asyncio.run(_run(base, name, make, clients, warmup))
    return asyncio.run(_run(base, name, make, clients, seconds))
