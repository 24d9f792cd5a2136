"""bench/serving.py's memory of a server's workers: private memory (what only the process holds) apart
from resident memory, which also counts the pages of the files a process maps (SQLite's memory-mapped
database); measured on real processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench.serving import memory, worker_memory

HOLDS = 64  # MiB a process makes and keeps
HOLD = f"b = bytearray({HOLDS} << 20); print('ready', flush=True); import time; time.sleep(60)"
# maps a file of HOLDS MiB and reads every page: resident, yet not its own (file pages)
MAPS = (
    "import mmap, sys; f = open(sys.argv[1], 'rb'); m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ);"
    " s = sum(m[i] for i in range(0, len(m), 4096)); print('ready', flush=True); import time; time.sleep(60)"
)


def _started(*arguments: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", *arguments], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def test_private_memory_counts_what_a_process_holds_itself() -> None:
    process = _started(HOLD)
    try:
        measured = memory(process.pid)
        assert measured is not None
        assert measured.private >= HOLDS and measured.anonymous >= HOLDS
        assert measured.rss >= measured.private
        assert [each.pid for each in worker_memory(process.pid)] == [process.pid]  # no workers: itself
    finally:
        process.kill()
        process.wait()


def test_mapped_file_pages_count_in_rss_not_in_anonymous(tmp_path: Path) -> None:
    data = tmp_path / "mapped.db"
    data.write_bytes(b"x" * (HOLDS << 20))
    first, second = _started(MAPS, str(data)), _started(MAPS, str(data))  # like two workers
    try:
        time.sleep(0.1)
        for process in (first, second):
            measured = memory(process.pid)
            assert measured is not None
            assert measured.rss >= HOLDS, measured
            assert measured.anonymous < HOLDS / 2, measured
            assert measured.private < HOLDS / 2, measured  # both map the pages: neither holds them alone
    finally:
        for process in (first, second):
            process.kill()
            process.wait()
