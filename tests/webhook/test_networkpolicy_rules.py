"""NetworkPolicy semantics (webhook/netpol.py): the API reference's rules, case by case as cluster admins write
policies, then on generated policy shapes against an independent oracle (tests/webhook/netpol_oracle.py), and the
rule the warning gives, applied as a user would paste it, always makes DNS to the cache work."""
from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.webhook import netpol_oracle as oracle
from webhook import netpol

LOCAL_IP = "169.254.20.10"
WEB = {"app": "web"}


def policy(spec: dict, name: str = "p", namespace: str = "shop") -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def reach_of(*specs: dict, labels: dict = WEB, local_ip: str = LOCAL_IP) -> tuple[bool, bool]:
    compiled = [netpol.compile_policy(policy(spec, f"p{i}"), local_ip) for i, spec in enumerate(specs)]
    result = netpol.reach(labels, compiled)
    return result.udp, result.tcp


DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
KUBE_DNS_ONLY = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                         "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}], "ports": DNS_PORTS}


@pytest.mark.parametrize("specs,expected", [
    # no policy, or one about ingress only: nothing limits egress
    ((), (True, True)),
    (({"podSelector": {}, "policyTypes": ["Ingress"]},), (True, True)),
    # policyTypes unset and no egress rules (absent or an empty list): the API server makes it Ingress only
    (({"podSelector": {}},), (True, True)),
    (({"podSelector": {}, "egress": []},), (True, True)),
    # the usual default-deny egress: Egress without rules blocks everything
    (({"podSelector": {}, "policyTypes": ["Egress"]},), (False, False)),
    # policyTypes unset with an egress rule: Egress is implied
    (({"podSelector": {}, "egress": [{"ports": [{"port": 443}]}]},), (False, False)),
    # the case: DNS allowed only to the kube-dns pods, whose selectors never match the link-local IP
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [KUBE_DNS_ONLY]},), (False, False)),
    # a rule with no `to` allows every destination; with no `ports`, every port
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": DNS_PORTS}]},), (True, True)),
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]},), (True, True)),
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": []}]},), (True, True)),
    # the rule localdns asks for; and the UDP half alone (TCP, for large answers, blocked)
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        KUBE_DNS_ONLY, {"to": [{"ipBlock": {"cidr": "169.254.20.10/32"}}], "ports": DNS_PORTS}]},), (True, True)),
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"ipBlock": {"cidr": "169.254.20.10/32"}}], "ports": [{"protocol": "UDP", "port": 53}]}]},),
     (True, False)),
    # a port entry without protocol is TCP; without port, every port of its protocol
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": 53}]}]},), (False, True)),
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"protocol": "UDP"}]}]},), (True, False)),
    # endPort ranges
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"ports": [{"protocol": "UDP", "port": 50, "endPort": 60}, {"port": 54, "endPort": 60}]}]},), (True, False)),
    # named ports are a pod's container ports: the local IP is no pod's
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"ports": [{"protocol": "UDP", "port": "dns"}, {"protocol": "TCP", "port": "dns-tcp"}]}]},), (False, False)),
    # a wide ipBlock, and one whose except takes the local IP out
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},),
     (True, True)),
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}}]}]},), (False, False)),
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
        {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]},), (True, True)),
    # an IPv6 block does not hold an IPv4 address
    (({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "::/0"}}]}]},),
     (False, False)),
    # selection: other pods' policies do not apply; matchExpressions; NotIn and DoesNotExist match a missing key
    (({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Egress"]},), (True, True)),
    (({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]},
       "policyTypes": ["Egress"]},), (False, False)),
    (({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]},
       "policyTypes": ["Egress"]},), (False, False)),
    (({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, "policyTypes": ["Egress"]},),
     (True, True)),
    (({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
       "policyTypes": ["Egress"]},), (False, False)),
    # rules add up across the policies that select the pod
    (({"podSelector": {}, "policyTypes": ["Egress"]},
      {"podSelector": {"matchLabels": WEB}, "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}),
     (True, False)),
])
def test_the_api_references_rules(specs, expected):
    assert reach_of(*specs) == expected
    policies = [policy(spec, f"p{i}") for i, spec in enumerate(specs)]
    assert expected == tuple(oracle.allowed(policies, "shop", WEB, protocol, LOCAL_IP, 53)
                             for protocol in ("UDP", "TCP")), "the oracle reads the reference the same way"


def test_an_ipv6_local_ip():
    spec = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "fd00::/8"}}]}]}
    assert reach_of(spec, local_ip="fd00::a") == (True, True)
    assert reach_of(spec) == (False, False)
    assert netpol.egress_rule("fd00::a").startswith("- {to: [{ipBlock: {cidr: fd00::a/128}}]")


