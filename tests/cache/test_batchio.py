"""The batched UDP listener (cache/batchio.py) delivers every answer to the client that asked, batch or not.

Real loopback sockets (IPv4 and IPv6) and the real recvmmsg/sendmmsg; a small stand-in resolver that follows the
`handle_datagram(data, addr, send)` contract: answers synchronously for a hit, later for a miss. No timing asserted.
"""
from __future__ import annotations

import asyncio
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from cache import batchio, mmsg

pytestmark = pytest.mark.skipif(not batchio.available(), reason="recvmmsg/sendmmsg need Linux (batchio.available())")

WAIT = 5.0  # generous bound for every receive, so a broken listener fails the test instead of hanging it


class LoopThread:
    """An asyncio loop in a thread, serving one BatchListener on a loopback socket."""

    def __init__(self, family: int, handler_factory: Callable[[LoopThread], batchio.Handler], loop_factory) -> None:
        self.loop = loop_factory()
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self.seen: list[tuple[bytes, object]] = []
        self.listener = batchio.BatchListener(self.sock, handler_factory(self), batch_size=64)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.call(self.listener.start, self.loop)

    def call(self, fn: Callable, *args) -> None:
        done = threading.Event()

        def run() -> None:
            try:
                fn(*args)
            finally:
                done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(WAIT)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.call(self.listener.close)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(WAIT)
        self.loop.close()
        self.sock.close()


def stats_of(server: LoopThread) -> dict[str, int]:
    """The listener's counters once the loop has finished what it was doing (a client may read an answer before
    the loop thread counted it as sent)."""
    server.call(lambda: None)
    return server.listener.stats()


def echo(server: LoopThread) -> batchio.Handler:
    """A hit for everything: answer b"re:" + query at once."""

    def handle(data: bytes, addr, send) -> None:
        server.seen.append((data, addr))
        send(b"re:" + data, addr)

    return handle


def uvloop_loop() -> asyncio.AbstractEventLoop:
    uvloop = pytest.importorskip("uvloop")
    return uvloop.new_event_loop()


@pytest.fixture(params=[asyncio.new_event_loop, uvloop_loop], ids=["asyncio", "uvloop"])
def serve(request) -> Iterator[Callable[..., LoopThread]]:
    """Both loops the cache runs on: uvloop where installed (production), the default loop elsewhere."""
    started: list[LoopThread] = []

    def start(handler_factory=echo, family=socket.AF_INET, run=True) -> LoopThread:
        server = LoopThread(family, handler_factory, request.param)
        started.append(server)
        if run:
            server.start()
        return server

    yield start
    for server in started:
        server.stop()


