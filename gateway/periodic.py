"""The background threads of `gateway serve` (the scheduler, the subscription deliverer, the export worker):
a round every so many seconds until stopped; a round that fails (the database away for a moment) is logged
and the next one tries again."""

from __future__ import annotations

import logging
import threading
from typing import Self


class Periodic:
    """Subclasses say what a round is (`round`); `wake`, when given, is an event that starts the next
    round before its time (the outbox's, when a write has something to deliver)."""

    def __init__(
        self, name: str, seconds: float, log: logging.Logger, wake: threading.Event | None = None
    ) -> None:
        self.name = name
        self.seconds = seconds
        self.log = log
        self.stopping = threading.Event()
        self.wake = wake if wake is not None else self.stopping
        self.thread: threading.Thread | None = None

    def round(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self.thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the round in progress, waiting for it `timeout` seconds at most."""
        self.stopping.set()
        self.wake.set()
        if self.thread is not None:
            self.thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            if self.wake is not self.stopping:
                self.wake.clear()
            try:
                self.round()
            except Exception:
                self.log.exception("The %s's round failed; the next one tries again", self.name)
            self.wake.wait(self.seconds)
