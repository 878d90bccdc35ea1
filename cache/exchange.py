"""What every upstream exchange shares, UDP or TCP: the errors when an upstream gives no usable answer (or we could
not ask it), the check that an answer belongs to the query (the defence against spoofed answers), and `Exchange`,
one question on its way through a zone's upstreams.

A miss is an object with a callback and one timer, not a coroutine: a Task per miss awaiting three layers of
coroutines (group, upstream, TCP), bounded by `asyncio.wait_for`, took 56,000 of the 250,000 instructions a miss
cost (`python -m bench.profile miss --callgrind 10000`: 250k before, 194k after; `python -m bench.asynciocost`: a
Task alone is 15.7k, a `wait_for` 18.7k). The transports call the exchange back when something happens to it
(`answer`, `fail`, or its timer runs out); the exchange moves on to the next upstream itself. Callers that await an
answer (health checks, loop probes) use `ask`.

Nor does each miss get a timer of its own: `Deadlines` files each exchange under the tick (TICK seconds) in which
its time runs out and keeps one event-loop timer per tick that has any. uvloop's `call_later` and `cancel` cost
7,100 instructions per miss (a libuv timer each); filing and unfiling in a tick's dict a few hundred.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable, Sequence
from typing import ClassVar, Final, Protocol

from .records import u16

log = logging.getLogger("cache.upstream")

Result = bytes | Exception  # an answer's bytes, or why there is none (an UpstreamError)
Done = Callable[[Result], None]


class UpstreamError(Exception):
    """No usable answer from this upstream (timeout, refused connection, connections closed again and again)."""


class OutOfSockets(UpstreamError):
    """This process could not open a socket (out of file descriptors or socket memory): a shortage of ours, not a
    failure of the upstream, which must not be marked down for it."""

    ERRNOS: ClassVar[frozenset[int]] = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


def answer_matches(data: bytes, qid: int, question: bytes) -> bool:
    """Does an upstream answer belong to our query: its random ID, and its question (compared case-insensitively)?"""
    return (len(data) >= 12 + len(question) and u16(data, 0) == qid
            and data[12:12 + len(question)].lower() == question)


class Asked(Protocol):
    """An upstream as an exchange sees it: it sends the question and counts how the attempt ended."""

    def send(self, exchange: Exchange) -> None: ...

    def answered(self, data: bytes, started: float) -> None: ...

    def failed(self, error: UpstreamError) -> None: ...


class Holder(Protocol):
    """What holds an exchange while it waits (a TCP connection, a connect in progress, a UDP socket): told to let
    go of it when its time is up, and says why it had no answer."""

    def abandon(self, exchange: Exchange) -> UpstreamError: ...


TICK: Final = 0.01  # seconds: an exchange times out at most this long after its deadline


class Deadlines:
    """The timeouts of the exchanges on one event loop: each is filed under the first tick at or after its time
    (`arm`) and taken out when it ends first (`disarm`); one loop timer per tick that holds any calls `_timed_out`
    on whatever is left in it. Memory follows the exchanges in flight: an answered one is not kept until its tick."""

    __slots__ = ("loop", "ticks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ticks: dict[int, dict[Exchange, None]] = {}

    def arm(self, exchange: Exchange, delay: float) -> None:
        now = time.monotonic()
        tick = int((now + delay) / TICK) + 1
        due = self.ticks.get(tick)
        if due is None:
            due = self.ticks[tick] = {}
            self.loop.call_later(tick * TICK - now, self._expire, tick)
        due[exchange] = None
        exchange.tick = tick

    def disarm(self, exchange: Exchange) -> None:
        due = self.ticks.get(exchange.tick)
        if due is not None:
            due.pop(exchange, None)
        exchange.tick = 0

    def _expire(self, tick: int) -> None:
        for exchange in self.ticks.pop(tick, {}):
            exchange.tick = 0
            exchange._timed_out()


class Exchange:
    """One question asked of a zone's upstreams in order, within one deadline: each upstream gets an equal share of
    the time left (so a silent first one leaves time for the next), and `on_done` is called once, with the answer's
    bytes or an UpstreamError saying what each upstream did."""

    __slots__ = ("cd", "deadline", "deadlines", "do", "done", "errors", "fruitless", "holder", "index", "name",
                 "on_done", "order", "qid", "question", "share", "started", "tick", "timeout", "upstream")

    def __init__(self, question: bytes, do: bool, cd: bool, timeout: float, order: Sequence[Asked], name: str,
                 on_done: Done, deadlines: Deadlines) -> None:
        self.question, self.do, self.cd = question, do, cd
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.order, self.name, self.on_done = order, name, on_done
        self.deadlines = deadlines  # and its loop, the caller's: asyncio.get_running_loop() costs a getpid() (3.11)
        self.index = 0  # the next upstream in `order` to ask
        self.errors: list[str] = []
        self.upstream: Asked | None = None  # the one asked now, and since when, for how long
        self.started = self.share = 0.0
        self.tick = 0  # the tick `deadlines` holds it under, 0 when none
        self.holder: Holder | None = None
        self.qid = 0  # this attempt's message ID (TCP: the key of the connection's pending map)
        self.fruitless = 0  # TCP connections this attempt saw closed before they answered anything
        self.done = False

    def begin(self) -> None:
        self._next()

    def _next(self) -> None:
        now = time.monotonic()
        remaining = self.deadline - now
        left = len(self.order) - self.index
        if left <= 0 or remaining <= 0:
            self._finish(UpstreamError("; ".join(self.errors) or f"no upstream for {self.name} within "
                                       f"{self.timeout}s"))
            return
        upstream = self.order[self.index]
        self.index += 1
        self.upstream, self.started, self.share = upstream, now, remaining / left  # leave time for the next ones
        self.deadlines.arm(self, self.share)
        upstream.send(self)

    def extend(self, at_least: float) -> None:
        """Give this attempt at least `at_least` seconds from now (an answer truncated over UDP, asked again over
        TCP with what is left of the share, but never with next to nothing)."""
        if self.started + self.share - time.monotonic() < at_least and self.tick:
            self.deadlines.disarm(self)
            self.deadlines.arm(self, at_least)

    def answer(self, data: bytes) -> None:
        """From the transport: an answer that matched our ID and question."""
        if self.done:
            return
        if self.tick:
            self.deadlines.disarm(self)
        self.holder = None
        if self.upstream is not None:
            self.upstream.answered(data, self.started)
        self._finish(data)

    def fail(self, error: UpstreamError) -> None:
        """From the transport: this upstream gives no answer (refused, closed again and again): ask the next."""
        if self.done:
            return
        if self.tick:
            self.deadlines.disarm(self)
        self.holder = None
        self._failed(error)

    def _timed_out(self) -> None:
        holder, self.holder = self.holder, None
        if holder is not None:
            self._failed(holder.abandon(self))
        else:
            self._failed(UpstreamError(f"no answer within {self.share:.2f}s"))

    def _failed(self, error: UpstreamError) -> None:
        self.errors.append(str(error))
        if self.upstream is not None:
            self.upstream.failed(error)
        self._next()

    def _finish(self, result: Result) -> None:
        self.done = True
        try:
            self.on_done(result)
        except Exception:  # a bug in the receiver must not break the connection that delivered the answer
            log.exception("delivering the upstream answer for %s failed", self.name)


async def ask(question: bytes, do: bool, cd: bool, timeout: float, order: Sequence[Asked], name: str) -> bytes:
    """The answer from the first of `order` that gives one within `timeout`; UpstreamError if none does."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bytes] = loop.create_future()

    def done(result: Result) -> None:
        if future.done():  # the caller was cancelled meanwhile
            return
        if isinstance(result, bytes):
            future.set_result(result)
        else:
            future.set_exception(result)

    Exchange(question, do, cd, timeout, order, name, done, Deadlines(loop)).begin()
    return await future
