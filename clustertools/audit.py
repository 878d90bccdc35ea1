"""`audit`: which running pods still bypass the local DNS cache, and what recreates them.

A namespace that opts in changes only pods created afterwards. For every pod in the opted-in namespaces this asks
the webhook's own rule (`admit.admit`, the same function `/mutate` calls, with the namespace's NetworkPolicies)
what it would do to the pod now:
- INJECT: the pod is running without the local cache though it would get it now: it needs a restart, which goes
  through its owner (Deployment via its ReplicaSet, StatefulSet, DaemonSet, Job, CronJob via its Job, or none).
  In a dry-run namespace (label localdns.io/inject=dry-run) it would be injected once the namespace is enabled:
  counted, never restarted.
- ALREADY_INJECTED: nothing to do.
- SKIP: rightly untouched (opted out, hostNetwork, its own dnsPolicy, a NetworkPolicy that blocks DNS to the local
  IP, ...), listed with the webhook's reason.
Namespaces whose NetworkPolicies block DNS to the local IP are listed apart (clustertools/netpolicies.py).
"""
from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clustertools import cli, netpolicies
from clustertools.output import emit, plural, table
from clustertools.owners import Owner, OwnerResolver
from clustertools.scope import Gaps, iter_pods, labelled_namespaces
from localdns import names
from localdns.kube import JSON, Client
from webhook.admit import admit
from webhook.config import Settings
from webhook.netpol import Policy
from webhook.policy import INJECTED_ANNOTATION, Outcome

NEEDS_RESTART = "needs-restart"
INJECTED = "injected"
UNTOUCHED = "untouched"
WOULD_INJECT = "would-inject"  # in a dry-run namespace

# What `rollout` does with each kind of owner.
RESTART = "restart"
DELETE = "delete-bare-pod"
LEAVE = "none"
RESTARTABLE_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def classify(pod: JSON, namespace: str, settings: Settings, policies: Sequence[Policy] = ()) -> tuple[str, str]:
    """(verdict, reason) for one running pod, by the webhook's rule and the namespace's NetworkPolicies."""
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    if meta.get("deletionTimestamp"):
        return UNTOUCHED, "terminating"
    if status.get("phase") in ("Succeeded", "Failed"):
        return UNTOUCHED, f"finished ({status['phase']}); no longer running"
    decision = admit(pod, namespace, settings, policies).decision
    marker = (meta.get("annotations") or {}).get(INJECTED_ANNOTATION)
    if decision.outcome == Outcome.SKIP and marker and pod.get("spec", {}).get("dnsPolicy") == "None":
        # Injected at creation, with settings that are no longer current (the webhook skips dnsPolicy None).
        # Ask the rule about the pod as its template makes it, before injection: cluster DNS, no marker.
        again = admit(_as_created(pod), namespace, settings, policies).decision
        if again.outcome == Outcome.INJECT:
            return NEEDS_RESTART, f"injected with other settings ({marker}); a restart applies the current ones"
        return UNTOUCHED, f"{again.reason}; it keeps the DNS settings injected at creation ({marker}) until recreated"
    if decision.outcome == Outcome.INJECT:
        return NEEDS_RESTART, decision.reason
    if decision.outcome == Outcome.ALREADY_INJECTED:
        return INJECTED, decision.reason
    return UNTOUCHED, decision.reason


def _as_created(pod: JSON) -> JSON:
    """The pod without what the webhook injected: what a restart hands to the webhook again."""
    meta = dict(pod.get("metadata") or {})
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items() if k != INJECTED_ANNOTATION}
    spec = {k: v for k, v in (pod.get("spec") or {}).items() if k != "dnsConfig"} | {"dnsPolicy": "ClusterFirst"}
    return {**pod, "metadata": meta, "spec": spec}


