"""The fail-open fallback as installed: the headless Service localdns-kube-dns sits in kube-system beside CoreDNS
with kube-dns's selector, and every cache is told its name in the cluster's own domain, which the cache's parser
reads as a name to resolve (not off, not addresses). docs/node.md, "When the cache is down"."""
from __future__ import annotations

import pytest

from cache import config
from cache.netsetup.fallback import parse_fallback
from tests.deploy.render import container, expanded_args, find, flag_values, rendered

DOWNWARD = {"status.hostIP": "192.0.2.7", "spec.nodeName": "node-1"}


@pytest.mark.parametrize("components", [("builtin-certs",), ("builtin-certs", "iptables-mode")],
                         ids=["default", "iptables-mode"])
def test_every_cache_resolves_the_headless_service_of_kube_dns(components):
    objects = rendered(components)
    service = find(objects, "Service", "localdns-kube-dns", "kube-system")
    assert service["spec"]["clusterIP"] == "None"  # headless: its records are the kube-dns pods themselves
    assert service["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert sorted((p["protocol"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]) == [
        ("TCP", 53, 53), ("UDP", 53, 53)]
    if "iptables-mode" in components:  # the same pods as kube-dns-upstream, which misses go to
        upstream = find(objects, "Service", "kube-dns-upstream", "kube-system")
        assert upstream["spec"]["selector"] == service["spec"]["selector"]
    args = expanded_args(container(find(objects, "DaemonSet", "localdns-cache"), "cache"), DOWNWARD)
    [value] = flag_values(args, "--fallback-endpoints")
    assert value == "localdns-kube-dns.kube-system.svc.cluster.local"
    assert parse_fallback(value).name == value
    settings, _ = config.load([a for a in args if not a.startswith("--config")], environ={})
    assert settings.fallback_endpoints == value and settings.setup_network


def test_the_name_follows_the_cluster_domain():
    objects = rendered(("builtin-certs",), clusterDomain="corp.example")
    args = expanded_args(container(find(objects, "DaemonSet", "localdns-cache"), "cache"), DOWNWARD)
    assert flag_values(args, "--fallback-endpoints") == ["localdns-kube-dns.kube-system.svc.corp.example"]
