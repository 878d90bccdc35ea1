"""`python -m webhook preview` with NetworkPolicies in its input (several documents, or a List) judges each pod as
the webhook judges it against the cluster's, and `--dry-run` shows what a dry-run namespace's pods get."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.webhook.test_webhook_preview import REPO, preview_text, section
from webhook.preview import PreviewError

WEB = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
       "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
           "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}
KUBE_DNS_ONLY = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}
UDP_ONLY = {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"], "egress": [{
    "to": [{"ipBlock": {"cidr": "169.254.20.0/24"}}], "ports": [{"protocol": "UDP", "port": 53}]}]}


def networkpolicy(name: str, spec: dict, namespace: str | None = "shop") -> dict:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": metadata, "spec": spec}


def documents(*objects: dict) -> str:
    return yaml.safe_dump_all(objects)


def test_a_policy_in_the_input_that_blocks_dns_keeps_the_pod_on_kube_dns(tmp_path):
    output = preview_text(tmp_path, documents(WEB, networkpolicy("default-deny-egress", KUBE_DNS_ONLY)))
    assert "decision: skip: NetworkPolicy shop/default-deny-egress blocks DNS (UDP 53) to 169.254.20.10\n" in output
    assert ("networkpolicy: egress of the pod is limited by shop/default-deny-egress: to 169.254.20.10 UDP 53 "
            "blocked, TCP 53 blocked") in output
    assert "warning: localdns: to allow it, add to spec.egress of shop/default-deny-egress: - {to: [{ipBlock: " \
           "{cidr: 169.254.20.10/32}}]" in output
    assert "JSON patch:\n  (none)" in output
    assert "nameserver 10.96.0.10" in section(output, "/etc/resolv.conf:")
    # The same policy inside a List, and the rule from the warning added: injected.
    fixed = networkpolicy("default-deny-egress", {**KUBE_DNS_ONLY, "egress": [*KUBE_DNS_ONLY["egress"], yaml.safe_load(
        "{to: [{ipBlock: {cidr: 169.254.20.10/32}}], ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]}")]})
    listed = {"apiVersion": "v1", "kind": "List", "items": [WEB, fixed]}
    output = preview_text(tmp_path, documents(listed))
    assert "decision: inject" in output and "warning:" not in output
    assert ("networkpolicy: egress of the pod is limited by shop/default-deny-egress: to 169.254.20.10 UDP 53 "
            "allowed, TCP 53 allowed") in output


def test_policies_apply_in_the_namespace_they_would_be_created_in(tmp_path):
    elsewhere = preview_text(tmp_path, documents(WEB, networkpolicy("deny", KUBE_DNS_ONLY, namespace="other")))
    assert "decision: inject" in elsewhere and "networkpolicy:" not in elsewhere
    # Neither names a namespace: both go where --namespace says, as `kubectl apply -n` would put them.
    unnamed = {**WEB, "metadata": {"name": "web"}}
    moved = preview_text(tmp_path, documents(unnamed, networkpolicy("deny", KUBE_DNS_ONLY, namespace=None)),
                         namespace="payments")
    assert "decision: skip: NetworkPolicy payments/deny blocks DNS" in moved


def test_only_tcp_blocked_injects_and_warns(tmp_path):
    output = preview_text(tmp_path, documents(WEB, networkpolicy("dns-udp", UDP_ONLY)))
    assert "decision: inject: injected nameservers=169.254.20.10 ndots=5" in output
    assert "warning: localdns: NetworkPolicy shop/dns-udp blocks TCP 53 to the node-local cache 169.254.20.10: DNS " \
           "answers too large for UDP will fail" in output
    assert "nameserver 169.254.20.10" in section(output, "/etc/resolv.conf:")


def test_dry_run_shows_the_annotation_and_the_unchanged_file(tmp_path):
    output = preview_text(tmp_path, documents(WEB), dry_run=True)
    assert output.startswith("== Deployment web in namespace shop (dry run)\n")
    patch = json.loads(output.split("JSON patch:\n", 1)[1].split("\nDNS fields (unchanged):", 1)[0])
    assert patch == [{"op": "add", "path": "/metadata/annotations",
                      "value": {"localdns.io/dry-run": "nameservers=169.254.20.10 ndots=5"}}]
    assert section(output, "DNS fields (unchanged):") == "dnsPolicy: ClusterFirst\n"
    assert "nameserver 10.96.0.10" in section(output, "/etc/resolv.conf:")
    blocked = preview_text(tmp_path, documents(WEB, networkpolicy("deny", KUBE_DNS_ONLY)), dry_run=True)
    assert "JSON patch:\n  (none)" in blocked
    assert "warning: localdns (dry run): NetworkPolicy shop/deny blocks DNS (UDP 53)" in blocked


@pytest.mark.parametrize("spec, fragment", [
    ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "169.254.20.10"}}]}]}, None),
    ({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "not-a-cidr"}}]}]},
     "NetworkPolicy shop/bad: ipBlock CIDR 'not-a-cidr' is not a CIDR"),
    ({"podSelector": {"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["web"]}]}},
     "NetworkPolicy shop/bad: spec.podSelector.matchExpressions"),
])
def test_a_policy_the_api_server_would_refuse_is_a_clear_error(tmp_path, spec, fragment):
    text = documents(WEB, networkpolicy("bad", spec))
    if fragment is None:  # a plain address reads as a /32, as the API server's parser reads it
        assert "decision: inject" in preview_text(tmp_path, text)
        return
    with pytest.raises(PreviewError) as refused:
        preview_text(tmp_path, text)
    assert fragment in str(refused.value)
    done = subprocess.run([sys.executable, "-m", "webhook", "preview", "-"], input=text, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and fragment in done.stderr and "Traceback" not in done.stderr
