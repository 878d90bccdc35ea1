"""Upstreams: one server (UDP, retried over TCP when truncated; TCP itself in tcpupstream.py) and a zone's group.

Every upstream query carries a fresh random ID; an answer whose ID or question does not match is dropped and
counted (spoofing). A zone's upstreams form a `Group`: failed upstreams (refused or timed-out connects, no answer in
time) are skipped until a health check passes. A TCP connection that the server closes is not a failure: the
queries left unanswered on it are sent again on a fresh connection.
"""
from __future__ import annotations

import asyncio
import logging
import resource
import struct
import time
from collections.abc import Callable, Iterable

from . import wire
from .addresses import Address, Peer
from .exchange import OutOfSockets, UpstreamError, answer_matches
from .metrics import rcode_name
from .stats import Stats
from .tcpupstream import TcpUpstream
from .wire import random_id

log = logging.getLogger("cache.upstream")

HEALTH_QUESTION = b"\x00" + struct.pack("!HH", 2, 1)  # ". IN NS", as CoreDNS's forward health check asks
MAX_FAILS = 2  # consecutive failures before an upstream is skipped
HEALTH_INTERVAL = 0.5


_last_warned = [0.0]  # when the last out-of-sockets warning was logged


def warn_out_of_sockets(error: OSError) -> None:
    """Say so, at most once a minute: every miss to a UDP upstream holds a socket until its answer."""
    now = time.monotonic()
    if now - _last_warned[0] >= 60:
        _last_warned[0] = now
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.warning("cannot open a socket for an upstream query (%s; open files limit %d): queries get SERVFAIL "
                    "until misses in flight end; raise the container's open files limit", error.strerror, soft)


class _UdpExchange(asyncio.DatagramProtocol):
    """One query on its own connected socket: a fresh source port per query, answers only from the upstream."""

    def __init__(self, qid: int, question: bytes, on_mismatch: Callable[[], None]) -> None:
        self.qid, self.question, self.on_mismatch = qid, question, on_mismatch
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Peer) -> None:
        if self.answer.done():
            return
        if answer_matches(data, self.qid, self.question):
            self.answer.set_result(data)
        else:
            self.on_mismatch()

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable: the upstream is down
        if not self.answer.done():
            self.answer.set_exception(UpstreamError(f"{exc}"))


class Upstream:
    """One upstream server. UDP upstreams fall back to TCP (same address) when an answer is truncated."""

    def __init__(self, address: Address, stats: Stats) -> None:
        self.address, self.stats = address, stats
        self.name = str(address)
        self.tcp = TcpUpstream(Address("tcp", address.host, address.port), stats)
        self.fails = 0
        self.ever_answered = False
        self.closed = False
        self._health_task: asyncio.Task[None] | None = None

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
        except OutOfSockets:
            raise  # our shortage: the upstream may be fine
        except UpstreamError:
            self._failed()
            raise
        rcode = int.from_bytes(data[2:4], "big") & wire.RCODE_MASK
        self.stats.forward_responses[(self.name, rcode)] += 1
        self.stats.forward_duration.observe((self.name, rcode_name(rcode)), time.monotonic() - started)
        self.fails = 0
        self.ever_answered = True
        return data

    async def _udp(self, question: bytes, do: bool, cd: bool, timeout: float) -> bytes:
        loop = asyncio.get_running_loop()
        qid = random_id()
        name = self.name
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _UdpExchange(qid, question, lambda: self.stats.forward_spoofed.__setitem__(
                    name, self.stats.forward_spoofed[name] + 1)),
                remote_addr=(self.address.host, self.address.port))
        except OSError as error:
            if error.errno in OutOfSockets.ERRNOS:
                warn_out_of_sockets(error)
                raise OutOfSockets(f"{self.address}: {error.strerror or error}") from None
            raise UpstreamError(f"{self.address}: {error}") from None
        try:
            transport.sendto(wire.build_query(qid, question, do, cd))
            return await asyncio.wait_for(protocol.answer, timeout)
        except TimeoutError:
            raise UpstreamError(f"{self.address}: no answer within {timeout:.2f}s") from None
        finally:
            transport.close()

    def _failed(self) -> None:
        if self.closed:  # replaced by a reload or shutting down: its failures say nothing, and nothing to check
            return
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
        self.closed = True
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