def action_for(owner: Owner) -> tuple[str, str]:
    """What `rollout` does for pods of this owner, and the sentence that explains it."""
    if owner.note:
        return LEAVE, f"not restarted: {owner.note}"
    if owner.kind in RESTARTABLE_KINDS:
        return RESTART, "rollout restart (new pods get the local cache)"
    if owner.kind == "Job":
        return LEAVE, "not restarted: a running Job is left to finish; the next Job created gets the local cache"
    if owner.kind == "CronJob":
        return LEAVE, "not restarted: the running Job is left to finish; the next scheduled run gets the local cache"
    if owner.kind == "Pod":
        return DELETE, "bare pod: nothing recreates it; deleted only by `rollout --delete-bare-pods --yes`"
    if owner.kind == "ReplicaSet":
        return LEAVE, "not restarted: a ReplicaSet without a Deployment has no rollout; delete its pods one at a time"
    if owner.kind == "Node":
        return LEAVE, "not restarted: a static pod, run by the kubelet from a manifest on its node"
    return LEAVE, f"not restarted: managed by {owner.kind} {owner.name}; restart it through that controller"


@dataclass
class OwnerGroup:
    owner: Owner
    pods: list[str] = field(default_factory=list)

    @property
    def action(self) -> tuple[str, str]:
        return action_for(self.owner)


@dataclass
class AuditResult:
    namespaces: list[str] = field(default_factory=list)
    modes: dict[str, str] = field(default_factory=dict)  # namespace -> label value: enabled or dry-run
    groups: dict[Owner, OwnerGroup] = field(default_factory=dict)
    untouched: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # namespace -> verdict -> pods
    gaps: Gaps = field(default_factory=Gaps)
    notes: list[str] = field(default_factory=list)
    injected_nodes: dict[str, list[str]] = field(default_factory=dict)  # node -> injected pods (ns/name) on it
    blocked: netpolicies.Findings = field(default_factory=lambda: netpolicies.Findings(""))

    def add(self, namespace: str, pod: JSON, owner: Owner | None, verdict: str, reason: str) -> None:
        self.counts.setdefault(namespace, Counter())[verdict] += 1
        name = pod["metadata"]["name"]
        if verdict == INJECTED:
            node = pod.get("spec", {}).get("nodeName") or ""
            self.injected_nodes.setdefault(node, []).append(f"{namespace}/{name}")
        if owner is None:
            return
        if verdict == NEEDS_RESTART:
            self.groups.setdefault(owner, OwnerGroup(owner)).pods.append(name)
        elif verdict == UNTOUCHED:
            self.untouched.append({"namespace": namespace, "pod": name, "owner": owner.ref, "reason": reason})

    def sorted_groups(self) -> list[OwnerGroup]:
        return sorted(self.groups.values(), key=lambda g: (g.owner.namespace, g.owner.kind, g.owner.name))

    @property
    def exit_code(self) -> int:
        if self.gaps:
            return cli.EXIT_PARTIAL
        return cli.EXIT_FINDINGS if self.groups or self.blocked.namespaces else cli.EXIT_OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "partial": bool(self.gaps),
            "gaps": list(self.gaps.items),
            "localIP": self.blocked.local_ip,
            "notes": list(self.notes),
            "namespaces": [
                {
                    "name": ns,
                    "mode": self.modes.get(ns, names.INJECT_ENABLED),
                    "readable": ns in self.counts,
                    "pods": sum(self.counts.get(ns, Counter()).values()),
                    "injected": self.counts.get(ns, Counter())[INJECTED],
                    "needsRestart": self.counts.get(ns, Counter())[NEEDS_RESTART],
                    "wouldInject": self.counts.get(ns, Counter())[WOULD_INJECT],
                    "untouched": self.counts.get(ns, Counter())[UNTOUCHED],
                }
                for ns in self.namespaces
            ],
            "networkPolicies": self.blocked.as_list(),
            "needsRestart": [
                g.owner.as_dict() | {"action": g.action[0], "explanation": g.action[1], "pods": sorted(g.pods)}
                for g in self.sorted_groups()
            ],
            "untouched": sorted(self.untouched, key=lambda u: (u["namespace"], u["pod"])),
        }


