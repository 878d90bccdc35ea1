"""DNS listeners: UDP and TCP on each listen address, every socket with SO_REUSEPORT so that a new instance can bind
beside an old one and take over without a lost query: the kernel is told to hand every new datagram and connection
to the newest socket (`steer_to_newest`), so the old instance's queue empties before it closes.

UDP is served by `batchio.start_udp` (recvmmsg/sendmmsg in batches, or a plain endpoint with --no-udp-batch), TCP
by `tcpclients` (connections, their limits and idle timeouts); both hand each query to `Resolver.handle`.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import resource
import socket
import struct

from . import batchio
from .resolver import Resolver
from .tcpclients import TcpClients

log = logging.getLogger("cache.server")

TCP_BACKLOG = 1024
UDP_RCVBUF = 4 * 1024 * 1024
OPEN_FILES_WITHOUT_LIMIT = 1 << 20  # what to ask for when the hard limit is "unlimited" (Linux's default nr_open)
SO_ATTACH_REUSEPORT_CBPF = 51  # linux/asm-generic/socket.h, Linux 4.5+
# One classic BPF instruction, BPF_RET|BPF_K 1: "the socket at index 1 of the address's SO_REUSEPORT group".
RETURN_SECOND_SOCKET = struct.pack("=HBBI", 0x06, 0, 0, 1)


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


def bind_pair(host: str, port: int, attempts: int = 20) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same address and port. Port 0 (tests, the demo): the port the kernel picks for
    UDP, tried again with another when a TCP socket already holds that number (an ephemeral port of a connection)."""
    for attempt in range(attempts):
        udp = bind_socket(host, port, socket.SOCK_DGRAM)
        try:
            return udp, bind_socket(host, udp.getsockname()[1], socket.SOCK_STREAM)
        except OSError as error:
            udp.close()
            if port != 0 or error.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


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


def raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard one, as the Go runtime does for CoreDNS. Each TCP client and
    each miss in flight to a UDP upstream holds a descriptor (10,000 misses may be in flight), and a container
    runtime may start the cache with a soft limit of 1024 (containerd 2) under a far higher hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = OPEN_FILES_WITHOUT_LIMIT if hard == resource.RLIM_INFINITY else hard  # Linux has no infinite one
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open files limit raised from %d to %d", soft, target)
        except (ValueError, OSError) as error:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, target, error)


class Listeners:
    """All DNS sockets of the process; `start` binds and serves, `close` stops them."""

    def __init__(self, resolver: Resolver, addresses: list[tuple[str, int]], udp_batch: bool,
                 tcp_idle_timeout: float, tcp_max_connections: int, tcp_max_connections_per_client: int) -> None:
        self.resolver, self.addresses, self.udp_batch = resolver, addresses, udp_batch
        self.tcp_clients = TcpClients(resolver.handle, resolver.stats, tcp_idle_timeout, tcp_max_connections,
                                      tcp_max_connections_per_client,
                                      answer_within=lambda: resolver.limits.upstream_timeout)
        self._closers: list[batchio.Closable] = []
        self._tcp_servers: list[asyncio.base_events.Server] = []
        self.bound: list[tuple[str, int]] = []  # actual (host, port), port 0 resolved
        self.batch_in_use = False

    async def start(self) -> None:
        raise_open_files_limit()
        loop = asyncio.get_running_loop()
        for host, port in self.addresses:
            udp, tcp = bind_pair(host, port)
            port = udp.getsockname()[1]
            self.bound.append((host, port))
            listener, self.batch_in_use = await batchio.start_udp(udp, self.resolver.handle,
                                                                  batched=self.udp_batch)
            self._closers.append(listener)
            server = await loop.create_server(self.tcp_clients.protocol, sock=tcp, backlog=TCP_BACKLOG)
            self._tcp_servers.append(server)
            log.info("serving DNS on %s:%d (udp%s, tcp)", host, port, " batched" if self.batch_in_use else "")

    def close(self) -> None:
        for closer in self._closers:
            closer.close()
        for server in self._tcp_servers:
            server.close()
        self.tcp_clients.close()
        self._closers, self._tcp_servers = [], []
