"""A client's notify registration (`gateway clients add --notify-endpoint … --notify-network …`), checked
and normalized into `client_notify` rows."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from gateway.subscriptions.endpoints import EndpointRefused, normalize


def notify_rows(
    prefixes: list[str], networks: list[str], ca: Path | None = None, cert: Path | None = None
) -> list[tuple[str, str]]:
    """(kind, value) rows; ValueError for a prefix that is not an https (or http) URL, a malformed CIDR, or
    a file that cannot be read."""
    rows: list[tuple[str, str]] = []
    for prefix in prefixes:
        try:
            rows.append(("endpoint", normalize(prefix).url))
        except EndpointRefused as error:
            raise ValueError(f"{prefix}: {error}") from error
    for network in networks:
        rows.append(("network", str(ipaddress.ip_network(network, strict=False))))
    for kind, path in (("ca", ca), ("cert", cert)):
        if path is not None:
            path.read_bytes()  # readable now: the deliverer reads it at each connection
            rows.append((kind, str(path.resolve())))
    return list(dict.fromkeys(rows))
