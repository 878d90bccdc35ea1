"""Objects as the API server stores them, with owner chains as the controllers write them.

ownerReferences carry apiVersion, kind, name, the owner's uid and `controller: true`, exactly as the ReplicaSet,
StatefulSet, DaemonSet, Job and CronJob controllers set them; pods carry the fields the API server defaults
(dnsPolicy ClusterFirst, phase). Nothing runs controllers in FakeKubeAPI: `Controller` plays one where a test
needs a rollout to finish, writing status through the /status subresource as the real controllers do.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from tests.kubeapi import FakeKubeAPI

LOCAL_IP = "169.254.20.10"
APPS = {"Deployment": "apps/v1", "ReplicaSet": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1",
        "Job": "batch/v1", "CronJob": "batch/v1"}


def owner_ref(obj: dict) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def template(annotations: dict | None = None, **spec: Any) -> dict:
    return {"metadata": {"labels": {"app": "x"}, "annotations": dict(annotations or {})},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}], **spec}}


def namespace(api: FakeKubeAPI, name: str, opted_in: bool = True, dry_run: bool = False) -> dict:
    mode = "dry-run" if dry_run else "enabled" if opted_in else None
    labels = {"kubernetes.io/metadata.name": name} | ({"localdns.io/inject": mode} if mode else {})
    return api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})


def pod(api: FakeKubeAPI, ns: str, name: str, owner: dict | None = None, *, injected: bool = False,
        annotations: dict | None = None, host_network: bool = False, dns_policy: str = "ClusterFirst",
        phase: str = "Running", node: str = "node-1") -> dict:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": "registry.example/app:1"}],
                            "dnsPolicy": dns_policy, "nodeName": node, "restartPolicy": "Always"}
    annotations = dict(annotations or {})
    if host_network:
        spec["hostNetwork"] = True
    if injected:
        annotations["localdns.io/injected"] = f"nameservers={LOCAL_IP} ndots=5"
        spec["dnsPolicy"] = "None"
        spec["dnsConfig"] = {"nameservers": [LOCAL_IP],
                             "searches": [f"{ns}.svc.cluster.local", "svc.cluster.local", "cluster.local"],
                             "options": [{"name": "ndots", "value": "5"}]}
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": {"app": "x"}, "annotations": annotations}
    if owner is not None:
        meta["ownerReferences"] = [owner_ref(owner)]
    ready = phase == "Running"
    return api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
                     "status": {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}]}})


def network_policy(api: FakeKubeAPI, ns: str, name: str, spec: dict) -> dict:
    return api.seed({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                     "metadata": {"name": name, "namespace": ns}, "spec": spec})


def _workload(api: FakeKubeAPI, kind: str, ns: str, name: str, spec: dict, status: dict,
              owner: dict | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": {"app": name}}
    if owner is not None:
        meta["ownerReferences"] = [owner_ref(owner)]
    return api.seed({"apiVersion": APPS[kind], "kind": kind, "metadata": meta, "spec": spec, "status": status})


def deployment(api: FakeKubeAPI, ns: str, name: str, replicas: int = 2, injected: bool = False,
               **spec: Any) -> dict:
    """A Deployment, its current ReplicaSet, and `replicas` pods owned by that ReplicaSet."""
    ready = {"observedGeneration": 1, "replicas": replicas, "updatedReplicas": replicas,
             "readyReplicas": replicas, "availableReplicas": replicas}
    selector = {"matchLabels": {"app": name}}
    dep = _workload(api, "Deployment", ns, name, {"replicas": replicas, "selector": selector,
                                                   "template": template(), **spec}, ready)
    rs = _workload(api, "ReplicaSet", ns, f"{name}-7d4b9c8f6d", {"replicas": replicas, "selector": selector,
                                                                  "template": template()},
                   {"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 1}, owner=dep)
    for i in range(replicas):
        pod(api, ns, f"{name}-7d4b9c8f6d-{i:05x}", rs, injected=injected)
    return dep


def statefulset(api: FakeKubeAPI, ns: str, name: str, replicas: int = 2, **spec: Any) -> dict:
    ready = {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
             "currentReplicas": replicas, "currentRevision": f"{name}-1", "updateRevision": f"{name}-1"}
    sts = _workload(api, "StatefulSet", ns, name, {"replicas": replicas, "serviceName": name,
                                                    "selector": {"matchLabels": {"app": name}},
                                                    "template": template(), **spec}, ready)
    for i in range(replicas):
        pod(api, ns, f"{name}-{i}", sts)
    return sts


def daemonset(api: FakeKubeAPI, ns: str, name: str, nodes: int = 2, host_network: bool = False,
              **spec: Any) -> dict:
    ready = {"observedGeneration": 1, "desiredNumberScheduled": nodes, "currentNumberScheduled": nodes,
             "numberMisscheduled": 0,
             "updatedNumberScheduled": nodes, "numberReady": nodes, "numberAvailable": nodes}
    ds = _workload(api, "DaemonSet", ns, name, {"selector": {"matchLabels": {"app": name}},
                                                 "template": template(hostNetwork=host_network), **spec}, ready)
    for i in range(nodes):
        pod(api, ns, f"{name}-{i:05x}", ds, host_network=host_network, node=f"node-{i}")
    return ds


def cronjob(api: FakeKubeAPI, ns: str, name: str) -> dict:
    """A CronJob, the Job it created, and that Job's running pod."""
    cj = _workload(api, "CronJob", ns, name, {"schedule": "*/5 * * * *",
                                               "jobTemplate": {"spec": {"template": template()}}}, {})
    job = _workload(api, "Job", ns, f"{name}-29012345", {"template": template()}, {"active": 1}, owner=cj)
    pod(api, ns, f"{name}-29012345-abcde", job)
    return cj


