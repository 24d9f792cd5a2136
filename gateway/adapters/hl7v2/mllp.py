"""The MLLP listener: asyncio, many concurrent connections, one ACK per message.

Each message arrives framed as 0x0B … 0x1C 0x0D. Bytes outside a frame are skipped (and logged), a frame
larger than the limit is answered AR and the connection closed, an idle connection is closed after the
timeout; none of it affects other connections or the listener. Accepted sending facilities (MSH-4) come
from GATEWAY_MLLP_FACILITIES (comma separated HSA-ids); with none configured every facility is accepted
and a warning is logged at start-up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from gateway.adapters.hl7v2 import service
from gateway.adapters.hl7v2.ack import Ack
from gateway.adapters.hl7v2.message import END, START
from gateway.services import Services

log = logging.getLogger("gateway.adapters.hl7v2.mllp")


@dataclass(frozen=True)
class ListenerSettings:
    host: str = "127.0.0.1"
    port: int = 2575
    facilities: frozenset[str] | None = None
    max_message_bytes: int = 1024 * 1024
    idle_timeout: float = 300.0

    @classmethod
    def from_env(cls) -> ListenerSettings:
        names = [n.strip() for n in os.environ.get("GATEWAY_MLLP_FACILITIES", "").split(",") if n.strip()]
        return cls(
            host=os.environ.get("GATEWAY_MLLP_HOST", cls.host),
            port=int(os.environ.get("GATEWAY_MLLP_PORT", str(cls.port))),
            facilities=frozenset(names) if names else None,
            max_message_bytes=int(os.environ.get("GATEWAY_MLLP_MAX_BYTES", str(cls.max_message_bytes))),
            idle_timeout=float(os.environ.get("GATEWAY_MLLP_IDLE_SECONDS", str(cls.idle_timeout))),
        )


def frame(payload: bytes) -> bytes:
    return START + payload + END


class Listener:
    def __init__(self, svc: Services, settings: ListenerSettings) -> None:
        self.svc = svc
        self.settings = settings
        self.zone = ZoneInfo(svc.settings.local_timezone)
        self.server: asyncio.Server | None = None

    async def start(self) -> asyncio.Server:
        if self.settings.facilities is None:
            log.warning("MLLP: no GATEWAY_MLLP_FACILITIES configured: every sending facility is accepted")
        self.server = await asyncio.start_server(
            self._connection, self.settings.host, self.settings.port, limit=self.settings.max_message_bytes
        )
        return self.server

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            await self._serve(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # one connection's trouble never reaches the listener
            log.exception("MLLP connection from %s failed", peer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        limit = self.settings.max_message_bytes
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), self.settings.idle_timeout)
            if not chunk:
                return
            buffer += chunk
            while True:
                start = buffer.find(START)
                if start < 0:
                    if buffer.strip():
                        log.warning("MLLP: %d bytes outside a frame skipped", len(buffer))
                    buffer = b""
                    break
                if start > 0:
                    if buffer[:start].strip():
                        log.warning("MLLP: %d bytes before a frame skipped", start)
                    buffer = buffer[start:]
                end = buffer.find(b"\x1c", 1)
                if end < 0:
                    if len(buffer) > limit:
                        await self._send(writer, Ack("AR", text=f"Message larger than {limit} bytes"))
                        return
                    break
                payload = buffer[1:end]
                rest = buffer[end + 1 :]
                buffer = rest[1:] if rest.startswith(b"\r") else rest
                if START in payload:  # a frame started again before this one ended: keep the newer
                    payload = payload[payload.rfind(START) + 1 :]
                result = await service.handle(self.svc, payload, accepted=self.settings.facilities)
                await self._send(writer, result.ack)

    async def _send(self, writer: asyncio.StreamWriter, ack: Ack) -> None:
        writer.write(frame(ack.encode(self.zone)))
        await writer.drain()


async def serve_forever(svc: Services, settings: ListenerSettings) -> None:
    listener = Listener(svc, settings)
    server = await listener.start()
    log.info("MLLP listening on %s:%d", settings.host, listener.port)
    async with server:
        await server.serve_forever()