def collect(client: Client, requested: list[str], settings: Settings) -> AuditResult:
    """Read the opted-in namespaces' pods and sort each by the webhook's rule. Unreadable parts become gaps."""
    result = AuditResult(blocked=netpolicies.Findings(settings.local_ip))
    result.modes = labelled_namespaces(client, requested, result.gaps, result.notes)
    result.namespaces = list(result.modes)
    excluded = sorted(set(result.namespaces) & settings.excluded_namespaces)
    for namespace in excluded:
        result.notes.append(f"namespace {namespace} is labelled but excluded by the webhook settings "
                            "(excluded_namespaces): its pods are never injected")
    resolver = OwnerResolver(client, result.gaps)
    for namespace, pods in iter_pods(client, result.namespaces, result.gaps):
        result.counts.setdefault(namespace, Counter())
        policies = netpolicies.read_policies(client, namespace, settings.local_ip, result.gaps, result.notes)
        for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
            verdict, reason = classify(pod, namespace, settings, policies)
            if verdict == NEEDS_RESTART and result.modes[namespace] == names.INJECT_DRY_RUN:
                verdict = WOULD_INJECT  # nothing to restart: a dry-run namespace's new pods are not changed either
            # no need to follow the owner chain of a pod that is listed by count only
            owner = resolver.owner_of(pod) if verdict not in (INJECTED, WOULD_INJECT) else None
            result.add(namespace, pod, owner, verdict, reason)
            if pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
                result.blocked.check(namespace, pod, settings, policies)
    return result


def render(data: dict[str, Any]) -> str:
    listed = [ns["name"] + ("" if ns["readable"] else " (unreadable)") + (" (dry run)" if ns["mode"] ==
              names.INJECT_DRY_RUN else "") for ns in data["namespaces"]]
    lines = [f"Audited {plural(len(listed), 'opted-in namespace')}" + (f": {', '.join(listed)}" if listed else "")]
    lines += [f"note: {note}" for note in data["notes"]]
    groups = data["needsRestart"]
    if groups:
        pods = sum(len(g["pods"]) for g in groups)
        lines += ["", f"Not using the local DNS cache yet ({plural(pods, 'pod')}, {plural(len(groups), 'owner')}):"]
        rows = [(g["namespace"], f"{g['kind'].lower()}/{g['name']}", len(g["pods"]), g["explanation"]) for g in groups]
        lines.append(table(("NAMESPACE", "OWNER", "PODS", "WHAT ROLLOUT DOES"), rows))
    untouched = data["untouched"]
    if untouched:
        lines += ["", f"Rightly untouched ({plural(len(untouched), 'pod')}):"]
        rows = [(u["namespace"], u["pod"], u["owner"], u["reason"]) for u in untouched]
        lines.append(table(("NAMESPACE", "POD", "OWNER", "REASON"), rows))
    injected = sum(ns["injected"] for ns in data["namespaces"])
    lines += ["", f"Already using the local DNS cache: {plural(injected, 'pod')}."]
    for ns in data["namespaces"]:
        if ns["mode"] == names.INJECT_DRY_RUN and ns["readable"]:
            lines.append(f"Dry run in {ns['name']}: {plural(ns['wouldInject'], 'pod')} would use the local DNS cache "
                         f"once the namespace is labelled {names.OPT_IN_SELECTOR} (new pods carry the annotation "
                         "localdns.io/dry-run).")
    lines += netpolicies.render(data["networkPolicies"], data["localIP"])
    if data["partial"]:
        lines += ["", "PARTIAL RESULT: some objects could not be read:"] + [f"  - {gap}" for gap in data["gaps"]]
    if groups:
        lines += ["", "To restart them: `python -m webhook rollout` shows the plan; add --yes to do it."]
    elif not data["partial"]:
        lines += ["", "Nothing needs a restart."]
    return "\n".join(lines)


HELP = "list running pods that do not use the local DNS cache yet, grouped by what recreates them"
DESCRIPTION = ("For every opted-in or dry-run namespace (or those named), list the pods the webhook would change now "
               "but which were created before, grouped by owner, the pods rightly left alone with the reason, and the "
               "namespaces whose NetworkPolicies block DNS to the local cache. Exit 0: nothing to do; 1: some pods "
               "need a restart, or NetworkPolicies block the local cache; 2: error; 3: partial result.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli.add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    settings = cli.load_settings(args)
    result = collect(cli.connect_from(args), cli.requested_namespaces(args), settings)
    emit(result.as_dict(), args.output, render)
    return result.exit_code
