"""A pod's real resolvers go through the node cache, outside conntrack, and the cache's misses reach kube-dns by TCP.

The pod's /etc/resolv.conf is exactly what the webhook renders (`python -m webhook preview`), so this is the path an
injected pod takes: glibc (getent, Python's getaddrinfo) and dig, short names walking the search list included.
"""
from __future__ import annotations

import json

from tests.e2e.topology import (
    KUBE_DNS_IP,
    LOCAL_IP,
    NODE_UPSTREAM_IP,
    POD_IP,
    PYTHON,
    RECORDS,
    Cache,
    Topology,
    remove_our_rules,
)

GETADDRINFO = """
import json, socket, sys
print(json.dumps(sorted({info[4][0] for info in socket.getaddrinfo(sys.argv[1], 80, socket.AF_INET)})))
"""


def getent(topo: Topology, name: str) -> set[str]:
    out = topo.pod_run("getent", "ahosts", name).stdout
    return {line.split()[0] for line in out.splitlines()}


def getaddrinfo(topo: Topology, name: str) -> list[str]:
    return json.loads(topo.pod_run(PYTHON, "-c", GETADDRINFO, name).stdout)


def dig(topo: Topology, *args: str) -> list[str]:
    # No @server: dig reads the pod's /etc/resolv.conf (nameserver, search, ndots) like the other clients.
    return topo.pod_run("dig", "+short", "+time=2", "+tries=1", *args).stdout.split()


def test_the_pod_resolv_conf_is_the_webhooks(clean_node: Topology):
    topo = clean_node
    assert topo.pod_run("cat", "/etc/resolv.conf").stdout == topo.resolv_conf
    lines = topo.resolv_conf.splitlines()
    assert f"nameserver {LOCAL_IP}" in lines
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in lines
    # The node does not route the pod to kube-dns, so every answer the pod gets below came through the cache.
    direct = topo.pod_run("dig", "+time=1", "+tries=1", f"@{KUBE_DNS_IP}", "svc-1.default.svc.cluster.local",
                          check=False)
    assert direct.returncode != 0


def test_real_clients_resolve_through_the_cache_without_conntrack(clean_node: Topology):
    topo = clean_node
    cache = Cache(topo, "resolve", sync_interval=60)
    try:
        cache.wait_serving()
        cache.wait_rules()
        topo.flush_conntrack()
        before = cache.metric("coredns_dns_requests_total")
        queries_before = len(topo.dnsmasq_queries())

        svc1 = RECORDS["svc-1.default.svc.cluster.local"]
        assert getent(topo, "svc-1") == {svc1}
        assert getaddrinfo(topo, "svc-1.default") == [svc1]
        assert dig(topo, "svc-1.default.svc.cluster.local") == [svc1]
        assert dig(topo, "+search", "svc-2") == [RECORDS["svc-2.default.svc.cluster.local"]]
        assert getaddrinfo(topo, "db.other") == [RECORDS["db.other.svc.cluster.local"]]
        # Two dots, ndots:5: glibc tries every search domain first (NXDOMAIN from kube-dns), then the name itself.
        assert getent(topo, "www.example.org") == {RECORDS["www.example.org"]}
        # And once more: now from the cache.
        assert getent(topo, "svc-1") == {svc1}

        # The cache counted what the pod's resolvers sent (getent asks A and AAAA, each search step a query).
        assert cache.metric("coredns_dns_requests_total") - before >= 12
        assert cache.metric("coredns_cache_hits_total") >= 1
        assert cache.metric("coredns_cache_misses_total") >= 1
        # The search walk reached kube-dns (misses), the external name the node's upstream.
        new_queries = topo.dnsmasq_queries()[queries_before:]
        asked = " ".join(new_queries)
        assert "www.example.org.default.svc.cluster.local" in asked
        assert "www.example.org.cluster.local" in asked
        assert "query[A] www.example.org from" in asked

        # Misses went to kube-dns over TCP only; the external zone to the node's upstream over UDP.
        assert topo.conntrack(topo.kube_dns, "-p", "tcp", "--orig-dst", KUBE_DNS_IP, "--dport", "53")
        assert topo.conntrack(topo.kube_dns, "-p", "udp", "--orig-dst", KUBE_DNS_IP) == []
        assert topo.conntrack(topo.kube_dns, "-p", "udp", "--orig-dst", NODE_UPSTREAM_IP, "--dport", "53")
        # The pod's DNS flows to the cache: not one conntrack entry on the node.
        assert topo.conntrack(topo.node, "--orig-dst", LOCAL_IP) == []
        assert topo.conntrack(topo.node, "--orig-src", POD_IP) == []

        # Control: the same queries without our rules are tracked, so the check above can fail.
        remove_our_rules(topo)
        topo.flush_conntrack()
        assert getent(topo, "svc-1") == {svc1}
        assert dig(topo, "svc-1.default.svc.cluster.local") == [svc1]
        tracked = topo.conntrack(topo.node, "--orig-dst", LOCAL_IP)
        assert any("dport=53" in line and f"src={POD_IP}" in line for line in tracked), tracked
    finally:
        cache.terminate()
