"""Benchmarks: `make bench` runs bench.run and writes docs/performance.md."""
