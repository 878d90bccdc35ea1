"""`status` on what a user really installs: deploy/ rendered by kubectl kustomize, certificates made by
`python -m certs bootstrap` against the API server, the webhook's served certificate checked over real TLS, and the
caches' metrics read through the pods proxy at the port cluster.yaml sets, judged by the sync interval the caches'
generated ConfigMap sets."""
from __future__ import annotations

import base64
import time

from certs.__main__ import main as certs_main
from tests.certs.handshake import LoopbackTLSServer
from tests.cluster_tools import workloads as w
from tests.cluster_tools.caches import LABELS, Caches, cache_pod
from tests.deploy.render import find, pod_spec, rendered

NS = "localdns-system"


def apply(api, objects: list[dict]) -> None:
    """`kubectl apply -k deploy/` for the kinds FakeKubeAPI serves (PodDisruptionBudget and admission policies
    are not among them and do not matter to `status`)."""
    for obj in objects:
        try:
            api.seed(obj)
        except KeyError:
            pass


def controllers_report_ready(api, nodes: tuple[str, ...], fleet: Caches) -> None:
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
    assert api.get_object("daemonsets", "localdns-cache", NS)["spec"]["selector"]["matchLabels"] == LABELS
    for node in nodes:
        cache_pod(api, fleet, node)


def test_status_of_a_fresh_install_then_healthy(api, cli, caches):
    fleet = caches(2)
    for endpoint in fleet.endpoints:
        endpoint.fallback(armed=1, endpoints=2, refreshed=time.time() - 30)
    apply(api, rendered(("builtin-certs",), metricsPort=str(fleet.port)))
    fresh = cli("status", "-o", "json")
    states = {c["check"]: c["state"] for c in fresh.json()["checks"]}
    # Before `certs bootstrap` runs (the webhook's init container) there is no caBundle and no Secret.
    assert states["webhook configuration"] == "fail" and fresh.code == 1

    assert certs_main(["bootstrap", "--kubeconfig", str(api.kubeconfig_path), "--namespace", NS,
                       "--service", "localdns-webhook", "--secret", "localdns-webhook-tls",
                       "--webhook-configuration", "localdns-webhook"]) == 0
    controllers_report_ready(api, ("node-1", "node-2"), fleet)
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web", injected=True)

    secret = api.get_object("secrets", "localdns-webhook-tls", NS)["data"]
    with LoopbackTLSServer() as webhook:
        webhook.present(base64.b64decode(secret["tls.crt"]), base64.b64decode(secret["tls.key"]))
        healthy = cli("status", "--webhook-address", f"127.0.0.1:{webhook.port}", "-o", "json")
    assert healthy.code == 0, healthy.out
    assert {c["check"]: c["state"] for c in healthy.json()["checks"]} == {
        "webhook configuration": "ok", "certificate": "ok", "served certificate": "ok", "webhook": "ok",
        "cache": "ok", "fallback": "ok", "namespaces": "ok"}
    assert [(n["node"], n["fallback"], n["endpoints"]) for n in healthy.json()["nodes"]] == [
        ("node-1", "armed", 2), ("node-2", "armed", 2)]
    assert all(e.scrapes == 1 for e in fleet.endpoints)  # at the port cluster.yaml set, through the pods proxy


def test_sync_interval_comes_from_the_caches_configmap(api, cli, caches):
    """A refresh 20 minutes old is stale with the shipped `sync-interval: 60` (3 intervals: 3 min), and fine once
    the generated ConfigMap that the DaemonSet mounts for --config says 600 (30 min)."""
    fleet = caches(1)
    fleet.endpoint("node-1").fallback(armed=1, endpoints=2, refreshed=time.time() - 20 * 60)
    objects = rendered(("builtin-certs",), metricsPort=str(fleet.port))
    apply(api, objects)
    controllers_report_ready(api, ("node-1",), fleet)
    shipped = cli("status", "-o", "json").json()["nodes"][0]
    assert shipped["fallbackState"] == "warn"
    assert shipped["detail"].startswith("armed: 2 endpoints, last refreshed 20 min ago (more than 3 sync intervals "
                                        "of 60 s)")

    volume = next(v for v in pod_spec(find(objects, "DaemonSet", "localdns-cache"))["volumes"]
                  if v["name"] == "config")
    name = volume["configMap"]["name"]  # generated: localdns-cache-config-<hash>
    assert "sync-interval: 60 " in api.get_object("configmaps", name, NS)["data"]["cache.yaml"]
    w.edit(api, "configmaps", NS, name, lambda cm: cm["data"].update(
        {"cache.yaml": cm["data"]["cache.yaml"].replace("sync-interval: 60 ", "sync-interval: 600 ")}))
    tuned = cli("status", "-o", "json").json()["nodes"][0]
    assert (tuned["fallbackState"], tuned["detail"]) == ("ok", "armed: 2 endpoints, refreshed 20 min ago")

    # Without `get` on configmaps the interval is the default, and the output says so; nothing else is missing.
    api.forbid("get", "configmaps", namespace=NS)
    unread = cli("status", "-o", "json").json()
    assert unread["nodes"][0]["fallbackState"] == "warn" and not unread["partial"]
    assert any(note.startswith("the caches' settings file is not read (ConfigMap localdns-system/localdns-cache-"
                               "config-") and note.endswith("a sync interval set there is not known, 60 s is assumed")
               for note in unread["notes"]), unread["notes"]
