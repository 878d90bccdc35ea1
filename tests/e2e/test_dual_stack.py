"""An IPv6 listen address gets the same treatment: a /128 on the interface, ip6tables NOTRACK rules, and pods'
IPv6 DNS flows stay out of conntrack."""
from __future__ import annotations

from tests.e2e.topology import LOCAL_IP, LOCAL_IP6, POD_IP6, RECORDS, Cache, Topology, remove_our_rules


def dig6(topo: Topology, name: str) -> list[str]:
    return topo.pod_run("dig", "+short", "+time=2", "+tries=1", f"@{LOCAL_IP6}", name).stdout.split()


def test_ipv6_listen_address_serves_outside_conntrack_and_is_removed_on_exit(clean_node: Topology):
    topo = clean_node
    cache = Cache(topo, "dual", "--listen", f"[{LOCAL_IP6}]:53", sync_interval=60)
    try:
        cache.wait_serving()
        cache.wait_until(lambda: len(topo.node.our_rules(6)) == 13, "ip6tables rules")
        cache.wait_rules()
        assert topo.node.addresses("nodelocaldns") == [LOCAL_IP, LOCAL_IP6]
        assert f"{LOCAL_IP6}/128" in topo.node.run("ip", "addr", "show", "dev", "nodelocaldns").stdout

        topo.flush_conntrack()
        for tcp in ("+notcp", "+tcp"):
            answer = topo.pod_run("dig", tcp, "+short", "+time=2", "+tries=1", f"@{LOCAL_IP6}",
                                  "svc-1.default.svc.cluster.local").stdout.split()
            assert answer == [RECORDS["svc-1.default.svc.cluster.local"]]
        assert topo.conntrack(topo.node, "-f", "ipv6", "--orig-src", POD_IP6) == []

        # Control: without the rules the same flow is tracked.
        remove_our_rules(topo, family=6)
        topo.flush_conntrack()
        assert dig6(topo, "svc-1.default.svc.cluster.local") == [RECORDS["svc-1.default.svc.cluster.local"]]
        assert topo.conntrack(topo.node, "-f", "ipv6", "--orig-src", POD_IP6)
    finally:
        code = cache.terminate()
    assert code == 0, cache.output
    assert "localdns" not in topo.node.iptables_save(6)
    assert topo.node.addresses("nodelocaldns") is None
