"""What several benchmarks share: a migrated database of their own, and reading an ASGI request's body."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from sqlalchemy import text

from gateway.store import migrate
from gateway.store.database import make_engine


def migrated(prefix: str, name: str) -> tuple[str, str]:
    """The database URL and schema a benchmark runs on, migrated: `{prefix}_URL` and `{prefix}_SCHEMA`
    from the environment (the schema dropped and made anew), else a fresh SQLite file `{name}.db`."""
    url = os.environ.get(f"{prefix}_URL") or f"sqlite:///{tempfile.mkdtemp()}/{name}.db"
    schema = os.environ.get(f"{prefix}_SCHEMA", "")
    if schema:
        with make_engine(url, "").begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    migrate.upgrade(make_engine(url, schema))
    return url, schema


async def body_of(receive: Any) -> bytes:
    """An ASGI HTTP request's whole body, however many messages it came in."""
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body