def client(family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.settimeout(WAIT)
    return sock


def receive(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(65535) for _ in range(count)]


def test_a_queued_burst_is_read_in_batches_and_each_client_gets_its_own_answers(serve):
    server = serve(run=False)
    clients = [client() for _ in range(4)]
    for n in range(50):  # 200 datagrams wait in the socket before the listener starts: batches of 64
        for c, sock in enumerate(clients):
            sock.sendto(f"q{c}-{n}".encode(), server.address)
    server.start()
    for c, sock in enumerate(clients):
        assert receive(sock, 50) == [f"re:q{c}-{n}".encode() for n in range(50)]
    stats = stats_of(server)
    assert stats["received"] == stats["sent"] == 200
    assert stats["batches"] == 4  # 64 + 64 + 64 + 8
    assert {addr for _, addr in server.seen} == {sock.getsockname() for sock in clients}
    for sock in clients:
        sock.close()


def test_ipv6_clients_get_answers_and_recvfrom_style_addresses(serve):
    server = serve(family=socket.AF_INET6, run=False)
    sock = client(socket.AF_INET6)
    for n in range(10):  # queued first, so they are read in one batch
        sock.sendto(b"v6-%d" % n, server.address)
    server.start()
    assert receive(sock, 10) == [b"re:v6-%d" % n for n in range(10)]
    assert stats_of(server)["batches"] == 1
    host, port, flowinfo, scope_id = server.seen[0][1]
    assert (host, port) == sock.getsockname()[:2] and (flowinfo, scope_id) == (0, 0)
    sock.close()


def test_an_answer_sent_after_the_batch_goes_out_in_its_loop_turn(serve):
    def later(server: LoopThread) -> batchio.Handler:
        def handle(data: bytes, addr, send) -> None:  # a miss: the upstream answers on a later loop turn
            server.loop.call_later(0.01, send, b"late:" + data, addr)

        return handle

    server = serve(later)
    sock = client()
    sock.sendto(b"miss", server.address)
    assert receive(sock, 1) == [b"late:miss"]
    assert stats_of(server)["sent"] == 1
    sock.close()


def test_many_answers_sent_later_in_one_turn_all_reach_their_clients(serve):
    """As when one read from kube-dns brings the answers to many misses: more than a batch holds, from several
    clients, all given in one loop turn."""
    held: list[tuple[bytes, object, batchio.Send]] = []

    def upstream(server: LoopThread) -> batchio.Handler:
        def handle(data: bytes, addr, send) -> None:
            held.append((data, addr, send))

        return handle

    server = serve(upstream)
    clients = [client() for _ in range(3)]
    for index in range(150):
        clients[index % 3].sendto(b"q%d" % index, server.address)
    deadline = time.monotonic() + WAIT
    while len(held) < 150 and time.monotonic() < deadline:  # until the listener has read all of them
        time.sleep(0.01)
    server.call(lambda: None)
    assert len(held) == 150

    def answer_all() -> None:
        for data, addr, send in held:
            send(b"late:" + data, addr)

    server.call(answer_all)
    for index, sock in enumerate(clients):  # (queries read one by one, in light traffic, are answered first)
        assert sorted(receive(sock, 50)) == sorted(b"late:q%d" % i for i in range(index, 150, 3))
    assert stats_of(server)["sent"] == 150
    for sock in clients:
        sock.close()


def test_a_failing_handler_loses_only_its_own_datagram(serve):
    def fragile(server: LoopThread) -> batchio.Handler:
        def handle(data: bytes, addr, send) -> None:
            if data == b"boom":
                raise RuntimeError("resolver bug")
            send(b"ok:" + data, addr)

        return handle

    server = serve(fragile, run=False)
    sock = client()
    for payload in (b"a", b"boom", b"b"):
        sock.sendto(payload, server.address)
    server.start()
    assert receive(sock, 2) == [b"ok:a", b"ok:b"]
    assert stats_of(server)["handler_errors"] == 1
    sock.close()


def test_an_oversized_datagram_is_dropped_and_counted_and_the_next_is_answered(serve):
    server = serve(run=False)
    sock = client()
    sock.sendto(b"x" * (batchio.RECV_SLOT + 100), server.address)
    sock.sendto(b"small", server.address)
    server.start()
    assert receive(sock, 1) == [b"re:small"]
    assert stats_of(server)["truncated"] == 1
    sock.close()


def test_many_answers_for_one_query_flush_when_the_outgoing_batch_is_full(serve):
    def chatty(server: LoopThread) -> batchio.Handler:
        def handle(data: bytes, addr, send) -> None:
            for n in range(150):  # more than two outgoing batches from one datagram
                send(b"%d" % n, addr)

        return handle

    server = serve(chatty)
    sock = client()
    sock.sendto(b"q", server.address)
    assert receive(sock, 150) == [b"%d" % n for n in range(150)]
    assert len(server.listener._out) == 0
    sock.close()


def test_an_answer_larger_than_a_send_slot_arrives_whole(serve):
    big = bytes(range(256)) * 20  # 5120 bytes, beyond SEND_SLOT: sent with sendto

    def large(server: LoopThread) -> batchio.Handler:
        def handle(data: bytes, addr, send) -> None:
            send(big, addr)
            send(b"small", addr)

        return handle

    server = serve(large)
    sock = client()
    sock.sendto(b"q", server.address)
    assert sorted(receive(sock, 2), key=len) == [b"small", big]
    sock.close()


def test_after_close_the_listener_stops_reading_and_leaves_the_socket_open(serve):
    server = serve()
    sock = client()
    sock.sendto(b"one", server.address)
    assert receive(sock, 1) == [b"re:one"]
    server.call(server.listener.close)
    sock.sendto(b"two", server.address)
    sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        sock.recv(100)
    assert server.sock.recv(100) == b"two"  # still queued on the caller's socket, which close() left open
    sock.close()


def test_available_can_be_switched_off_for_comparison(monkeypatch):
    monkeypatch.setenv("LOCALDNS_BATCHIO", "off")
    assert batchio.available() is False
    monkeypatch.setenv("LOCALDNS_BATCHIO", "on")
    assert batchio.available() is True


def test_decode_sockaddr_gives_what_recvfrom_gives():
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_DGRAM) as rx, socket.socket(family, socket.SOCK_DGRAM) as tx:
            rx.bind((host, 0))
            tx.bind((host, 0))
            tx.sendto(b"x", rx.getsockname())
            _, addr = rx.recvfrom(10)
            port = struct.pack(">H", addr[1])
            if family == socket.AF_INET:
                raw = struct.pack("=H", family) + port + socket.inet_pton(family, host) + bytes(8)
            else:
                raw = struct.pack("=H", family) + port + bytes(4) + socket.inet_pton(family, host) + bytes(4)
            assert batchio.decode_sockaddr(raw) == addr


