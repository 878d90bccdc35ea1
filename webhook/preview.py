"""`python -m webhook preview FILE --namespace NS`: what the webhook would do to a pod, without a cluster.

Accepts a Pod, a workload (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, CronJob, ReplicationController,
PodTemplate) or a List of them, in YAML or JSON, several documents per file allowed. For each pod (template) it
prints the decision, the JSON patch, the new DNS fields and the resolv.conf the container runtime writes for it.
NetworkPolicies in the same input are applied as the webhook applies the cluster's (webhook/admit.py), each to
the namespace it would be created in (the same rule as for pods). `--dry-run` answers as for a namespace labelled
localdns.io/inject=dry-run.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from webhook import netpol, resolvconf
from webhook.admit import admit
from webhook.config import Settings
from webhook.patch import dry_run_pod, mutated_pod
from webhook.policy import DRY_RUN_ANNOTATION, Decision, Outcome
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
    warnings: tuple[str, ...] = ()
    reach: netpol.Reach | None = None  # checked against the input's NetworkPolicies
    dry_run: bool = False

    @property
    def result(self) -> dict[str, Any]:
        """The pod as the API server stores it."""
        return (dry_run_pod if self.dry_run else mutated_pod)(self.pod, self.decision)


def pod_templates(document: Mapping[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(kind, name, pod) for the pod or pod template of one Kubernetes object (a List's: `objects_in`)."""
    kind = document.get("kind")
    metadata: dict[str, Any] = document["metadata"] if isinstance(document.get("metadata"), dict) else {}
    name = metadata.get("name") or metadata.get("generateName") or ""
    name = name if isinstance(name, str) else ""
    spec: dict[str, Any] = document["spec"] if isinstance(document.get("spec"), dict) else {}
    if kind == "Pod":
        yield kind, name, dict(document)
    elif kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController"):
        yield kind, name, dict(spec.get("template") or {})
    elif kind == "CronJob":
        yield kind, name, dict(((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {})
    elif kind == "PodTemplate":
        yield kind, name, dict(document.get("template") or {})
    # Anything else (a Service, a ConfigMap in the same manifest) has no pod to preview.


def objects_in(documents: Sequence[Any]) -> list[Mapping[str, Any]]:
    """The input's objects, each List's items in its place (Lists in Lists too). At most MAX_OBJECTS looked at, and
    no List walked twice, so that a YAML alias bomb is an error, not a hang (deep Lists: RecursionError)."""
    found: list[Mapping[str, Any]] = []
    walked: set[int] = set()
    looked = 0

    def walk(document: Any) -> None:
        nonlocal looked
        looked += 1
        if looked > MAX_OBJECTS:
            raise PreviewError(f"more than {MAX_OBJECTS} objects (Lists' items included); split the file")
        if not isinstance(document, dict):
            raise PreviewError(f"expected Kubernetes objects, found {type(document).__name__}")
        if document.get("kind") != "List":
            found.append(document)
            return
        if id(document) in walked:  # the same List again, through a YAML alias: its items would multiply
            raise PreviewError("a List appears more than once (YAML aliases); write its items out")
        walked.add(id(document))
        items = document.get("items") or []
        for item in items if isinstance(items, list) else []:
            walk(item)

    for document in documents:
        walk(document)
    return found


def _namespace_of(document: Mapping[str, Any], namespace: str | None) -> str:
    """Where an object of the input is created: --namespace, else its own, else `default`."""
    own: dict[str, Any] = document["metadata"] if isinstance(document.get("metadata"), dict) else {}
    return namespace or (own.get("namespace") if isinstance(own.get("namespace"), str) else "") or "default"


def network_policies(objects: Sequence[Mapping[str, Any]], namespace: str | None,
                     local_ip: str) -> dict[str, tuple[netpol.Policy, ...]]:
    """The NetworkPolicies among the objects, by the namespace they would be created in, sorted by name."""
    found: dict[str, dict[str, netpol.Policy]] = {}
    for obj in objects:
        if obj.get("kind") != "NetworkPolicy":
            continue
        where = _namespace_of(obj, namespace)
        metadata = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
        try:
            policy = netpol.compile_policy({**obj, "metadata": {**metadata, "namespace": where}}, local_ip)
        except netpol.PolicyError as error:
            raise PreviewError(str(error)) from None
        found.setdefault(where, {})[policy.name] = policy
    return {ns: tuple(policies[name] for name in sorted(policies)) for ns, policies in found.items()}


def preview(obj: Mapping[str, Any], namespace: str | None, settings: Settings,
            cluster_dns: str = DEFAULT_CLUSTER_DNS, node: resolvconf.ResolverConfig | None = None,
            policies: Mapping[str, Sequence[netpol.Policy]] | None = None, dry_run: bool = False) -> list[Preview]:
    """What the webhook does to the pod (template) of one object (not a List: `objects_in` walks those)."""
    results = []
    for kind, name, pod in pod_templates(obj):
        try:
            check_pod(pod)
        except BadReview as error:
            raise PreviewError(f"{kind} {name}: {error}") from None
        ns = _namespace_of(obj, namespace)
        admitted = admit(pod, ns, settings, (policies or {}).get(ns, ()), dry_run)
        item = Preview(kind, name, ns, pod, admitted.decision, admitted.patch, None, admitted.warnings,
                       admitted.reach, dry_run)
        spec = item.result.get("spec") or {}
        if resolvconf.effective_policy(spec) != "host" or node is not None:
            text = resolvconf.render(resolvconf.pod_resolver_config(
                spec, ns, [cluster_dns], settings.cluster_domain, node or resolvconf.ResolverConfig()))
            item = dataclasses.replace(item, resolv_conf=text)
        results.append(item)
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


def describe_reach(reach: netpol.Reach, local_ip: str) -> str:
    if not reach.policies:
        return f"no NetworkPolicy selects the pod for egress: DNS to {local_ip} is open"
    verdict = ", ".join(f"{protocol} 53 {'allowed' if ok else 'blocked'}"
                        for protocol, ok in (("UDP", reach.udp), ("TCP", reach.tcp)))
    return f"egress of the pod is limited by {', '.join(p.ref for p in reach.policies)}: to {local_ip} {verdict}"


def format_preview(item: Preview, local_ip: str = "169.254.20.10") -> str:
    decision = item.decision
    lines = [f"== {item.kind} {item.name or '(unnamed)'} in namespace {item.namespace}"
             f"{' (dry run)' if item.dry_run else ''}",
             f"decision: {decision.outcome.value}: {decision.reason}"]
    if item.reach is not None:
        lines.append(f"networkpolicy: {describe_reach(item.reach, local_ip)}")
    lines += [f"warning: {warning}" for warning in item.warnings]
    if item.dry_run and decision.outcome is Outcome.INJECT:
        lines.append(f"dry run: the pod keeps its DNS settings; the annotation {DRY_RUN_ANNOTATION} says what "
                     "would be injected")
    lines.append("JSON patch:")
    lines.append(json.dumps(item.patch, indent=2) if item.patch else "  (none)")
    spec = item.result.get("spec") or {}
    fields = {"dnsPolicy": spec.get("dnsPolicy") or "ClusterFirst"}
    if spec.get("dnsConfig") is not None:
        fields["dnsConfig"] = spec["dnsConfig"]
    changed = decision.outcome is Outcome.INJECT and not item.dry_run
    title = "new DNS fields:" if changed else "DNS fields (unchanged):"
    lines.append(title)
    lines.append(yaml.safe_dump(fields, sort_keys=False, default_flow_style=False).rstrip())
    lines.append("/etc/resolv.conf:")
    if item.resolv_conf is None:
        lines.append("  (the node's /etc/resolv.conf, plus the pod's dnsConfig; pass --node-resolv-conf to show it)")
    else:
        lines.append(item.resolv_conf.rstrip())
    return "\n".join(lines) + "\n"


def run(path: str, namespace: str | None, settings: Settings, cluster_dns: str = DEFAULT_CLUSTER_DNS,
        node_resolv_conf: str | None = None, out: TextIO = sys.stdout, dry_run: bool = False) -> None:
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
        objects = objects_in(documents)
    except RecursionError:  # Lists nested in Lists
        raise PreviewError(f"{path} nests Lists too deep") from None
    policies = network_policies(objects, namespace, settings.local_ip)
    previews = [item for obj in objects
                for item in preview(obj, namespace, settings, cluster_dns, node, policies, dry_run)]
    if not previews:
        kinds = ", ".join(sorted({document["kind"] if isinstance(document.get("kind"), str) else "(no kind)"
                                  for document in documents})) or "nothing"
        raise PreviewError(f"{path} holds no Pod or workload with a pod template (found: {kinds})")
    for item in previews:
        out.write(format_preview(item, settings.local_ip) + "\n")
