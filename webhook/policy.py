"""The injection rule: a pod and its namespace in, a decision (and the new dnsConfig) out. Pure, no I/O.

The new dnsConfig reproduces what kubelet would have written for the pod under ClusterFirst, with the cluster DNS
IP replaced by the node-local cache, so names resolve exactly as before, only through the cache.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from webhook import resolvconf
from webhook.config import MAX_NDOTS, Settings

INJECT_ANNOTATION = "localdns.io/inject"
NDOTS_ANNOTATION = "localdns.io/ndots"
INJECTED_ANNOTATION = "localdns.io/injected"
# In a dry-run namespace (label localdns.io/inject=dry-run) pods keep their DNS and get only this annotation, whose
# value is what INJECTED_ANNOTATION would have said.
DRY_RUN_ANNOTATION = "localdns.io/dry-run"
OPT_OUT_VALUES = ("disabled", "false")
OPT_IN_VALUES = ("enabled", "true")
# A namespace name is a DNS label. Longer ones (never from kube-apiserver) are not cached, which bounds the cache.
MAX_NAMESPACE_CHARS = 63


class Outcome(StrEnum):
    INJECT = "inject"
    ALREADY_INJECTED = "already-injected"
    SKIP = "skip"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    warning: str | None = None
    dns_config: dict[str, Any] | None = None


def _skip(reason: str, warning: str | None = None) -> Decision:
    return Decision(Outcome.SKIP, reason, warning)


def decide(pod: Mapping[str, Any], namespace: str, settings: Settings) -> Decision:
    """Decide for a pod (as sent to admission) created in `namespace` (the request's, never the object's)."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    annotations = metadata.get("annotations") or {}

    if namespace in settings.excluded_namespaces:
        return _skip(f"namespace {namespace} is excluded by configuration")

    choice = str(annotations.get(INJECT_ANNOTATION, "")).strip().lower()
    if choice in OPT_OUT_VALUES:
        return _skip(f"pod opted out with annotation {INJECT_ANNOTATION}: {annotations[INJECT_ANNOTATION]!r}")
    notice = None
    if choice and choice not in OPT_IN_VALUES:
        notice = (f"localdns: annotation {INJECT_ANNOTATION} has unknown value {annotations[INJECT_ANNOTATION]!r}; "
                  f"only \"disabled\" or \"false\" opt a pod out")

    if runs_on_windows(spec):
        return _skip("pod runs on Windows, which has no node-local DNS cache", notice)

    dns_policy = spec.get("dnsPolicy") or "ClusterFirst"
    if dns_policy == "None" and INJECTED_ANNOTATION in annotations and \
            settings.local_ip in ((spec.get("dnsConfig") or {}).get("nameservers") or []):
        return Decision(Outcome.ALREADY_INJECTED, f"already injected ({annotations[INJECTED_ANNOTATION]})")

    if dns_policy not in ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"):
        return _skip(f"unknown dnsPolicy {dns_policy!r}",
                     f"localdns: dnsPolicy {dns_policy!r} is not one Kubernetes knows; DNS left unchanged")
    if resolvconf.effective_policy(spec) != "cluster":
        why = "hostNetwork with ClusterFirst uses the node's resolv.conf" \
            if dns_policy == "ClusterFirst" else f"dnsPolicy {dns_policy} does not use cluster DNS"
        return _skip(why, notice)

    ndots = settings.ndots
    if NDOTS_ANNOTATION in annotations:
        text = str(annotations[NDOTS_ANNOTATION]).strip()
        if not (text.isascii() and text.isdigit() and int(text) <= MAX_NDOTS):
            return _skip(f"invalid annotation {NDOTS_ANNOTATION}: {annotations[NDOTS_ANNOTATION]!r}",
                         f"localdns: annotation {NDOTS_ANNOTATION} must be an integer from 0 to {MAX_NDOTS}, "
                         f"got {annotations[NDOTS_ANNOTATION]!r}; DNS left unchanged")
        ndots = int(text)

    dns_config, errors = checked_dns_config(spec.get("dnsConfig") or {}, namespace, ndots, settings)
    if errors:
        # kube-apiserver shortens long warnings; the first error names the limit, the log has them all.
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return _skip("the injected DNS settings would fail API validation: " + "; ".join(errors),
                     f"localdns: DNS left unchanged, the injected settings would fail validation: {errors[0]}{more}")
    return Decision(Outcome.INJECT, "injected " + marker(dns_config), notice, dns_config)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def runs_on_windows(spec: Mapping[str, Any]) -> bool:
    """spec.os.name, the nodeSelector, or a required node affinity whose every term asks for Windows nodes."""
    if (spec.get("os") or {}).get("name") == "windows":
        return True
    if (spec.get("nodeSelector") or {}).get("kubernetes.io/os") == "windows":
        return True
    affinity = spec.get("affinity")
    if not affinity:  # most pods
        return False
    # affinity is not type-checked at admission (the API server has decoded it already): read it defensively
    required = _mapping(_mapping(_mapping(affinity).get("nodeAffinity")).get(
        "requiredDuringSchedulingIgnoredDuringExecution"))
    terms = required.get("nodeSelectorTerms")
    if not isinstance(terms, list) or not terms:
        return False

    def windows_only(term: Any) -> bool:  # terms are ORed, expressions within a term ANDed
        expressions = term.get("matchExpressions") if isinstance(term, dict) else None
        return isinstance(expressions, list) and any(
            isinstance(e, dict) and e.get("key") == "kubernetes.io/os" and e.get("operator") == "In"
            and isinstance(e.get("values"), list) and e["values"] and all(value == "windows" for value in e["values"])
            for e in expressions)

    return all(windows_only(term) for term in terms)


