"""An upstream that is down or silent gives SERVFAIL within --upstream-timeout, never a hang; cached names are
answered stale (RFC 8767) while it is down."""
from __future__ import annotations

import socket
import threading
import time

import dns.message
import dns.rcode

from tests.cache.conftest import Cache, Dnsmasq, free_port


def test_refused_and_silent_upstreams_give_servfail(tmp_path):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # receives, never answers
    silent.bind(("127.0.0.1", 0))
    down = free_port()  # nothing listens: TCP connections are refused
    cache = Cache(tmp_path, "--kube-dns", f"127.0.0.1:{down}", "--upstream-timeout", "1",
                  "--forward", f"silent.test=udp://127.0.0.1:{silent.getsockname()[1]}", wait=False)
    try:
        _wait_serving(cache)
        assert cache.http("/ready")[0] == 503  # no upstream has answered
        for name in ("web.default.svc.cluster.local", "a.silent.test"):
            response = cache.udp(dns.message.make_query(name, "A"), timeout=10)
            assert response.rcode() == dns.rcode.SERVFAIL
        assert cache.proc.poll() is None
    finally:
        cache.stop()
        silent.close()


def test_stale_answers_while_the_upstream_is_down(tmp_path):
    upstream = Dnsmasq(tmp_path, auth=False).start()
    cache = Cache(tmp_path, "--kube-dns", f"127.0.0.1:{free_port()}", "--success-ttl", "1", "--prefetch", "0",
                  "--upstream-timeout", "1", "--forward", f"example.org=udp://127.0.0.1:{upstream.port}", wait=False)
    try:
        _wait_serving(cache)
        query = dns.message.make_query("stale.example.org", "A")
        assert cache.udp(query).answer[0][0].to_text() == "192.0.2.12"
        upstream.stop()
        time.sleep(1.2)  # the entry has expired
        stale = cache.udp(query, timeout=10)
        assert stale.rcode() == dns.rcode.NOERROR
        assert stale.answer[0][0].to_text() == "192.0.2.12"
        assert stale.answer[0].ttl == 30  # RFC 8767's stale TTL
        never_cached = cache.udp(dns.message.make_query("www.example.org", "A"), timeout=10)
        assert never_cached.rcode() == dns.rcode.SERVFAIL
        assert cache.metrics()["coredns_cache_served_stale_total"] >= 1
    finally:
        cache.stop()
        upstream.stop()


def test_a_dead_upstream_in_a_group_is_skipped(tmp_path, kube_dns, node_dns):
    dead = free_port()  # nothing listens: UDP gets port unreachable
    cache = Cache(tmp_path, "--kube-dns", f"127.0.0.1:{kube_dns.port}", "--upstream-timeout", "3",
                  "--forward", f"example.org=udp://127.0.0.1:{dead},udp://127.0.0.1:{node_dns.port}")
    try:
        for index in range(6):
            response = cache.udp(dns.message.make_query(f"nothing-{index}.example.org", "A"), timeout=10)
            assert response.rcode() == dns.rcode.NXDOMAIN  # from the live upstream, never SERVFAIL
        assert cache.udp(dns.message.make_query("www.example.org", "A")).answer
        m = cache.metrics()
        assert m[f'coredns_forward_healthcheck_failures_total{{to="udp://127.0.0.1:{dead}"}}'] >= 2
        assert m[f'coredns_forward_responses_total{{rcode="NXDOMAIN",to="udp://127.0.0.1:{node_dns.port}"}}'] >= 6
    finally:
        cache.stop()


def _wait_serving(cache) -> None:
    """Listening (/health 200); /ready stays 503 here, since no upstream answers."""
    deadline = time.monotonic() + 15
    while cache.http("/health")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_tcp_upstream_that_accepts_but_never_answers_gives_servfail(tmp_path):
    """The connection opens (the kernel completes the handshake) but no answer ever comes: SERVFAIL within the
    upstream timeout, not a hang and not an endless resend."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # never accepted, never read
    cache = Cache(tmp_path, "--kube-dns", f"127.0.0.1:{silent.getsockname()[1]}", "--upstream-timeout", "1",
                  wait=False)
    try:
        _wait_serving(cache)
        for index in range(3):
            response = cache.udp(dns.message.make_query(f"quiet-{index}.default.svc.cluster.local", "A"), timeout=10)
            assert response.rcode() == dns.rcode.SERVFAIL
        assert cache.http("/ready")[0] == 503
        assert cache.proc.poll() is None
    finally:
        cache.stop()
        silent.close()


def test_a_tcp_upstream_that_closes_every_connection_at_once_gives_servfail(tmp_path):
    """Accepted, then closed before any answer, every time: SERVFAIL, after a bounded number of fresh connections
    per query rather than a connection storm until the deadline."""
    closer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closer.bind(("127.0.0.1", 0))
    closer.listen(64)
    accepted = []

    def close_each() -> None:
        while True:
            try:
                conn, _ = closer.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=close_each, daemon=True)
    thread.start()
    cache = Cache(tmp_path, "--kube-dns", f"127.0.0.1:{closer.getsockname()[1]}", "--upstream-timeout", "5",
                  wait=False)
    try:
        _wait_serving(cache)
        before = len(accepted)
        response = cache.udp(dns.message.make_query("closed.default.svc.cluster.local", "A"), timeout=15)
        assert response.rcode() == dns.rcode.SERVFAIL
        # CLOSED_RETRIES + 1 connections for this query, as many per health check of the three zones' upstreams
        # meanwhile; a query resent until its deadline made thousands.
        assert len(accepted) - before <= 400
        assert cache.proc.poll() is None
    finally:
        cache.stop()
        closer.close()
        thread.join(5)