def job(api: FakeKubeAPI, ns: str, name: str) -> dict:
    j = _workload(api, "Job", ns, name, {"template": template()}, {"active": 1})
    pod(api, ns, f"{name}-fghij", j)
    return j


class Controller:
    """Plays the workload controller for one object: once the API server has bumped its generation (a template
    change), it reports the rollout complete through the /status subresource after `after_polls` observations."""

    def __init__(self, api: FakeKubeAPI, kind: str, ns: str, name: str, webhook_injects: bool = True) -> None:
        self.api, self.kind, self.ns, self.name = api, kind, ns, name
        self.webhook_injects = webhook_injects  # False: the new pods come back unchanged (webhook down, Ignore)
        self.apps = k8s.AppsV1Api(api.client())
        self.core = k8s.CoreV1Api(api.client())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.completed = threading.Event()

    def __enter__(self) -> Controller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        plural = {"Deployment": "deployments", "StatefulSet": "statefulsets", "DaemonSet": "daemonsets"}[self.kind]
        while not self._stop.wait(0.02):
            obj = self.api.get_object(plural, self.name, self.ns)
            if obj is None:
                return
            generation = obj["metadata"]["generation"]
            if obj["status"].get("observedGeneration", 0) >= generation:
                continue
            # First observe the new generation with the rollout under way, then finish it: a client that
            # stopped at "observed" would be caught by the intermediate state.
            self._write(self._in_progress(obj, generation))
            self._replace_pods(obj)
            if self._stop.wait(0.1):
                return
            self._write(self._complete(obj, generation))
            self.completed.set()

    def _replace_pods(self, obj: dict) -> None:
        """Delete the workload's pods and create new ones from the template, as the controller does; the new
        pods are what the webhook made of them (injected, or not when `webhook_injects` is False)."""
        uid = obj["metadata"]["uid"]
        owners = {uid} | {rs["metadata"]["uid"] for rs in self.api.objects("replicasets")
                          if any(r["uid"] == uid for r in rs["metadata"].get("ownerReferences", []))}
        old = [p for p in self.api.objects("pods") if p["metadata"]["namespace"] == self.ns
               and any(r["uid"] in owners for r in p["metadata"].get("ownerReferences", []))]
        owner = obj
        if self.kind == "Deployment":
            owner = _workload(self.api, "ReplicaSet", self.ns, f"{self.name}-5f6c7d8b9a",
                              {"replicas": obj["spec"]["replicas"], "template": obj["spec"]["template"]},
                              {"replicas": obj["spec"]["replicas"]}, owner=obj)
        for i, gone in enumerate(old):
            self.core.delete_namespaced_pod(gone["metadata"]["name"], self.ns, _preload_content=False)
            name = f"{owner['metadata']['name']}-new{i}"
            pod(self.api, self.ns, name, owner, injected=self.webhook_injects, node=gone["spec"].get("nodeName", ""))

    def _write(self, status: dict) -> None:
        method = getattr(self.apps, {"Deployment": "patch_namespaced_deployment_status",
                                     "StatefulSet": "patch_namespaced_stateful_set_status",
                                     "DaemonSet": "patch_namespaced_daemon_set_status"}[self.kind])
        method(self.name, self.ns, {"status": status}, _content_type="application/merge-patch+json",
               _preload_content=False)

    def _in_progress(self, obj: dict, generation: int) -> dict:
        if self.kind == "Deployment":
            n = obj["spec"]["replicas"]
            return {"observedGeneration": generation, "updatedReplicas": 1, "replicas": n + 1, "availableReplicas": n}
        if self.kind == "StatefulSet":
            return {"observedGeneration": generation, "updateRevision": f"{self.name}-2", "updatedReplicas": 1}
        return {"observedGeneration": generation, "updatedNumberScheduled": 1}

    def _complete(self, obj: dict, generation: int) -> dict:
        if self.kind == "Deployment":
            n = obj["spec"]["replicas"]
            return {"observedGeneration": generation, "updatedReplicas": n, "replicas": n, "availableReplicas": n,
                    "readyReplicas": n}
        if self.kind == "StatefulSet":
            n = obj["spec"]["replicas"]
            return {"observedGeneration": generation, "updatedReplicas": n, "readyReplicas": n,
                    "currentRevision": f"{self.name}-2", "updateRevision": f"{self.name}-2"}
        desired = obj["status"]["desiredNumberScheduled"]
        return {"observedGeneration": generation, "updatedNumberScheduled": desired, "numberAvailable": desired,
                "numberReady": desired}


