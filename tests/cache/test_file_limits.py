"""Open files: every miss to a UDP upstream has a socket of its own (a fresh source port), so a burst of distinct
misses needs as many descriptors as there are misses in flight, up to the resolver's 10,000.

- The cache raises its soft RLIMIT_NOFILE to the hard limit at start, as the Go runtime does for CoreDNS: a
  container runtime may start it with a soft limit of 1024 (containerd 2) and a hard one far higher.
- Where the hard limit is too low anyway, running out of descriptors is the cache's own shortage: the queries
  that find none get SERVFAIL, and the upstream is not marked down for it (which would fail every other query).
"""
from __future__ import annotations

import os
import resource
import signal
import socket
import time

import dns.message
import dns.rcode

from tests.cache.conftest import Cache


def soft_and_hard(pid: int) -> tuple[int, int]:
    for line in open(f"/proc/{pid}/limits"):
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open files limit")


def test_the_soft_open_files_limit_is_raised_to_the_hard_one(tmp_path, kube_dns):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # inherited by the cache started now
    try:
        cache = Cache(tmp_path, kube_dns=kube_dns, wait=False)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        cache.wait_serving()
        assert soft_and_hard(cache.proc.pid) == (hard, hard)
    finally:
        cache.stop()


def test_running_out_of_descriptors_does_not_mark_the_upstream_down(tmp_path, kube_dns, node_dns):
    cache = Cache(tmp_path, "--upstream-timeout", "5", kube_dns=kube_dns, node_dns=node_dns)
    try:
        resource.prlimit(cache.proc.pid, resource.RLIMIT_NOFILE, (64, 64))  # (lowering needs no privilege)
        count = 200
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            os.kill(node_dns.proc.pid, signal.SIGSTOP)  # every miss stays in flight, holding its socket
            try:
                for index in range(count):
                    query = dns.message.make_query(f"fd{index}-{time.monotonic_ns()}.example.org", "A", id=index)
                    sock.sendto(query.to_wire(), ("127.0.0.1", cache.port))
                time.sleep(1)
            finally:
                os.kill(node_dns.proc.pid, signal.SIGCONT)
            sock.settimeout(10)
            rcodes = [dns.message.from_wire(sock.recv(4096)).rcode() for _ in range(count)]
        assert rcodes.count(dns.rcode.SERVFAIL) > 0  # the descriptors did run out...
        assert rcodes.count(dns.rcode.NXDOMAIN) > 0  # ...for some queries only
        assert "is down" not in cache.output()
        to = f'to="udp://127.0.0.1:{node_dns.port}"'
        assert cache.metrics().get(f"coredns_forward_healthcheck_failures_total{{{to}}}", 0) == 0
        answer = cache.udp(dns.message.make_query("www.example.org", "A"))
        assert answer.rcode() == dns.rcode.NOERROR and answer.answer
    finally:
        cache.stop()


