"""`make demo` / `python -m webhook demo`: the webhook on loopback, sample pods through it, their resolv.conf.

Needs no root, no cluster and no internet: a fresh CA and serving certificate are written to a temporary directory
(certs.local), the webhook serves HTTPS on 127.0.0.1 on a free port, and each sample pod goes through POST /mutate
exactly as kube-apiserver would send it, over a connection that verifies the generated CA. When the cache package
provides `cache.demo.run(names, out)`, it then resolves the names those pods would look up through the cache.
"""
from __future__ import annotations

import base64
import copy
import json
import ssl
import sys
import tempfile
import uuid
from typing import TextIO

import httpx
import jsonpatch

from webhook import resolvconf
from webhook.app import create_app
from webhook.config import Settings
from webhook.policy import decide
from webhook.review import review_for
from webhook.server import running

NAMESPACE = "default"
CLUSTER_DNS = "10.96.0.10"  # what kubelet's --cluster-dns would be; shown for pods the webhook leaves alone


def _pod(name: str, annotations: dict | None = None, **spec: object) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": f"{name}-", "labels": {"app": name}, **(
                {"annotations": annotations} if annotations else {})},
            "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}], **spec}}


SAMPLE_PODS: list[tuple[str, dict]] = [
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


def send(client: httpx.Client, url: str, pod: dict) -> dict:
    answer = client.post(f"{url}/mutate", json=review_for(pod, NAMESPACE, uid=str(uuid.uuid4())))
    answer.raise_for_status()
    return answer.json()["response"]


def show(title: str, pod: dict, response: dict, settings: Settings, out: TextIO) -> dict:
    """Print one pod's result; return the pod as the API server would store it."""
    patch = json.loads(base64.b64decode(response["patch"])) if response.get("patch") else []
    stored = jsonpatch.apply_patch(copy.deepcopy(pod), patch)
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


def run(out: TextIO = sys.stdout, settings: Settings | None = None) -> int:
    from certs.local import write_local  # the certs package makes the CA; imported here so preview needs none

    settings = settings or Settings()
    with tempfile.TemporaryDirectory(prefix="localdns-demo-") as tmp:
        files = write_local(tmp, ["localhost"], ["127.0.0.1"])
        app = create_app(settings)
        with running(app, str(files.cert), str(files.key)) as server:
            out.write(f"localdns webhook serving {server.url} (TLS certificate from a fresh local CA: {files.ca})\n")
            out.write(f"settings: {json.dumps(settings.describe())}\n")
            out.write(f"sample pods created in namespace {NAMESPACE!r} (kubelet's cluster DNS would be "
                      f"{CLUSTER_DNS}):\n\n")
            verify = ssl.create_default_context(cafile=str(files.ca))
            with httpx.Client(verify=verify, timeout=10) as client:
                first_stored = None
                for title, pod in SAMPLE_PODS:
                    stored = show(title, pod, send(client, server.url, pod), settings, out)
                    first_stored = first_stored or stored
                # The API server may send a pod again (reinvocation): an injected pod gets no second patch.
                show("the first pod sent again after injection (reinvocation)", first_stored,
                     send(client, server.url, first_stored), settings, out)
                counts = [line for line in client.get(f"{server.url}/metrics").text.splitlines()
                          if line.startswith("localdns_webhook_admissions_total")]
            out.write("metrics: " + ", ".join(line.split("{", 1)[1].replace('"} ', "=").replace('outcome="', "")
                                              for line in counts) + "\n")
        out.write("webhook stopped\n")
    run_cache_demo(names_to_resolve(settings), out)
    return 0


def run_cache_demo(names: list[str], out: TextIO) -> None:
    """Hand over to the cache's demo when the cache package provides one."""
    try:
        from cache.demo import run as cache_demo  # type: ignore[import-not-found]
    except (ImportError, AttributeError):
        return
    out.write("\nresolving the names these pods would look up, through the node-local cache:\n")
    cache_demo(names, out=out)
