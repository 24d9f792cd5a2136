"""Starting and watching real server processes for the benchmarks: a free port, waiting until the
server answers, and the memory of its worker processes."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} never became ready")


def _statuses() -> dict[int, dict[str, str]]:
    """/proc/N/status of every process, as fields, by pid."""
    found = {}
    for process in Path("/proc").glob("[0-9]*"):
        try:
            status = (process / "status").read_bytes().decode(errors="replace")  # a name cut mid-character
        except OSError:
            continue
        found[int(process.name)] = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return found


def _kib(fields: dict[str, str], name: str) -> int:
    return int(fields.get(name, "0 kB").split()[0])


def _children(pid: int) -> list[dict[str, str]]:
    """/proc/N/status of each child of `pid` (a uvicorn server's worker processes), as fields."""
    return [fields for fields in _statuses().values() if fields.get("PPid", "").strip() == str(pid)]


def worker_rss(pid: int) -> list[float]:
    """Resident memory of the server's worker processes (its children), in MB."""
    return [int(fields["VmRSS"].split()[0]) / 1024 for fields in _children(pid)]


def server_rss(pid: int) -> float:
    """Resident memory of a server in all, in MiB: its worker processes, or itself when it has none (one
    worker runs in the server's own process)."""
    workers = worker_rss(pid)
    if workers:
        return sum(workers)
    return _kib(_statuses().get(pid, {}), "VmRSS") / 1024


def worker_peak_rss(pid: int) -> list[float]:
    """The peak resident memory of each of the server's worker processes so far (VmHWM), in MiB."""
    return [int(fields["VmHWM"].split()[0]) / 1024 for fields in _children(pid)]


class PrivatePeak:
    """The largest private resident memory (`RssAnon`: what a process holds itself, without the file
    pages it maps, such as SQLite's memory-mapped database) of the processes doing a run's work, reached
    while the block ran, sampled every SAMPLE_SECONDS, in MiB: the processes under this one when there
    are any (a server's, import worker processes), else this process. Linux only: elsewhere 0."""

    SAMPLE_SECONDS = 0.5

    def __init__(self) -> None:
        self.own = 0.0
        self.below = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    @property
    def mib(self) -> float:
        return self.below or self.own

    def __enter__(self) -> PrivatePeak:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.SAMPLE_SECONDS):
            self._sample()

    def _sample(self) -> None:
        statuses = _statuses()
        me = os.getpid()
        ours = {me}
        grown = True
        while grown:  # the processes under this one, however deep
            below = {pid for pid, fields in statuses.items() if int(fields.get("PPid", "0")) in ours}
            grown = not below <= ours
            ours |= below
        private = {pid: _kib(statuses[pid], "RssAnon") / 1024 for pid in ours if pid in statuses}
        self.own = max(self.own, private.pop(me, 0.0))
        self.below = max(self.below, *private.values(), 0.0)


def _tree(pid: int) -> list[int]:
    """`pid` and every process under it, however deep."""
    parents = {child: int(fields.get("PPid", "0")) for child, fields in _statuses().items()}
    ours = [pid]
    for process in ours:
        ours.extend(child for child, parent in parents.items() if parent == process)
    return ours


def private_memory(pid: int) -> list[tuple[int, float, float]]:
    """Each process of a server (it and its workers): pid, private memory (USS: Private_Clean +
    Private_Dirty of /proc/PID/smaps_rollup, what the process alone holds) and resident memory (RSS), in
    MiB. Linux only: elsewhere, and for processes that ended meanwhile, nothing."""
    found = []
    for process in _tree(pid):
        try:
            rollup = Path(f"/proc/{process}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in rollup.splitlines()[1:] if ":" in line)
        private = _kib(fields, "Private_Clean") + _kib(fields, "Private_Dirty")
        found.append((process, private / 1024, _kib(fields, "Rss") / 1024))
    return found
