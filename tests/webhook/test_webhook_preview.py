"""`python -m webhook preview`: decision, JSON patch, new DNS fields and the exact resolv.conf, for a Pod or the
pod template of a workload."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from webhook.config import Settings
from webhook.preview import PreviewError, run

REPO = Path(__file__).resolve().parents[2]

DEPLOYMENT = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
      dnsConfig:
        searches: [corp.example]
        options: [{name: edns0}]
"""

CRONJOB = """\
apiVersion: batch/v1
kind: CronJob
metadata: {name: report}
spec:
  schedule: "0 * * * *"
  jobTemplate:
    spec:
      template:
        metadata: {annotations: {localdns.io/ndots: "1"}}
        spec: {restartPolicy: Never, containers: [{name: r, image: busybox}]}
"""


def preview_text(tmp_path: Path, text: str, namespace: str | None = None, **options) -> str:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(text)
    out = io.StringIO()
    run(str(manifest), namespace, options.pop("settings", Settings()), out=out, **options)
    return out.getvalue()


def section(output: str, title: str) -> str:
    lines = output.splitlines()
    start = lines.index(title) + 1
    body = []
    for line in lines[start:]:
        if not line.strip() or line.startswith("== ") or (line.endswith(":") and not line.startswith(" ")):
            break
        body.append(line)
    return "\n".join(body) + "\n"


def test_deployment_template_in_its_own_namespace(tmp_path):
    output = preview_text(tmp_path, DEPLOYMENT)
    assert output.startswith("== Deployment web in namespace shop\n")
    assert "decision: inject: injected nameservers=169.254.20.10 ndots=5" in output
    patch = json.loads(output.split("JSON patch:\n", 1)[1].split("\nnew DNS fields:", 1)[0])
    assert {"op": "add", "path": "/spec/dnsPolicy", "value": "None"} in patch
    assert section(output, "/etc/resolv.conf:") == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
        "nameserver 169.254.20.10\n"
        "options ndots:5 edns0\n")
    assert "dnsPolicy: None" in section(output, "new DNS fields:")


def test_namespace_option_wins_and_cronjob_template_is_found(tmp_path):
    output = preview_text(tmp_path, CRONJOB, namespace="reports")
    assert "== CronJob report in namespace reports" in output
    assert section(output, "/etc/resolv.conf:") == (
        "search reports.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 169.254.20.10\n"
        "options ndots:1\n")


def test_skipped_pod_shows_kubelets_usual_file(tmp_path):
    output = preview_text(tmp_path, "kind: Pod\nmetadata: {name: p, annotations: {localdns.io/inject: disabled}}\n"
                                    "spec: {containers: [{name: c, image: x}]}\n", cluster_dns="10.0.0.10")
    assert "decision: skip: pod opted out" in output
    assert "JSON patch:\n  (none)" in output
    assert section(output, "/etc/resolv.conf:") == (
        "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.0.0.10\noptions ndots:5\n")


def test_host_network_pod_needs_the_nodes_file(tmp_path):
    pod = "kind: Pod\nmetadata: {name: h}\nspec: {hostNetwork: true, containers: [{name: c, image: x}]}\n"
    assert "the node's /etc/resolv.conf" in preview_text(tmp_path, pod)
    node = tmp_path / "node-resolv.conf"
    node.write_text("nameserver 10.0.0.2\nsearch ec2.internal\noptions timeout:1\n")
    output = preview_text(tmp_path, pod, node_resolv_conf=str(node))
    assert section(output, "/etc/resolv.conf:") == "search ec2.internal\nnameserver 10.0.0.2\noptions timeout:1\n"


def test_a_lists_items_are_previewed_in_their_own_namespaces(tmp_path):
    """`kubectl get deploy -A -o yaml` is a List whose items each name their namespace (the List has none)."""
    listing = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p-{ns}", "namespace": ns},
         "spec": {"containers": [{"name": "c", "image": "x"}]}} for ns in ("shop", "payments")]}
    output = preview_text(tmp_path, json.dumps(listing))
    assert "== Pod p-shop in namespace shop\n" in output and "== Pod p-payments in namespace payments\n" in output
    assert "search payments.svc.cluster.local svc.cluster.local cluster.local" in output


def test_warning_is_printed(tmp_path):
    output = preview_text(tmp_path, "kind: Pod\nmetadata: {annotations: {localdns.io/ndots: lots}}\nspec: {}\n")
    assert "warning: localdns: annotation localdns.io/ndots must be an integer" in output


@pytest.mark.parametrize("text, fragment", [
    ("kind: Service\nmetadata: {name: s}\n", "no Pod or workload with a pod template (found: Service)"),
    ("kind: [unclosed\n", "not valid YAML"),
    ("- just a list\n", "expected Kubernetes objects"),
    ("kind: Pod\nspec: {hostNetwork: 'yes'}\n", "spec.hostNetwork must be a boolean"),
])
def test_bad_input_is_a_clear_error(tmp_path, text, fragment):
    with pytest.raises(PreviewError) as caught:
        preview_text(tmp_path, text)
    assert fragment in str(caught.value)


def test_command_line_reads_stdin_and_reports_errors():
    pod = json.dumps({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}})
    done = subprocess.run([sys.executable, "-m", "webhook", "preview", "-", "-n", "shop"], input=pod, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert section(done.stdout, "/etc/resolv.conf:") == (
        "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 169.254.20.10\noptions ndots:5\n")
    missing = subprocess.run([sys.executable, "-m", "webhook", "preview", "/nonexistent.yaml"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "/nonexistent.yaml" in missing.stderr


HOSTILE_FILES = {
    # nine levels of Lists whose items are nine aliases of the level below: 9**9 pods if walked
    "alias bomb": "a: &a {kind: Pod, spec: {}}\n" + "".join(
        f"l{i}: &l{i} {{kind: List, items: [{', '.join([f'*{prev}'] * 9)}]}}\n"
        for i, prev in enumerate(["a"] + [f"l{j}" for j in range(8)])) + "kind: List\nitems: [*l8]\n",
    "deep nesting": "kind: Pod\nspec: " + "[" * 5000 + "]" * 5000 + "\n",
    "deep Lists": "kind: List\nitems:\n" + "".join("  " * i + "- kind: List\n" + "  " * i + "  items:\n"
                                                    for i in range(3000)),
    "kind and name not strings": "kind: [Pod]\nmetadata: {name: [a], namespace: [b]}\n---\nkind: Pod\nmetadata: 7\n",
}


@pytest.mark.parametrize("text", HOSTILE_FILES.values(), ids=HOSTILE_FILES.keys())
def test_hostile_files_get_an_error_message_not_a_traceback_or_a_hang(tmp_path, text):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "webhook", "preview", str(path)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode in (0, 2), done.stderr
    assert "Traceback" not in done.stderr and len(done.stdout) < 1_000_000
