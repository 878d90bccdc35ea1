"""The new-node gate: once the cache is ready, remove the startup taint from its own node (`--remove-startup-taint`).

Nodes of a pool that registers with `startup-taint.cluster-autoscaler.kubernetes.io/localdns=true:NoSchedule` run
no ordinary pod until this taint is gone, so no injected pod starts on a node whose cache (and fail-open rules) do
not exist yet; cluster-autoscaler knows the `startup-taint` prefix and still counts such a node as coming up.
The cache talks to the API server itself, with its pod's service account token, over plain HTTP/1.1 (http.client,
0.75 MB of RSS, where the kubernetes package would cost 27 MB on every node). The ServiceAccount may patch nodes
(RBAC), and a ValidatingAdmissionPolicy lets it do only this: remove this one taint, from the node named in its
token (deploy/components/startup-taint).

The patch is a JSON patch that tests the taint list it read: another writer's change in between makes the API
server refuse it (422), and the cache reads the node again. Nothing else of the node is compared, so the kubelet's
frequent status updates never make it fail.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

log = logging.getLogger("cache.starttaint")

TAINT_KEY = "startup-taint.cluster-autoscaler.kubernetes.io/localdns"
SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
REQUEST_TIMEOUT = 10.0
READY_POLL = 1.0
RETRY_FIRST, RETRY_MAX = 1.0, 60.0


def removal_patch(node: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The JSON patch that removes our taint (any value or effect) and nothing else; None when it is absent."""
    taints = (node.get("spec") or {}).get("taints") or []
    kept = [taint for taint in taints if not (isinstance(taint, dict) and taint.get("key") == TAINT_KEY)]
    if len(kept) == len(taints):
        return None
    change = {"op": "replace", "path": "/spec/taints", "value": kept} if kept else \
        {"op": "remove", "path": "/spec/taints"}
    return [{"op": "test", "path": "/spec/taints", "value": taints}, change]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


@dataclass(frozen=True)
class KubeAPI:
    """The few REST calls this needs. `url` is https://HOST:PORT in a pod (http:// only for tests)."""

    url: str
    token_file: str
    ca_file: str | None

    @classmethod
    def in_cluster(cls, environ: dict[str, str] | None = None) -> KubeAPI:
        env = os.environ if environ is None else environ
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ApiError(0, "KUBERNETES_SERVICE_HOST is not set: --remove-startup-taint runs only in a pod")
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{port}", f"{SERVICE_ACCOUNT}/token", f"{SERVICE_ACCOUNT}/ca.crt")

    def request(self, method: str, path: str, body: object = None, content_type: str = "application/json") -> Any:
        """One call; the decoded JSON answer, or ApiError with the API server's Status message."""
        parts = urlsplit(self.url)
        if parts.hostname is None:
            raise ApiError(0, f"no host in {self.url}")
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            context = ssl.create_default_context(cafile=self.ca_file)
            connection = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=REQUEST_TIMEOUT,
                                                     context=context)
        else:
            connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=REQUEST_TIMEOUT)
        try:
            with open(self.token_file) as token_file:  # re-read every time: the kubelet rotates the token
                token = token_file.read().strip()
        except OSError as error:
            raise ApiError(0, f"cannot read the service account token {self.token_file}: {error}") from None
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                   "User-Agent": "localdns-cache"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            raise ApiError(0, f"{method} {self.url}{path}: {error}") from None
        finally:
            connection.close()
        try:
            decoded = json.loads(data) if data else {}
        except ValueError:
            decoded = {"message": data[:200].decode("utf-8", "replace")}
        if response.status >= 300:
            message = decoded.get("message") if isinstance(decoded, dict) else None
            raise ApiError(response.status, str(message or response.reason))
        return decoded


def remove_taint(api: KubeAPI, node_name: str, attempts: int = 5) -> str:
    """Remove our taint from `node_name`: "removed", or "absent" when it was not (or no longer) there. A change of
    the taints between our read and our patch (422 from the JSON patch's test, or 409) makes it read again."""
    path = f"/api/v1/nodes/{quote(node_name, safe='')}"
    for _ in range(attempts):
        patch = removal_patch(api.request("GET", path))
        if patch is None:
            return "absent"
        try:
            api.request("PATCH", path, patch, "application/json-patch+json")
            return "removed"
        except ApiError as error:
            if error.status not in (409, 422):
                raise
            log.info("the taints of node %s changed while the cache removed its own; reading them again", node_name)
    raise ApiError(409, f"the taints of node {node_name} kept changing ({attempts} attempts)")


async def remove_when_ready(ready: Callable[[], bool], api: KubeAPI | None = None,
                            node_name: str | None = None) -> None:
    """Wait until the cache is ready, then remove the taint, retrying (with backoff) until it is gone."""
    name = node_name or os.environ.get("NODE_NAME", "")
    if not name:
        log.error("--remove-startup-taint: NODE_NAME is not set (the DaemonSet passes spec.nodeName); the taint %s "
                  "stays on this node", TAINT_KEY)
        return
    while not ready():
        await asyncio.sleep(READY_POLL)
    delay = RETRY_FIRST
    while True:
        try:
            client = api or KubeAPI.in_cluster()
            outcome = await asyncio.to_thread(remove_taint, client, name)
            log.info("startup taint %s on node %s: %s", TAINT_KEY, name, outcome)
            return
        except ApiError as error:
            hint = ""
            if error.status == 403:
                hint = (" (the ServiceAccount needs components/startup-taint: RBAC to patch nodes, and the "
                        "ValidatingAdmissionPolicy admits only this taint's removal from the pod's own node)")
            log.error("cannot remove the startup taint from node %s: %s%s; retrying in %.0fs", name, error, hint,
                      delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)
