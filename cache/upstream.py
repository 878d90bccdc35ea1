"""Upstream exchanges: UDP (retried over TCP when truncated) and persistent, pipelined TCP (RFC 7766).

Every upstream query carries a fresh random ID; an answer whose ID or question does not match is dropped and
counted (spoofing). A zone's upstreams form a `Group`: failed upstreams are skipped until a health check passes.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from . import wire
from .metrics import Metrics, Stats, rcode_name

log = logging.getLogger("cache.upstream")

HEALTH_QUESTION = b"\x00" + struct.pack("!HH", 2, 1)  # ". IN NS", as CoreDNS's forward health check asks
MAX_FAILS = 2  # consecutive failures before an upstream is skipped
HEALTH_INTERVAL = 0.5
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
CLOSED_RETRIES = 10  # fresh connections (within the deadline) for a query whose connection closed unanswered


class UpstreamError(Exception):
    """No usable answer from this upstream (timeout, refused connection, closed connection)."""


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
    import ipaddress

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


def _matches(data: bytes, qid: int, question: bytes) -> bool:
    return (len(data) >= 12 + len(question) and int.from_bytes(data[:2], "big") == qid
            and data[12:12 + len(question)].lower() == question)


class _UdpExchange(asyncio.DatagramProtocol):
    """One query on its own connected socket: a fresh source port per query, answers only from the upstream."""

    def __init__(self, qid: int, question: bytes, on_mismatch) -> None:
        self.qid, self.question, self.on_mismatch = qid, question, on_mismatch
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr) -> None:
        if self.answer.done():
            return
        if _matches(data, self.qid, self.question):
            self.answer.set_result(data)
        else:
            self.on_mismatch()

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: the upstream is down
        if not self.answer.done():
            self.answer.set_exception(UpstreamError(f"{exc}"))


class TcpConnection:
    """A persistent TCP connection to one upstream; queries are pipelined and matched by ID and question."""

    def __init__(self, address: Address, stats: Stats) -> None:
        self.address, self.stats = address, stats
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        # qid -> (question, future, the connection it was sent on)
        self._pending: dict[int, tuple[bytes, asyncio.Future[bytes], asyncio.StreamWriter]] = {}
        self._connecting: asyncio.Lock | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_FIRST

    async def _connect(self) -> asyncio.StreamWriter:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            if time.monotonic() < self._retry_at:
                raise UpstreamError(f"{self.address}: reconnecting after a failure (backoff)")
            try:
                reader, writer = await asyncio.open_connection(self.address.host, self.address.port)
            except OSError as error:
                self._retry_at = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, BACKOFF_MAX)
                raise UpstreamError(f"{self.address}: {error.strerror or error}") from None
            self._backoff = BACKOFF_FIRST
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._writer = writer
            self._reader_task = asyncio.ensure_future(self._read(reader, writer))
            return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                data = await reader.readexactly(length)
                qid = int.from_bytes(data[:2], "big") if len(data) >= 2 else -1
                waiting = self._pending.get(qid)
                if waiting is not None and not waiting[1].done() and _matches(data, qid, waiting[0]):
                    waiting[1].set_result(data)
                else:
                    self.stats.forward_spoofed[str(self.address)] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()
            for _, future, sent_on in list(self._pending.values()):
                if sent_on is writer and not future.done():
                    future.set_exception(UpstreamError(f"{self.address}: connection closed"))

    async def exchange(self, question: bytes, do: bool, cd: bool, timeout: float) -> bytes:
        # A server may close a connection after any answer (dnsmasq's auth mode does after each one); a query
        # pipelined on it then fails unanswered and is sent again on a fresh connection.
        deadline = time.monotonic() + timeout
        for attempt in range(CLOSED_RETRIES + 1):
            remaining = deadline - time.monotonic()
            try:
                writer = await asyncio.wait_for(self._connect(), remaining)
            except asyncio.TimeoutError:
                raise UpstreamError(f"{self.address}: connect timed out") from None
            qid = secrets.randbelow(0x10000)
            while qid in self._pending:
                qid = secrets.randbelow(0x10000)
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            self._pending[qid] = (question, future, writer)
            message = wire.build_query(qid, question, do, cd)
            try:
                writer.write(struct.pack("!H", len(message)) + message)
                return await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.001))
            except UpstreamError:
                if attempt == CLOSED_RETRIES or time.monotonic() >= deadline:
                    raise
            except (asyncio.TimeoutError, OSError) as error:
                raise UpstreamError(f"{self.address}: {error or 'timeout'}") from None
            finally:
                self._pending.pop(qid, None)
        raise UpstreamError(f"{self.address}: connection closed")

    def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()


class Upstream:
    """One upstream server. UDP upstreams fall back to TCP (same address) when an answer is truncated."""

    def __init__(self, address: Address, stats: Stats, metrics: Metrics | None) -> None:
        self.address, self.stats, self.metrics = address, stats, metrics
        self.name = str(address)
        self.tcp = TcpConnection(Address("tcp", address.host, address.port), stats)
        self.fails = 0
        self.ever_answered = False
        self._health_task: asyncio.Task | None = None

    @property
    def healthy(self) -> bool:
        return self.fails < MAX_FAILS

    async def exchange(self, question: bytes, do: bool, cd: bool, timeout: float) -> bytes:
        started = time.monotonic()
        self.stats.forward_requests[self.name] += 1
        try:
            if self.address.proto == "tcp":
                data = await self.tcp.exchange(question, do, cd, timeout)
            else:
                data = await self._udp(question, do, cd, timeout)
                if int.from_bytes(data[2:4], "big") & wire.TC:
                    remaining = max(timeout - (time.monotonic() - started), 0.05)
                    data = await self.tcp.exchange(question, do, cd, remaining)
        except UpstreamError:
            self._failed()
            raise
        rcode = int.from_bytes(data[2:4], "big") & wire.RCODE_MASK
        self.stats.forward_responses[(self.name, rcode)] += 1
        if self.metrics is not None:
            self.metrics.forward_duration.observe((self.name, rcode_name(rcode)), time.monotonic() - started)
        self.fails = 0
        self.ever_answered = True
        return data

    async def _udp(self, question: bytes, do: bool, cd: bool, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        qid = secrets.randbelow(0x10000)
        name = self.name
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpExchange(qid, question, lambda: self.stats.forward_spoofed.__setitem__(
                    name, self.stats.forward_spoofed[name] + 1)),
                remote_addr=(self.address.host, self.address.port))
        except OSError as error:
            raise UpstreamError(f"{self.address}: {error}") from None
        try:
            transport.sendto(wire.build_query(qid, question, do, cd))
            return await asyncio.wait_for(protocol.answer, timeout)
        except asyncio.TimeoutError:
            raise UpstreamError(f"{self.address}: no answer within {timeout:.2f}s") from None
        finally:
            transport.close()

    def _failed(self) -> None:
        self.fails += 1
        self.stats.healthcheck_failures[self.name] += 1
        if not self.healthy and (self._health_task is None or self._health_task.done()):
            log.warning("upstream %s is down; skipping it until a health check passes", self.name)
            self._health_task = asyncio.ensure_future(self._check_until_healthy())

    async def check(self, timeout: float = 1.0) -> bool:
        """One health check: any answer to '. IN NS' counts as up."""
        try:
            await self.exchange(HEALTH_QUESTION, False, False, timeout)
            return True
        except UpstreamError:
            return False

    async def _check_until_healthy(self) -> None:
        while not self.healthy:
            await asyncio.sleep(HEALTH_INTERVAL)
            if await self.check():
                log.info("upstream %s is back", self.name)

    def close(self) -> None:
        self.tcp.close()
        if self._health_task is not None:
            self._health_task.cancel()


class Group:
    """The upstreams of one zone, tried in order, healthy ones first, within one overall deadline."""

    def __init__(self, zone: str, upstreams: Iterable[Upstream], stats: Stats) -> None:
        self.zone, self.upstreams, self.stats = zone, list(upstreams), stats

    @property
    def up(self) -> bool:
        return any(u.healthy and u.ever_answered for u in self.upstreams)

    async def exchange(self, question: bytes, do: bool, cd: bool, timeout: float) -> bytes:
        """The first answer from an upstream (any rcode); UpstreamError when none answers within `timeout`."""
        deadline = time.monotonic() + timeout
        order = [u for u in self.upstreams if u.healthy]
        if not order:
            self.stats.healthcheck_broken += 1
            order = list(self.upstreams)  # all down: try them anyway rather than fail without asking
        else:
            order += [u for u in self.upstreams if not u.healthy]
        errors = []
        for index, upstream in enumerate(order):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            share = remaining / (len(order) - index)  # leave time for the ones after this one
            try:
                return await upstream.exchange(question, do, cd, share)
            except UpstreamError as error:
                errors.append(str(error))
        raise UpstreamError("; ".join(errors) or f"no upstream for {self.zone} within {timeout}s")

    def close(self) -> None:
        for upstream in self.upstreams:
            upstream.close()
