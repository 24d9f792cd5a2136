"""The MLLP listener: asyncio, many concurrent connections, one ACK per message.

Each message arrives framed as 0x0B … 0x1C 0x0D. Bytes outside a frame are skipped (and logged), a frame
larger than the limit is answered AR and the connection closed, an idle connection is closed after the
timeout; none of it affects other connections or the listener. The sending facilities (MSH-4) it accepts
and the client each acts as come from GATEWAY_MLLP_FACILITIES (`senders.py`); with TLS configured
(GATEWAY_MLLP_TLS_CERT and _KEY, optionally _CLIENT_CA for client certificates) it speaks only TLS.
It runs as `gateway mllp`, or inside `gateway serve` when GATEWAY_MLLP_PORT is set (`start_embedded`);
with GATEWAY_MLLP_PARSE_PROCESSES=N (or `gateway mllp --parse-processes N`) it parses in N processes
beside the listener's own (`service.handle`). Every message is audited as an `import` by the client it
was written as."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import ssl
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

from gateway.adapters.hl7v2 import service
from gateway.adapters.hl7v2.ack import Ack
from gateway.adapters.hl7v2.message import END, START
from gateway.adapters.hl7v2.senders import Senders
from gateway.config import Settings
from gateway.hooks import AccessRecord, Principal, RequestContext
from gateway.services import Services
from gateway.telemetry.metrics import ACK_CODES, MLLP_MESSAGES

log = logging.getLogger("gateway.adapters.hl7v2.mllp")
DEFAULT_PORT = 2575
AUDIT_STATUS = {"AA": 200, "AE": 422, "AR": 400}
AUDIT_WAIT_SECONDS = 0.05  # how often a message held for a full audit queue looks again
STOP_POLL_SECONDS = 0.05  # how often a stopping listener looks whether its messages are answered


def tls_context(cert: str, key: str, client_ca: str = "") -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2 or later), or None when no certificate is configured. With a
    client CA, clients must present a certificate it signed (mutual TLS)."""
    if not cert and not key and not client_ca:
        return None
    if not cert or not key:
        raise ValueError("MLLP TLS needs both GATEWAY_MLLP_TLS_CERT and GATEWAY_MLLP_TLS_KEY")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass(frozen=True)
class ListenerSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    senders: Senders = field(default_factory=Senders)
    max_message_bytes: int = 1024 * 1024
    idle_timeout: float = 300.0
    tls: ssl.SSLContext | None = None
    parse_processes: int = 0  # > 0: parse messages in that many processes beside this one

    @classmethod
    def from_settings(cls, settings: Settings) -> ListenerSettings:
        if settings.mllp_parse_processes < 0:
            raise ValueError("GATEWAY_MLLP_PARSE_PROCESSES must be 0 or more")
        return cls(
            host=settings.mllp_host,
            port=settings.mllp_port or DEFAULT_PORT,
            senders=Senders.parse(settings.mllp_facilities),
            max_message_bytes=settings.mllp_max_bytes,
            idle_timeout=float(settings.mllp_idle_seconds),
            tls=tls_context(settings.mllp_tls_cert, settings.mllp_tls_key, settings.mllp_tls_client_ca),
            parse_processes=settings.mllp_parse_processes,
        )


def frame(payload: bytes) -> bytes:
    return START + payload + END


