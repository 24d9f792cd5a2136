"""bench/wrk_output.py reads wrk's output as wrk 4.1 (Debian's package) prints it: the fixtures
(tests/unit/wrk/) are captured runs of bench/wrk/read_patient.lua against the ceiling app (bench/bare.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.wrk_output import parse

FIXTURES = Path(__file__).parent / "wrk"
ANSWERED = (FIXTURES / "read_200.txt").read_text(encoding="utf-8")
NOT_FOUND = (FIXTURES / "read_404.txt").read_text(encoding="utf-8")


def test_parses_rate_and_percentiles_of_a_run_answered_200() -> None:
    result = parse(ANSWERED)
    assert result.requests == 6133
    assert result.per_second == pytest.approx(3031.66)
    assert (result.p50_ms, result.p95_ms, result.p99_ms) == pytest.approx((2.252, 12.238, 37.352))
    assert result.non_2xx == 0 and result.socket_errors == 0 and not result.failed


def test_counts_non_2xx_answers_and_fails_the_run() -> None:
    result = parse(NOT_FOUND)
    assert result.non_2xx == result.requests == 8061
    assert result.failed


def test_refuses_output_without_the_scripts_result_line() -> None:
    without = "\n".join(line for line in ANSWERED.splitlines() if not line.startswith("wrk-result"))
    with pytest.raises(ValueError, match="wrk-result"):
        parse(without)


def test_counts_socket_errors() -> None:
    with_errors = ANSWERED.replace(
        "Requests/sec:", "  Socket errors: connect 0, read 2, write 0, timeout 3\nRequests/sec:"
    )
    result = parse(with_errors)
    assert result.socket_errors == 5 and result.failed