def checked_dns_config(own: Mapping[str, Any], namespace: str, ndots: int,
                       settings: Settings) -> tuple[dict[str, Any], list[str]]:
    """The injected dnsConfig (a new dict each call) and kube-apiserver's objections to it, if any."""
    if not own and len(namespace) <= MAX_NAMESPACE_CHARS:
        nameservers, searches, options, errors = _checked_without_own(namespace, ndots, settings)
        return ({"nameservers": list(nameservers), "searches": list(searches),
                 "options": [dict(option) for option in options]}, list(errors))
    dns_config = injected_dns_config(own, namespace, ndots, settings)
    return dns_config, resolvconf.validation_errors("None", dns_config)


@functools.lru_cache(maxsize=1024)
def _checked_without_own(namespace: str, ndots: int, settings: Settings) -> tuple[
        tuple[str, ...], tuple[str, ...], tuple[tuple[tuple[str, Any], ...], ...], tuple[str, ...]]:
    """checked_dns_config for a pod without a dnsConfig of its own, which is most pods: the result depends on the
    namespace, ndots and settings alone, so it is computed once for each (as tuples: a cached value is shared)."""
    dns_config = injected_dns_config({}, namespace, ndots, settings)
    return (tuple(dns_config["nameservers"]), tuple(dns_config["searches"]),
            tuple(tuple(option.items()) for option in dns_config["options"]),
            tuple(resolvconf.validation_errors("None", dns_config)))


def injected_dns_config(own: Mapping[str, Any], namespace: str, ndots: int, settings: Settings) -> dict[str, Any]:
    """Kubelet's ClusterFirst result as a dnsConfig, with the local cache (and fallback) as nameservers."""
    nameservers = [settings.local_ip]
    if settings.fallback_nameserver:
        nameservers.append(settings.fallback_nameserver)
    nameservers = resolvconf.omit_duplicates([*nameservers, *(own.get("nameservers") or [])])
    searches = resolvconf.omit_duplicates([
        *resolvconf.cluster_searches(namespace, settings.cluster_domain), *(own.get("searches") or [])])
    options = resolvconf.merge_options([{"name": "ndots", "value": str(ndots)},
                                        *(option.as_pod_option() for option in settings.extra_options),
                                        *(own.get("options") or [])])
    return {"nameservers": nameservers, "searches": searches, "options": options}


def marker(dns_config: Mapping[str, Any]) -> str:
    """The `localdns.io/injected` value: what the pod's DNS was switched to."""
    text = f"nameservers={','.join(dns_config['nameservers'])}"
    ndots = next((o.get("value") for o in dns_config["options"] if o["name"] == "ndots"), None)
    return f"{text} ndots={ndots}" if ndots else text
