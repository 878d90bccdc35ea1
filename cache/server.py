"""DNS listeners: UDP and TCP on each listen address, every socket with SO_REUSEPORT so that a new instance can bind
beside an old one and take over without a lost query: the kernel is told to hand every new datagram and connection
to the newest socket (`steer_to_newest`), so the old instance's queue empties before it closes.

UDP uses `cache.batchio` (recvmmsg/sendmmsg, owned by the batch-I/O engineer) when it imports and `--udp-batch` is
on; its contract: `await batchio.start_udp(sock, handle)` where `handle(data, addr, send)` is
`Resolver.handle_datagram`, returning an object with `close()`. Otherwise a plain asyncio datagram endpoint.
"""
from __future__ import annotations

import asyncio
import ctypes
import ipaddress
import logging
import socket
import struct

from .resolver import TCP, Resolver

log = logging.getLogger("cache.server")

TCP_BACKLOG = 1024
MAX_TCP_PENDING_OUTPUT = 256 * 1024  # a client that does not read its answers is cut off, not buffered for
DATAGRAM_READ_SIZE = 65535  # asyncio's default 256 KiB read buffer costs an mmap/munmap per datagram
UDP_RCVBUF = 4 * 1024 * 1024
SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h, Linux 4.5+
# One classic BPF instruction, BPF_RET|BPF_K 1: "the socket at index 1 of the address's SO_REUSEPORT group".
RETURN_SECOND_SOCKET = struct.pack("=HBBI", 0x06, 0, 0, 1)


def is_wildcard(host: str) -> bool:
    return ipaddress.ip_address(host).is_unspecified


def bind_socket(host: str, port: int, kind: socket.SocketKind) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
            except OSError:
                pass
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(TCP_BACKLOG)  # a TCP socket joins its address's group for steering once it listens
        steer_to_newest(sock)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def steer_to_newest(sock: socket.socket) -> None:
    """Make the kernel hand every new datagram and connection for this address to the newest instance's socket.

    Without it the kernel spreads flows over the old and the new instance by hash, and whatever waits in the old
    socket's queue when it closes is lost. Sockets join a group in bind order and a leaving socket's slot is taken
    by the last one, so during an upgrade index 1 is the new instance; alone, index 1 does not exist and the
    kernel falls back to its hash. A kernel without the option keeps the hash: an upgrade may then lose the few
    queries queued at the moment the old instance closes.
    """
    program = ctypes.create_string_buffer(RETURN_SECOND_SOCKET)
    fprog = struct.pack("HP", 1, ctypes.addressof(program))  # struct sock_fprog {len; filter*}
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as error:
        log.warning("cannot steer new queries to the newest instance (%s); upgrades fall back to the kernel's hash",
                    error)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.send = None

    def connection_made(self, transport: asyncio.DatagramTransport) -> None:
        if hasattr(transport, "max_size"):  # the default loop's transport; uvloop reads into a small buffer
            transport.max_size = DATAGRAM_READ_SIZE
        self.send = transport.sendto

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            self.resolver.handle_datagram(data, addr, self.send)
        except Exception:  # a packet never stops the listener
            log.exception("query from %s failed", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class Listeners:
    """All DNS sockets of the process; `start` binds and serves, `close` stops them."""

    def __init__(self, resolver: Resolver, addresses: list[tuple[str, int]], udp_batch: bool = True,
                 tcp_idle_timeout: float = 10.0, tcp_max_connections: int = 1000) -> None:
        self.resolver, self.addresses, self.udp_batch = resolver, addresses, udp_batch
        self.tcp_idle_timeout, self.tcp_max_connections = tcp_idle_timeout, tcp_max_connections
        self.tcp_clients = 0
        self._closers: list = []
        self._tcp_servers: list[asyncio.base_events.Server] = []
        self.bound: list[tuple[str, int]] = []  # actual (host, port), port 0 resolved
        self.batch_in_use = False

    async def start(self) -> None:
        batchio = self._batchio() if self.udp_batch else None
        for host, port in self.addresses:
            udp = bind_socket(host, port, socket.SOCK_DGRAM)
            port = udp.getsockname()[1]  # port 0: UDP and TCP share the port the kernel picked
            tcp = bind_socket(host, port, socket.SOCK_STREAM)
            self.bound.append((host, port))
            if batchio is not None:
                self._closers.append(await batchio.start_udp(udp, self.resolver.handle_datagram))
                self.batch_in_use = getattr(batchio, "available", lambda: True)()
            else:
                transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                    lambda: _UdpProtocol(self.resolver), sock=udp)
                self._closers.append(transport)
            server = await asyncio.start_server(self._serve_tcp, sock=tcp, backlog=TCP_BACKLOG)
            self._tcp_servers.append(server)
            log.info("serving DNS on %s:%d (udp%s, tcp)", host, port, " batched" if self.batch_in_use else "")

    @staticmethod
    def _batchio():
        try:
            from . import batchio
        except ImportError as error:
            log.info("cache.batchio not available (%s): plain asyncio UDP", error)
            return None
        if not hasattr(batchio, "start_udp"):
            log.warning("cache.batchio has no start_udp(sock, handle): plain asyncio UDP")
            return None
        return batchio

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats = self.resolver.stats
        if self.tcp_clients >= self.tcp_max_connections:
            stats.dropped["tcp connection limit"] += 1
            writer.close()
            return
        self.tcp_clients += 1
        peer = writer.get_extra_info("peername")
        transport = writer.transport

        def send(reply: bytes, _addr) -> None:
            if transport.is_closing():
                return
            if transport.get_write_buffer_size() > MAX_TCP_PENDING_OUTPUT:
                stats.dropped["tcp client not reading"] += 1
                transport.abort()
                return
            transport.write(struct.pack("!H", len(reply)) + reply)

        try:
            while True:
                # RFC 7766 6.2.3: idle connections are closed; a length with nothing after it counts as idle.
                length = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), self.tcp_idle_timeout))[0]
                data = await asyncio.wait_for(reader.readexactly(length), self.tcp_idle_timeout)
                try:
                    self.resolver.handle(data, peer, send, TCP)
                except Exception:
                    log.exception("TCP query from %s failed", peer)
        except (TimeoutError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self.tcp_clients -= 1
            writer.close()

    def close(self) -> None:
        for closer in self._closers:
            closer.close()
        for server in self._tcp_servers:
            server.close()
        self._closers, self._tcp_servers = [], []
