"""What every upstream exchange shares, UDP or TCP: where an upstream is, the error when it gives no usable answer,
and the check that an answer belongs to the query (the defence against spoofed answers)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass


class UpstreamError(Exception):
    """No usable answer from this upstream (timeout, refused connection, connections closed again and again)."""


@dataclass(frozen=True)
class Address:
    proto: str  # "udp" or "tcp"
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.proto}://{host}:{self.port}"


def parse_address(text: str, default_proto: str = "udp", default_port: int = 53) -> Address:
    """'udp://IP:PORT', 'tcp://[::1]:53', '10.0.0.10', '10.0.0.10:5353' to an Address (IP literals only)."""
    proto, _, rest = text.strip().rpartition("://")
    proto = proto or default_proto
    if proto not in ("udp", "tcp"):
        raise ValueError(f"{text!r}: scheme must be udp:// or tcp://")
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:
        host, port = rest, ""
    try:
        ipaddress.ip_address(host)
        number = int(port) if port else default_port
    except ValueError:
        raise ValueError(f"{text!r}: expected an IP address with an optional port, e.g. udp://10.0.0.10:53") from None
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return Address(proto, host, number)


def answer_matches(data: bytes, qid: int, question: bytes) -> bool:
    """Does an upstream answer belong to our query: its random ID, and its question (compared case-insensitively)?"""
    return (len(data) >= 12 + len(question) and int.from_bytes(data[:2], "big") == qid
            and data[12:12 + len(question)].lower() == question)
