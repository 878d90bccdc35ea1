"""Addresses as flags and files spell them, parsed in one place: `IP:PORT` (IPv6 as `[::1]:53`) for what the cache
binds, and `udp://IP:PORT` / `tcp://IP:PORT` for where it forwards. IP literals only: a cache that needs DNS to
find its own upstream would depend on itself."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DNS_PORT = 53


def parse_host_port(text: str, default_port: int | None = DNS_PORT) -> tuple[str, int]:
    """'10.0.0.1:53', '[fd00::1]:53', '10.0.0.1' or 'fd00::1' (default port), ':9253' (all IPv4 addresses).
    ValueError with the text and the expected form otherwise. Port 0 is allowed (the kernel picks one)."""
    text = str(text).strip()
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:  # an IPv6 address without brackets, or an IPv4 address: no port
        host, port = text, ""
    host = host or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
        number = int(port) if port else default_port
    except ValueError:
        number = None
    if number is None or not 0 <= number < 65536:
        raise ValueError(f"{text!r}: expected IP:PORT (IPv6 as [::1]:53)")
    return host, number


@dataclass(frozen=True)
class Address:
    """An upstream: the protocol the cache speaks to it, and where it is."""

    proto: str  # "udp" or "tcp"
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.proto}://{host}:{self.port}"


def parse_address(text: str, default_proto: str = "udp", default_port: int = DNS_PORT) -> Address:
    """'udp://IP:PORT', 'tcp://[::1]:53', '10.0.0.10', '10.0.0.10:5353' to an Address."""
    proto, _, rest = text.strip().rpartition("://")
    proto = proto or default_proto
    if proto not in ("udp", "tcp"):
        raise ValueError(f"{text!r}: scheme must be udp:// or tcp://")
    try:
        host, port = parse_host_port(rest, default_port)
    except ValueError:
        raise ValueError(f"{text!r}: expected an IP address with an optional port, e.g. udp://10.0.0.10:53") from None
    if port == 0:
        raise ValueError(f"{text!r}: port out of range")
    return Address(proto, host, port)


# A client's address as the socket module gives it: (host, port) for IPv4, (host, port, flowinfo, scope_id) for IPv6.
Peer = tuple[str, int] | tuple[str, int, int, int]
