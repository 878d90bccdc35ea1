"""Persistent, pipelined TCP to one upstream (RFC 7766), the way kube-dns is asked.

A server may close a connection at any time (RFC 7766 section 6.2.3); a query left unanswered on a closed
connection is sent again on a fresh one within its deadline, and a close is not an upstream failure.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from typing import Final, cast

from . import wire
from .addresses import Address
from .exchange import Exchange, OutOfSockets, UpstreamError, answer_matches, ask
from .records import u16
from .stats import Stats
from .wire import random_id

log = logging.getLogger("cache.upstream")

# Reconnect backoff after a failed connect, doubling from the first: capped low, so that the cluster zone answers
# again within BACKOFF_MAX of kube-dns being back, however long it was away (a connect refused costs next to nothing).
BACKOFF_FIRST: Final = 0.1
BACKOFF_MAX: Final = 0.5
CLOSED_RETRIES: Final = 10  # resends (within the deadline) of a query whose connection closed having answered nothing
QUERIES_PER_CONNECTION: Final = 100  # then a fresh connection: dnsmasq closes after 100 (its TCP_MAX_QUERIES)
MAX_CONNECTIONS: Final = 16  # per upstream; beyond, queries are pipelined past the limit (resent if the server closes)
# A server close this soon after an answer, with queries pending, suggests a query limit; believed after this many
# connections in a row closed so, after the same number of answers:
LIMIT_CLOSE_WITHIN: Final = 0.5
LIMIT_EVIDENCE: Final = 5
LIMIT_MEMORY: Final = 300.0  # seconds a learned limit is kept; then it is learned again (the server may have changed)
TCP_QUICKACK: Final = getattr(socket, "TCP_QUICKACK", 12)  # linux/tcp.h
DRAIN_GRACE: Final = 0.05  # seconds a drained connection at a learned limit waits for the server's close that proves it


class ConnectionClosed(UpstreamError):
    """The connection closed, or was closing, before the query could be written: it is sent on another one."""


class _Connection(asyncio.Protocol):
    """One TCP connection: queries pipelined on it, answers matched by ID and question (RFC 7766 section 6.2.1).

    A protocol rather than a stream reader: every answer that arrived before a reset is still read (a stream
    reader raises the reset first and drops them, and their queries would be sent again for nothing).
    """

    transport: asyncio.Transport  # set by connection_made, which runs before create_connection hands us out

    def __init__(self, owner: TcpUpstream) -> None:
        self.owner = owner
        self.pending: dict[int, Exchange] = {}  # qid -> the exchange waiting for its answer
        self.sent = self.answered = 0
        self.last_answer = time.monotonic()  # when the last answer (or the connection) came
        self.closed = False
        self.retired = False  # takes no new queries; closed by us once its last answer is in
        self._buffer = bytearray()  # at most one message (64 KiB) and its length
        self._socket: socket.socket | None = None
        self._outgoing: list[bytes] = []  # queries framed this loop turn, written together by `_write`
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass, but behaves as one
        self._socket = transport.get_extra_info("socket")
        if self._socket is not None:
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def usable(self) -> bool:
        return not (self.closed or self.retired or self.transport.is_closing())

    def send(self, exchange: Exchange) -> None:
        """Queue one query for this turn's write; ConnectionClosed when the connection is gone."""
        if self.closed or self.transport.is_closing():
            raise ConnectionClosed(f"{self.owner.address}: connection closed")
        qid = random_id()
        while qid in self.pending:
            qid = random_id()
        message = wire.build_query(qid, exchange.question, exchange.do, exchange.cd)
        # Written at the end of this loop turn with every other query framed in it: a burst of misses read in one
        # batch goes out in one write() instead of one system call per query (see `_write`).
        if not self._outgoing:
            self._loop.call_soon(self._write)
        self._outgoing.append(len(message).to_bytes(2, "big") + message)
        self.pending[qid] = exchange
        exchange.qid, exchange.holder = qid, self
        self.sent += 1

    def _write(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self.closed:  # its queries were sent again on another connection when it closed
            return
        try:
            self.transport.write(b"".join(outgoing))
        except (RuntimeError, OSError) as error:  # uvloop raises RuntimeError on a closed transport
            log.debug("writing to %s failed: %s", self.owner.address, error)
            self.close()  # the queries pending on it are sent again on another connection

    def abandon(self, exchange: Exchange) -> UpstreamError:
        """No answer in time. The connection may be a black hole (a server gone without a FIN, a stale conntrack
        entry to a dead pod): the next query opens a fresh one; this one is closed once its other queries end."""
        self.retired = True
        self.forget(exchange.qid)
        return UpstreamError(f"{self.owner.address}: no answer within {exchange.share:.2f}s")

    def forget(self, qid: int) -> None:
        """The query is over (answered, timed out): a late answer to its ID counts as spoofed."""
        self.pending.pop(qid, None)
        if self.retired and not self.pending and not self.closed:
            if self.owner.learned_limit == self.sent:  # does the server close it, as the limit says it will?
                asyncio.get_running_loop().call_later(DRAIN_GRACE, self._drained)
            else:
                self.close()

    def _drained(self) -> None:
        if not self.closed:  # the server kept it open: it would have answered more than the learned limit
            self.owner.limit_disproved()
            self.close()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        self._read_answers(buffer)
        if self.pending:  # more answers to come (see `quick_ack`)
            self.quick_ack()

    def quick_ack(self) -> None:
        """Acknowledge what was read at once rather than after the kernel's delayed-ACK timer (40 ms): a server
        that leaves Nagle's algorithm on (dnsmasq) holds every small answer while one is unacknowledged, so the
        second of two pipelined answers waited 40 ms for our ACK. The kernel falls back to delayed ACKs by
        itself, so this is asked again after each read that leaves queries unanswered (one syscall)."""
        if self._socket is not None:
            try:
                self._socket.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
            except OSError:
                self._socket = None  # not Linux: delayed ACKs it is

    def _read_answers(self, buffer: bytearray) -> None:
        while len(buffer) >= 2:
            end = 2 + (buffer[0] << 8 | buffer[1])
            if len(buffer) < end:
                return
            message = bytes(buffer[2:end])
            del buffer[:end]
            qid = u16(message, 0) if len(message) >= 2 else -1
            exchange = self.pending.get(qid)
            if exchange is not None and answer_matches(message, qid, exchange.question):
                self.answered += 1
                self.last_answer = time.monotonic()
                self.forget(qid)
                exchange.answer(message)
            else:
                self.owner.stats.forward_spoofed[str(self.owner.address)] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(by_server=True)

    def close(self) -> None:
        """Close from our side; queries still pending on it are sent again on another connection."""
        self._end(by_server=False)

    def _end(self, by_server: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.transport.close()
        unanswered = list(self.pending.values())
        self.pending.clear()
        self.owner.closed(self, len(unanswered) if by_server else 0)
        for exchange in unanswered:
            # A connection that answered some queries before it closed shows the server at work: only the
            # deadline bounds those resends. One closed with no answer at all counts toward a failure.
            exchange.fruitless += not self.answered
            exchange.holder = None
            self.owner.send(exchange)


class TcpUpstream:
    """Persistent, pipelined TCP to one upstream (RFC 7766): queries share the current connection, and one whose
    connection closes before its answer is sent again on a fresh connection, within its deadline.

    A server may close a connection at any time (RFC 7766 section 6.2.3), and some close after a fixed number of
    queries: dnsmasq after 100, with a reset that also loses answers in flight when more queries were sent. So a
    connection carries at most `limit` queries (100, or fewer learned from the server's closes); the next one
    opens beside it while it drains, and the drained one is closed.
    """

    def __init__(self, address: Address, stats: Stats) -> None:
        self.address, self.stats = address, stats
        self._current: _Connection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._waiting: dict[Exchange, None] = {}  # exchanges waiting for the connection being opened, in order
        self._retry_at = 0.0
        self._backoff = BACKOFF_FIRST
        self._closes_in_a_row: list[int] = []  # answer counts of the last connections the server closed early
        self._learned: tuple[int, float] | None = None  # (queries per connection, until when)
        self._connections: set[_Connection] = set()  # open ones, the current and those draining
        self._shut = False

    def _usable(self, connection: _Connection | None) -> bool:
        """Whether a query may be sent on this connection now; one that reached the limit is retired (unless so
        many are open already that a burst would exhaust the server's connections or our descriptors)."""
        if connection is None or not connection.usable:
            return False
        if connection.sent >= self.limit and len(self._connections) < MAX_CONNECTIONS:
            connection.retired = True
            if not connection.pending:
                connection.close()
            return False
        return True

    def send(self, exchange: Exchange) -> None:
        """Write the query on the current connection, or queue it for the next one; the connection calls the
        exchange back with the answer, and sends it again elsewhere if it closes first."""
        while True:  # each pass writes the query, queues it, or counts a connection found closed
            if exchange.fruitless > CLOSED_RETRIES:
                exchange.fail(UpstreamError(f"{self.address}: {exchange.fruitless} connections closed before any "
                                            "answer"))
                return
            connection = self._current
            if connection is None or not self._usable(connection):
                self._queue(exchange)
                return
            try:  # checked and written with no pause in between, so the connection cannot have closed meanwhile
                connection.send(exchange)
                return
            except ConnectionClosed:
                exchange.fruitless += not connection.answered

    def _queue(self, exchange: Exchange) -> None:
        """Hold the exchange until a fresh connection is open (one connect at a time, shared by all waiting)."""
        if self._shut:
            exchange.fail(UpstreamError(f"{self.address}: closed (configuration reloaded or shutting down)"))
            return
        if time.monotonic() < self._retry_at:
            exchange.fail(UpstreamError(f"{self.address}: reconnecting after a failure (backoff)"))
            return
        self._waiting[exchange] = None
        exchange.holder = self
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())

    def abandon(self, exchange: Exchange) -> UpstreamError:
        """Its time ran out while the connection was being opened."""
        self._waiting.pop(exchange, None)
        return UpstreamError(f"{self.address}: connect timed out")

    async def _connect(self) -> None:
        try:
            connection = await self._open()
        except OSError as error:
            if error.errno in OutOfSockets.ERRNOS:
                self._connect_failed(OutOfSockets(f"{self.address}: {error.strerror or error}"))
                return
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            self._connect_failed(UpstreamError(f"{self.address}: {error.strerror or error}"))
            return
        except BaseException:  # cancelled (shutting down)
            self._connect_failed(UpstreamError(f"{self.address}: closed (configuration reloaded or shutting down)"))
            raise
        self._connecting = None
        self._backoff = BACKOFF_FIRST
        if not connection.closed:
            self._current = connection
            self._connections.add(connection)
        # Closed (or closing: the server's FIN is in) at once: counts toward the waiting queries' failure, as a
        # close after a query was written does; without this, a server that closes every connection on accept
        # would be asked again and again until the deadline.
        fruitless = not connection.usable
        waiting, self._waiting = self._waiting, {}
        for exchange in waiting:
            exchange.holder = None
            exchange.fruitless += fruitless
            self.send(exchange)  # those beyond the connection's limit queue for the next one

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        sock = await connected_socket(self.address.host, self.address.port)
        try:
            _, connection = await loop.create_connection(lambda: _Connection(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        return connection

    def _connect_failed(self, error: UpstreamError) -> None:
        self._connecting = None
        waiting, self._waiting = self._waiting, {}
        for exchange in waiting:
            exchange.fail(error)

    @property
    def learned_limit(self) -> int | None:
        if self._learned is not None and time.monotonic() < self._learned[1]:
            return self._learned[0]
        return None

    @property
    def limit(self) -> int:
        """Queries sent on one connection before the next one is opened beside it."""
        return self.learned_limit or QUERIES_PER_CONNECTION

    def limit_disproved(self) -> None:
        if self._learned is not None:
            log.info("upstream %s keeps TCP connections open after %d answers after all: back to %d queries per "
                     "connection", self.address, self._learned[0], QUERIES_PER_CONNECTION)
        self._learned = None
        self._closes_in_a_row.clear()

    def closed(self, connection: _Connection, unanswered: int) -> None:
        """A connection ended. A server that closes every connection right after the same number of answers, with
        queries of ours unanswered on it, has a per-connection query limit (one that closes after each answer has
        1). A single such close proves little: servers also close on a restart, under load (dnsmasq now and then
        after 0 or 1 answers) or after an idle timeout, and a reset loses answers in flight so the count varies.
        Too high a limit costs resent queries; too low costs a connection (for dnsmasq a fork) per few queries.
        So only LIMIT_EVIDENCE connections in a row closed after the same count make a limit, and a connection
        that reaches it and is left open by the server undoes it."""
        self._connections.discard(connection)
        if self._current is connection:
            self._current = None
        if unanswered and connection.answered and time.monotonic() - connection.last_answer < LIMIT_CLOSE_WITHIN:
            self._closes_in_a_row.append(connection.answered)
        else:
            self._closes_in_a_row.clear()
        streak = self._closes_in_a_row[-LIMIT_EVIDENCE:]
        if len(streak) == LIMIT_EVIDENCE and len(set(streak)) == 1 and streak[0] < self.limit:
            log.info("upstream %s closes every TCP connection after %d answers: sending at most that many queries "
                     "per connection", self.address, streak[0])
            self._learned = (streak[0], time.monotonic() + LIMIT_MEMORY)
        del self._closes_in_a_row[:-LIMIT_EVIDENCE]

    # Asked on its own, as an upstream of its own (tests): nothing to count, the group's Upstream does that.
    def answered(self, data: bytes, started: float) -> None:
        pass

    def failed(self, error: UpstreamError) -> None:
        pass

    async def exchange(self, question: bytes, do: bool, cd: bool, timeout: float) -> bytes:
        """One question on this upstream's TCP alone, awaited; UpstreamError when no answer comes in time."""
        return await ask(question, do, cd, timeout, (self,), str(self.address))

    def close(self) -> None:
        self._shut = True
        if self._connecting is not None:
            self._connecting.cancel()
        self._connect_failed(UpstreamError(f"{self.address}: closed (configuration reloaded or shutting down)"))
        for connection in list(self._connections):
            connection.close()


async def connected_socket(host: str, port: int) -> socket.socket:
    """A non-blocking TCP socket connected to host (an IP literal), for create_connection(sock=...). Connected here
    rather than by create_connection(host, port) or sock_connect: uvloop encodes a host with the idna codec before it
    resolves it, even an IP literal, and importing that codec brings unicodedata and stringprep (0.4 MB of RSS)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        error = sock.connect_ex((host, port))
        if error == errno.EINPROGRESS:
            writable: asyncio.Future[None] = loop.create_future()

            def ready() -> None:
                if not writable.done():
                    writable.set_result(None)

            loop.add_writer(sock.fileno(), ready)
            try:
                await writable
            finally:
                loop.remove_writer(sock.fileno())
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
    except BaseException:
        sock.close()
        raise
    return sock
