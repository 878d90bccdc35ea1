"""Cache pods as the kubelet reports them, each with its metrics page served by the cache's own renderer.

A hostNetwork pod's podIP is its node's IP, and the DaemonSet gives every cache the same metrics port
(`--metrics=[$(HOST_IP)]:$(METRICS_PORT)`). Here each node is a loopback address of its own (127.0.0.2, .3, ...) with
one port shared by all, and each page is `cache.metrics.Metrics` rendering a `cache.stats.Stats` whose fallback
gauges the test sets, exactly what a running cache exports. FakeKubeAPI's pods proxy reaches them at podIP:PORT,
as kube-apiserver reaches a node. A node whose endpoint is closed does not answer (connection refused).
"""
from __future__ import annotations

import datetime as dt
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cache.limits import Limits
from cache.metrics import Metrics
from cache.stats import Stats
from cache.store import Store
from tests.kubeapi import FakeKubeAPI

NS = "localdns-system"
LABELS = {"app.kubernetes.io/name": "localdns-cache"}


def node_ip(index: int) -> str:
    return f"127.0.0.{index + 2}"


def _shared_port(count: int) -> tuple[int, list[socket.socket]]:
    """A port free on every node's address at once, held bound until the servers take it."""
    for _ in range(50):
        first = socket.socket()
        first.bind((node_ip(0), 0))
        port, held = first.getsockname()[1], [first]
        try:
            for i in range(1, count):
                sock = socket.socket()
                held.append(sock)
                sock.bind((node_ip(i), port))
            return port, held
        except OSError:
            for sock in held:
                sock.close()
    raise RuntimeError("no port free on every test node address")


class MetricsEndpoint:
    """One cache's /metrics on ADDRESS:PORT; `fallback(...)` sets what its next scrape says."""

    def __init__(self, held: socket.socket) -> None:
        self.stats = Stats()
        metrics = Metrics(self.stats, Store(Limits()))
        self.scrapes = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.scrapes += 1
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                body, content_type = metrics.render()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        address = held.getsockname()
        held.close()
        self.server = ThreadingHTTPServer(address, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def fallback(self, armed: int | None, endpoints: int = 0, refreshed: float = 0.0) -> None:
        """The gauges as cache/endpoints.py records them; armed None: `--fallback-endpoints none` (absent)."""
        self.stats.fallback_armed, self.stats.fallback_endpoints = armed, endpoints
        self.stats.fallback_last_refresh = refreshed

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Caches:
    """`nodes` test nodes node-1..node-N, a metrics endpoint on each, and the cache pods to seed for them."""

    def __init__(self, nodes: int) -> None:
        self.port, held = _shared_port(nodes)
        self.endpoints = [MetricsEndpoint(sock) for sock in held]

    def __enter__(self) -> Caches:
        return self

    def __exit__(self, *exc: object) -> None:
        for endpoint in self.endpoints:
            endpoint.close()

    def endpoint(self, node: str) -> MetricsEndpoint:
        return self.endpoints[int(node.rsplit("-", 1)[1]) - 1]

    def silence(self, node: str) -> None:
        """The node's metrics port stops answering (nothing listens there any more)."""
        self.endpoint(node).close()

    def ip(self, node: str) -> str:
        return node_ip(int(node.rsplit("-", 1)[1]) - 1)


def daemonset(api: FakeKubeAPI, port: int, nodes: int, ready: int, extra_args: tuple[str, ...] = ()) -> dict:
    """deploy/'s DaemonSet as far as `status` reads it: the selector, the cache container's metrics flag and env."""
    container = {"name": "cache", "image": "localdns:0.1.0", "command": ["python", "-m", "cache"],
                 "args": ["--listen=$(LOCAL_IP):53", "--metrics=[$(HOST_IP)]:$(METRICS_PORT)", *extra_args],
                 "env": [{"name": "LOCAL_IP", "value": "169.254.20.10"},
                         {"name": "METRICS_PORT", "value": str(port)},
                         {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}]}
    return api.seed({
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "localdns-cache", "namespace": NS},
        "spec": {"selector": {"matchLabels": LABELS}, "template": {
            "metadata": {"labels": LABELS}, "spec": {"hostNetwork": True, "containers": [container]}}},
        "status": {"observedGeneration": 1, "desiredNumberScheduled": nodes, "currentNumberScheduled": nodes,
                   "numberMisscheduled": 0, "numberReady": ready, "numberAvailable": ready,
                   "updatedNumberScheduled": nodes}})


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


# What the kubelet writes in a cache pod's status, by situation.
def container_status(situation: str, started: dt.datetime) -> dict:
    running = {"running": {"startedAt": _iso(started)}}
    return {
        "ready": {"ready": True, "restartCount": 0, "state": running},
        "running": {"ready": False, "restartCount": 1, "state": running,
                    "lastState": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        "crashloop": {"ready": False, "restartCount": 7,
                      "state": {"waiting": {"reason": "CrashLoopBackOff",
                                            "message": "back-off 5m0s restarting failed container=cache"}},
                      "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}},
        "creating": {"ready": False, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}},
        "image": {"ready": False, "restartCount": 0,
                  "state": {"waiting": {"reason": "ImagePullBackOff",
                                        "message": 'Back-off pulling image "registry.example/localdns:0.2.0"'}}},
    }[situation]


def cache_pod(api: FakeKubeAPI, caches: Caches | None, node: str, situation: str = "ready", name: str | None = None,
              started: dt.datetime | None = None) -> dict:
    """A cache pod of the DaemonSet on `node`: `ready`, `running` (not Ready), `crashloop`, `creating`, `image`
    (ImagePullBackOff), or `unscheduled` (the scheduler found no room; the DaemonSet's node affinity names the node)."""
    started = started or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    ip = caches.ip(node) if caches is not None else "127.0.0.1"
    spec: dict[str, Any] = {"hostNetwork": True, "containers": [{"name": "cache", "image": "localdns:0.1.0"}],
                            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [{"matchFields": [
                                    {"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}}
    if situation == "unscheduled":
        status: dict[str, Any] = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 1 Insufficient memory, 2 node(s) didn't match Pod's node "
                        "affinity/selector."}]}
    else:
        spec["nodeName"] = node
        container = {"name": "cache", "image": "localdns:0.1.0", **container_status(situation, started)}
        ready = situation == "ready"
        status = {"phase": "Pending" if situation in ("creating", "image") else "Running",
                  "hostIP": ip, "podIP": ip, "podIPs": [{"ip": ip}],
                  "conditions": [{"type": "PodScheduled", "status": "True"},
                                 {"type": "Ready", "status": str(ready)}],
                  "containerStatuses": [container]}
    return api.seed({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": name or f"localdns-cache-{node}", "namespace": NS, "labels": LABELS},
                     "spec": spec, "status": status})
