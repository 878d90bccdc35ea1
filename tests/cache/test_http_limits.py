"""The health and metrics HTTP servers cannot be held by a few clients: connections per client address and in all
are bounded, a request must arrive whole within the exchange timeout, and /health keeps answering meanwhile."""
from __future__ import annotations

import socket
import time

from cache.health import MAX_CONNECTIONS, MAX_PER_CLIENT
from tests.cache.test_tcp_clients import closed_within


def connect(port: int, source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_idle_connections_from_one_client_are_bounded(cache):
    socks = [connect(cache.health_port, "127.0.0.2") for _ in range(MAX_PER_CLIENT + 20)]
    try:
        closed = closed_within(socks, 2)  # at once: well within the exchange timeout
        assert closed == socks[MAX_PER_CLIENT:]
        assert cache.http("/health") == (200, "OK\n")
    finally:
        for sock in socks:
            sock.close()


def test_idle_connections_from_many_clients_are_bounded_and_the_oldest_make_room(cache):
    clients = [f"127.0.1.{i}" for i in range(1, 21)]
    socks = [connect(cache.metrics_port, client) for client in clients for _ in range(MAX_PER_CLIENT)]
    try:
        closed = closed_within(socks, 2)
        assert closed == socks[:len(socks) - MAX_CONNECTIONS]  # the ones open longest
        status, body = cache.http("/metrics", cache.metrics_port)
        assert status == 200 and "coredns_dns_requests_total" in body
    finally:
        for sock in socks:
            sock.close()


def test_a_request_trickled_in_is_cut_off(cache):
    with connect(cache.health_port, "127.0.0.3") as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        deadline = time.monotonic() + 20
        closed = False
        while not closed and time.monotonic() < deadline:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
                time.sleep(0.2)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            else:
                closed = bool(closed_within([sock], 0.01))
        assert closed, "a request that never ends was kept open"
    assert cache.http("/health") == (200, "OK\n")


def test_a_request_head_beyond_its_bound_is_refused(cache):
    with connect(cache.health_port, "127.0.0.4") as sock:
        try:
            sock.sendall(b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert closed_within([sock], 5) == [sock]
    assert cache.http("/health") == (200, "OK\n")
