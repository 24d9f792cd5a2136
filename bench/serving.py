"""Starting and watching real server processes for the benchmarks: a free port, waiting until the
server answers, and the memory of its worker processes."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

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


def _children(pid: int) -> list[dict[str, str]]:
    """/proc/N/status of each child of `pid` (a uvicorn server's worker processes), as fields."""
    found = []
    for child in Path("/proc").glob("[0-9]*"):
        try:
            status = (child / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(pid):
            found.append(fields)
    return found


def worker_rss(pid: int) -> list[float]:
    """Resident memory of the server's worker processes (its children), in MB."""
    return [int(fields["VmRSS"].split()[0]) / 1024 for fields in _children(pid)]


def worker_peak_rss(pid: int) -> list[float]:
    """The peak resident memory of each of the server's worker processes so far (VmHWM), in MiB."""
    return [int(fields["VmHWM"].split()[0]) / 1024 for fields in _children(pid)]
