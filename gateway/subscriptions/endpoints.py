"""Where a subscription may deliver (docs/security.md, "Subscription endpoints").

An endpoint is normalized first (scheme and host lower-cased, the default port dropped, no userinfo, dot
segments resolved, percent-encoding normalized), then allowed when it starts with one of its client's
registered prefixes (`gateway clients add --notify-endpoint`) ending at a path boundary. Only https,
except http to a loopback address when GATEWAY_ALLOW_HTTP_LOOPBACK=1 (tests, local trials). The host is
resolved at every connection and the deliverer connects to the address it checked: loopback, private,
link-local and other special ranges are refused unless the client's registration names a network that
holds the address (`--notify-network CIDR`). A refusal comes before any connection attempt.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Connection, Table, select

from gateway.store.tables import ClientNotify

NOTIFY = cast(Table, ClientNotify.__table__)
DEFAULT_PORTS = {"https": 443, "http": 80}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EndpointRefused(Exception):
    """An endpoint the rules refuse; the message says why (no secret in it)."""


@dataclass(frozen=True)
class Target:
    """A normalized endpoint: what is connected to (host, port), and the URL sent."""

    url: str
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line


@dataclass(frozen=True)
class Registration:
    """What a client's registration allows its subscriptions to deliver to."""

    prefixes: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()
    ca: str = ""
    cert: str = ""
    any_endpoint: bool = False  # GATEWAY_AUTH=off: no registrations, every endpoint (the ranges still apply)


def _percent(segment: str) -> str:
    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else f"%{match.group(1).upper()}"

    return _PERCENT.sub(fix, segment)


def _remove_dots(path: str) -> str:
    """RFC 3986 5.2.4, on a path's segments."""
    out: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                out.append("")
            continue
        if segment == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
            continue
        out.append(segment)
    joined = "/".join(out)
    return joined if joined.startswith("/") else "/" + joined


def normalize(url: str) -> Target:
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        raise EndpointRefused("The endpoint is not a URL")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise EndpointRefused(f"The endpoint is not a valid URL: {error}") from error
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise EndpointRefused("The endpoint must be an https URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise EndpointRefused("The endpoint must not carry user information")
    if parts.fragment:
        raise EndpointRefused("The endpoint must not have a fragment")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise EndpointRefused("The endpoint has no host")
    try:
        host = host.encode("idna").decode("ascii") if not _literal(host) else host
    except UnicodeError as error:
        raise EndpointRefused("The endpoint's host is not a valid name") from error
    port = port or DEFAULT_PORTS[scheme]
    path = _remove_dots(_percent(parts.path or "/"))
    query = _percent(parts.query)
    shown = f"[{host}]" if ":" in host else host
    netloc = shown if port == DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    normalized = urlunsplit((scheme, netloc, path, query, ""))
    return Target(normalized, scheme, host, port, path + (f"?{query}" if query else ""))


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def allowed_by_prefix(endpoint: str, prefix: str) -> bool:
    """`endpoint` (normalized) starts with `prefix` (normalized) at a path boundary."""
    if not endpoint.startswith(prefix):
        return False
    rest = endpoint[len(prefix) :]
    return prefix.endswith("/") or not rest or rest[0] in "/?"


def registration(connection: Connection, client_id: str) -> Registration:
    rows = connection.execute(
        select(NOTIFY.c.kind, NOTIFY.c.value).where(NOTIFY.c.client_id == client_id)
    ).all()
    prefixes = tuple(str(v) for k, v in rows if k == "endpoint")
    networks = tuple(ipaddress.ip_network(str(v), strict=False) for k, v in rows if k == "network")
    ca = next((str(v) for k, v in rows if k == "ca"), "")
    cert = next((str(v) for k, v in rows if k == "cert"), "")
    return Registration(prefixes, networks, ca, cert)


def special(address: Address) -> bool:
    """Loopback, private, link-local, shared, reserved, multicast, unspecified: not the internet."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return special(address.ipv4_mapped)
    return bool(
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or not address.is_global
    )


def check_address(target: Target, address: Address, reg: Registration, allow_http_loopback: bool) -> None:
    """Whether the deliverer may connect to `address` for `target`; raises EndpointRefused if not."""
    if target.scheme == "http" and not (address.is_loopback and allow_http_loopback):
        raise EndpointRefused("The endpoint must be an https URL (http only to loopback in trials)")
    if address.is_loopback and allow_http_loopback:
        return
    if special(address) and not any(address in network for network in reg.networks):
        raise EndpointRefused(
            "The endpoint's address is in a private, loopback or link-local range that the client's "
            "registration does not allow (--notify-network)"
        )


def check(url: str, reg: Registration, allow_http_loopback: bool) -> Target:
    """The endpoint normalized, when its client may use it; an IP literal's range is checked here too."""
    target = normalize(url)
    if not reg.any_endpoint and not any(allowed_by_prefix(target.url, p) for p in reg.prefixes):
        raise EndpointRefused("The endpoint is not one the client's registration allows (--notify-endpoint)")
    literal = _literal(target.host)
    if literal is not None:
        check_address(target, literal, reg, allow_http_loopback)
    elif target.scheme == "http" and not (allow_http_loopback and target.host == "localhost"):
        raise EndpointRefused("The endpoint must be an https URL (http only to loopback in trials)")
    return target


def resolve(target: Target, reg: Registration, allow_http_loopback: bool) -> Address:
    """The address to connect to, resolved now and checked: the first that passes; refused if none."""
    literal = _literal(target.host)
    if literal is not None:
        check_address(target, literal, reg, allow_http_loopback)
        return literal
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise ConnectionError(f"The endpoint's host does not resolve: {error}") from error
    refused: EndpointRefused | None = None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        try:
            check_address(target, address, reg, allow_http_loopback)
        except EndpointRefused as error:
            refused = error
            continue
        return address
    raise refused or EndpointRefused("The endpoint's host has no address")
