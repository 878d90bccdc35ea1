"""Identical queries in flight share one upstream query (counted in dnsmasq's own query log)."""
from __future__ import annotations

import os
import signal
import socket
import time

import dns.message


def test_identical_queries_share_one_upstream_query(cache, node_dns):
    name = "coalesce.example.org"
    before = node_dns.queries(name)
    socks = []
    os.kill(node_dns.proc.pid, signal.SIGSTOP)  # hold the upstream so that all 20 queries are in flight together
    try:
        for index in range(20):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(5)
            sock.sendto(dns.message.make_query(name.upper() if index % 2 else name, "A").to_wire(),
                        ("127.0.0.1", cache.port))
            socks.append(sock)
        time.sleep(0.3)
    finally:
        os.kill(node_dns.proc.pid, signal.SIGCONT)
    answers = [dns.message.from_wire(sock.recv(4096)) for sock in socks]
    for sock in socks:
        sock.close()
    assert all(a.answer and a.answer[0][0].to_text() == "192.0.2.11" for a in answers)
    assert node_dns.queries(name) - before == 1
