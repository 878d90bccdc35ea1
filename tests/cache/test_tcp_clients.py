"""TCP clients of the cache (RFC 7766): every query read is answered, even after the client half-closes or while it
reads slowly; pipelined answers come as they are ready; and no client, idle or not, can take TCP away from another.

Misses are held by stopping the node's resolver (dnsmasq, reached over UDP) with SIGSTOP, so they are certainly
still pending when the client does what the test is about. Names under example.org that dnsmasq does not know get
NXDOMAIN without an SOA, which is never cached: every query for them is a miss.
"""
from __future__ import annotations

import os
import select
import signal
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dns.message
import dns.rcode
import pytest

from tests.cache.conftest import Cache

WEB = "web.default.svc.cluster.local"  # kube-dns knows it: a hit once asked


def framed(message: dns.message.Message) -> bytes:
    wire = message.to_wire()
    return struct.pack("!H", len(wire)) + wire


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def read_answer(sock: socket.socket) -> dns.message.Message:
    length = struct.unpack("!H", read_exactly(sock, 2))[0]
    return dns.message.from_wire(read_exactly(sock, length))


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the cache has closed this connection (EOF or reset), waiting up to the socket's timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def closed_within(socks: list[socket.socket], seconds: float) -> list[socket.socket]:
    """The sockets the cache closed within `seconds` (all of that time is waited), in their order."""
    closed: list[socket.socket] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        readable, _, _ = select.select([s for s in socks if s not in closed], [], [], deadline - time.monotonic())
        for sock in readable:
            try:
                data = sock.recv(1, socket.MSG_PEEK)
            except ConnectionResetError:
                data = b""
            if not data:
                closed.append(sock)
        if readable and not any(s in closed for s in readable):
            time.sleep(0.05)  # data rather than a close: not what this waits for
    return [s for s in socks if s in closed]


