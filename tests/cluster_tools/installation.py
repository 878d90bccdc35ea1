"""A localdns installation as the API server stores it after `kubectl apply -k deploy/` and `certs bootstrap`, with
the controllers' and kubelets' status: what `status` reads."""
from __future__ import annotations

import base64
import socket
from collections.abc import Mapping

from certs.authority import new_ca, new_serving_cert, service_dns_names
from tests.cluster_tools import workloads as w
from tests.cluster_tools.caches import Caches, cache_pod
from tests.cluster_tools.caches import daemonset as cache_daemonset

NS = "localdns-system"


def closed_port() -> int:
    """A port nothing listens on (bound, then released): a metrics port that does not answer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def webhook_entry(name: str, mode: str, path: str, bundle: str | None) -> dict:
    client_config: dict = {"service": {"namespace": NS, "name": "localdns-webhook", "path": path, "port": 443}}
    if bundle is not None:
        client_config["caBundle"] = bundle
    return {"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Ignore",
            "timeoutSeconds": 2, "namespaceSelector": {"matchLabels": {"localdns.io/inject": mode}},
            "clientConfig": client_config,
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]}


def webhook_configuration(bundle: str | None, entries: tuple[tuple[str, str, str], ...] = (
        ("inject.localdns.io", "enabled", "/mutate"), ("dry-run.localdns.io", "dry-run", "/dry-run"))) -> dict:
    """The MutatingWebhookConfiguration of deploy/ with its caBundle set: one entry per label value."""
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "localdns-webhook"},
            "webhooks": [webhook_entry(name, mode, path, bundle) for name, mode, path in entries]}


def install(api, *, ca=None, serving=None, webhook_ready: int = 2, cache_ready: tuple[str, ...] = ("node-1", "node-2"),
            nodes: int = 2, ca_bundle: bytes | None = None, caches: Caches | None = None,
            cache_pods: Mapping[str, str] | None = None, cache_args: tuple[str, ...] = ()):
    """What `kubectl apply -k deploy/` plus `certs bootstrap` leave in the cluster, with controllers' status."""
    ca = ca or new_ca()
    serving = serving or new_serving_cert(ca, service_dns_names("localdns-webhook", NS))
    w.namespace(api, NS, opted_in=False)
    bundle = b64(ca.cert_pem() if ca_bundle is None else ca_bundle)
    api.seed(webhook_configuration(bundle))
    api.seed({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": "localdns-webhook-tls", "namespace": NS},
              "data": {"tls.crt": b64(serving.cert_pem()), "tls.key": b64(serving.key_pem()),
                       "ca.crt": b64(ca.cert_pem())}})
    api.seed({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "localdns-webhook", "namespace": NS},
              "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "localdns-webhook"}},
                       "template": w.template()},
              "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": webhook_ready,
                         "availableReplicas": webhook_ready, "updatedReplicas": 2}})
    # The caches: `cache_pods` maps each node to its pod's situation (tests/cluster_tools/caches.py); by default a
    # Ready pod on each node of `cache_ready` and a running, not Ready one on the others. Without `caches` (metrics
    # endpoints), no cache answers on its metrics port.
    situations = dict(cache_pods) if cache_pods is not None else {
        f"node-{i + 1}": "ready" if f"node-{i + 1}" in cache_ready else "running" for i in range(nodes)}
    port = caches.port if caches is not None else closed_port()
    ready = sum(s == "ready" for s in situations.values())
    cache_daemonset(api, port, len(situations), ready, cache_args)
    for node, situation in situations.items():
        if situation != "none":
            cache_pod(api, caches, node, situation)
    return ca, serving
