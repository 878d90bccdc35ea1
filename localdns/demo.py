"""`make demo` / `python -m webhook demo`: the three programs together on loopback, without root, cluster or internet.

certs writes a fresh CA and serving certificate to a temporary directory (certs.local); the webhook serves HTTPS on
127.0.0.1 on a free port; each sample pod goes through POST /mutate exactly as kube-apiserver would send it, over a
connection that trusts only that CA, and its decision and resolv.conf are printed. Then the cache resolves the
names those pods would look up, in front of a kube-dns stand-in (`cache.demo.run`). Only the standard library
talks HTTP here: the demo ships in the image, which has no test dependencies.
"""
from __future__ import annotations

import argparse
import base64
import copy
import http.client
import json
import logging
import os
import ssl
import sys
import tempfile
import uuid
from collections.abc import Sequence
from typing import Any, TextIO

import jsonpatch

from cache import demo as cache_demo
from certs.local import write_local
from webhook import resolvconf
from webhook.app import create_app
from webhook.config import Settings
from webhook.policy import decide
from webhook.review import review_for
from webhook.server import running

JSON = dict[str, Any]

NAMESPACE = "default"
CLUSTER_DNS = "10.96.0.10"  # what kubelet's --cluster-dns would be; shown for pods the webhook leaves alone


def _pod(name: str, annotations: dict[str, str] | None = None, **spec: object) -> JSON:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": f"{name}-", "labels": {"app": name}, **(
                {"annotations": annotations} if annotations else {})},
            "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}], **spec}}


SAMPLE_PODS: list[tuple[str, JSON]] = [
    ("plain pod", _pod("plain")),
    ("opted out (annotation localdns.io/inject: disabled)", _pod("opted-out", {"localdns.io/inject": "disabled"})),
    ("hostNetwork pod (ClusterFirst on the host network means the node's DNS)", _pod("host-net", hostNetwork=True)),
    ("own dnsConfig (search domain, nameserver, options)", _pod("own-dns", dnsConfig={
        "nameservers": ["10.20.0.53"], "searches": ["corp.example.com"],
        "options": [{"name": "ndots", "value": "3"}, {"name": "edns0"}]})),
    ("per-pod ndots (annotation localdns.io/ndots: \"2\")", _pod("ndots", {"localdns.io/ndots": "2"})),
]


def names_to_resolve(settings: Settings) -> list[str]:
    """Names the injected sample pods would look up: their namespace's services, through the search path."""
    return [f"svc-{n}.{NAMESPACE}.svc.{settings.cluster_domain}" for n in (1, 2, 3)]


def _node_resolver() -> resolvconf.ResolverConfig | None:
    try:
        with open("/etc/resolv.conf", encoding="utf-8") as handle:
            return resolvconf.parse_resolv_conf(handle.read())
    except OSError:
        return None


def _exchange(connection: http.client.HTTPSConnection, method: str, path: str, body: JSON | None = None) -> bytes:
    """One request on the kept-alive connection; the answer's body, or an error naming the status."""
    payload = json.dumps(body).encode() if body is not None else None
    connection.request(method, path, payload, {"Content-Type": "application/json"} if payload else {})
    answer = connection.getresponse()
    data = answer.read()
    if answer.status != 200:
        raise ConnectionError(f"the webhook answered {method} {path} with {answer.status} {answer.reason}: "
                              f"{data[:200]!r}")
    return data


def send(connection: http.client.HTTPSConnection, pod: JSON) -> JSON:
    """The webhook's AdmissionResponse for the pod, sent as kube-apiserver sends it."""
    review = _exchange(connection, "POST", "/mutate", review_for(pod, NAMESPACE, uid=str(uuid.uuid4())))
    response: JSON = json.loads(review)["response"]
    return response


def show(title: str, pod: JSON, response: JSON, settings: Settings, out: TextIO) -> JSON:
    """Print one pod's result; return the pod as the API server would store it."""
    patch = json.loads(base64.b64decode(response["patch"])) if response.get("patch") else []
    stored: JSON = jsonpatch.apply_patch(copy.deepcopy(pod), patch)
    out.write(f"--- {title}\n")
    # The webhook's answer is the patch; the policy's reason is recomputed here only to explain it.
    decision = decide(pod, NAMESPACE, settings)
    out.write(f"    decision: {decision.outcome.value} ({decision.reason}); "
              f"{len(patch)} patch operation(s) returned\n")
    for warning in response.get("warnings") or []:
        out.write(f"    warning: {warning}\n")
    spec = stored["spec"]
    if resolvconf.effective_policy(spec) == "host":
        node = _node_resolver()
        if node is None:
            out.write("    resolv.conf: the node's /etc/resolv.conf\n\n")
            return stored
        out.write("    resolv.conf (the node's, here this machine's /etc/resolv.conf):\n")
    else:
        node = resolvconf.ResolverConfig()
        out.write("    resolv.conf:\n")
    text = resolvconf.render(resolvconf.pod_resolver_config(spec, NAMESPACE, [CLUSTER_DNS],
                                                             settings.cluster_domain, node))
    out.write("".join(f"      {line}\n" for line in text.splitlines()) + "\n")
    return stored


def run(settings: Settings, out: TextIO = sys.stdout) -> int:
    with tempfile.TemporaryDirectory(prefix="localdns-demo-") as tmp:
        files = write_local(tmp, ["localhost"], ["127.0.0.1"])
        with running(create_app(settings), str(files.cert), str(files.key)) as server:
            out.write(f"localdns webhook serving {server.url} (TLS certificate from a fresh local CA: {files.ca})\n")
            out.write(f"settings: {json.dumps(settings.describe())}\n")
            out.write(f"sample pods created in namespace {NAMESPACE!r} (kubelet's cluster DNS would be "
                      f"{CLUSTER_DNS}):\n\n")
            trust = ssl.create_default_context(cafile=str(files.ca))
            connection = http.client.HTTPSConnection(server.host, server.port, context=trust, timeout=10)
            try:
                stored = [show(title, pod, send(connection, pod), settings, out) for title, pod in SAMPLE_PODS]
                # The API server may send a pod again (reinvocation): an injected pod gets no second patch.
                show("the first pod sent again after injection (reinvocation)", stored[0],
                     send(connection, stored[0]), settings, out)
                metrics = _exchange(connection, "GET", "/metrics").decode()
            finally:
                connection.close()
            counts = [line for line in metrics.splitlines() if line.startswith("localdns_webhook_admissions_total")]
            out.write("metrics: " + ", ".join(line.split("{", 1)[1].replace('"} ', "=").replace('outcome="', "")
                                              for line in counts) + "\n")
        out.write("webhook stopped\n")
    out.write("\nresolving the names these pods would look up, through the node-local cache:\n")
    cache_demo.run(names_to_resolve(settings), out=out)
    return 0


def main(argv: Sequence[str], prog: str = "python -m webhook") -> int:
    """The `demo` command (webhook/__main__.py hands it over): `argv` from the command's name on."""
    command, *options = argv
    description = "Run the webhook on loopback with a fresh CA, send it sample pods, then resolve their names " \
                  "through the node-local cache. No root, no cluster, no internet."
    argparse.ArgumentParser(prog=f"{prog} {command}", description=description).parse_args(options)
    if "LOCALDNS_LOG_LEVEL" not in os.environ and logging.getLogger().getEffectiveLevel() == logging.INFO:
        logging.getLogger().setLevel(logging.WARNING)  # the demo's own output tells the story
    return run(Settings.from_env(os.environ))
