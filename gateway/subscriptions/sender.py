"""One notification request: to the address the endpoint rules checked, reading only the status line.

No redirects are followed (a 3xx is just a status that is not 2xx), nothing of the answer is read beyond
its status line, and the connection is to the address resolved and checked for this very attempt (not
a second lookup by an HTTP library). https checks the certificate against the host name (the client's
CA bundle when registered, else the system's) and presents the client certificate when registered.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from gateway.subscriptions.endpoints import Address, Registration, Target

MAX_STATUS_LINE = 1024


class NotSent(Exception):
    """Nothing was sent: the connection could not be made (the body never left)."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def send(target: Target, address: Address, request: Request, reg: Registration, timeout: float) -> int:
    """The answer's status code; NotSent when no connection was made; OSError (timeout, reset) after."""
    try:
        raw = socket.create_connection((str(address), target.port), timeout=timeout)
    except OSError as error:
        raise NotSent(str(error)) from error
    try:
        conn: socket.socket = raw
        if target.scheme == "https":
            context = ssl.create_default_context(cafile=reg.ca or None)
            if reg.cert:
                context.load_cert_chain(reg.cert)
            try:
                conn = context.wrap_socket(raw, server_hostname=target.host)
            except (ssl.SSLError, OSError) as error:
                raise NotSent(f"TLS: {error}") from error
        host = f"[{target.host}]" if ":" in target.host else target.host
        if target.port != (443 if target.scheme == "https" else 80):
            host = f"{host}:{target.port}"
        lines = [f"{request.method} {request.path} HTTP/1.1", f"Host: {host}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in request.headers]
        lines.append(f"Content-Length: {len(request.body)}")
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + request.body)
        status_line = conn.makefile("rb").readline(MAX_STATUS_LINE).decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise OSError("The receiver's answer is not HTTP")
        return int(parts[1])
    finally:
        raw.close()
