"""An independent reading of the NetworkPolicy API reference, to check webhook/netpol.py against, and hypothesis
strategies for the policy shapes that matter to it.

The oracle answers a different, wider question than the code: is one packet (protocol, destination IP, port) from
a pod allowed? It reads the raw objects at question time (nothing compiled), matches label selectors with the
in-test API server's selector parser (tests/kubeapi_rules.py, a separate implementation of the same rules: each
selector is turned into its `kubectl -l` string form first), compares addresses as integers under a mask, and
expands port ranges into sets. The code is only asked about UDP and TCP 53 to the local IP.
"""
from __future__ import annotations

import socket
from typing import Any

from hypothesis import strategies as st

from tests.kubeapi_rules import parse_label_selector

LOCAL_IPS = ("169.254.20.10", "fd00::a")


# ---- the oracle ----

def selector_string(selector: dict | None) -> str:
    """A LabelSelector as `kubectl get -l` writes it."""
    selector = selector or {}
    parts = [f"{key}={value}" for key, value in (selector.get("matchLabels") or {}).items()]
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        parts.append({"In": f"{key} in ({','.join(values)})", "NotIn": f"{key} notin ({','.join(values)})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[operator])
    return ",".join(parts)


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    return all(test(labels) for test in parse_label_selector(selector_string(selector)))


def as_int(address: str) -> tuple[int, int]:
    """(address as an integer, its bit length)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    packed = socket.inet_pton(family, address)
    return int.from_bytes(packed, "big"), len(packed) * 8


def in_cidr(address: str, cidr: str) -> bool:
    network, _, length = cidr.partition("/")
    value, bits = as_int(address)
    base, base_bits = as_int(network)
    if bits != base_bits:
        return False
    shift = bits - int(length)
    return value >> shift == base >> shift


def peer_allows(peer: dict, address: str) -> bool:
    block = peer.get("ipBlock")
    if block is None:
        return False  # selects pods, whose IPs the local address is not
    return in_cidr(address, block["cidr"]) and not any(in_cidr(address, c) for c in block.get("except") or [])


def ports_of(entry: dict, protocol: str) -> set[int]:
    if (entry.get("protocol") or "TCP") != protocol or isinstance(entry.get("port"), str):
        return set()
    if entry.get("port") is None:
        return set(range(1, 65536))
    return set(range(entry["port"], (entry.get("endPort") or entry["port"]) + 1))


def rule_allows(rule: dict, protocol: str, address: str, port: int) -> bool:
    to, ports = rule.get("to") or [], rule.get("ports") or []
    return (not to or any(peer_allows(peer, address) for peer in to)) and (
        not ports or any(port in ports_of(entry, protocol) for entry in ports))


def policy_types(spec: dict) -> list[str]:
    """As the API server stores them: an unset list defaults to Ingress, plus Egress if there are egress rules."""
    if spec.get("policyTypes"):
        return spec["policyTypes"]
    return ["Ingress", "Egress"] if len(spec.get("egress") or []) > 0 else ["Ingress"]


def allowed(policies: list[dict], namespace: str, labels: dict[str, str], protocol: str, address: str,
            port: int) -> bool:
    """May a pod of `namespace` with `labels` send this packet?"""
    isolating = [p for p in policies if p["metadata"]["namespace"] == namespace
                 and "Egress" in policy_types(p["spec"]) and selects(p["spec"].get("podSelector"), labels)]
    if not isolating:
        return True
    return any(rule_allows(rule, protocol, address, port) for p in isolating for rule in p["spec"].get("egress") or [])


# ---- shapes ----

KEYS = ("app", "tier", "team")
VALUES = ("web", "db", "front")
label_sets = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)
expressions = st.one_of(
    st.builds(lambda key, operator, values: {"key": key, "operator": operator, "values": sorted(values)},
              st.sampled_from(KEYS), st.sampled_from(["In", "NotIn"]),
              st.sets(st.sampled_from(VALUES), min_size=1, max_size=2)),
    st.builds(lambda key, operator: {"key": key, "operator": operator},
              st.sampled_from(KEYS), st.sampled_from(["Exists", "DoesNotExist"])))
selectors = st.fixed_dictionaries({}, optional={
    "matchLabels": st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2),
    "matchExpressions": st.lists(expressions, max_size=2)})
# CIDRs around the local IPs: exact, wider, elsewhere, everything, with host bits set; excepts inside them.
CIDRS = ("169.254.20.10/32", "169.254.20.0/24", "169.254.0.0/16", "169.254.20.10/16", "10.0.0.0/8", "0.0.0.0/0",
         "169.254.20.11/32", "fd00::a/128", "fd00::/8", "::/0", "fe80::/10")
EXCEPTS = ("169.254.20.10/32", "169.254.20.0/25", "169.254.20.128/25", "169.254.0.0/16", "10.1.0.0/16",
           "fd00::a/128", "fd00::/16", "fd01::/16")
ip_blocks = st.builds(lambda cidr, excepts: {"cidr": cidr, **({"except": excepts} if excepts is not None else {})},
                      st.sampled_from(CIDRS), st.one_of(st.none(), st.lists(st.sampled_from(EXCEPTS), max_size=2)))
peers = st.one_of(
    st.builds(lambda block: {"ipBlock": block}, ip_blocks),
    st.builds(lambda selector: {"podSelector": selector}, selectors),
    st.just({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
             "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}),
    st.just({"namespaceSelector": {}}))


@st.composite
def port_entries(draw: Any) -> dict:
    entry: dict[str, Any] = {}
    protocol = draw(st.sampled_from([None, "TCP", "UDP", "UDP", "SCTP"]))
    if protocol is not None:
        entry["protocol"] = protocol
    port = draw(st.sampled_from([None, 53, 52, 54, 1, "dns", "dns-tcp"]))
    if port is not None:
        entry["port"] = port
        if isinstance(port, int) and draw(st.booleans()):
            entry["endPort"] = draw(st.integers(port, 60))
    return entry


rules = st.fixed_dictionaries({}, optional={
    "to": st.one_of(st.just([]), st.lists(peers, min_size=1, max_size=3)),
    "ports": st.one_of(st.just([]), st.lists(port_entries(), min_size=1, max_size=3))})


@st.composite
def network_policies(draw: Any, name: str) -> dict:
    spec: dict[str, Any] = {"podSelector": draw(selectors)}
    types = draw(st.sampled_from([None, [], ["Ingress"], ["Egress"], ["Ingress", "Egress"]]))
    if types is not None:
        spec["policyTypes"] = types
    egress = draw(st.one_of(st.none(), st.just([]), st.lists(rules, min_size=1, max_size=3)))
    if egress is not None:
        spec["egress"] = egress
    namespace = draw(st.sampled_from(["shop", "shop", "other"]))
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


# One policy that isolates every pod with a single rule: each part of the rule (the ipBlock and its except, the
# port entry's protocol, port, endPort or name) alone decides the answer, so every feature is exercised often.
focused = st.builds(
    lambda to, port: [{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                       "metadata": {"name": "focused", "namespace": "shop"},
                       "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                                "egress": [{**({"to": to} if to is not None else {}),
                                            **({"ports": [port]} if port is not None else {})}]}}],
    st.one_of(st.none(), st.lists(peers, max_size=1), st.builds(lambda block: [{"ipBlock": block}], ip_blocks),
              st.builds(lambda cidr, excepts: [{"ipBlock": {"cidr": cidr, "except": excepts}}],
                        st.sampled_from(CIDRS), st.lists(st.sampled_from(EXCEPTS), min_size=1, max_size=2))),
    st.one_of(st.none(), st.sampled_from([{"protocol": "UDP", "port": 53}, {"protocol": "UDP", "port": "dns"},
                                          {"port": 53}, {"protocol": "UDP", "port": 50, "endPort": 60}]),
              port_entries()))
policy_sets = st.one_of(focused, st.integers(0, 4).flatmap(
    lambda n: st.tuples(*(network_policies(f"policy-{i}") for i in range(n))).map(list)))
