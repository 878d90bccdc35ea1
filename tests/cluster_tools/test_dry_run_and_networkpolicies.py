"""`audit` and `status` on a rollout in progress: dry-run namespaces are shown and counted but never restarted, and
opted-in namespaces whose NetworkPolicies block DNS to the local IP are listed with the pods affected (injected pods
whose DNS fails now, pods the webhook leaves on kube-dns, pods that lose large answers) and the rule to add."""
from __future__ import annotations

from tests.cluster_tools import workloads as w

KUBE_DNS_ONLY = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}
UDP_ONLY = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
    "to": [{"ipBlock": {"cidr": "169.254.20.10/32"}}], "ports": [{"protocol": "UDP", "port": 53}]}]}
RULE = ("- {to: [{ipBlock: {cidr: 169.254.20.10/32}}], ports: [{protocol: UDP, port: 53}, "
        "{protocol: TCP, port: 53}]}")


def test_dry_run_namespaces_are_counted_and_never_restarted(api, cli, installed):
    w.namespace(api, "trial", dry_run=True)
    w.deployment(api, "trial", "web", replicas=2)
    w.pod(api, "trial", "opted-out", annotations={"localdns.io/inject": "disabled"})
    w.namespace(api, "ignored", opted_in=False)
    w.deployment(api, "ignored", "web")
    audit = cli("audit", "-o", "json")
    assert audit.code == 0, audit.out  # nothing to restart: a dry-run namespace's pods are not changed
    data = audit.json()
    assert data["namespaces"] == [{"name": "trial", "mode": "dry-run", "readable": True, "pods": 3, "injected": 0,
                                   "needsRestart": 0, "wouldInject": 2, "untouched": 1}]
    assert data["needsRestart"] == [] and [u["pod"] for u in data["untouched"]] == ["opted-out"]
    table = cli("audit").out
    assert "Audited 1 opted-in namespace: trial (dry run)" in table
    assert "Dry run in trial: 2 pods would use the local DNS cache once the namespace is labelled " \
           "localdns.io/inject=enabled" in table
    plan = cli("rollout", "-o", "json").json()
    assert plan["restarts"] == [] and plan["barePods"] == [] and plan["notRestarted"] == []
    # Named on the command line, the dry-run label is read the same way.
    assert cli("audit", "-n", "trial", "-o", "json").json()["namespaces"][0]["mode"] == "dry-run"
    status = cli("status")
    assert "trial      dry-run" in status.out
    assert "0 namespaces opted in, 1 in dry run" in status.out


def test_audit_lists_namespaces_whose_policies_block_the_local_ip(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web", replicas=2, injected=True)  # injected before the policy came
    w.deployment(api, "shop", "api", replicas=1)
    w.network_policy(api, "shop", "default-deny-egress", KUBE_DNS_ONLY)
    w.namespace(api, "payments")
    w.deployment(api, "payments", "pay", replicas=1)
    w.network_policy(api, "payments", "dns-udp", UDP_ONLY)
    w.namespace(api, "calm")
    w.deployment(api, "calm", "web", replicas=1, injected=True)
    w.network_policy(api, "calm", "db-only", {**KUBE_DNS_ONLY, "podSelector": {"matchLabels": {"app": "db"}}})
    w.daemonset(api, "shop", "node-exporter", nodes=1, host_network=True)  # NetworkPolicies do not apply to it
    result = cli("audit", "-o", "json")
    assert result.code == 1
    data = result.json()
    assert data["networkPolicies"] == [
        {"namespace": "payments", "policies": ["payments/dns-udp"], "blocks": ["TCP"], "dnsFailsNow": [],
         "leftOnKubeDNS": [], "largeAnswersFail": ["pay-7d4b9c8f6d-00000"], "ruleToAdd": RULE},
        {"namespace": "shop", "policies": ["shop/default-deny-egress"], "blocks": ["UDP", "TCP"],
         "dnsFailsNow": ["web-7d4b9c8f6d-00000", "web-7d4b9c8f6d-00001"], "leftOnKubeDNS": ["api-7d4b9c8f6d-00000"],
         "largeAnswersFail": [], "ruleToAdd": RULE}]
    # The webhook would leave shop's api pod on kube-dns: nothing to restart; payments' pod is injected on restart.
    assert {(g["namespace"], g["name"]) for g in data["needsRestart"]} == {("payments", "pay")}
    [held] = [u for u in data["untouched"] if u["pod"] == "api-7d4b9c8f6d-00000"]
    assert held["reason"] == "NetworkPolicy shop/default-deny-egress blocks DNS (UDP 53) to 169.254.20.10"
    table = cli("audit").out
    assert "NetworkPolicies block DNS to the local cache 169.254.20.10 (2 namespaces):" in table
    assert "2 injected (DNS fails now); 1 left on kube-dns" in table
    assert f"  {RULE}" in table


def test_status_fails_where_injected_pods_dns_is_blocked_and_warns_otherwise(api, cli, installed):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "api", replicas=1)
    w.network_policy(api, "shop", "default-deny-egress", KUBE_DNS_ONLY)
    warned = cli("status", "-o", "json")
    [namespaces] = [c for c in warned.json()["checks"] if c["check"] == "namespaces"]
    assert namespaces["state"] == "warn" and "new pods there are left on kube-dns" in namespaces["detail"]
    w.deployment(api, "shop", "web", replicas=1, injected=True)
    failed = cli("status", "-o", "json")
    [namespaces] = [c for c in failed.json()["checks"] if c["check"] == "namespaces"]
    assert namespaces["state"] == "fail" and failed.code == 1
    assert "for 1 injected pod in shop: their DNS fails" in namespaces["detail"]


def test_policies_that_cannot_be_listed_make_the_result_partial(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web", replicas=1)
    api.forbid("list", "networkpolicies", namespace="shop")
    result = cli("audit", "-o", "json")
    assert result.code == 3
    [gap] = result.json()["gaps"]
    assert "not allowed to list them" in gap and "networkpolicies.networking.k8s.io" in gap
    assert "cannot tell whether NetworkPolicies block DNS to the local cache there" in gap
