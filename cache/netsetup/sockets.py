"""Which sockets of this network namespace are bound to the cache's addresses, from /proc/net.

The kernel scopes /proc/net/{udp,tcp}{,6} to the reader's network namespace, so on a node this lists the node's own
sockets: enough to tell whether another cache instance (an upgrade's new pod) still serves an address.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
from collections.abc import Iterable

from .iptables import IPAddress

TCP_LISTEN = "0A"  # the kernel's state code for LISTEN in /proc/net/tcp


def other_listeners(addresses: Iterable[IPAddress], port: int) -> set[str]:
    """Sockets bound to one of `addresses` and `port` (UDP, or TCP listening) that are not this process's own,
    as `proto:inode`."""
    own = _own_socket_inodes()
    wanted = {(address, port) for address in addresses}
    return {f"{proto}:{inode}" for proto, address, bound_port, inode in _bound_sockets()
            if (address, bound_port) in wanted and inode not in own}


def parse_proc_net(text: str, version: int, listen_only: bool) -> list[tuple[IPAddress, int, str]]:
    """(address, port, inode) of each socket in a /proc/net/{tcp,udp}{,6} table; TCP only in LISTEN if asked."""
    sockets: list[tuple[IPAddress, int, str]] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, state, inode = fields[1], fields[3], fields[9]
        if listen_only and state != TCP_LISTEN:
            continue
        hex_address, hex_port = local.split(":")
        sockets.append((_proc_address(hex_address, version), int(hex_port, 16), inode))
    return sockets


def _proc_address(hex_address: str, version: int) -> IPAddress:
    # The kernel prints each 32-bit word in host (little-endian on every platform we ship) byte order.
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.IPv4Address(words) if version == 4 else ipaddress.IPv6Address(words)


def _bound_sockets() -> Iterable[tuple[str, IPAddress, int, str]]:
    for proto, version, listen_only in (("udp", 4, False), ("udp6", 6, False), ("tcp", 4, True), ("tcp6", 6, True)):
        try:
            with open(f"/proc/net/{proto}") as table:
                text = table.read()
        except OSError:  # no IPv6 on this node
            continue
        for address, port, inode in parse_proc_net(text, version, listen_only):
            yield proto, address, port, inode


def _own_socket_inodes() -> set[str]:
    inodes: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    return inodes
