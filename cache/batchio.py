"""Batched UDP I/O for the hit path: recvmmsg in, sendmmsg out (Linux, libc's calls through ctypes in cache/mmsg.py).

Why: a cache hit costs the resolver a few microseconds of Python, and each datagram costs the kernel a recvfrom
and a sendto besides (plus an epoll round and a callback per packet under an event loop): that is what keeps a
plain asyncio listener above the C caches' CPU per query. `recvmmsg` reads up to `batch_size` datagrams in one
syscall and `sendmmsg` writes the batch's answers in one more, so the syscall cost is shared by the whole batch.

How: the listener registers the socket with `loop.add_reader`. When it is readable it drains it in bounded rounds
(never blocking: MSG_DONTWAIT), calls `handle_datagram(data, addr, send)` for each datagram and, while the batch
runs, `send` only appends to an outgoing batch flushed with one `sendmmsg`. Answers sent later (misses, answered
when the upstream replies) are queued the same way and flushed at the end of that loop turn. All buffers are
allocated once; per datagram the loop reads lengths through memoryviews over the headers instead of ctypes
attributes, keeps decoded source addresses in a bounded dict keyed by the raw sockaddr bytes, and (CPython) points
the send iovecs at the answers' own bytes. When a wakeup finds a single datagram, traffic is light and a ctypes
call costs more than it saves: the listener then reads one datagram per wakeup with recvfrom and answers with
sendto, and every QUIET_PROBE-th wakeup, its answer sent, reads once more: a second datagram already waiting means
traffic is no longer light, and the next wakeup batches. (The probe was a recvmmsg in place of the read, whose
ctypes call and queued answer held up that wakeup's answer: 3% of queries at 10,000 QPS, and the p99 with them.)

`start_udp()` is the one entry point for every UDP listener: batched where `available()` (Linux with
recvmmsg/sendmmsg in libc, not switched off with --no-udp-batch or LOCALDNS_BATCHIO=off), a plain asyncio datagram
endpoint otherwise, both calling the same `handle(data, addr, send)`.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any, Final, Protocol, cast

from . import mmsg
from .addresses import Peer

try:  # C, built with the compiled hot path; the socket's own recvfrom and sendto where it is not
    from . import rawudp
except ImportError:
    rawudp = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

Send = Callable[[bytes, Peer], None]
Handler = Callable[[bytes, Peer, Send], None]

MSG_DONTWAIT: Final = 0x40
DEFAULT_BATCH: Final = 64
RECV_SLOT: Final = 4096  # largest query accepted over UDP; a longer datagram is dropped (counted as truncated)
SEND_SLOT: Final = 4096  # answers up to this size go through sendmmsg; larger ones (big EDNS answers) use sendto
MAX_ROUNDS: Final = 8  # recvmmsg calls per readiness event, so timers and upstream replies get their turn
QUIET_PROBE: Final = 32  # while traffic is light, every this many wakeups read once more to see if it still is
# Distinct client addresses remembered (then the cache is emptied and refills). A few hundred bytes each: pods'
# resolvers open a socket per lookup, so in production most addresses are seen once, and a large bound would only
# hold memory (65536 of them: some 18 MB); a client that keeps its socket (dnsperf, a long-lived resolver) is
# remembered again at once. (Not Final: read once per new address, and tests lower it.)
ADDRESS_CACHE_MAX = 1024

_AGAIN: Final = (errno.EAGAIN, errno.EWOULDBLOCK)


def available() -> bool:
    """True where the batch listener works; the server falls back to a plain listener otherwise.

    LOCALDNS_BATCHIO=off (or 0/false/no) switches it off, to compare the two paths or to rule it out.
    """
    if os.environ.get("LOCALDNS_BATCHIO", "").strip().lower() in ("off", "0", "false", "no"):
        return False
    return mmsg.LIBC is not None


class BatchListener:
    """Serve one bound UDP socket with recvmmsg/sendmmsg on the running event loop.

    The socket stays the caller's: `close()` stops reading from it but does not close it.
    Counters (`stats()`) say what was received, sent, batched and dropped, so nothing is lost silently.
    """

    def __init__(self, sock: socket.socket, handle_datagram: Handler, *, batch_size: int = DEFAULT_BATCH) -> None:
        if mmsg.LIBC is None:
            raise RuntimeError("recvmmsg/sendmmsg are not available here; use the plain UDP listener")
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError("BatchListener needs a UDP (SOCK_DGRAM) socket")
        if not 1 <= batch_size <= 1024:
            raise ValueError(f"batch_size must be between 1 and 1024, not {batch_size}")
        sock.setblocking(False)
        self._sock, self._fd, self._handle = sock, sock.fileno(), handle_datagram
        self._recvmmsg, self._sendmmsg = mmsg.LIBC
        self._rx = mmsg.MessageArray(batch_size, RECV_SLOT)
        self._tx = mmsg.MessageArray(batch_size, SEND_SLOT)
        self._bytes_data = mmsg.BYTES_DATA  # None: answers are copied into the send slots
        self._out: list[tuple[bytes, Peer]] = []
        self._sending: list[tuple[bytes, Peer]] = []  # the answers sendmmsg is reading (see _flush)
        self._batching = False
        self._reading_one = False  # inside the handler of a datagram read by `_read_one`
        self._reading_addr: Peer | None = None  # and that datagram's client, as the handler sees it
        self._reading_raw: bytes | None = None  # and as the kernel gave it (with cache/rawudp.c)
        # Looked up once rather than per datagram at a steady rate: the `send` for a lone datagram (a bound method is
        # a new object each time it is named), and rawudp's calls (a global and a module attribute each).
        self._send_now: Send = self._send_one
        self._recvfrom_raw = rawudp.recvfrom if rawudp is not None else None
        self._sendto_raw = rawudp.sendto if rawudp is not None else None
        self._quiet = 0  # > 0: light traffic, lone wakeups left before the next probe read (plain recvfrom/sendto)
        self._addresses: dict[int | bytes, Peer] = {}  # IPv4 sockaddr as an int, else raw bytes -> tuple
        self._raw_addresses: dict[Peer, bytes] = {}  # and back, for sendmmsg
        self._loop: asyncio.AbstractEventLoop | None = None
        self.received = self.sent = self.batches = self.unbatched = 0
        self.truncated = self.dropped = self.send_errors = self.receive_errors = self.handler_errors = 0

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        if self._loop is not None:
            # Through Any: uvloop's remove_reader returns None where typeshed says bool, and compiled code checks
            # the type it is told (a TypeError at shutdown).
            cast(Any, self._loop).remove_reader(self._fd)
            self._loop = None
        if self._out:
            self._flush()

    def stats(self) -> dict[str, int]:
        names = ("received", "sent", "batches", "unbatched", "truncated", "dropped", "send_errors", "receive_errors",
                 "handler_errors")
        return {name: getattr(self, name) for name in names}

    def send(self, data: bytes, addr: Peer) -> None:
        """The `send` handed to the resolver for batched reads: answers are queued and go out together, at the end
        of the receive batch they answer, or, sent later (misses, answered when the upstream replies), at the end
        of that loop turn: the answers to the many upstream replies one TCP read brings leave in one sendmmsg
        instead of a sendto each (`bench.profile miss --syscalls`: 1.0 sendto per miss before).

        The batch is flushed after each datagram once it holds a batch's worth of answers, and `_flush` sends any
        number in chunks, so it stays bounded."""
        if not self._batching:
            if self._loop is None:  # closed: nothing will flush, straight out
                self._sendto(data, addr)
                return
            if not self._out:
                self._loop.call_soon(self._flush_late)
        self._out.append((data, addr))

    def _flush_late(self) -> None:
        if self._out:  # (a receive batch in between may have sent them already)
            self._flush()

    # The hot path: one screen, no ctypes field access per datagram.
    def _on_readable(self) -> None:
        if self._quiet:
            self._quiet -= 1
            if self._read_one() and not self._quiet:
                # Every QUIET_PROBE-th lone wakeup, once its answer is out: is another datagram already waiting?
                # Then traffic is no longer light, and the next wakeup reads in batches (_quiet stays 0).
                if not self._read_one():
                    self._quiet = QUIET_PROBE
            return
        rx, fd, recvmmsg, handle, send, out = self._rx, self._fd, self._recvmmsg, self._handle, self.send, self._out
        words, name_words, addresses = rx.words, rx.name_words, self._addresses
        data, names = rx.data_bytes, rx.names_bytes
        count, slot, slots = rx.count, rx.slot, rx.rx_slots
        for round_ in range(MAX_ROUNDS):
            n = recvmmsg(fd, rx.address, count, MSG_DONTWAIT, None)
            if n <= 1 and round_ == 0:
                self._quiet = QUIET_PROBE  # one datagram per wakeup: batching only adds ctypes calls
            if n <= 0:
                if n < 0 and self._receive_failed(mmsg.get_errno()):
                    continue
                return
            self.batches += 1
            self.received += n
            self._batching = True
            try:
                for at_len, at_namelen, name_at, name_word, data_at in slots[:n]:
                    size = words[at_len]
                    if size >= slot:  # MSG_TRUNC: no DNS query is this long
                        self.truncated += 1
                        continue
                    try:
                        # The kernel writes msg_namelen back: 16 for every IPv4 source, 28 for IPv6, so it never
                        # needs resetting between calls.
                        namelen = words[at_namelen]
                        key = name_words[name_word] if namelen == 16 else names[name_at:name_at + namelen]
                        addr = addresses.get(key)
                        if addr is None:
                            addr = self._learn_address(key, names[name_at:name_at + namelen])
                        handle(data[data_at:data_at + size], addr, send)
                    except Exception:  # a resolver bug must not take the listener down with it
                        self.handler_errors += 1
                        if self.handler_errors <= 10 or self.handler_errors % 10000 == 0:  # not a log flood
                            log.exception("handling a datagram failed (%d so far)", self.handler_errors)
                    if len(out) >= count:
                        self._flush()
                        out = self._out
            finally:
                self._batching = False
                if self._out:
                    self._flush()
            out = self._out
            if n < count:
                return  # drained: skip the recvmmsg that would only say EAGAIN

    def _read_one(self) -> bool:
        """Light traffic: one recvfrom and the answer by sendto (C calls, no ctypes, no EAGAIN read: if more is
        queued the loop wakes us again at once, and the next probe finds it and batching resumes); False when
        nothing was read.
        With cache/rawudp.c built, the address comes as the kernel's sockaddr bytes, looked up among those seen
        before (the tuple socket.recvfrom would build, without inet_ntop), and the answer goes back to those bytes
        (without parsing the tuple again)."""
        raw = None
        recvfrom_raw = self._recvfrom_raw
        try:
            if recvfrom_raw is None:
                data, addr = self._sock.recvfrom(RECV_SLOT + 1)
            else:
                got = recvfrom_raw(self._fd, RECV_SLOT + 1)
                if got is None:
                    return False
                data, raw = got
                known = self._addresses.get(raw)
                addr = known if known is not None else self._learn_address(raw, raw)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as error:  # a queued ICMP error: counted; the next wakeup reads on
            self.receive_errors += 1
            log.debug("recvfrom: %s", error)
            return False
        self._answer_one(data, addr, raw)
        return True

    def _answer_one(self, data: bytes, addr: Peer, raw: bytes | None) -> None:
        self.received += 1
        self.unbatched += 1
        if len(data) > RECV_SLOT:
            self.truncated += 1
            return
        self._reading_one, self._reading_addr, self._reading_raw = True, addr, raw
        try:
            self._handle(data, addr, self._send_now)
        except Exception:
            self.handler_errors += 1
            if self.handler_errors <= 10 or self.handler_errors % 10000 == 0:
                log.exception("handling a datagram failed (%d so far)", self.handler_errors)
        finally:
            self._reading_one, self._reading_addr, self._reading_raw = False, None, None

    def _send_one(self, data: bytes, addr: Peer) -> None:
        """The `send` for a datagram read on its own: its answer goes out at once by sendto (it has nothing to share
        a sendmmsg with, and a trip through the queue cost 2,500 instructions per query at a steady 500 QPS); an
        answer sent later (a miss) is queued as every later answer is."""
        if not self._reading_one:
            self.send(data, addr)
            return
        raw = self._reading_raw if addr is self._reading_addr and type(data) is bytes else None
        self._sendto(data, addr, raw)

    def _receive_failed(self, err: int) -> bool:
        """Classify a recvmmsg error; True means read again now."""
        if err in _AGAIN:
            return False
        if err == errno.EINTR:
            return True
        self.receive_errors += 1  # e.g. a queued ICMP error (ECONNREFUSED): reported once, the next read goes on
        log.debug("recvmmsg: %s", os.strerror(err))
        return err in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)

    def _flush(self) -> None:
        """Send the batch's answers with sendmmsg: each iovec points at the answer's own bytes (CPython), or at a
        copy in the slot buffer elsewhere; msg_name points at the raw sockaddr the query came from.

        A batch's answers mostly go to a few clients, often one (a resolver that keeps its socket): the sockaddr
        of the previous answer is reused without a lookup, and a slot whose msg_name already points at this
        client's sockaddr is left as it is (`tx.named` holds what each slot points at, and keeps it alive)."""
        out, self._out = self._out, []
        if len(out) == 1:
            self._sendto(*out[0])  # one answer: sendto is the cheaper call
            return
        # Every answer must stay alive until sendmmsg has read it: held by an attribute until the next flush, not by
        # the local `out` (compiled, a local is released after its last use, which comes before the send).
        self._sending = out
        tx, raw_addresses, offset = self._tx, self._raw_addresses, self._bytes_data
        words, pointers, iovs, data, slot, slots, named = (tx.words, tx.pointers, tx.iovs, tx.data, tx.slot,
                                                           tx.tx_slots, tx.named)
        count = 0
        last_addr = last_raw = None
        for payload, addr in out:
            if addr is not last_addr:
                last_addr, last_raw = addr, raw_addresses.get(addr)
            raw = last_raw
            if raw is None or type(payload) is not bytes or (offset is None and len(payload) > slot):
                self._sendto(payload, addr)  # an address we never decoded, a bytearray, or too big to copy
                continue
            if count == tx.count:  # more answers than slots (a handler that sent several): send these first
                self._send_batch(count)
                count = 0
            at_base, at_len, at_name, at_namelen, data_at = slots[count]
            if offset is None:
                data[data_at:data_at + len(payload)] = payload
            else:
                iovs[at_base] = id(payload) + offset
            iovs[at_len] = len(payload)
            if named[count] is not raw:
                named[count] = raw
                pointers[at_name] = tx.copy_name(count, raw) if offset is None else id(raw) + offset
                words[at_namelen] = len(raw)
            count += 1
        self._send_batch(count)

    def _send_batch(self, count: int) -> None:
        start = 0
        while start < count:
            n = self._sendmmsg(self._fd, self._tx.message_at(start), count - start, MSG_DONTWAIT)
            if n > 0:
                self.sent += n
                start += n
                continue
            err = mmsg.get_errno()
            if err == errno.EINTR:
                continue
            if err in _AGAIN:  # socket buffer full: never block, drop the rest as a congested router would
                self.dropped += count - start
                return
            self.send_errors += 1  # this one datagram cannot go (bad address, EMSGSIZE, ...): skip it
            log.debug("sendmmsg: %s", os.strerror(err))
            start += 1

    def _sendto(self, data: bytes, addr: Peer, raw: bytes | None = None) -> None:
        """One answer by sendto: to `raw`, the client's sockaddr as the kernel gave it, through cache/rawudp.c
        (only ever set where it is built), else to the address tuple."""
        sendto_raw = self._sendto_raw
        try:
            if raw is not None and sendto_raw is not None:
                sendto_raw(self._fd, data, raw)
            else:
                self._sock.sendto(data, addr)
            self.sent += 1
        except BlockingIOError:
            self.dropped += 1
        except OSError as exc:
            self.send_errors += 1
            log.debug("sendto %s: %s", addr, exc)

    def _learn_address(self, key: int | bytes, raw: bytes) -> Peer:
        addr = decode_sockaddr(raw)
        if len(self._addresses) >= ADDRESS_CACHE_MAX:
            self._addresses.clear()
            self._raw_addresses.clear()
        self._addresses[key] = addr
        self._raw_addresses[addr] = raw
        return addr


