"""Which opted-in namespaces have NetworkPolicies that block DNS to the local cache, judged the webhook's way
(webhook/netpol.py), for `audit` and `status`.

A pod counts when it uses the cache (injected: its DNS fails now if UDP 53 to the local IP is blocked) or the
webhook's rule would inject it (the webhook then leaves it on kube-dns, with a warning). Host-network pods do not
count: NetworkPolicies do not apply to them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clustertools.output import plural, table
from clustertools.scope import Gaps
from localdns.kube import JSON, Client, Forbidden, NotFound
from webhook import netpol
from webhook.config import Settings
from webhook.policy import Outcome, decide


def read_policies(client: Client, namespace: str, local_ip: str, gaps: Gaps,
                  notes: list[str]) -> tuple[netpol.Policy, ...]:
    """The namespace's NetworkPolicies, compiled for the local IP; none (and a gap) when they cannot be listed."""
    try:
        items = client.list("NetworkPolicy", namespace)
    except (Forbidden, NotFound) as exc:
        gaps.add(f"{exc} (cannot tell whether NetworkPolicies block DNS to the local cache there)")
        return ()
    policies = []
    for item in sorted(items, key=lambda i: i["metadata"]["name"]):
        try:
            policies.append(netpol.compile_policy(item, local_ip, namespace))
        except netpol.PolicyError as error:
            notes.append(f"{error}; taken to block DNS for every pod, as the webhook takes it")
            policies.append(netpol.unreadable(namespace, item["metadata"]["name"], str(error)))
    return tuple(policies)


def counts(pod: JSON, namespace: str, settings: Settings) -> bool:
    """Does the pod's DNS depend on reaching the local IP, now or once recreated?"""
    spec = pod.get("spec") or {}
    if spec.get("hostNetwork") is True:
        return False
    if spec.get("dnsPolicy") == "None" and settings.local_ip in ((spec.get("dnsConfig") or {}).get("nameservers")
                                                                 or []):
        return True
    return decide(pod, namespace, settings).outcome is Outcome.INJECT


@dataclass
class Blocked:
    """One namespace whose policies block DNS to the local IP for some of its pods."""

    namespace: str
    policies: set[str] = field(default_factory=set)
    protocols: set[str] = field(default_factory=set)
    broken: list[str] = field(default_factory=list)  # injected pods whose DNS (UDP) fails now
    held_back: list[str] = field(default_factory=list)  # pods the webhook leaves on kube-dns
    tcp_only: list[str] = field(default_factory=list)  # pods whose large answers (TCP) fail


@dataclass
class Findings:
    local_ip: str
    namespaces: dict[str, Blocked] = field(default_factory=dict)

    def add(self, namespace: str, pod: JSON, reach: netpol.Reach) -> None:
        if reach.udp and reach.tcp:
            return
        blocked = self.namespaces.setdefault(namespace, Blocked(namespace))
        blocked.policies.update(p.ref for p in reach.policies)
        blocked.protocols.update(name for name, ok in (("UDP", reach.udp), ("TCP", reach.tcp)) if not ok)
        name = pod["metadata"]["name"]
        spec = pod.get("spec") or {}
        injected = spec.get("dnsPolicy") == "None" and self.local_ip in (
            (spec.get("dnsConfig") or {}).get("nameservers") or [])
        if reach.udp:
            blocked.tcp_only.append(name)
        elif injected:
            blocked.broken.append(name)
        else:
            blocked.held_back.append(name)

    def check(self, namespace: str, pod: JSON, settings: Settings, policies: tuple[netpol.Policy, ...]) -> None:
        if policies and counts(pod, namespace, settings):
            self.add(namespace, pod, netpol.reach(netpol.pod_labels(pod), policies))

    def as_list(self) -> list[dict[str, Any]]:
        return [{"namespace": b.namespace, "policies": sorted(b.policies),
                 "blocks": [p for p in ("UDP", "TCP") if p in b.protocols], "dnsFailsNow": sorted(b.broken),
                 "leftOnKubeDNS": sorted(b.held_back), "largeAnswersFail": sorted(b.tcp_only),
                 "ruleToAdd": netpol.egress_rule(self.local_ip)}
                for b in sorted(self.namespaces.values(), key=lambda b: b.namespace)]


def render(blocked: list[Mapping[str, Any]], local_ip: str) -> list[str]:
    """The audit's section on NetworkPolicies, as lines (none when nothing is blocked)."""
    if not blocked:
        return []
    rows = []
    for b in blocked:
        pods = [f"{len(b['dnsFailsNow'])} injected (DNS fails now)" if b["dnsFailsNow"] else "",
                f"{len(b['leftOnKubeDNS'])} left on kube-dns" if b["leftOnKubeDNS"] else "",
                f"{len(b['largeAnswersFail'])} with large answers failing" if b["largeAnswersFail"] else ""]
        rows.append((b["namespace"], ", ".join(b["policies"]), "+".join(b["blocks"]),
                     "; ".join(p for p in pods if p)))
    return ["", f"NetworkPolicies block DNS to the local cache {local_ip} "
                f"({plural(len(blocked), 'namespace')}):",
            table(("NAMESPACE", "POLICIES", "BLOCKED", "PODS"), rows),
            "Add this rule to spec.egress of each policy listed (docs/install.md#networkpolicy):",
            f"  {blocked[0]['ruleToAdd']}"]
