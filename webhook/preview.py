"""`python -m webhook preview FILE --namespace NS`: what the webhook would do to a pod, without a cluster.

Accepts a Pod, a workload (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob, ReplicationController,
PodTemplate) or a List of them, in YAML or JSON, several documents per file allowed. For each pod (template) it
prints the decision, the JSON patch, the new DNS fields and the resolv.conf the container runtime writes for it.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from webhook import resolvconf
from webhook.config import Settings
from webhook.patch import mutated_pod, patch_for
from webhook.policy import Decision, Outcome, decide
from webhook.review import BadReview, check_pod

DEFAULT_CLUSTER_DNS = "10.96.0.10"  # kubeadm's kube-dns ClusterIP; only used to show an unchanged pod's file


class PreviewError(ValueError):
    pass


# Objects looked at in one file, Lists' items included: far above any manifest. With the check that no List is
# walked twice, this bounds a YAML alias bomb (Lists whose items are aliases of Lists: linear in memory, but their
# items multiply when walked).
MAX_OBJECTS = 10_000


@dataclass(frozen=True)
class Preview:
    kind: str
    name: str
    namespace: str
    pod: dict[str, Any]
    decision: Decision
    patch: list[dict[str, Any]]
    resolv_conf: str | None  # None when it depends on a node's resolv.conf that was not given


def pod_templates(document: Mapping[str, Any], seen: list[int] | None = None) -> Iterator[tuple[str, str,
                                                                                            dict[str, Any]]]:
    """(kind, name, pod) for each pod or pod template in a Kubernetes object or List."""
    seen = seen if seen is not None else [0]
    seen[0] += 1
    if seen[0] > MAX_OBJECTS:
        raise PreviewError(f"more than {MAX_OBJECTS} objects (Lists' items included); split the file")
    if not isinstance(document, dict):
        raise PreviewError(f"expected Kubernetes objects, found {type(document).__name__}")
    kind = document.get("kind")
    metadata: dict[str, Any] = document["metadata"] if isinstance(document.get("metadata"), dict) else {}
    name = metadata.get("name") or metadata.get("generateName") or ""
    name = name if isinstance(name, str) else ""
    spec: dict[str, Any] = document["spec"] if isinstance(document.get("spec"), dict) else {}
    if kind == "List":
        if id(document) in seen[1:]:  # the same List again, through a YAML alias: its items would multiply
            raise PreviewError("a List appears more than once (YAML aliases); write its items out")
        seen.append(id(document))
        items = document.get("items") or []
        for item in items if isinstance(items, list) else []:
            yield from pod_templates(item, seen)
    elif kind == "Pod":
        yield kind, name, dict(document)
    elif kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"):
        yield kind, name, dict(spec.get("template") or {})
    elif kind == "CronJob":
        yield kind, name, dict(((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {})
    elif kind == "PodTemplate":
        yield kind, name, dict(document.get("template") or {})
    # Anything else (a Service, a ConfigMap in the same manifest) has no pod to preview.


def preview(document: Mapping[str, Any], namespace: str | None, settings: Settings,
            cluster_dns: str = DEFAULT_CLUSTER_DNS, node: resolvconf.ResolverConfig | None = None) -> list[Preview]:
    results = []
    for kind, name, pod in pod_templates(document):
        try:
            check_pod(pod)
        except BadReview as error:
            raise PreviewError(f"{kind} {name}: {error}") from None
        own: dict[str, Any] = document["metadata"] if isinstance(document.get("metadata"), dict) else {}
        ns = namespace or (own.get("namespace") if isinstance(own.get("namespace"), str) else "") or "default"
        decision = decide(pod, ns, settings)
        patch = patch_for(pod, decision)
        spec = mutated_pod(pod, decision).get("spec") or {}
        if resolvconf.effective_policy(spec) == "host" and node is None:
            text = None
        else:
            text = resolvconf.render(resolvconf.pod_resolver_config(
                spec, ns, [cluster_dns], settings.cluster_domain, node or resolvconf.ResolverConfig()))
        results.append(Preview(kind, name, ns, pod, decision, patch, text))
    return results


def load_documents(stream: TextIO) -> list[dict[str, Any]]:
    try:
        documents = [doc for doc in yaml.safe_load_all(stream) if doc is not None]
    except yaml.YAMLError as error:
        raise PreviewError(f"not valid YAML or JSON: {error}") from None
    except RecursionError:  # PyYAML builds nested collections recursively
        raise PreviewError("the file nests too deep for a Kubernetes object") from None
    for doc in documents:
        if not isinstance(doc, dict):
            raise PreviewError(f"expected Kubernetes objects, found {type(doc).__name__}")
    return documents


def format_preview(item: Preview) -> str:
    decision = item.decision
    lines = [f"== {item.kind} {item.name or '(unnamed)'} in namespace {item.namespace}",
             f"decision: {decision.outcome.value}: {decision.reason}"]
    if decision.warning:
        lines.append(f"warning: {decision.warning}")
    lines.append("JSON patch:")
    lines.append(json.dumps(item.patch, indent=2) if item.patch else "  (none)")
    spec = mutated_pod(item.pod, decision).get("spec") or {}
    fields = {"dnsPolicy": spec.get("dnsPolicy") or "ClusterFirst"}
    if spec.get("dnsConfig") is not None:
        fields["dnsConfig"] = spec["dnsConfig"]
    title = "new DNS fields:" if decision.outcome is Outcome.INJECT else "DNS fields (unchanged):"
    lines.append(title)
    lines.append(yaml.safe_dump(fields, sort_keys=False, default_flow_style=False).rstrip())
    lines.append("/etc/resolv.conf:")
    if item.resolv_conf is None:
        lines.append("  (the node's /etc/resolv.conf, plus the pod's dnsConfig; pass --node-resolv-conf to show it)")
    else:
        lines.append(item.resolv_conf.rstrip())
    return "\n".join(lines) + "\n"


def run(path: str, namespace: str | None, settings: Settings, cluster_dns: str = DEFAULT_CLUSTER_DNS,
        node_resolv_conf: str | None = None, out: TextIO = sys.stdout) -> None:
    node = None
    if node_resolv_conf:
        with open(node_resolv_conf, encoding="utf-8") as handle:
            node = resolvconf.parse_resolv_conf(handle.read())
    if path == "-":
        documents = load_documents(sys.stdin)
    else:
        with open(path, encoding="utf-8") as handle:
            documents = load_documents(handle)
    try:
        previews = [item for document in documents
                    for item in preview(document, namespace, settings, cluster_dns, node)]
    except RecursionError:  # Lists nested in Lists
        raise PreviewError(f"{path} nests Lists too deep") from None
    if not previews:
        kinds = ", ".join(sorted({document["kind"] if isinstance(document.get("kind"), str) else "(no kind)"
                                  for document in documents})) or "nothing"
        raise PreviewError(f"{path} holds no Pod or workload with a pod template (found: {kinds})")
    for item in previews:
        out.write(format_preview(item) + "\n")
