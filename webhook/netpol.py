"""NetworkPolicy egress for one question: may a pod send DNS (UDP and TCP port 53) to the node-local cache's IP?
Pure, no I/O: policies in as the API server serves them, a pod's labels in, an answer per protocol out.

The semantics are the API reference's (networking.k8s.io/v1 NetworkPolicy):
- A policy applies to the pods of its own namespace that `spec.podSelector` matches (`{}` matches them all), for
  egress only when `spec.policyTypes` holds "Egress". Unset or empty, policyTypes is what the API server defaults
  it to: "Ingress", plus "Egress" when `spec.egress` holds at least one rule.
- A pod that no egress policy selects may send anything. A pod that some do may send what at least one egress rule
  of at least one of them allows: the rules of all selecting policies add up, and a policy without rules allows
  nothing.
- A rule allows a packet when its `to` matches the destination (absent or empty: every destination) and its
  `ports` match the packet's protocol and port (absent or empty: every port and protocol).
- A peer matches the local IP only as an `ipBlock` whose `cidr` contains it and none of whose `except` CIDRs do.
  podSelector and namespaceSelector peers stand for pods' IPs; the cache answers on a link-local address that is
  no pod's, so they never match it.
- A port entry matches when its protocol (default TCP) is the packet's and its port is absent (every port), a
  number equal to the packet's, or with `endPort` a range holding it. A named port (a string) is looked up in the
  destination pod's container ports; the local IP belongs to no pod, so a named port never matches it (the cache
  pods run on the host network, and their ports are the node's, not the link-local address's).
Compiling a policy answers the rule half once, since it does not depend on the pod; admission then only matches
each policy's podSelector against the pod's labels.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

DNS_PORT = 53
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class PolicyError(ValueError):
    """A NetworkPolicy the API server would not have stored; the message names the field."""


@dataclass(frozen=True)
class Selector:
    """A label selector: matchLabels and matchExpressions, all of which must hold. Empty: every pod."""

    labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[tuple[str, str, frozenset[str]], ...] = ()  # (key, operator, values)

    def matches(self, labels: Mapping[str, Any]) -> bool:
        for key, value in self.labels:
            if labels.get(key) != value:
                return False
        for key, operator, values in self.expressions:
            present = key in labels
            if operator == "In" and not (present and labels[key] in values):
                return False
            if operator == "NotIn" and present and labels[key] in values:
                return False
            if operator == "Exists" and not present:
                return False
            if operator == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True)
class Policy:
    """What admission needs of one NetworkPolicy, for one local IP."""

    namespace: str
    name: str
    selector: Selector
    egress: bool  # applies to the selected pods' egress
    udp: bool  # some egress rule allows UDP 53 to the local IP
    tcp: bool  # and TCP 53
    problem: str = ""  # why it could not be read; such a policy is taken to select every pod and allow nothing

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def unreadable(namespace: str, name: str, problem: str) -> Policy:
    """A policy that could not be read, taken at its worst: DNS to the local IP is not injected where it might be
    blocked (the pod keeps kube-dns, which it had)."""
    return Policy(namespace, name, Selector(), True, False, False, problem)


class NetworkPolicies(Protocol):
    """Where admission reads policies from: the cluster's (the view kept by netpolview.py) or a file's."""

    @property
    def synced(self) -> bool:
        """False until the policies are known; then pods are injected as without any."""
        ...

    def in_namespace(self, namespace: str) -> Sequence[Policy]:
        """The namespace's policies, sorted by name."""
        ...


class Reach(NamedTuple):  # immutable like a frozen dataclass, built in a third of the time (once per admission)
    """Whether a pod's DNS reaches the local IP; `policies` are the egress policies that select it (by name)."""

    udp: bool
    tcp: bool
    policies: tuple[Policy, ...] = ()


OPEN = Reach(True, True)