def localdns(api: FakeKubeAPI, webhook_ready: int = 2, cache_ready: int = 2, nodes: int = 2) -> None:
    """The webhook Deployment and cache DaemonSet in localdns-system, with their controllers' status."""
    ns = "localdns-system"
    api.seed({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "localdns-webhook", "namespace": ns},
              "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "localdns-webhook"}}, "template": template()},
              "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                         "readyReplicas": webhook_ready, "availableReplicas": webhook_ready}})
    api.seed({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "localdns-cache", "namespace": ns},
              "spec": {"selector": {"matchLabels": {"app": "localdns-cache"}}, "template": template()},
              "status": {"observedGeneration": 1, "desiredNumberScheduled": nodes, "currentNumberScheduled": nodes,
                         "numberMisscheduled": 0, "updatedNumberScheduled": nodes, "numberReady": cache_ready,
                         "numberAvailable": cache_ready}})


# Another actor changing the store directly. FakeKubeAPI has no public hook for this; these work inside a
# `before_next` action too (which runs under the server's lock, so it cannot make an HTTP call back to the server).
def _key(api: FakeKubeAPI, plural: str, ns: str | None, name: str) -> tuple[str, str, str, str]:
    return (api._type_of_plural(plural).group, plural, ns or "", name)


def vanish(api: FakeKubeAPI, plural: str, ns: str | None, name: str) -> None:
    """The object is deleted by someone else, right now."""
    with api._lock:
        del api._store[_key(api, plural, ns, name)]


def edit(api: FakeKubeAPI, plural: str, ns: str | None, name: str, change: Callable[[dict], None]) -> None:
    """Someone else changes the stored object in place (status included)."""
    with api._lock:
        change(api._store[_key(api, plural, ns, name)])
