"""The few rtnetlink requests the cache's interface needs (RFC 3549; linux/rtnetlink.h, linux/if_link.h,
linux/if_addr.h): a link's kind, create, bring up and delete a link, list and add addresses. Nothing else.

Why not pyroute2: importing its IPRoute runs the package's __init__ (NDB, IPDB, conntrack, every netlink family),
11.4 MB of RSS and a quarter of a second at every start, for the life of a process that sends five kinds of
request. Errors are `NetlinkError`, an OSError carrying the kernel's errno (`code`, as pyroute2 names it).
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), device type, index, flags, change mask
IFADDRMSG = struct.Struct("=BBBBi")  # family, prefix length, flags, scope, index
RTATTR = struct.Struct("=HH")  # length, type
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 17, 18, 20, 22
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x300, 0x200, 0x400
IFLA_IFNAME, IFLA_LINKINFO, IFLA_INFO_KIND = 3, 18, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1
RECEIVE = 65536


class NetlinkError(OSError):
    """The kernel refused a request: `code` is its errno."""

    def __init__(self, code: int) -> None:
        super().__init__(code, os.strerror(code))
        self.code = code


def attribute(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    length = RTATTR.size + len(payload)
    return RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def attributes(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """The rtattrs from `offset` to the end, by type (the last of a type wins); nested ones stay raw."""
    found: dict[int, bytes] = {}
    while offset + RTATTR.size <= len(data):
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            break
        found[kind & 0x3FFF] = data[offset + RTATTR.size:offset + length]  # without the nested/byte-order bits
        offset += (length + 3) & ~3
    return found


class Rtnl:
    """A NETLINK_ROUTE socket for a few requests, closed on exit (`with Rtnl() as rtnl:`)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.sequence = 0

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _messages(self, kind: int, flags: int, body: bytes) -> Iterator[tuple[int, bytes]]:
        """Send one request; yield (type, payload) of each answer until the kernel's ACK or the dump's end.
        NetlinkError when the kernel answers with an error."""
        self.sequence += 1
        self.sock.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), kind, flags | NLM_F_REQUEST, self.sequence, 0)
                       + body)
        while True:
            data = self.sock.recv(RECEIVE)
            offset = 0
            while offset + NLMSG_HEADER.size <= len(data):
                length, reply, _, sequence, _ = NLMSG_HEADER.unpack_from(data, offset)
                if length < NLMSG_HEADER.size:
                    raise NetlinkError(errno.EPROTO)  # a message shorter than its header: no way to the next one
                payload = data[offset + NLMSG_HEADER.size:offset + length]
                offset += (length + 3) & ~3
                if sequence != self.sequence:
                    continue  # an answer to an earlier request (ours, interrupted)
                if reply == NLMSG_DONE:
                    return
                if reply == NLMSG_ERROR:
                    (error,) = struct.unpack_from("=i", payload)
                    if error:
                        raise NetlinkError(-error)
                    return  # the ACK
                yield reply, payload
                if not flags & NLM_F_DUMP:
                    return

    def link_kind(self, index: int) -> str | None:
        """The kind of link `index` (dummy, bridge, ...), None for a device without one (a physical NIC)."""
        for _, payload in self._messages(RTM_GETLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)):
            info = attributes(payload, IFINFOMSG.size).get(IFLA_LINKINFO)
            kind = attributes(info).get(IFLA_INFO_KIND) if info is not None else None
            return kind.rstrip(b"\0").decode("ascii", "replace") if kind is not None else None
        return None

    def add_link(self, name: str, kind: str) -> None:
        body = (IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + attribute(IFLA_IFNAME, name.encode() + b"\0")
                + attribute(IFLA_LINKINFO, attribute(IFLA_INFO_KIND, kind.encode())))
        self._request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)

    def set_up(self, index: int) -> None:
        self._request(RTM_NEWLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP))

    def delete_link(self, index: int) -> None:
        self._request(RTM_DELLINK, 0, IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0))

    def addresses(self) -> list[tuple[IPAddress, int]]:
        """Every address on the node, with the index of the link that holds it."""
        found = []
        for _, payload in self._messages(RTM_GETADDR, NLM_F_DUMP, IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)):
            index = IFADDRMSG.unpack_from(payload)[4]
            attrs = attributes(payload, IFADDRMSG.size)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is not None and len(raw) in (4, 16):
                found.append((ipaddress.ip_address(raw), index))
        return found

    def add_address(self, index: int, address: IPAddress, flags: int) -> None:
        """Add `address` to link `index` as a host route (/32 or /128)."""
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        packed = address.packed
        body = (IFADDRMSG.pack(family, address.max_prefixlen, flags, 0, index) + attribute(IFA_LOCAL, packed)
                + attribute(IFA_ADDRESS, packed))
        self._request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)

    def _request(self, kind: int, flags: int, body: bytes) -> None:
        for _ in self._messages(kind, flags | NLM_F_ACK, body):
            pass
