"""Which upstreams a name goes to: node-local-dns's default zones, --forward overrides, longest suffix wins."""
from __future__ import annotations

import pytest

from cache import wire
from cache.addresses import Address
from cache.config import Settings, SettingsError
from cache.limits import Limits
from cache.resolver import Resolver
from cache.stats import Stats
from cache.store import Store
from cache.upstream import Group


def test_defaults_follow_node_local_dns(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search example\nnameserver 10.0.0.53\nnameserver fd00::53\noptions ndots:2\n")
    settings = Settings(listen=("127.0.0.1:5353",), resolv_conf=str(resolv))
    zones = settings.zones({"KUBE_DNS_UPSTREAM_SERVICE_HOST": "10.96.0.10"})
    kube_dns = [Address("tcp", "10.96.0.10", 53)]
    assert zones == {"cluster.local": kube_dns, "in-addr.arpa": kube_dns, "ip6.arpa": kube_dns,
                     ".": [Address("udp", "10.0.0.53", 53), Address("udp", "fd00::53", 53)]}
    with pytest.raises(SettingsError, match="--kube-dns"):
        settings.zones({})


def test_forward_replaces_a_zone_and_the_longest_suffix_wins():
    settings = Settings(listen=("127.0.0.1:5353",), kube_dns="10.96.0.10:5353", resolv_conf="/dev/null",
                        forward=("svc.cluster.local=udp://10.0.0.1:53,tcp://[fd00::1]:5353",
                                 "example.org.=udp://10.0.0.2"))
    zones = settings.zones({})
    assert zones["cluster.local"] == [Address("tcp", "10.96.0.10", 5353)]
    assert zones["svc.cluster.local"] == [Address("udp", "10.0.0.1", 53), Address("tcp", "fd00::1", 5353)]
    groups = {zone: Group(zone, [], Stats()) for zone in zones}
    resolver = Resolver(groups, Store(Limits()), Stats(), Limits())

    def route(name: str) -> str | None:
        found = resolver.route(wire.encode_name(name))
        return found[0] if found else None

    assert route("web.default.svc.cluster.local") == "svc.cluster.local"
    assert route("pod.cluster.local") == "cluster.local"
    assert route("www.EXAMPLE.org") == "example.org"
    assert route("example.com") is None  # no "." zone: no resolv.conf nameserver


@pytest.mark.parametrize("forward", ["cluster.local", "x=", "x=,", "x=dns://1.2.3.4", "x=udp://host.name:53",
                                     "x=udp://1.2.3.4:70000"])
def test_bad_forward_specs_are_clear_errors(forward):
    with pytest.raises(SettingsError, match="forward"):
        Settings(listen=("127.0.0.1:5353",), kube_dns="10.96.0.10", resolv_conf="/dev/null",
                 forward=(forward,)).check({})
