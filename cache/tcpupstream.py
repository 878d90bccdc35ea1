"""Persistent, pipelined TCP to one upstream (RFC 7766), the way kube-dns is asked.

A server may close a connection at any time (RFC 7766 section 6.2.3); a query left unanswered on a closed
connection is sent again on a fresh one within its deadline, and a close is not an upstream failure.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from typing import cast

from . import wire
from .addresses import Address
from .exchange import OutOfSockets, UpstreamError, answer_matches
from .stats import Stats
from .wire import random_id

log = logging.getLogger("cache.upstream")

# Reconnect backoff after a failed connect, doubling from the first: capped low, so that the cluster zone answers
# again within BACKOFF_MAX of kube-dns being back, however long it was away (a connect refused costs next to nothing).
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 0.5
CLOSED_RETRIES = 10  # resends (within the deadline) of a query whose connection closed having answered nothing
QUERIES_PER_CONNECTION = 100  # then a fresh connection: dnsmasq closes after 100 (its TCP_MAX_QUERIES)
MAX_CONNECTIONS = 16  # per upstream; beyond, queries are pipelined past the limit (resent if the server closes)
LIMIT_CLOSE_WITHIN = 0.5  # a server close this soon after an answer, with queries pending, suggests a query limit
LIMIT_EVIDENCE = 5  # connections in a row closed so, after the same number of answers, before a limit is believed
LIMIT_MEMORY = 300.0  # seconds a learned limit is kept; then it is learned again (the server may have changed)
TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)  # linux/tcp.h
DRAIN_GRACE = 0.05  # seconds a drained connection at a learned limit waits for the server's close that proves it


class ConnectionClosed(UpstreamError):
    """The connection closed, or was closing, before the answer came: the query is sent again on a fresh one."""


class _Connection(asyncio.Protocol):
    """One TCP connection: queries pipelined on it, answers matched by ID and question (RFC 7766 section 6.2.1).

    A protocol rather than a stream reader: every answer that arrived before a reset is still read (a stream
    reader raises the reset first and drops them, and their queries would be sent again for nothing).
    """

    transport: asyncio.Transport  # set by connection_made, which runs before create_connection hands us out

    def __init__(self, owner: TcpUpstream) -> None:
        self.owner = owner
        self.pending: dict[int, tuple[bytes, asyncio.Future[bytes]]] = {}  # qid -> (question, answer)
        self.sent = self.answered = 0
        self.last_answer = time.monotonic()  # when the last answer (or the connection) came
        self.closed = False
        self.retired = False  # takes no new queries; closed by us once its last answer is in
        self._buffer = bytearray()  # at most one message (64 KiB) and its length
        self._socket: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass, but behaves as one
        self._socket = transport.get_extra_info("socket")
        if self._socket is not None:
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def usable(self) -> bool:
        return not (self.closed or self.retired or self.transport.is_closing())

    def send(self, question: bytes, do: bool, cd: bool) -> tuple[int, asyncio.Future[bytes]]:
        """Write one query; ConnectionClosed when the connection is gone (uvloop raises RuntimeError then)."""
        if self.closed or self.transport.is_closing():
            raise ConnectionClosed(f"{self.owner.address}: connection closed")
        qid = random_id()
        while qid in self.pending:
            qid = random_id()
        message = wire.build_query(qid, question, do, cd)
        try:
            self.transport.write(struct.pack("!H", len(message)) + message)
        except (RuntimeError, OSError) as error:
            self.close()
            raise ConnectionClosed(f"{self.owner.address}: connection closed ({error})") from None
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[qid] = (question, future)
        self.sent += 1
        return qid, future

    def forget(self, qid: int) -> None:
        """The query is over (answered, timed out, cancelled): a late answer to its ID counts as spoofed."""
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
        answered = self.answered
        self._read_answers(buffer)
        if len(self.pending) > self.answered - answered:  # more answers to come (see `quick_ack`)
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
            end = 2 + int.from_bytes(buffer[:2], "big")
            if len(buffer) < end:
                return
            message = bytes(buffer[2:end])
            del buffer[:end]
            qid = int.from_bytes(message[:2], "big") if len(message) >= 2 else -1
            waiting = self.pending.get(qid)
            if waiting is not None and not waiting[1].done() and answer_matches(message, qid, waiting[0]):
                waiting[1].set_result(message)
                self.answered += 1
                self.last_answer = time.monotonic()
            else:
                self.owner.stats.forward_spoofed[str(self.owner.address)] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(by_server=True)

    def close(self) -> None:
        """Close from our side; queries still pending on it fail with ConnectionClosed (and are resent)."""
        self._end(by_server=False)

    def _end(self, by_server: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.transport.close()
        unanswered = [future for _, future in self.pending.values() if not future.done()]
        for future in unanswered:
            future.set_exception(ConnectionClosed(f"{self.owner.address}: connection closed unanswered"))
        self.owner.closed(self, len(unanswered) if by_server else 0)


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
        self._connecting: asyncio.Lock | None = None
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

    async def _connect(self) -> _Connection:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            current = self._current
            if current is not None and self._usable(current):
                return current
            if self._shut:
                raise UpstreamError(f"{self.address}: closed (configuration reloaded or shutting down)")
            if time.monotonic() < self._retry_at:
                raise UpstreamError(f"{self.address}: reconnecting after a failure (backoff)")
            try:
                _, connection = await asyncio.get_running_loop().create_connection(
                    lambda: _Connection(self), self.address.host, self.address.port)
            except OSError as error:
                if error.errno in OutOfSockets.ERRNOS:
                    raise OutOfSockets(f"{self.address}: {error.strerror or error}") from None
                self._retry_at = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, BACKOFF_MAX)
                raise UpstreamError(f"{self.address}: {error.strerror or error}") from None
            self._backoff = BACKOFF_FIRST
            if not connection.closed:
                self._current = connection
                self._connections.add(connection)
            return connection

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

    async def exchange(self, question: bytes, do: bool, cd: bool, timeout: float) -> bytes:
        """The answer to one question within `timeout`; resent on a fresh connection when one closes unanswered."""
        deadline = time.monotonic() + timeout
        fruitless = 0  # connections this query saw closed before they answered anything
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UpstreamError(f"{self.address}: no answer within {timeout:.2f}s")
            if fruitless > CLOSED_RETRIES:
                raise UpstreamError(f"{self.address}: {fruitless} connections closed before any answer")
            connection = self._current
            if connection is None or not self._usable(connection):
                try:
                    connection = await asyncio.wait_for(self._connect(), remaining)
                except TimeoutError:
                    raise UpstreamError(f"{self.address}: connect timed out") from None
                if not self._usable(connection):  # filled up by others meanwhile (take the next), or closed
                    fruitless += connection.closed and not connection.answered
                    continue
            try:  # checked and written with no pause in between, so the connection cannot have closed meanwhile
                qid, future = connection.send(question, do, cd)
            except ConnectionClosed:
                fruitless += not connection.answered
                continue
            try:
                return await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.001))
            except ConnectionClosed:
                # A connection that answered some queries before it closed shows the server at work: only the
                # deadline bounds those resends. One closed with no answer at all counts toward a failure.
                fruitless += not connection.answered
            except TimeoutError:
                # The connection may be a black hole (a server gone without a FIN, a stale conntrack entry to a
                # dead pod): the next query opens a fresh one; this one is closed once its other queries end.
                connection.retired = True
                raise UpstreamError(f"{self.address}: no answer within {timeout:.2f}s") from None
            finally:
                connection.forget(qid)

    def close(self) -> None:
        self._shut = True
        for connection in list(self._connections):
            connection.close()
