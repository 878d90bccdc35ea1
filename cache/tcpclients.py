"""DNS over TCP from clients (RFC 7766): each connection's queries are answered as they are ready, pipelined and in
any order, and the limits that keep one client from taking TCP away from the others.

- Every query read is answered, also after the client has shut down its write side (a half-close): the connection
  is closed once nothing is left to answer.
- A connection is idle while it owes no answer (RFC 7766 section 6.2.3); bytes of a query not yet complete do not
  count, so a client that trickles a query in is idle too. Idle connections are closed after `idle_timeout`, or
  after PRESSURE_IDLE_TIMEOUT while more than half of the connections are in use (as unbound shortens its
  tcp-idle-timeout when its TCP buffers run short).
- At most `max_connections` in all and `per_client` from one client address. A connection beyond the total takes
  the place of the connection idle the longest, so that only connections waiting for answers can fill the table.
- A client that does not take its answers is not read from until it does (the queries stay in the kernel's
  buffers, not ours); one that takes none for an idle timeout, or lets MAX_PENDING_OUTPUT pile up, is cut off.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, cast

from .stats import Stats

log = logging.getLogger("cache.tcpclients")

Send = Callable[[bytes, Any], None]
Handle = Callable[[bytes, Any, Send, str], None]

PRESSURE_IDLE_TIMEOUT = 0.5  # seconds, for idle connections while more than half of the connections are in use
MAX_PIPELINED = 100  # answers one connection may owe; beyond, its next queries wait in the kernel's buffers
MAX_PENDING_OUTPUT = 256 * 1024  # answers written but not taken by the client: then it is cut off
ANSWER_GRACE = 1.0  # seconds past the upstream timeout after which an owed answer is given up (a dropped query)


class TcpClients:
    """Every client connection of the process: the limits, and one timer that closes idle connections."""

    def __init__(self, handle: Handle, stats: Stats, idle_timeout: float, max_connections: int, per_client: int,
                 answer_within: Callable[[], float]) -> None:
        self.handle, self.stats = handle, stats
        self.idle_timeout, self.max_connections, self.per_client = idle_timeout, max_connections, per_client
        self.answer_within = answer_within  # seconds within which the resolver answers a query it will answer
        self.per_address: dict[str, int] = {}
        # Both in the order their times were set: idle ones by when they became idle, busy ones by their last query.
        self._idle: dict[_Connection, None] = {}
        self._busy: dict[_Connection, None] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def count(self) -> int:
        return self.stats.tcp_connections

    def protocol(self) -> _Connection:
        """The protocol factory for the listening sockets."""
        return _Connection(self)

    def timeout_now(self) -> float:
        if self.count * 2 > self.max_connections:
            return min(self.idle_timeout, PRESSURE_IDLE_TIMEOUT)
        return self.idle_timeout

    def admit(self, connection: _Connection) -> bool:
        """Count a new connection in, or say why not (counted in `dropped`)."""
        dropped = self.stats.dropped
        if self.per_address.get(connection.address, 0) >= self.per_client:
            dropped["tcp per-client connection limit"] += 1
            return False
        if self.count >= self.max_connections:
            longest_idle = next(iter(self._idle), None)
            if longest_idle is None:
                dropped["tcp connection limit"] += 1
                return False
            longest_idle.end()  # gone from the table now: its slot is the new one's
        self.per_address[connection.address] = self.per_address.get(connection.address, 0) + 1
        self.stats.tcp_connections += 1
        self.became_idle(connection)
        return True

    def release(self, connection: _Connection) -> None:
        self._idle.pop(connection, None)
        self._busy.pop(connection, None)
        left = self.per_address[connection.address] - 1
        if left:
            self.per_address[connection.address] = left
        else:
            del self.per_address[connection.address]
        self.stats.tcp_connections -= 1

    def became_idle(self, connection: _Connection) -> None:
        connection.since = asyncio.get_running_loop().time()
        connection.unsent = connection.transport.get_write_buffer_size()
        self._busy.pop(connection, None)
        self._idle.pop(connection, None)  # to the end: idle the shortest
        self._idle[connection] = None
        self._arm()

    def became_busy(self, connection: _Connection) -> None:
        connection.since = asyncio.get_running_loop().time()
        self._idle.pop(connection, None)
        self._busy.pop(connection, None)
        self._busy[connection] = None
        self._arm()

    def close(self) -> None:
        for connection in [*self._idle, *self._busy]:
            connection.end()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _next_deadline(self) -> float | None:
        deadlines = []
        if self._idle:
            deadlines.append(next(iter(self._idle)).since + self.timeout_now())
        if self._busy:
            deadlines.append(next(iter(self._busy)).since + self.answer_within() + ANSWER_GRACE)
        return min(deadlines, default=None)

    def _arm(self) -> None:
        deadline = self._next_deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer.when() <= deadline:
                return
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(deadline, self._expire)

    def _expire(self) -> None:
        """Close the connections idle for longer than the timeout now in force; a busy connection that waited past
        every answer's deadline owes nothing any more (its queries were dropped) and becomes idle."""
        self._timer = None
        now = asyncio.get_running_loop().time()
        overdue = now - self.answer_within() - ANSWER_GRACE
        while self._busy:
            connection = next(iter(self._busy))
            if connection.since > overdue:
                break
            connection.owed = 0
            self.became_idle(connection)
            connection.read_queries()  # those held back by MAX_PIPELINED, if any
        timeout = self.timeout_now()
        while self._idle:
            connection = next(iter(self._idle))
            if connection.since > now - timeout:
                break
            connection.expire()
            timeout = self.timeout_now()  # the pressure may have eased with each closed connection
        self._arm()