def test_a_tcp_socket_is_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock, pytest.raises(ValueError):
        batchio.BatchListener(sock, lambda data, addr, send: None)


@pytest.mark.parametrize("switch, batched", [("on", True), ("off", False)])
def test_start_udp_serves_batched_or_falls_back_to_a_plain_endpoint(monkeypatch, switch, batched):
    monkeypatch.setenv("LOCALDNS_BATCHIO", switch)

    async def scenario() -> tuple[object, list[bytes]]:
        loop = asyncio.get_running_loop()
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        server.bind(("127.0.0.1", 0))
        served, is_batched = await batchio.start_udp(server, lambda data, addr, send: send(b"re:" + data, addr))
        assert is_batched is batched
        sock = client()
        sock.setblocking(False)
        try:
            answers = []
            for n in range(3):
                sock.sendto(b"%d" % n, server.getsockname())
                answers.append(await asyncio.wait_for(loop.sock_recv(sock, 100), WAIT))
            return served, answers
        finally:
            served.close()
            sock.close()
            server.close()

    served, answers = asyncio.run(scenario())
    assert answers == [b"re:0", b"re:1", b"re:2"]
    assert isinstance(served, batchio.BatchListener) is batched


def test_the_copying_send_path_delivers_the_same_answers(serve, monkeypatch):
    """Where answers cannot be sent from their own memory (not CPython), they are copied into the slot buffers."""
    monkeypatch.setattr(mmsg, "BYTES_DATA", None)
    server = serve(run=False)
    sock = client()
    for n in range(100):
        sock.sendto(b"c%d" % n, server.address)
    server.start()
    assert receive(sock, 100) == [b"re:c%d" % n for n in range(100)]
    assert stats_of(server)["sent"] == 100
    sock.close()


# With the real resolver: `python -m cache` in front of dnsmasq (tests/cache/conftest.py), batched and plain.

def _mixed_case(name: str, seed: int) -> str:
    """0x20-style case mix, different per query, so an answer shows whose question it echoes."""
    return "".join(c.upper() if (seed >> (i % 16)) & 1 else c for i, c in enumerate(name))


@pytest.mark.parametrize("listener", ["--udp-batch", "--no-udp-batch"])
def test_the_real_cache_answers_a_burst_from_several_clients_each_exactly(kube_dns, tmp_path, listener):
    import dns.message
    import dns.rcode

    from tests.cache.conftest import Cache

    cache = Cache(tmp_path, listener, kube_dns=kube_dns)
    try:
        batched = re.search(r"serving DNS on 127\.0\.0\.1:\d+ \(udp batched", cache.output()) is not None
        assert batched is (listener == "--udp-batch")
        expected = {"web.default.svc.cluster.local": (dns.rcode.NOERROR, {"10.0.0.1"}),
                    "db.default.svc.cluster.local": (dns.rcode.NOERROR, {"10.0.0.2"}),
                    "missing.default.svc.cluster.local": (dns.rcode.NXDOMAIN, set())}
        for name in expected:  # the first of each is a miss; the burst below is mostly hits
            cache.udp(dns.message.make_query(name, "A"))
        clients = [client() for _ in range(3)]
        sent: dict[tuple[int, int], dns.message.Message] = {}
        for n in range(300):  # sent without waiting, so the cache reads them in batches
            name = list(expected)[n % 3]
            query = dns.message.make_query(_mixed_case(name, n), "A", use_edns=n % 2 == 0)
            query.id = n
            sent[(n % 3, n)] = query
            clients[n % 3].sendto(query.to_wire(), ("127.0.0.1", cache.port))
        for c, sock in enumerate(clients):
            for _ in range(100):
                answer = dns.message.from_wire(sock.recv(4096))
                query = sent.pop((c, answer.id))  # KeyError: an answer for another client or an unknown ID
                assert answer.question[0].name.to_text(omit_final_dot=True) == query.question[0].name.to_text(
                    omit_final_dot=True)  # the case as asked
                rcode, addresses = expected[query.question[0].name.to_text(omit_final_dot=True).lower()]
                assert answer.rcode() == rcode
                assert {rd.address for rrset in answer.answer for rd in rrset} == addresses
                assert (answer.edns >= 0) == (query.edns >= 0)
            sock.close()
        assert not sent
    finally:
        cache.stop()


