"""Answers count their TTL down, never exceed the caps, and expire: the next query goes upstream again."""
from __future__ import annotations

import time

import dns.message

from tests.cache.conftest import UPSTREAM_TTL, Cache


def over_udp(kube_dns) -> list[str]:
    """Forward cluster.local over UDP: dnsmasq logs queries on TCP connections only when they close."""
    return ["--forward", f"cluster.local=udp://127.0.0.1:{kube_dns.port}"]


def ttl_of(response: dns.message.Message) -> int:
    return response.answer[0].ttl


def test_ttl_counts_down_and_is_capped(cache, kube_dns):
    query = dns.message.make_query("web.default.svc.cluster.local", "AAAA")
    first = ttl_of(cache.udp(query))
    assert 0 < first <= 30 < UPSTREAM_TTL  # --success-ttl 30 caps kube-dns's 60
    time.sleep(1.1)
    second = ttl_of(cache.udp(query))
    assert second < first


def test_expired_entries_are_fetched_again(tmp_path, kube_dns):
    cache = Cache(tmp_path, "--success-ttl", "1", "--prefetch", "0", *over_udp(kube_dns), kube_dns=kube_dns)
    try:
        name = "db.default.svc.cluster.local"
        before = kube_dns.queries(name)
        query = dns.message.make_query(name, "A")
        assert ttl_of(cache.udp(query)) == 1
        cache.udp(query)
        assert kube_dns.queries(name) - before == 1  # the second was a hit
        time.sleep(1.2)
        assert cache.udp(query).answer
        assert kube_dns.queries(name) - before == 2
    finally:
        cache.stop()


def test_popular_entries_are_prefetched_before_they_expire(tmp_path, kube_dns):
    cache = Cache(tmp_path, "--success-ttl", "2", "--prefetch", "2", *over_udp(kube_dns), kube_dns=kube_dns)
    try:
        name = "txt.default.svc.cluster.local"
        before = kube_dns.queries(name, "TXT")
        query = dns.message.make_query(name, "TXT")
        cache.udp(query)
        cache.udp(query)
        time.sleep(1.85)  # within the last 10% of the entry's 2 s life
        cache.udp(query)  # a hit that triggers the refresh
        time.sleep(0.5)
        assert kube_dns.queries(name, "TXT") - before == 2
        assert ttl_of(cache.udp(query)) >= 1  # the refreshed entry, not a miss
        assert cache.metrics()["coredns_cache_prefetch_total"] == 1
    finally:
        cache.stop()