def reach(labels: Mapping[str, Any], policies: Iterable[Policy]) -> Reach:
    """UDP and TCP 53 to the local IP, for a pod with these labels among its namespace's policies."""
    selecting = []
    udp = tcp = False
    for policy in policies:  # one plain loop: this runs per admission in a namespace with policies
        if policy.egress and policy.selector.matches(labels):
            selecting.append(policy)
            udp, tcp = udp or policy.udp, tcp or policy.tcp
    return Reach(udp, tcp, tuple(selecting)) if selecting else OPEN


def pod_labels(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = pod.get("metadata")
    labels = metadata.get("labels") if isinstance(metadata, dict) else None
    return labels if isinstance(labels, dict) else {}


# ---- the warnings: one names the policy, one gives the rule (each under the 256 characters kubectl shows) ----

def cidr_of(local_ip: str) -> str:
    address = ipaddress.ip_address(local_ip)
    return f"{address}/{address.max_prefixlen}"


def egress_rule(local_ip: str) -> str:
    """The egress rule that lets a pod reach the cache, as a YAML list item on one line."""
    return (f"- {{to: [{{ipBlock: {{cidr: {cidr_of(local_ip)}}}}}], "
            f"ports: [{{protocol: UDP, port: {DNS_PORT}}}, {{protocol: TCP, port: {DNS_PORT}}}]}}")


def _named(policies: Sequence[Policy]) -> str:
    refs = [p.ref + (" (unreadable)" if p.problem else "") for p in policies]
    if len(refs) == 1:
        return f"NetworkPolicy {refs[0]}"
    if len(refs) == 2:
        return f"NetworkPolicies {refs[0]} and {refs[1]}"
    return f"NetworkPolicies {refs[0]}, {refs[1]} and {len(refs) - 2} more"


def warnings_for(result: Reach, local_ip: str) -> tuple[str, ...]:
    """What to tell the user: nothing when both protocols reach the cache."""
    if result.udp and result.tcp:
        return ()
    block = "blocks" if len(result.policies) == 1 else "block"
    if not result.udp:
        what = f"{block} DNS (UDP {DNS_PORT}) to the node-local cache {local_ip}; DNS left unchanged"
    else:
        what = f"{block} TCP {DNS_PORT} to the node-local cache {local_ip}: DNS answers too large for UDP will fail"
    return (f"localdns: {_named(result.policies)} {what}",
            f"localdns: to allow it, add to spec.egress of {result.policies[0].ref}: {egress_rule(local_ip)}")


def blocked_reason(result: Reach, local_ip: str) -> str:
    """The decision's reason when UDP is blocked (the log line, `preview`, `audit`)."""
    block = "blocks" if len(result.policies) == 1 else "block"
    return f"{_named(result.policies)} {block} DNS (UDP {DNS_PORT}) to {local_ip}"


# ---- reading a NetworkPolicy object ----

def compile_policy(obj: Mapping[str, Any], local_ip: str, namespace: str | None = None) -> Policy:
    """The policy as admission needs it. Raises PolicyError for a shape the API server would not have stored.
    `namespace` is used when the object names none (a file meant for `kubectl apply -n`)."""
    metadata = _mapping(obj.get("metadata"), "metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise PolicyError("metadata.name is required")
    spec = _mapping(obj.get("spec"), "spec")
    where = metadata.get("namespace") or namespace
    if not isinstance(where, str) or not where:
        raise PolicyError(f"NetworkPolicy {name}: metadata.namespace is required")
    try:
        selector = selector_of(spec.get("podSelector"), "spec.podSelector")
        rules = _list(spec.get("egress"), "spec.egress")
        types = _list(spec.get("policyTypes"), "spec.policyTypes")
        if any(kind not in ("Ingress", "Egress") for kind in types):
            raise PolicyError(f"spec.policyTypes must hold Ingress or Egress, got {types!r}")
        egress = "Egress" in types if types else bool(rules)  # the API server's default for an unset list
        address = ipaddress.ip_address(local_ip)
        allows = [(_reaches(rule, address, "UDP"), _reaches(rule, address, "TCP"))
                  for rule in (_mapping(r, "spec.egress[]") for r in rules)]
    except PolicyError as error:
        raise PolicyError(f"NetworkPolicy {where}/{name}: {error}") from None
    return Policy(where, name, selector, egress, any(u for u, _ in allows), any(t for _, t in allows))


def selector_of(raw: Any, where: str) -> Selector:
    """A LabelSelector; absent or null reads as {} (spec.podSelector is required, and {} selects every pod)."""
    selector = _mapping(raw, where)
    match = _mapping(selector.get("matchLabels"), where + ".matchLabels")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in match.items()):
        raise PolicyError(f"{where}.matchLabels must map strings to strings")
    expressions = []
    for item in _list(selector.get("matchExpressions"), where + ".matchExpressions"):
        expression = _mapping(item, where + ".matchExpressions[]")
        key, operator = expression.get("key"), expression.get("operator")
        values = _list(expression.get("values"), where + ".matchExpressions[].values")
        if not isinstance(key, str) or operator not in OPERATORS:
            raise PolicyError(f"{where}.matchExpressions: {expression!r} needs a key and an operator of "
                              f"{', '.join(OPERATORS)}")
        if (operator in ("In", "NotIn")) != bool(values):
            raise PolicyError(f"{where}.matchExpressions: {operator} {'needs' if values == [] else 'takes no'} values")
        expressions.append((key, operator, frozenset(str(v) for v in values)))
    return Selector(tuple(sorted(match.items())), tuple(expressions))


def _reaches(rule: Mapping[str, Any], address: ipaddress.IPv4Address | ipaddress.IPv6Address, protocol: str) -> bool:
    peers = _list(rule.get("to"), "spec.egress[].to")
    ports = _list(rule.get("ports"), "spec.egress[].ports")
    to_local = not peers or any(_peer_is(_mapping(peer, "spec.egress[].to[]"), address) for peer in peers)
    return to_local and (not ports or any(_port_is(_mapping(port, "spec.egress[].ports[]"), protocol)
                                          for port in ports))


def _peer_is(peer: Mapping[str, Any], address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    block = peer.get("ipBlock")
    if block is None:
        return False  # podSelector / namespaceSelector: pods' IPs, never the link-local address
    block = _mapping(block, "ipBlock")
    return address in _network(block.get("cidr")) and not any(
        address in _network(excluded) for excluded in _list(block.get("except"), "ipBlock.except"))


def _network(cidr: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(cidr, str):
        raise PolicyError(f"ipBlock CIDR must be a string, got {cidr!r}")
    try:
        return ipaddress.ip_network(cidr, strict=False)  # the API server, too, accepts host bits
    except ValueError:
        raise PolicyError(f"ipBlock CIDR {cidr!r} is not a CIDR") from None


def _port_is(entry: Mapping[str, Any], protocol: str) -> bool:
    entry_protocol = entry.get("protocol") or "TCP"
    if entry_protocol not in ("TCP", "UDP", "SCTP"):
        raise PolicyError(f"port protocol must be TCP, UDP or SCTP, got {entry_protocol!r}")
    if entry_protocol != protocol:
        return False
    port, end = entry.get("port"), entry.get("endPort")
    if port is None:
        return True
    if isinstance(port, str):
        return False  # a named port: the local IP belongs to no pod whose ports could name it
    if isinstance(port, bool) or not isinstance(port, int):
        raise PolicyError(f"port must be a number or a name, got {port!r}")
    if end is None:
        return port == DNS_PORT
    if isinstance(end, bool) or not isinstance(end, int) or end < port:
        raise PolicyError(f"endPort must be a number not below port {port}, got {end!r}")
    return port <= DNS_PORT <= end


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PolicyError(f"{where} must be an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError(f"{where} must be a list, got {type(value).__name__}")
    return value
