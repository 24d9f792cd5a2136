"""The client's address behind reverse proxies: `X-Forwarded-For` and `Forwarded` (RFC 7239) are believed
only from the proxies the installation trusts (GATEWAY_TRUSTED_PROXIES: IP addresses and CIDR networks,
comma-separated); from any other peer they are ignored and the peer's own address is the client's.

`ForwardedFor` is the outermost ASGI middleware: for a request whose direct peer is a trusted proxy it
puts the forwarded client address in the scope (`scope["client"]`, and the forwarded scheme in
`scope["scheme"]`), so that everything after it (the audit records' source address, the adapters'
contexts) sees the client, never a header anyone could send. The address is the nearest one in the chain
that is not itself a trusted proxy, read from the right (the entries a trusted proxy appended): what a
client writes into the header itself, left of that, is never taken. uvicorn's own handling is off
(`gateway serve` runs it with `proxy_headers=False`), so this is the only place they are read."""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from starlette.types import ASGIApp, Receive, Scope, Send

SETTING = "GATEWAY_TRUSTED_PROXIES"


class TrustedProxies:
    """The networks whose peers' forwarded headers are believed."""

    def __init__(self, items: Iterable[str]) -> None:
        self.networks: list[IPv4Network | IPv6Network] = []
        for item in items:
            try:
                self.networks.append(ip_network(item.strip(), strict=False))
            except ValueError as error:
                raise ValueError(f"{SETTING}: {item!r} is not an IP address or CIDR network") from error

    def trusts(self, host: str | None) -> bool:
        address = _address(host)
        return address is not None and any(address in network for network in self.networks)

    def client(self, peer: str | None, headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
        """(client address, scheme) of a request from `peer`: the forwarded ones when the peer is trusted
        and the headers say (None for a scheme they do not give), else the peer's and None."""
        if not self.trusts(peer):
            return peer, None
        chain, scheme = _forwarded(headers)
        for hop in reversed(chain):
            if _address(hop) is None:
                return peer, scheme  # a hop the proxies do not name by address: the peer is what is known
            if not self.trusts(hop):
                return str(_address(hop)), scheme
        return (str(_address(chain[0])) if chain else peer), scheme


def _address(host: str | None) -> object | None:
    try:
        return ip_address(host) if host else None
    except ValueError:
        return None


def _forwarded(headers: list[tuple[bytes, bytes]]) -> tuple[list[str], str | None]:
    """The forwarded chain (client first) and the scheme the nearest proxy saw: from `Forwarded` when
    there is one, else from `X-Forwarded-For` and `X-Forwarded-Proto`."""
    forwarded = [value.decode("latin-1") for name, value in headers if name == b"forwarded"]
    if forwarded:
        chain: list[str] = []
        scheme = None
        for element in ",".join(forwarded).split(","):
            pairs = dict(_pair(part) for part in element.split(";") if "=" in part)
            if "for" in pairs:
                chain.append(_host(pairs["for"]))
            scheme = pairs.get("proto", scheme)
        return chain, _scheme(scheme)
    hops = [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]
    chain = [hop.strip() for hop in ",".join(hops).split(",") if hop.strip()]
    protos = [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-proto"]
    last = ",".join(protos).split(",")[-1].strip() if protos else None
    return chain, _scheme(last)


def _pair(part: str) -> tuple[str, str]:
    key, _, value = part.strip().partition("=")
    return key.strip().lower(), value.strip().strip('"')


def _host(node: str) -> str:
    """The address of a `Forwarded` node: `192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]:443`."""
    if node.startswith("["):
        return node[1 : node.find("]")] if "]" in node else node
    return node.rsplit(":", 1)[0] if node.count(":") == 1 else node


def _scheme(value: str | None) -> str | None:
    return value.lower() if value and value.lower() in ("http", "https") else None


class ForwardedFor:
    """Put the forwarded client address (and scheme) in the scope of requests from trusted proxies."""

    def __init__(self, app: ASGIApp, trusted: TrustedProxies) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = scope.get("client")
            address, scheme = self.trusted.client(peer[0] if peer else None, scope["headers"])
            if peer is None or address != peer[0]:
                scope["client"] = (address, 0) if address else None
            if scheme:
                scope["scheme"] = scheme
        await self.app(scope, receive, send)
