"""Patches apply with Kubernetes' own JSON-patch implementation, and injected pods match the Pod schema.

kube-apiserver cannot run here. `kubectl patch --local --type=json` applies a patch with the same Go library
(evanphx/json-patch) the API server uses for webhook patches, offline, so each generated patch (an `add` per
place the decision writes, over a member that is absent, null or set) is applied by it and compared with the
intended pod.
"""
from __future__ import annotations

import copy
import json
import subprocess

import kubernetes_validate
from hypothesis import HealthCheck, assume, example, given
from hypothesis import settings as hypothesis_settings

from tests.conftest import require_tool
from tests.webhook.strategies import all_settings, namespaces, pods
from webhook.config import Settings
from webhook.patch import mutated_pod, patch_for
from webhook.policy import Outcome, decide


def kubectl_json_patch(kubectl: str, obj: dict, patch: list, workdir) -> dict:
    source = workdir / "pod.json"
    source.write_text(json.dumps(obj))
    done = subprocess.run([kubectl, "patch", "--local", "-f", str(source), "--type=json", "-p", json.dumps(patch),
                           "-o", "json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@hypothesis_settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                            HealthCheck.filter_too_much])
@given(pod=pods, namespace=namespaces, settings=all_settings)
@example(  # the pod's own dnsConfig (searches repeating cluster ones) is replaced whole
    pod={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1"}, "spec": {"dnsConfig": {
        "searches": ["corp.example", "svc.cluster.local", "cluster.local"], "nameservers": ["10.0.0.2"],
        "options": [{"name": "edns0"}, {"name": "ndots", "value": "2"}]}}},
    namespace="shop", settings=Settings(fallback_nameserver="10.96.0.10"))
@example(  # `add` over a null member and into an existing annotations map
    pod={"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": {"team": "a"}},
         "spec": {"containers": [{"name": "app", "image": "nginx"}], "dnsConfig": None}},
    namespace="shop", settings=Settings())
def test_generated_patches_apply_with_the_api_servers_json_patch(tmp_path, pod, namespace, settings):
    kubectl = require_tool("kubectl")
    # kubectl needs a name, and leaves out an empty namespace when it prints: keep what the patch touches
    annotations = (pod.get("metadata") or {}).get("annotations")
    pod["metadata"] = {"name": "web-1", **({"annotations": annotations} if annotations is not None else {})}
    decision = decide(pod, namespace, settings)
    assume(decision.outcome is Outcome.INJECT)
    patch = patch_for(pod, decision)
    assert kubectl_json_patch(kubectl, copy.deepcopy(pod), patch, tmp_path) == mutated_pod(pod, decision)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(pod=pods, namespace=namespaces, settings=all_settings)
def test_injected_pods_match_the_pod_schema(pod, namespace, settings):
    """The mutated pod still conforms to the Kubernetes v1 Pod OpenAPI schema (kubernetes-validate, strict)."""
    pod["metadata"] = {"name": "web-1"}  # schema-valid metadata; the DNS fields are what is checked here
    pod["spec"].pop("affinity", None)  # generated affinities are deliberately malformed
    decision = decide(pod, namespace, settings)
    assume(decision.outcome is Outcome.INJECT)
    kubernetes_validate.validate(mutated_pod(pod, decision), "1.35", strict=True)
