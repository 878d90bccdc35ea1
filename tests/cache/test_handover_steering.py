"""During an upgrade two instances bind the same address (SO_REUSEPORT). The kernel must hand every new query and
connection to the newest one, so that the old one's queue is empty when it closes: a datagram left in a closing
socket's queue is a lost query. Real sockets, real kernel steering; nothing is mocked."""
from __future__ import annotations

import socket
import time

from cache.server import bind_socket

CLIENTS = 200  # fresh source ports: with the kernel's plain hash, some would land on every socket


def _drain(sock: socket.socket) -> int:
    received = 0
    while True:
        try:
            sock.recv(512)
        except BlockingIOError:
            return received
        received += 1


def _send_from_fresh_ports(port: int) -> None:
    for _ in range(CLIENTS):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"query", ("127.0.0.1", port))


def _received(socks: list[socket.socket], expected: int) -> list[int]:
    counts = [0] * len(socks)
    deadline = time.monotonic() + 5
    while sum(counts) < expected and time.monotonic() < deadline:  # loopback delivers at once; bounded anyway
        counts = [c + _drain(s) for c, s in zip(counts, socks)]
        time.sleep(0.01)
    return counts


def test_udp_queries_go_to_the_newest_socket_and_back_when_it_leaves():
    old = bind_socket("127.0.0.1", 0, socket.SOCK_DGRAM)
    port = old.getsockname()[1]
    new = bind_socket("127.0.0.1", port, socket.SOCK_DGRAM)
    try:
        _send_from_fresh_ports(port)
        assert _received([old, new], CLIENTS) == [0, CLIENTS]
        new.close()  # the new instance failed and left: the old one serves everything again
        _send_from_fresh_ports(port)
        assert _received([old], CLIENTS) == [CLIENTS]
    finally:
        old.close()
        new.close()


def test_the_next_upgrade_steers_to_its_own_new_instance():
    first = bind_socket("127.0.0.1", 0, socket.SOCK_DGRAM)
    port = first.getsockname()[1]
    second = bind_socket("127.0.0.1", port, socket.SOCK_DGRAM)
    try:
        first.close()  # the first upgrade is over
        third = bind_socket("127.0.0.1", port, socket.SOCK_DGRAM)
        try:
            _send_from_fresh_ports(port)
            assert _received([second, third], CLIENTS) == [0, CLIENTS]
        finally:
            third.close()
    finally:
        second.close()


def test_tcp_connections_go_to_the_newest_listener():
    old = bind_socket("127.0.0.1", 0, socket.SOCK_STREAM)
    port = old.getsockname()[1]
    new = bind_socket("127.0.0.1", port, socket.SOCK_STREAM)
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
    try:
        accepted = {"old": 0, "new": 0}
        deadline = time.monotonic() + 5
        while sum(accepted.values()) < len(clients) and time.monotonic() < deadline:
            for name, listener in (("old", old), ("new", new)):
                try:
                    listener.accept()[0].close()
                    accepted[name] += 1
                except BlockingIOError:
                    time.sleep(0.01)
        assert accepted == {"old": 0, "new": len(clients)}
    finally:
        for client in clients:
            client.close()
        old.close()
        new.close()
