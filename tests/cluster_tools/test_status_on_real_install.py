"""`status` on what a user really installs: deploy/ rendered by kubectl kustomize, certificates made by
`python -m certs bootstrap` against the API server, and the webhook's served certificate checked over real TLS."""
from __future__ import annotations

import base64

from certs.__main__ import main as certs_main
from tests.certs.handshake import LoopbackTLSServer
from tests.cluster_tools import workloads as w
from tests.deploy.render import rendered

NS = "localdns-system"


def apply(api, objects: list[dict]) -> None:
    """`kubectl apply -k deploy/` for the kinds FakeKubeAPI serves (PodDisruptionBudget and admission policies
    are not among them and do not matter to `status`)."""
    for obj in objects:
        try:
            api.seed(obj)
        except KeyError:
            pass


def controllers_report_ready(api, nodes: tuple[str, ...]) -> None:
    """What the Deployment and DaemonSet controllers and the kubelets write once everything runs."""
    def webhook_ready(dep: dict) -> None:
        n = dep["spec"].get("replicas", 1)
        dep["status"] = {"observedGeneration": 1, "replicas": n, "updatedReplicas": n, "readyReplicas": n,
                         "availableReplicas": n}

    def cache_ready(ds: dict) -> None:
        n = len(nodes)
        ds["status"] = {"observedGeneration": 1, "desiredNumberScheduled": n, "currentNumberScheduled": n,
                        "numberMisscheduled": 0, "updatedNumberScheduled": n, "numberReady": n, "numberAvailable": n}

    w.edit(api, "deployments", NS, "localdns-webhook", webhook_ready)
    w.edit(api, "daemonsets", NS, "localdns-cache", cache_ready)
    labels = api.get_object("daemonsets", "localdns-cache", NS)["spec"]["selector"]["matchLabels"]
    for i, node in enumerate(nodes):
        api.seed({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": f"localdns-cache-{i}", "namespace": NS, "labels": labels},
                  "spec": {"nodeName": node, "hostNetwork": True, "containers": [{"name": "cache", "image": "x"}]},
                  "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})


def test_status_of_a_fresh_install_then_healthy(api, cli):
    apply(api, rendered(("builtin-certs",)))
    fresh = cli("status", "-o", "json")
    states = {c["check"]: c["state"] for c in fresh.json()["checks"]}
    # Before `certs bootstrap` runs (the webhook's init container) there is no caBundle and no Secret.
    assert states["webhook configuration"] == "fail" and fresh.code == 1

    assert certs_main(["bootstrap", "--kubeconfig", str(api.kubeconfig_path), "--namespace", NS,
                       "--service", "localdns-webhook", "--secret", "localdns-webhook-tls",
                       "--webhook-configuration", "localdns-webhook"]) == 0
    controllers_report_ready(api, ("node-1", "node-2"))
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web", injected=True)

    secret = api.get_object("secrets", "localdns-webhook-tls", NS)["data"]
    with LoopbackTLSServer() as webhook:
        webhook.present(base64.b64decode(secret["tls.crt"]), base64.b64decode(secret["tls.key"]))
        healthy = cli("status", "--webhook-address", f"127.0.0.1:{webhook.port}", "-o", "json")
    assert healthy.code == 0, healthy.out
    assert {c["check"]: c["state"] for c in healthy.json()["checks"]} == {
        "webhook configuration": "ok", "certificate": "ok", "served certificate": "ok", "webhook": "ok",
        "cache": "ok", "namespaces": "ok"}
