"""Benchmarks: `make bench` runs bench.run and writes docs/performance.md."""

from pathlib import Path

# The checkout the benchmark runs from (its var/, docs/): the bench is not part of the installed gateway.
REPO_ROOT = Path(__file__).resolve().parents[1]
