"""An upstream DNS server the test controls: UDP and TCP on one loopback port, answering each query with whatever
bytes the test's `respond(query, proto)` returns (None: no answer), and counting what it was asked.

A real server cannot be made to send the malformed or odd answers the cache must survive (OPT records out of place,
lying lengths, truncated answers over TCP), so this one sends exactly what a test gives it. It runs in a thread of
the test process: one selector loop over the UDP socket, the TCP listener and its connections (the cache keeps its
TCP connections open and pipelines queries on them).
"""
from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable

import dns.message
import dns.rcode

from tests.cache.conftest import free_port

Respond = Callable[[bytes, str], "bytes | None"]


def question_of(query: bytes) -> bytes:
    """The question section of a query the cache sent (plain labels, one question), lowercased."""
    offset = 12
    while query[offset]:
        offset += query[offset] + 1
    return query[12:offset + 5].lower()


def echo(query: bytes, rcode: int = dns.rcode.NXDOMAIN) -> bytes:
    """The simplest valid answer: the query's ID and question, QR and RA set, the given rcode, no records."""
    header = struct.pack("!HHHHHH", int.from_bytes(query[:2], "big"), 0x8180 | rcode, 1, 0, 0, 0)
    return header + question_of(query)


class FakeUpstream:
    def __init__(self, respond: Respond | None = None) -> None:
        self.respond: Respond = respond or (lambda query, proto: echo(query))
        self.asked: Counter[bytes] = Counter()  # question -> queries received (UDP and TCP)
        self.errors: list[Exception] = []  # raised by `respond`
        self.port = free_port()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(64)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.udp, selectors.EVENT_READ, "udp")
        self.selector.register(self.tcp, selectors.EVENT_READ, "listen")
        self.buffers: dict[socket.socket, bytes] = {}
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, name="fake-upstream", daemon=True)
        self.thread.start()

    def _answer(self, query: bytes, proto: str) -> bytes | None:
        if len(query) < 17:
            return None
        self.asked[question_of(query)] += 1
        try:
            return self.respond(query, proto)
        except Exception as error:  # a bug in the test's `respond`: kept for the test to see, the server goes on
            self.errors.append(error)
            return None

    def _serve(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if key.data == "udp":
                    query, addr = sock.recvfrom(65535)
                    reply = self._answer(query, "udp")
                    if reply is not None:
                        sock.sendto(reply, addr)
                elif key.data == "listen":
                    connection, _ = sock.accept()
                    self.buffers[connection] = b""
                    self.selector.register(connection, selectors.EVENT_READ, "tcp")
                else:
                    self._read_tcp(sock)

    def _read_tcp(self, connection: socket.socket) -> None:
        try:
            data = connection.recv(65535)
        except OSError:
            data = b""
        if not data:
            self.selector.unregister(connection)
            del self.buffers[connection]
            connection.close()
            return
        buffer = self.buffers[connection] + data
        while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
            length = int.from_bytes(buffer[:2], "big")
            reply = self._answer(buffer[2:2 + length], "tcp")
            buffer = buffer[2 + length:]
            if reply is not None:
                connection.sendall(len(reply).to_bytes(2, "big") + reply)
        self.buffers[connection] = buffer

    def __enter__(self) -> FakeUpstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stopping = True
        self.thread.join(5)
        for connection in list(self.buffers):
            connection.close()
        self.udp.close()
        self.tcp.close()
        self.selector.close()


def as_response(query: bytes, build: Callable[[dns.message.Message], None]) -> bytes:
    """A well-formed answer to `query`, filled in by `build`, as a real server would encode it."""
    response = dns.message.make_response(dns.message.from_wire(query))
    build(response)
    return response.to_wire(max_size=65535)