def connect(cache: Cache, source: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", cache.port))
    return sock


@contextmanager
def held(upstream) -> Iterator[None]:
    """The upstream stopped for the duration: queries sent to it stay pending."""
    os.kill(upstream.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(upstream.proc.pid, signal.SIGCONT)


def miss(index: int) -> dns.message.Message:
    return dns.message.make_query(f"miss{index}-{time.monotonic_ns()}.example.org", "A")


def test_a_client_that_half_closes_gets_its_pending_answers(cache, node_dns):
    queries = [miss(i) for i in range(3)]
    with connect(cache) as sock:
        with held(node_dns):
            sock.sendall(b"".join(framed(q) for q in queries))
            sock.shutdown(socket.SHUT_WR)  # glibc does not, but RFC 7766 section 6.2.3 allows a client to
            time.sleep(0.3)  # the cache reads the EOF while the three misses are still pending
        answers = [read_answer(sock) for _ in queries]
        assert closed_by_server(sock)  # and then it closes, having nothing left to answer
    assert sorted(a.id for a in answers) == sorted(q.id for q in queries)
    assert all(a.rcode() == dns.rcode.NXDOMAIN for a in answers)


def test_pipelined_answers_come_as_they_are_ready(cache, node_dns):
    cache.tcp(dns.message.make_query(WEB, "A"))  # cached now
    slow, fast = miss(0), dns.message.make_query(WEB, "A")
    with connect(cache) as sock:
        with held(node_dns):
            sock.sendall(framed(slow) + framed(fast))
            first = read_answer(sock)  # the hit, while the miss before it waits for its upstream
        second = read_answer(sock)
    assert (first.id, second.id) == (fast.id, slow.id)
    assert first.answer and second.rcode() == dns.rcode.NXDOMAIN


def test_a_client_that_reads_slowly_gets_every_answer(cache):
    """More answers than the kernel's socket buffers and the cache's output bound hold (each answer of
    big.default.svc.cluster.local carries 100 A records, 1.7 KB): the cache stops reading queries while the client
    does not take its answers, rather than buffer them or cut the client off."""
    query = dns.message.make_query("big.default.svc.cluster.local", "A")
    cache.tcp(query)  # cached now
    count = 3000  # 5 MB of answers
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    with sock:
        sock.connect(("127.0.0.1", cache.port))
        sock.setblocking(False)
        pending = b"".join(framed(dns.message.make_query("big.default.svc.cluster.local", "A", id=i))
                           for i in range(count))
        ids: list[int] = []
        buffer = b""
        deadline = time.monotonic() + 60
        while len(ids) < count and time.monotonic() < deadline:
            if pending:  # send all queries as fast as the cache takes them...
                try:
                    pending = pending[sock.send(pending):]
                except BlockingIOError:
                    pass
            time.sleep(0.002)  # ...but read the answers slowly
            try:
                chunk = sock.recv(8192)
            except BlockingIOError:
                continue
            assert chunk, f"the cache closed the connection after {len(ids)} answers"
            buffer += chunk
            while len(buffer) >= 2 and len(buffer) >= 2 + struct.unpack("!H", buffer[:2])[0]:
                end = 2 + struct.unpack("!H", buffer[:2])[0]
                if not ids or len(ids) == count - 1:  # the first and the last whole; the others by their ID
                    assert len(dns.message.from_wire(buffer[2:end]).answer[0]) == 100
                ids.append(struct.unpack("!H", buffer[2:4])[0])
                buffer = buffer[end:]
    assert sorted(ids) == list(range(count))


def test_a_client_gone_with_misses_pending_frees_its_slot(tmp_path, kube_dns, node_dns):
    cache = Cache(tmp_path, "--tcp-max-connections", "2", kube_dns=kube_dns, node_dns=node_dns)
    try:
        with held(node_dns):
            for reset in (False, True):
                sock = connect(cache)
                sock.sendall(b"".join(framed(miss(i)) for i in range(5)))
                if reset:  # RST rather than FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                time.sleep(0.1)
                sock.close()
            time.sleep(0.3)
        time.sleep(0.5)  # the held misses are answered into closed connections
        for _ in range(3):  # both slots free again, and free again after use
            with connect(cache) as sock:
                sock.sendall(framed(dns.message.make_query(WEB, "A")))
                assert read_answer(sock).answer
        assert cache.proc.poll() is None
        assert "Traceback" not in cache.output()
    finally:
        assert cache.stop() == 0


# ---- limits ----

def test_one_client_holding_idle_connections_cannot_stop_another_clients_queries(tmp_path, kube_dns):
    """127.0.0.2 opens connections and leaves them idle, as many as the cache lets it; 127.0.0.3 is still answered.
    The idle timeout is long (60 s) so that only the per-client limit and the eviction of idle connections can
    make room, not the timeout."""
    cache = Cache(tmp_path, "--tcp-max-connections", "20", "--tcp-idle-timeout", "60", kube_dns=kube_dns)
    hog: list[socket.socket] = []
    try:
        for _ in range(30):
            hog.append(connect(cache, "127.0.0.2"))
        time.sleep(0.3)  # the cache has accepted (or refused) them all
        for attempt in range(3):
            with connect(cache, "127.0.0.3") as sock:
                query = dns.message.make_query(WEB, "A")
                sock.sendall(framed(query))
                answer = read_answer(sock)
                assert answer.id == query.id and answer.answer, f"attempt {attempt}"
    finally:
        for sock in hog:
            sock.close()
        cache.stop()


def test_connections_beyond_the_per_client_limit_are_refused(tmp_path, kube_dns):
    cache = Cache(tmp_path, "--tcp-max-connections", "100", "--tcp-max-connections-per-client", "4",
                  "--tcp-idle-timeout", "60", kube_dns=kube_dns)
    socks: list[socket.socket] = []
    try:
        socks = [connect(cache, "127.0.0.2", timeout=2) for _ in range(6)]
        time.sleep(0.3)
        refused = [sock for sock in socks if closed_by_server(sock)]
        assert len(refused) == 2
        served = [sock for sock in socks if sock not in refused]
        for sock in served:  # the four within the limit are still served
            sock.settimeout(10)
            sock.sendall(framed(dns.message.make_query(WEB, "A")))
            assert read_answer(sock).answer
        with connect(cache, "127.0.0.3") as other:  # the limit is per client address
            other.sendall(framed(dns.message.make_query(WEB, "A")))
            assert read_answer(other).answer
        assert cache.metrics()['localdns_dropped_queries_total{reason="tcp per-client connection limit"}'] == 2
    finally:
        for sock in socks:
            sock.close()
        cache.stop()


def test_idle_connections_are_closed_sooner_when_connections_run_short(tmp_path, kube_dns):
    """With more than half of --tcp-max-connections in use, idle connections get a short timeout (as unbound's
    tcp-idle-timeout under pressure), the longest idle first, until no more than half are in use; below half, they
    keep the configured 60 s."""
    cache = Cache(tmp_path, "--tcp-max-connections", "10", "--tcp-idle-timeout", "60", kube_dns=kube_dns)
    socks: list[socket.socket] = []
    try:
        socks += [connect(cache) for _ in range(4)]
        assert closed_within(socks, 2) == []  # at 4 of 10
        socks += [connect(cache) for _ in range(3)]
        assert closed_within(socks, 5) == socks[:2]  # at 7 of 10: two, the longest idle, and no more
    finally:
        for sock in socks:
            sock.close()
        cache.stop()


def test_a_full_table_refuses_a_newcomer_only_while_every_connection_owes_answers(tmp_path, kube_dns, node_dns):
    """Only connections that owe answers can fill the table: while every one waits for a miss, a new connection is
    refused (closed at once); once they owe nothing, a newcomer takes the place of the longest idle one (or of one
    closed by the short timeout under pressure, whichever comes first)."""
    cache = Cache(tmp_path, "--tcp-max-connections", "3", "--tcp-idle-timeout", "60", kube_dns=kube_dns,
                  node_dns=node_dns)
    socks: list[socket.socket] = []
    try:
        with held(node_dns):
            socks = [connect(cache) for _ in range(3)]
            for sock in socks:
                sock.sendall(framed(miss(0)))
            time.sleep(0.3)
            with connect(cache) as refused:
                assert closed_by_server(refused)
        for sock in socks:  # answered now: all three idle, the first the longest
            assert read_answer(sock).rcode() == dns.rcode.NXDOMAIN
        with connect(cache) as newcomer:
            newcomer.sendall(framed(dns.message.make_query(WEB, "A")))
            assert read_answer(newcomer).answer
        assert cache.metrics()['localdns_dropped_queries_total{reason="tcp connection limit"}'] == 1
    finally:
        for sock in socks:
            sock.close()
        cache.stop()


@pytest.mark.parametrize("flag, value", [("--tcp-max-connections-per-client", "-1"),
                                         ("--tcp-max-connections-per-client", "0")])
def test_bad_tcp_limits_are_refused_at_start(flag, value):
    from cache import config

    with pytest.raises(config.SettingsError, match=flag.lstrip("-")):
        config.load(["--kube-dns", "10.96.0.10", "--resolv-conf", "/dev/null", flag, value])


def test_queries_that_get_no_answer_do_not_stall_the_connection(tmp_path, kube_dns):
    """A message the cache drops (here: a response, QR set) owes no answer; a connection that sent as many as it may
    have unanswered still gets its next query answered, once the dropped ones are past any answer's deadline."""
    cache = Cache(tmp_path, "--upstream-timeout", "1", kube_dns=kube_dns)
    try:
        response = dns.message.make_response(dns.message.make_query(WEB, "A")).to_wire()
        query = dns.message.make_query(WEB, "A")
        with connect(cache) as sock:
            sock.sendall((struct.pack("!H", len(response)) + response) * 100 + framed(query))
            answer = read_answer(sock)
        assert answer.id == query.id and answer.answer
    finally:
        cache.stop()
