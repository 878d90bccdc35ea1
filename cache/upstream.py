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
import socket
import struct
import time
from collections.abc import Iterable, Sequence
from typing import Final

from . import wire
from .addresses import Address
from .exchange import Deadlines, Done, Exchange, OutOfSockets, UpstreamError, answer_matches, ask
from .metrics import rcode_name
from .stats import Stats
from .tcpupstream import TcpUpstream
from .wire import random_id

log = logging.getLogger("cache.upstream")

HEALTH_QUESTION: Final = b"\x00" + struct.pack("!HH", 2, 1)  # ". IN NS", as CoreDNS's forward health check asks
MAX_FAILS: Final = 2  # consecutive failures before an upstream is skipped
HEALTH_INTERVAL: Final = 0.5
TC_RETRY_AT_LEAST: Final = 0.05  # seconds a truncated answer's TCP retry gets, even when the share is nearly spent


_last_warned = [0.0]  # when the last out-of-sockets warning was logged


def warn_out_of_sockets(error: OSError) -> None:
    """Say so, at most once a minute: every miss to a UDP upstream holds a socket until its answer."""
    now = time.monotonic()
    if now - _last_warned[0] >= 60:
        _last_warned[0] = now
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.warning("cannot open a socket for an upstream query (%s; open files limit %d): queries get SERVFAIL "
                    "until misses in flight end; raise the container's open files limit", error.strerror, soft)


class _UdpQuery:
    """One query on its own connected socket: a fresh source port per query, answers only from the upstream (the
    kernel drops datagrams from any other address on a connected socket), read when the loop says it is readable."""

    def __init__(self, upstream: Upstream, exchange: Exchange) -> None:
        self.upstream, self.exchange = upstream, exchange
        host, port = upstream.address.host, upstream.address.port
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setblocking(False)
            self.sock.connect((host, port))
            exchange.qid = random_id()
            self.sock.send(wire.build_query(exchange.qid, exchange.question, exchange.do, exchange.cd))
        except OSError:
            self.sock.close()
            raise
        exchange.deadlines.loop.add_reader(self.sock.fileno(), self._readable)
        exchange.holder = self

    def _readable(self) -> None:
        exchange = self.exchange
        try:
            data = self.sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:  # ICMP port unreachable, queued on the socket: the upstream is down
            self._close()
            exchange.fail(UpstreamError(f"{self.upstream.address}: {error}"))
            return
        if not answer_matches(data, exchange.qid, exchange.question):
            self.upstream.stats.forward_spoofed[self.upstream.name] += 1
            return
        self._close()
        if int.from_bytes(data[2:4], "big") & wire.TC:  # too big for UDP: the same server over TCP
            exchange.extend(TC_RETRY_AT_LEAST)
            self.upstream.tcp.send(exchange)
        else:
            exchange.answer(data)

    def abandon(self, exchange: Exchange) -> UpstreamError:
        self._close()
        return UpstreamError(f"{self.upstream.address}: no answer within {exchange.share:.2f}s")

    def _close(self) -> None:
        if self.sock.fileno() >= 0:
            self.exchange.deadlines.loop.remove_reader(self.sock.fileno())
            self.sock.close()


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
        # rcode -> its forward_responses key and forward_duration series, made once: an answer counts without
        # building and hashing two label tuples (at most 16 rcodes fit in a header)
        self._counted: dict[int, tuple[tuple[str, int], tuple[list[int], list[float]]]] = {}

    @property
    def healthy(self) -> bool:
        return self.fails < MAX_FAILS

    def send(self, exchange: Exchange) -> None:
        """Ask this upstream; the transport calls the exchange back."""
        self.stats.forward_requests[self.name] += 1
        exchange.fruitless = 0
        if self.address.proto == "tcp":
            self.tcp.send(exchange)
            return
        try:
            _UdpQuery(self, exchange)
        except OSError as error:
            if error.errno in OutOfSockets.ERRNOS:
                warn_out_of_sockets(error)
                exchange.fail(OutOfSockets(f"{self.address}: {error.strerror or error}"))
            else:
                exchange.fail(UpstreamError(f"{self.address}: {error}"))

    def answered(self, data: bytes, started: float) -> None:
        rcode = data[3] & wire.RCODE_MASK
        counted = self._counted.get(rcode)
        if counted is None:
            series = self.stats.forward_duration.series_of((self.name, rcode_name(rcode)))
            counted = self._counted[rcode] = ((self.name, rcode), series)
        key, series = counted
        self.stats.forward_responses[key] += 1
        self.stats.forward_duration.add(series, time.monotonic() - started)
        self.fails = 0
        self.ever_answered = True

    def failed(self, error: UpstreamError) -> None:
        if not isinstance(error, OutOfSockets):  # our shortage: the upstream may be fine
            self._failed()

    async def exchange(self, question: bytes, do: bool, cd: bool, timeout: float) -> bytes:
        """This upstream's answer alone (a health check); UpstreamError when none comes within `timeout`."""
        return await ask(question, do, cd, timeout, (self,), self.name)

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
        self._deadlines: Deadlines | None = None  # the timeouts of its exchanges, on the loop of the first miss

    @property
    def up(self) -> bool:
        return any(u.healthy and u.ever_answered for u in self.upstreams)

    def order(self) -> Sequence[Upstream]:
        """Healthy upstreams first, in their configured order; when none is healthy, all of them (try them anyway
        rather than fail without asking)."""
        upstreams = self.upstreams
        for upstream in upstreams:
            if not upstream.healthy:
                break
        else:
            if upstreams:
                return upstreams  # the usual case, without building a list per miss
        healthy = [u for u in upstreams if u.healthy]
        if not healthy:
            self.stats.healthcheck_broken += 1
            return upstreams
        return healthy + [u for u in upstreams if not u.healthy]

    def start(self, question: bytes, do: bool, cd: bool, timeout: float, on_done: Done) -> None:
        """Ask for the first answer from an upstream (any rcode) within `timeout`: `on_done` is called with it, or
        with an UpstreamError when none answers."""
        deadlines = self._deadlines
        if deadlines is None:
            deadlines = self._deadlines = Deadlines(asyncio.get_running_loop())
        Exchange(question, do, cd, timeout, self.order(), self.zone, on_done, deadlines).begin()

    async def exchange(self, question: bytes, do: bool, cd: bool, timeout: float) -> bytes:
        """`start`, awaited (the loop probes)."""
        return await ask(question, do, cd, timeout, self.order(), self.zone)

    def close(self) -> None:
        for upstream in self.upstreams:
            upstream.close()