class Listener:
    def __init__(self, svc: Services, settings: ListenerSettings) -> None:
        self.svc = svc
        self.settings = settings
        self.zone = ZoneInfo(svc.settings.local_timezone)
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.address = ""  # host:port, once listening
        self.parse_pool: ProcessPoolExecutor | None = None
        self.busy: set[asyncio.StreamWriter] = set()  # connections with a message in flight
        self.stopping = False

    async def start(self) -> asyncio.Server:
        await asyncio.to_thread(self.settings.senders.check, self.svc)
        self.server = await asyncio.start_server(
            self._connection,
            self.settings.host,
            self.settings.port,
            limit=self.settings.max_message_bytes,
            ssl=self.settings.tls,
        )
        if self.settings.parse_processes > 0:
            context = multiprocessing.get_context("spawn")  # not fork: this process has threads
            self.parse_pool = ProcessPoolExecutor(self.settings.parse_processes, mp_context=context)
            log.info("MLLP: parse processes beside the listener: %d", self.settings.parse_processes)
        scheme = "MLLP over TLS" if self.settings.tls else "MLLP"
        self.address = f"{self.settings.host}:{self.port}"
        log.info("%s listening on %s", scheme, self.address)
        return self.server

    async def stop(self, grace: float = 0.0) -> None:
        """Stop accepting and close the idle connections; a connection with a message in flight is closed
        once its ACK is sent, or after `grace` seconds; then wait until the server is closed."""
        if self.server is None:
            return
        self.stopping = True
        self.server.close()
        for writer in list(self.writers):
            if writer not in self.busy:
                writer.close()
        waited = 0.0
        while self.busy and waited < grace:
            await asyncio.sleep(STOP_POLL_SECONDS)
            waited += STOP_POLL_SECONDS
        if self.busy:
            busy = len(self.busy)
            log.error("MLLP: %d messages still in flight after %.0f s: connections closed", busy, grace)
        for writer in list(self.writers):
            writer.close()
        await self.server.wait_closed()
        if self.parse_pool is not None:
            self.parse_pool.shutdown(wait=False, cancel_futures=True)
        log.info("MLLP listener on %s stopped", self.address)

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self.writers.add(writer)
        try:
            await self._serve(reader, writer, peer[0] if peer else None)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:  # one connection's trouble never reaches the listener
            log.exception("MLLP connection from %s failed", peer)
        finally:
            self.writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str | None
    ) -> None:
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
                        MLLP_MESSAGES.labels("AR").inc()
                        await self._send(writer, Ack("AR", text=f"Message larger than {limit} bytes"))
                        return
                    break
                payload = buffer[1:end]
                rest = buffer[end + 1 :]
                buffer = rest[1:] if rest.startswith(b"\r") else rest
                if START in payload:  # a frame started again before this one ended: keep the newer
                    payload = payload[payload.rfind(START) + 1 :]
                self.busy.add(writer)  # in flight: a stop waits for its ACK
                try:
                    await self._answer(writer, payload, peer)
                finally:
                    self.busy.discard(writer)
                if self.stopping:  # answered; the next messages go to the next listener
                    return

    async def _answer(self, writer: asyncio.StreamWriter, payload: bytes, peer: str | None) -> None:
        await self._room_in_the_audit()
        result = await service.handle(
            self.svc,
            payload,
            senders=self.settings.senders,
            source_address=peer,
            parse_pool=self.parse_pool,
        )
        ack = result.ack
        if not await self._audited(result, peer):
            # its writes are committed with their own records; sent again it is answered AA
            ack = replace(ack, code="AE", text="The audit log could not store this message's record")
        MLLP_MESSAGES.labels(ack.code if ack.code in ACK_CODES else "other").inc()
        await self._send(writer, ack)

    async def _room_in_the_audit(self) -> None:
        """Hold a message while the audit queue is full (its sender waits for the ACK), rather than write
        it and lose its `import` record: the records of its writes and its own need room."""
        audit = self.svc.audit
        while audit is not None and audit.full():
            await asyncio.sleep(AUDIT_WAIT_SECONDS)

    async def _audited(self, result: service.Result, peer: str | None) -> bool:
        """One `import` record a message, naming the client it was written as (beside the records of
        its writes), stored before the ACK goes out; a refused sender is recorded as anonymous, with the
        refusal. False when it could not be stored."""
        ack = result.ack
        context = RequestContext(
            principal=result.principal or Principal(),
            base_url=self.svc.settings.base_url,
            source_address=peer,
        )
        detail = f"MLLP ADT^{ack.trigger} {ack.control_id} from {ack.receiving_facility}: {ack.code}"
        if ack.text:
            detail += f" {ack.text}"
        record = AccessRecord("import", None, [], AUDIT_STATUS.get(ack.code, 400), context, detail[:1000])
        try:
            stored = self.svc.hooks.audit.record(record)
            if stored is not None:
                await asyncio.wrap_future(stored)
        except Exception:
            log.exception("the import record of a message could not be stored: %s", detail)
            return False
        return True

    async def _send(self, writer: asyncio.StreamWriter, ack: Ack) -> None:
        writer.write(frame(ack.encode(self.zone)))
        await writer.drain()


async def serve_forever(svc: Services, settings: ListenerSettings) -> None:
    listener = Listener(svc, settings)
    server = await listener.start()
    try:
        await server.serve_forever()
    finally:
        await listener.stop(svc.settings.shutdown_grace_seconds)


async def start_embedded(svc: Services) -> Listener | None:
    """The listener `gateway serve` runs on its own event loop when GATEWAY_MLLP_PORT is set."""
    if svc.settings.mllp_port is None:
        return None
    listener = Listener(svc, ListenerSettings.from_settings(svc.settings))
    await listener.start()
    return listener
