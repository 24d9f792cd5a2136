"""The log format of `gateway serve`: one JSON object a line for machines, plain text on a terminal.

GATEWAY_LOG_FORMAT: `json`, `text`, or `auto` (the default: text when stderr is a terminal, else JSON).
Both formats carry the same record: timestamp, level, logger, message, and a request line's fields
(`requests.py`). In JSON an exception is its type and its stack's frames (file, line, function), never its
message, which may quote what a client sent; the text format, for a developer at a terminal, keeps it.
uvicorn's own loggers go through the same handler (its access log stays off: `gateway.requests` replaces
it)."""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

import orjson

FORMATS = ("auto", "json", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted, not the stream it was when logging was
    configured (a stream replaced and closed since, e.g. a test runner's capture, is never written to)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def chosen(setting: str, stream: Any = None) -> str:
    """`json` or `text`: as set, or for `auto` as the stream (stderr) is a terminal or not."""
    if setting in ("json", "text"):
        return setting
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return "text" if callable(isatty) and isatty() else "json"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: timestamp (UTC), level, logger, message, and a request line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            document.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            kind, _value, trace = record.exc_info
            document["error"] = kind.__qualname__
            document["stack"] = [
                f"{frame.filename}:{frame.lineno} {frame.name}" for frame in traceback.extract_tb(trace)
            ]
        return orjson.dumps(document, default=str).decode()


class TextFormatter(logging.Formatter):
    """The developer's line: `time LEVEL logger: message key=value …`, tracebacks as Python prints them."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line += "".join(f" {key}={value}" for key, value in fields.items() if key != "method")
        return line


def config(setting: str, level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` for the gateway and uvicorn alike (uvicorn's `log_config`, applied
    in every worker process too)."""
    formatter = (
        "gateway.telemetry.logs.JsonFormatter"
        if chosen(setting) == "json"
        else ("gateway.telemetry.logs.TextFormatter")
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"gateway": {"()": formatter}},
        "handlers": {"stderr": {"class": "gateway.telemetry.logs.StderrHandler", "formatter": "gateway"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def configure(setting: str, level: str = "INFO") -> None:
    """Configure this process's logging (the `serve` command, before uvicorn starts)."""
    import logging.config

    logging.config.dictConfig(config(setting, level))
    quick()


def quick() -> None:
    """Records without the thread's and process's names, which no format here shows and which cost a
    good part of every record (one per request)."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
