"""Reading wrk's output (bench/wrk.py, issue 21): its summary (requests, rate, non-2xx answers, socket
errors) and the `wrk-result` line bench/wrk/common.lua prints in `done` with the latency percentiles wrk's
own summary lacks (it has no p95)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m)\b", re.MULTILINE)
_NON_2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)\s*$", re.MULTILINE)
_SOCKET = re.compile(
    r"^\s*Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)\s*$", re.MULTILINE
)
_RESULT = re.compile(r"^wrk-result (.*)$", re.MULTILINE)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    per_second: float
    non_2xx: int  # wrk counts 3xx with them: none is expected from any scenario
    socket_errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def failed(self) -> bool:
        return self.non_2xx > 0 or self.socket_errors > 0


def parse(output: str) -> WrkResult:
    """One wrk run's figures from its standard output; ValueError when a part is missing (a wrk that
    printed something else, or a script without common.lua's `done`)."""
    rate, total, result = _RATE.search(output), _TOTAL.search(output), _RESULT.search(output)
    if rate is None or total is None:
        raise ValueError(f"not wrk's summary: {output[:200]!r}")
    if result is None:
        raise ValueError("no wrk-result line: the script does not end with `done = common.done`")
    fields = {key: int(value) for key, value in (item.split("=", 1) for item in result.group(1).split())}
    non_2xx = _NON_2XX.search(output)
    socket = _SOCKET.search(output)
    counted = int(non_2xx.group(1)) if non_2xx else 0
    if fields["requests"] != int(total.group(1)) or fields["status"] != counted:
        raise ValueError("wrk's summary and the wrk-result line disagree")
    return WrkResult(
        requests=fields["requests"],
        per_second=float(rate.group(1)),
        non_2xx=counted,
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
        p50_ms=fields["p50_us"] / 1000,
        p95_ms=fields["p95_us"] / 1000,
        p99_ms=fields["p99_us"] / 1000,
        max_ms=fields["max_us"] / 1000,
    )
