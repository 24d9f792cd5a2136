"""Starting and watching real server processes for the benchmarks: a free port, waiting until the
server answers, and the memory of its worker processes."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Memory:
    """One process's memory, MiB. `rss`: resident, counting the file pages it maps (SQLite's memory-mapped
    database, the shared libraries); `private`: its unique set (USS, Private_Clean + Private_Dirty of
    /proc/PID/smaps_rollup), what ending it would free, with the file pages only it maps (the database
    pages only this worker read); `anonymous`: its own heap and stacks (RssAnon), no file pages at all."""

    pid: int
    rss: float
    private: float
    anonymous: float

    def __str__(self) -> str:
        return f"{self.rss:.0f} RSS / {self.private:.0f} private / {self.anonymous:.0f} anonymous"


def memory(pid: int) -> Memory | None:
    """`pid`'s memory (None when it is gone or Linux's smaps_rollup is not there)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="ascii").splitlines()
    except OSError:
        return None
    fields = {name: int(value.split()[0]) for name, _, value in (line.partition(":") for line in lines[1:])}
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return Memory(pid, fields.get("Rss", 0) / 1024, private / 1024, fields.get("Anonymous", 0) / 1024)


def worker_memory(pid: int) -> list[Memory]:
    """The memory of each of a server's worker processes: its children that run the app (uvicorn's
    multiprocessing helper, a few MiB, left out), or itself when it has none (one worker runs in the
    server's own process)."""
    children = [int(fields["Pid"]) for fields in _children(pid) if "spawn_main" in _command(fields)]
    found = [memory(child) for child in children or [pid]]
    return [each for each in found if each is not None]


def _command(fields: dict[str, str]) -> str:
    try:
        return Path(f"/proc/{fields['Pid'].strip()}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


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


def tree_memory(pid: int) -> list[Memory]:
    """The memory of `pid` and every process under it (the server, its workers, uvicorn's helper): the
    processes that ended meanwhile, and every one where Linux's smaps_rollup is not there, left out."""
    found = [memory(process) for process in _tree(pid)]
    return [each for each in found if each is not None]
