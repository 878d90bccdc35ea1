"""resolv.conf composition against kubelet's documented behaviour (kubernetes.io "DNS for Services and Pods",
pkg/kubelet/network/dns) and the file format containerd/CRI-O write; kube-apiserver's dnsConfig validation."""
from __future__ import annotations

import pytest

from webhook.resolvconf import (
    ResolverConfig,
    fit_limits,
    parse_resolv_conf,
    pod_resolver_config,
    render,
    validation_errors,
)

NODE = ResolverConfig(nameservers=("10.0.0.2", "10.0.0.3"), searches=("ec2.internal", "corp.example"),
                      options=("timeout:1", "rotate"))


def compose(spec: dict, namespace: str = "shop", node: ResolverConfig = NODE) -> ResolverConfig:
    return pod_resolver_config(spec, namespace, ["10.96.0.10"], "cluster.local", node)


def test_cluster_first_uses_cluster_dns_cluster_searches_then_the_nodes_and_only_ndots_5():
    assert render(compose({"dnsPolicy": "ClusterFirst"})) == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local ec2.internal corp.example\n"
        "nameserver 10.96.0.10\n"
        "options ndots:5\n")


def test_unset_policy_is_cluster_first():
    assert compose({}) == compose({"dnsPolicy": "ClusterFirst"})


def test_cluster_first_on_host_network_falls_back_to_the_nodes_file():
    assert compose({"dnsPolicy": "ClusterFirst", "hostNetwork": True}) == NODE
    assert compose({"hostNetwork": True}) == NODE


def test_cluster_first_with_host_net_uses_cluster_dns_on_host_network():
    config = compose({"dnsPolicy": "ClusterFirstWithHostNet", "hostNetwork": True})
    assert config.nameservers == ("10.96.0.10",) and config.options == ("ndots:5",)


def test_default_policy_uses_the_nodes_file_plus_the_pods_dns_config():
    config = compose({"dnsPolicy": "Default", "dnsConfig": {
        "nameservers": ["10.0.0.3", "1.1.1.1"], "searches": ["corp.example", "extra.example"],
        "options": [{"name": "timeout", "value": "3"}, {"name": "edns0"}]}})
    # duplicates removed keeping the first; the pod's option value wins
    assert config == ResolverConfig(("10.0.0.2", "10.0.0.3", "1.1.1.1"),
                                    ("ec2.internal", "corp.example", "extra.example"),
                                    ("timeout:3", "rotate", "edns0"))


def test_none_policy_is_only_the_pods_dns_config():
    config = compose({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["169.254.20.10", "169.254.20.10"],
                                                         "searches": ["a.example", "a.example"],
                                                         "options": [{"name": "ndots", "value": "2"}]}})
    assert render(config) == "search a.example\nnameserver 169.254.20.10\noptions ndots:2\n"


def test_cluster_searches_are_not_duplicated_by_the_nodes():
    node = ResolverConfig(("10.0.0.2",), ("cluster.local", "ec2.internal"), ())
    assert compose({}, node=node).searches == ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local",
                                               "ec2.internal")


def test_pod_options_win_in_place_and_an_empty_value_means_no_value():
    node = ResolverConfig(("10.0.0.2",), (), ("ndots:5", "edns0", "timeout:1"))
    spec = {"dnsPolicy": "Default", "dnsConfig": {"options": [
        {"name": "ndots", "value": "1"}, {"name": "edns0", "value": ""}, {"name": "timeout"}, {"name": "use-vc"}]}}
    assert compose(spec, node=node).options == ("ndots:1", "edns0", "timeout", "use-vc")


def test_kubelet_trims_to_the_resolver_limits():
    config = fit_limits(ResolverConfig(
        nameservers=("1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"),
        searches=tuple([f"d{i}.example" for i in range(40)]),
        options=("ndots:5",)))
    assert config.nameservers == ("1.1.1.1", "1.1.1.2", "1.1.1.3")
    assert config.searches == tuple(f"d{i}.example" for i in range(32))


def test_kubelet_drops_over_long_search_names_and_cuts_the_line_at_2048_characters():
    too_long = "a" * 254
    names = [f"{'b' * 200}{i:02d}.example" for i in range(12)]  # 211 characters each
    config = fit_limits(ResolverConfig(("1.1.1.1",), (too_long, *names), ()))
    assert too_long not in config.searches
    assert len(" ".join(config.searches)) <= 2048
    assert config.searches == tuple(names[:9])  # 9 * 212 - 1 = 1907; a tenth would pass 2048


def test_parse_node_resolv_conf_like_kubelet():
    text = ("# generated\nnameserver 10.0.0.2\nsearch old.example\nnameserver 10.0.0.3\n"
            "search ec2.internal. corp.example\noptions timeout:1\noptions rotate attempts:2\n  \n")
    assert parse_resolv_conf(text) == ResolverConfig(("10.0.0.2", "10.0.0.3"), ("ec2.internal", "corp.example"),
                                                     ("rotate", "attempts:2"))


def test_render_round_trips_through_parse():
    config = ResolverConfig(("169.254.20.10", "10.96.0.10"), ("shop.svc.cluster.local", "cluster.local"),
                            ("ndots:5", "edns0"))
    assert parse_resolv_conf(render(config)) == config


def test_render_omits_empty_lines():
    assert render(ResolverConfig(("169.254.20.10",), (), ())) == "nameserver 169.254.20.10\n"
    assert render(ResolverConfig()) == ""


@pytest.mark.parametrize("dns_config, fragment", [
    ({"nameservers": ["1.1.1.1"] * 4}, "limit of 3"),
    ({"nameservers": ["1.1.1.1"], "searches": [f"d{i}.example" for i in range(33)]}, "limit of 32"),
    ({"nameservers": ["1.1.1.1"], "searches": ["a" * 250] * 9}, "limit of 2048"),
    ({"nameservers": ["not-an-ip"]}, "is not an IP address"),
    ({"nameservers": ["1.1.1.1"], "searches": ["UPPER.example"]}, "DNS-1123"),
    ({"nameservers": ["1.1.1.1"], "searches": ["-bad.example"]}, "DNS-1123"),
    ({"nameservers": ["1.1.1.1"], "options": [{"name": ""}]}, "must not be empty"),
    ({"nameservers": []}, "at least one nameserver"),
])
def test_api_validation_errors_name_the_limit(dns_config, fragment):
    errors = validation_errors("None", dns_config)
    assert any(fragment in error for error in errors), errors


def test_api_validation_accepts_a_trailing_dot_and_the_limits_themselves():
    assert validation_errors("None", {"nameservers": ["1.1.1.1", "::1", "10.0.0.1"],
                                      "searches": ["example.com."] + [f"d{i}.example" for i in range(31)],
                                      "options": [{"name": "ndots", "value": "5"}]}) == []
    assert validation_errors("ClusterFirst", None) == []
    assert validation_errors("None", None) == ["spec.dnsConfig: required when dnsPolicy is None"]
