"""Resolver libraries nobody here wrote resolve through the cache from a pod, names with many addresses included.

A headless Service with 40 endpoints does not fit a 512-byte UDP reply. The cache sends the addresses that fit,
with TC (RFC 2181 section 9), as CoreDNS and dnsmasq do: musl before 1.2.4 (Alpine before 3.18) never retries over
TCP and resolves with those; glibc and c-ares retry over TCP and get all 40. Before, the cache sent TC with no
record at all, and musl failed with "Name does not resolve".
"""
from __future__ import annotations

import json

import pytest

from tests.e2e.clients import NODE_LOOKUP, NODE_RESOLVE4, ManyAddresses, musl, musl_getaddrinfo, node
from tests.e2e.topology import PYTHON, RECORDS, Cache, Topology

MANY_IP = "10.77.0.250"  # the second dnsmasq: an address of the kube-dns namespace that topology.py does not use
FORTY = "many.default.svc.cluster.local"
HUNDRED = "lots.default.svc.cluster.local"  # beyond 1232 bytes: truncated even for clients with EDNS
ADDRESSES = {FORTY: [f"10.96.4.{i}" for i in range(1, 41)], HUNDRED: [f"10.96.5.{i}" for i in range(1, 101)]}

GLIBC_GETADDRINFO = """
import json, socket, sys
print(json.dumps(sorted({info[4][0] for info in socket.getaddrinfo(sys.argv[1], 80, socket.AF_INET)})))
"""


@pytest.fixture
def pod(clean_node: Topology, tmp_path):
    topo = clean_node
    binary = musl_getaddrinfo(tmp_path)
    many = ManyAddresses(topo, MANY_IP, ADDRESSES)
    # As kube-dns would answer these names: the forward zones send them to the second dnsmasq, over TCP.
    cache = Cache(topo, "clients", "--forward", f"{FORTY}=tcp://{MANY_IP}:53",
                  "--forward", f"{HUNDRED}=tcp://{MANY_IP}:53", sync_interval=60)
    try:
        cache.wait_serving()
        cache.wait_rules()
        yield topo, cache, binary
    finally:
        cache.terminate()
        many.close()


def glibc(topo: Topology, name: str) -> list[str]:
    return json.loads(topo.pod_run(PYTHON, "-c", GLIBC_GETADDRINFO, name).stdout)


def test_musl_resolves_forty_addresses_from_the_truncated_reply(pod):
    topo, cache, binary = pod
    assert musl(topo, binary, "svc-1") == [RECORDS["svc-1.default.svc.cluster.local"]]
    for attempt in ("miss", "hit"):
        hits = cache.metric("coredns_cache_hits_total")
        got = musl(topo, binary, "many")  # the search list makes it many.default.svc.cluster.local
        assert isinstance(got, list), f"musl failed on the {attempt}: {got}"
        assert 20 <= len(got) < 40 and set(got) <= set(ADDRESSES[FORTY]), got  # what fits 512 bytes
    assert cache.metric("coredns_cache_hits_total") > hits  # the second time from the cache


def test_glibc_and_c_ares_get_all_addresses_over_tcp(pod):
    topo, cache, _ = pod
    tcp_before = cache.metric("coredns_dns_requests_total", proto="tcp")
    assert glibc(topo, "many") == sorted(ADDRESSES[FORTY])
    tcp_after_glibc = cache.metric("coredns_dns_requests_total", proto="tcp")
    assert tcp_after_glibc > tcp_before  # glibc took TC and asked again over TCP
    assert node(topo, NODE_RESOLVE4, FORTY) == sorted(ADDRESSES[FORTY])  # c-ares
    assert node(topo, NODE_LOOKUP, "many") == sorted(ADDRESSES[FORTY])  # Node's getaddrinfo (glibc)
    assert node(topo, NODE_RESOLVE4, HUNDRED) == sorted(ADDRESSES[HUNDRED])
    assert cache.metric("coredns_dns_requests_total", proto="tcp") > tcp_after_glibc  # c-ares too, past 1232 B