@pytest.mark.parametrize("spec,message", [
    ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "169.254.20.10/33"}}]}]}, "is not a CIDR"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Has"}]}}, "operator of In, NotIn"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}}, "In needs values"),
    ({"podSelector": {}, "policyTypes": ["Outbound"]}, "must hold Ingress or Egress"),
    ({"podSelector": {}, "egress": [{"ports": [{"protocol": "ICMP"}]}]}, "TCP, UDP or SCTP"),
    ({"podSelector": {}, "egress": [{"ports": [{"port": 60, "endPort": 53}]}]}, "endPort must be"),
    ({"podSelector": [], "egress": []}, "spec.podSelector must be an object"),
])
def test_a_policy_the_api_server_would_refuse_is_named_with_the_field(spec, message):
    with pytest.raises(netpol.PolicyError) as refused:
        netpol.compile_policy(policy(spec, "bad"), LOCAL_IP)
    assert message in str(refused.value) and "NetworkPolicy shop/bad" in str(refused.value)


def test_warnings_name_the_policies_and_fit_kubectls_limit():
    deny = netpol.compile_policy(policy({"podSelector": {}, "policyTypes": ["Egress"]}, "default-deny-egress"),
                                 LOCAL_IP)
    udp_only = netpol.compile_policy(policy({"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"ports": [{"protocol": "UDP", "port": 53}]}]}, "dns-udp"), LOCAL_IP)
    assert netpol.warnings_for(netpol.reach(WEB, [deny]), LOCAL_IP) == (
        "localdns: NetworkPolicy shop/default-deny-egress blocks DNS (UDP 53) to the node-local cache "
        "169.254.20.10; DNS left unchanged",
        "localdns: to allow it, add to spec.egress of shop/default-deny-egress: - {to: [{ipBlock: {cidr: "
        "169.254.20.10/32}}], ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]}")
    tcp = netpol.warnings_for(netpol.reach(WEB, [deny, udp_only]), LOCAL_IP)
    assert tcp[0] == ("localdns: NetworkPolicies shop/default-deny-egress and shop/dns-udp block TCP 53 to the "
                      "node-local cache 169.254.20.10: DNS answers too large for UDP will fail")
    assert netpol.warnings_for(netpol.OPEN, LOCAL_IP) == ()
    # The API server may cut a warning over 256 characters; kubectl prints each on one line.
    for warning in netpol.warnings_for(netpol.reach(WEB, [deny]), "fd00:1234:5678:9abc:def0:1234:5678:9abc"):
        assert len(warning) <= 256 and "\n" not in warning


PROPERTY = hypothesis_settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(oracle.policy_sets, oracle.label_sets, st.sampled_from(oracle.LOCAL_IPS))
def test_the_answer_for_dns_is_the_oracles(policies, labels, local_ip):
    compiled = [netpol.compile_policy(p, local_ip) for p in policies if p["metadata"]["namespace"] == "shop"]
    result = netpol.reach(labels, compiled)
    assert result.udp == oracle.allowed(policies, "shop", labels, "UDP", local_ip, 53)
    assert result.tcp == oracle.allowed(policies, "shop", labels, "TCP", local_ip, 53)
    # The policies named are exactly those that isolate the pod's egress.
    assert {p.ref for p in result.policies} == {
        f"shop/{p['metadata']['name']}" for p in policies if p["metadata"]["namespace"] == "shop"
        and "Egress" in oracle.policy_types(p["spec"]) and oracle.selects(p["spec"].get("podSelector"), labels)}


@PROPERTY
@given(oracle.policy_sets, oracle.label_sets, st.sampled_from(oracle.LOCAL_IPS))
def test_the_rule_the_warning_gives_lets_dns_through(policies, labels, local_ip):
    compiled = [netpol.compile_policy(p, local_ip) for p in policies if p["metadata"]["namespace"] == "shop"]
    warnings = netpol.warnings_for(netpol.reach(labels, compiled), local_ip)
    if not warnings:
        return
    # What a user does with it: take the policy named, and paste the YAML item under its spec.egress.
    where, _, item = warnings[1].removeprefix("localdns: to allow it, add to spec.egress of ").partition(": ")
    [rule] = yaml.safe_load(item)
    fixed = copy.deepcopy(policies)
    [target] = [p for p in fixed if f"{p['metadata']['namespace']}/{p['metadata']['name']}" == where]
    target["spec"].setdefault("egress", []).append(rule)
    for protocol in ("UDP", "TCP"):
        assert oracle.allowed(fixed, "shop", labels, protocol, local_ip, 53), (protocol, target)
    # ... and nothing else: the rule opens port 53 to the local IP only.
    if not oracle.allowed(policies, "shop", labels, "UDP", "10.0.0.1", 53):
        assert not oracle.allowed(fixed, "shop", labels, "UDP", "10.0.0.1", 53)
    assert reach_of_objects(fixed, labels, local_ip) == (True, True)


def reach_of_objects(policies: list[dict], labels: dict, local_ip: str) -> tuple[bool, bool]:
    result = netpol.reach(labels, [netpol.compile_policy(p, local_ip) for p in policies
                                   if p["metadata"]["namespace"] == "shop"])
    return result.udp, result.tcp
