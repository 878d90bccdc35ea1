"""After an outage of kube-dns, the cluster zone answers again within about a second of kube-dns being back: the
reconnect backoff is capped at TcpUpstream's BACKOFF_MAX, however long the outage lasted.

The upstream is the real dnsmasq, stopped and started again on the same port. Only the upstream's clock is a test
clock, advanced by the test: the outage lasts 30 s and the wait after it is measured without waiting for either,
and without depending on how fast this machine is.
"""
from __future__ import annotations

import asyncio
import struct
from types import SimpleNamespace

from cache import tcpupstream, wire
from cache.addresses import Address
from cache.exchange import UpstreamError
from cache.stats import Stats
from cache.tcpupstream import TcpUpstream
from tests.cache.conftest import Dnsmasq

QUESTION = wire.encode_name("web.default.svc.cluster.local") + struct.pack("!HH", 1, 1)
STEP = 0.05  # seconds of test clock between two queries


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_kube_dns_is_used_again_within_a_second_of_its_return(tmp_path, monkeypatch):
    kube_dns = Dnsmasq(tmp_path).start()
    clock = Clock()
    monkeypatch.setattr(tcpupstream, "time", SimpleNamespace(monotonic=clock))

    async def outage_then_return() -> float:
        upstream = TcpUpstream(Address("tcp", "127.0.0.1", kube_dns.port), Stats())
        try:
            assert await upstream.exchange(QUESTION, False, False, 2)
            kube_dns.stop()
            start = clock.now
            while True:  # a query every STEP for 30 s, and on until one really tried to connect (and failed)
                try:
                    await upstream.exchange(QUESTION, False, False, 2)
                    raise AssertionError("answered while kube-dns was stopped")
                except UpstreamError as error:
                    tried = "backoff" not in str(error)
                clock.now += STEP
                if tried and clock.now - start > 30:
                    break
            kube_dns.start()  # right after a failed connect: the longest wait the backoff allows
            back = clock.now
            while True:
                try:
                    await upstream.exchange(QUESTION, False, False, 2)
                    return clock.now - back
                except UpstreamError:
                    clock.now += STEP
        finally:
            upstream.close()

    try:
        waited = asyncio.run(outage_then_return())
    finally:
        kube_dns.stop()
    assert waited <= 1.0, f"kube-dns was asked again only {waited:.2f} s after it was back"