def test_light_traffic_is_read_one_by_one_and_a_burst_brings_batches_back(serve):
    server = serve()
    sock = client()
    for n in range(3):  # one at a time, each answered before the next: a quiet client
        sock.sendto(b"lone%d" % n, server.address)
        assert receive(sock, 1) == [b"re:lone%d" % n]
    quiet = stats_of(server)
    assert quiet["unbatched"] >= 2 and quiet["sent"] == 3  # the first lone datagram switched to plain reads

    holding, release = threading.Event(), threading.Event()

    def hold() -> None:  # keeps the loop busy so that the burst queues up in the socket
        holding.set()
        release.wait(WAIT)

    server.loop.call_soon_threadsafe(hold)
    assert holding.wait(WAIT)
    for n in range(100):
        sock.sendto(b"b%d" % n, server.address)
    release.set()
    assert receive(sock, 100) == [b"re:b%d" % n for n in range(100)]
    after = stats_of(server)
    assert after["batches"] > quiet["batches"]  # read in batches again
    # At most QUIET_PROBE lone wakeups, the last of them reading once more (the probe), before batches resume.
    assert after["unbatched"] - quiet["unbatched"] <= batchio.QUIET_PROBE + 1
    sock.close()


def test_light_traffic_never_waits_on_the_batch_machinery(serve):
    """At a light, steady rate every datagram is read alone and answered at once; the check for heavier traffic
    (every QUIET_PROBE-th wakeup) reads after that wakeup's answer is out, so no lone query goes through recvmmsg
    and the answer queue (which held up 3% of the answers at 10,000 QPS and set the p99)."""
    server = serve()
    sock = client()
    sock.sendto(b"first", server.address)  # read by recvmmsg: a batch of one switches to lone reads
    assert receive(sock, 1) == [b"re:first"]
    before = stats_of(server)
    lone = 3 * batchio.QUIET_PROBE
    for n in range(lone):
        sock.sendto(b"lone%d" % n, server.address)
        assert receive(sock, 1) == [b"re:lone%d" % n]
        # A light client: its next query comes once the listener is idle, not while the wakeup that answered is
        # still probing (a query already waiting then is a sign of heavier traffic, and rightly read in batches).
        server.call(lambda: None)
    after = stats_of(server)
    assert after["batches"] == before["batches"]
    assert after["unbatched"] - before["unbatched"] == lone and after["sent"] - before["sent"] == lone
    sock.close()


def test_lone_datagrams_keep_their_address_raw_in_the_compiled_build():
    """cache/rawudp.c, built with the compiled hot path (and required there: `make test-compiled` sets
    LOCALDNS_TREE), reads a datagram with the client's sockaddr as the kernel gave it and answers to those bytes;
    the plain tree has no C and the listener uses the socket's own recvfrom and sendto (the tests above)."""
    rawudp = batchio.rawudp
    if not os.environ.get("LOCALDNS_TREE"):
        assert rawudp is None
        return
    assert rawudp is not None, "the compiled build has no cache/rawudp.c extension"
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        server = socket.socket(family, socket.SOCK_DGRAM)
        peer = socket.socket(family, socket.SOCK_DGRAM)
        try:
            server.bind((host, 0))
            peer.bind((host, 0))
            peer.settimeout(WAIT)
            fd = server.fileno()
            assert rawudp.recvfrom(fd, 100) is None  # nothing queued: never blocks
            peer.sendto(b"hello", server.getsockname())
            got = None
            deadline = time.monotonic() + WAIT
            while got is None and time.monotonic() < deadline:
                got = rawudp.recvfrom(fd, batchio.RECV_SLOT + 1)
            assert got is not None
            data, raw = got
            assert data == b"hello"
            assert batchio.decode_sockaddr(raw) == peer.getsockname()
            assert rawudp.sendto(fd, b"back", raw) == 4
            assert peer.recv(100) == b"back"
            peer.sendto(b"x" * 5000, server.getsockname())  # longer than asked for: cut, as socket.recvfrom cuts
            got = None
            while got is None and time.monotonic() < deadline:
                got = rawudp.recvfrom(fd, batchio.RECV_SLOT + 1)
            assert got is not None and len(got[0]) == batchio.RECV_SLOT + 1
            with pytest.raises(OSError):
                rawudp.sendto(fd, b"x", b"\x00\x00\x00\x00")  # no address family, too short
            with pytest.raises(TypeError):
                rawudp.sendto(fd, bytearray(b"x"), raw)  # type: ignore[arg-type]
        finally:
            server.close()
            peer.close()