class _Connection(asyncio.Protocol):
    """One client connection: queries read as they complete, answered through `send` in whatever order they are
    ready, each with its two-byte length (RFC 1035 section 4.2.2)."""

    transport: asyncio.Transport

    def __init__(self, clients: TcpClients) -> None:
        self.clients = clients
        self.address = ""
        self.peer: Any = None
        self.owed = 0  # answers not yet sent
        self.since = 0.0  # when it last became idle or read a query (the clients' timer uses it)
        self.unsent = 0  # bytes of answers not yet taken by the client when it became idle
        self.admitted = self.half_closed = self.output_blocked = self.reading_paused = self._in_loop = False
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass, but behaves as one
        self.peer = transport.get_extra_info("peername")
        self.address = self.peer[0] if self.peer else ""
        self.admitted = self.clients.admit(self)
        if not self.admitted:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted:
            self.admitted = False
            self.clients.release(self)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self.read_queries()

    def eof_received(self) -> bool:
        self.half_closed = True  # a query cut short stays in the buffer, never whole, and is ignored
        self._close_when_done()
        return True  # keep our side open for the answers still owed

    def pause_writing(self) -> None:
        self.output_blocked = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.output_blocked = False
        if self.owed == 0:
            self.clients.became_idle(self)  # the client took answers: its idle time starts again
        self.read_queries()

    def send(self, reply: bytes, _addr: Any) -> None:
        """The resolver's answer to one of this connection's queries."""
        transport = self.transport
        if self.owed:
            self.owed -= 1
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_PENDING_OUTPUT:
            self.clients.stats.dropped["tcp client not reading"] += 1
            self.end()
            return
        transport.write(len(reply).to_bytes(2, "big") + reply)
        if self.owed == 0:
            self.clients.became_idle(self)
        if not self._in_loop:  # (an answer sent from within the loop below: the loop goes on by itself)
            self.read_queries()  # queries held back by MAX_PIPELINED may go now; or, half-closed, the end

    def read_queries(self) -> None:
        """Hand every complete query to the resolver, while the client takes its answers and owes fewer than
        MAX_PIPELINED; the rest waits in the buffer (and in the kernel's, once reading is paused)."""
        buffer = self._buffer
        self._in_loop = True
        try:
            while not self.output_blocked and self.owed < MAX_PIPELINED and self.admitted:
                end = self._complete_length()
                if not end:
                    break
                query = bytes(buffer[2:end])
                del buffer[:end]
                self.owed += 1
                self.clients.became_busy(self)
                try:
                    self.clients.handle(query, self.peer, self.send, "tcp")
                except Exception:
                    log.exception("TCP query from %s failed", self.peer)
        finally:
            self._in_loop = False
        self._update_reading()
        self._close_when_done()

    def _complete_length(self) -> int:
        """The length of the first complete query in the buffer with its prefix, or 0."""
        buffer = self._buffer
        if len(buffer) < 2:
            return 0
        end = 2 + int.from_bytes(buffer[:2], "big")
        return end if len(buffer) >= end else 0

    def _update_reading(self) -> None:
        pause = self.output_blocked or self.owed >= MAX_PIPELINED
        if pause != self.reading_paused and not self.transport.is_closing():
            self.reading_paused = pause
            if pause:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _close_when_done(self) -> None:
        if self.half_closed and self.owed == 0 and not self._complete_length():
            self.transport.close()  # after what is still buffered has been sent

    def expire(self) -> None:
        """Idle for the timeout: closed; but a client still taking its answers, however slowly, is idle from now
        on, and one that took none of them meanwhile is cut off."""
        unsent = self.transport.get_write_buffer_size()
        if unsent and unsent < self.unsent:
            self.clients.became_idle(self)
            return
        if unsent:
            self.clients.stats.dropped["tcp client not reading"] += 1
        self.end()

    def end(self) -> None:
        """Out of the table now (its slot is free at once) and closed; reset if answers are still unsent, which a
        client that does not read would otherwise hold here for ever."""
        if self.admitted:
            self.admitted = False
            self.clients.release(self)
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()