def decode_sockaddr(raw: bytes) -> Peer:
    """A raw sockaddr_in/sockaddr_in6 as the tuple socket.recvfrom would return."""
    family = int.from_bytes(raw[0:2], sys.byteorder)
    port = int.from_bytes(raw[2:4], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6:
        host = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        scope_id = int.from_bytes(raw[24:28], sys.byteorder)
        if scope_id:
            try:
                host = f"{host}%{socket.if_indextoname(scope_id)}"
            except OSError:
                host = f"{host}%{scope_id}"
        return host, port, int.from_bytes(raw[4:8], "big"), scope_id
    raise ValueError(f"unexpected address family {family} from recvmmsg")


class _PlainProtocol(asyncio.DatagramProtocol):
    """Where batching is unavailable: one datagram per callback, same `handle(data, addr, send)` contract."""

    def __init__(self, handle_datagram: Handler) -> None:
        self._handle = handle_datagram
        self._send: Send = _not_connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if hasattr(transport, "max_size"):  # the default loop would read into 256 KiB per datagram
            transport.max_size = RECV_SLOT
        self._send = transport.sendto  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: Peer) -> None:
        try:
            self._handle(data, addr, self._send)
        except Exception:
            log.exception("handling a datagram from %s failed", addr)


def _not_connected(data: bytes, addr: Peer) -> None:
    raise ConnectionError("the datagram endpoint is not connected yet")


class Closable(Protocol):
    def close(self) -> None: ...


async def start_udp(sock: socket.socket, handle_datagram: Handler, *, batched: bool = True,
                    batch_size: int = DEFAULT_BATCH) -> tuple[Closable, bool]:
    """Serve a bound UDP socket on the running loop: (what to `close()` to stop, whether it is batched).

    Batched (BatchListener) when asked and `available()`, else a plain asyncio datagram endpoint, so a caller
    never has to handle the fallback itself.
    """
    if batched and available():
        listener = BatchListener(sock, handle_datagram, batch_size=batch_size)
        listener.start()
        return listener, True
    if batched:
        log.info("recvmmsg/sendmmsg not available or LOCALDNS_BATCHIO=off: plain UDP listener")
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _PlainProtocol(handle_datagram), sock=sock)
    return transport, False
