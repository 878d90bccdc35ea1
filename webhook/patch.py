"""The JSON patch for a decision, and the pod as the API server stores it after that patch.

A patch that does not apply makes kube-apiserver reject the pod even with failurePolicy Ignore. A decision writes
exactly three places (the `localdns.io/injected` annotation, `spec.dnsPolicy`, `spec.dnsConfig`), so the patch is
built from the decision as one `add` per place, at the deepest parent that exists in the pod as sent: RFC 6902's
`add` creates an object member or replaces the one there, so each operation applies whatever the pod held at that
place (absent, null, or a value). Diffing whole pods with jsonpatch cost ~70% of an admission's CPU for the same
result. The tests prove it on generated pods: the patch, applied with jsonpatch and with kubectl (the API server's
own JSON-patch library) to the object as sent, gives exactly `mutated_pod`, which is built independently.

In a dry-run namespace the pod keeps its DNS settings: the patch is the one `add` of the `localdns.io/dry-run`
annotation (what would have been injected), at the deepest parent the pod has, and `dry_run_pod` is the result.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from webhook.policy import DRY_RUN_ANNOTATION, INJECTED_ANNOTATION, Decision, Outcome, marker


def _pointer(annotation: str) -> str:
    # RFC 6901: "~" and "/" in a member name are escaped as "~0" and "~1".
    return "/metadata/annotations/" + annotation.replace("~", "~0").replace("/", "~1")


_ANNOTATION_POINTER = _pointer(INJECTED_ANNOTATION)
_DRY_RUN_POINTER = _pointer(DRY_RUN_ANNOTATION)


def _annotated(pod: Mapping[str, Any], annotation: str, value: str) -> dict[str, Any]:
    """A copy of the pod with `annotation` set; only metadata and its annotations are copied (null or absent ones
    become objects, as the patch's `add` makes them)."""
    result = dict(pod)
    metadata = result["metadata"] = dict(result["metadata"]) if isinstance(result.get("metadata"), dict) else {}
    annotations = metadata.get("annotations")
    annotations = metadata["annotations"] = dict(annotations) if isinstance(annotations, dict) else {}
    annotations[annotation] = value
    return result


def mutated_pod(pod: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """A copy of the pod with the decision applied (unchanged unless the outcome is INJECT).

    Only the parts the decision writes are copied; the rest is shared with `pod`, which is never modified."""
    if decision.outcome is not Outcome.INJECT or decision.dns_config is None:
        return dict(pod)
    result = _annotated(pod, INJECTED_ANNOTATION, marker(decision.dns_config))
    spec = result["spec"] = dict(result["spec"]) if isinstance(result.get("spec"), dict) else {}
    spec["dnsPolicy"] = "None"
    spec["dnsConfig"] = copy.deepcopy(decision.dns_config)
    return result


def _add(path: str, value: Any) -> dict[str, Any]:
    return {"op": "add", "path": path, "value": value}


def _annotate(pod: Mapping[str, Any], annotation: str, pointer: str, value: str) -> dict[str, Any]:
    """The one `add` that sets an annotation, at the deepest of metadata and annotations the pod has."""
    metadata = pod.get("metadata")
    if not isinstance(metadata, dict):  # absent or null: the whole object
        return _add("/metadata", {"annotations": {annotation: value}})
    if not isinstance(metadata.get("annotations"), dict):
        return _add("/metadata/annotations", {annotation: value})
    return _add(pointer, value)


def dry_run_pod(pod: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """A copy of the pod with only the dry-run annotation set (unchanged unless the outcome is INJECT)."""
    if decision.outcome is not Outcome.INJECT or decision.dns_config is None:
        return dict(pod)
    return _annotated(pod, DRY_RUN_ANNOTATION, marker(decision.dns_config))


def dry_run_patch(pod: Mapping[str, Any], decision: Decision) -> list[dict[str, Any]]:
    """The one operation that turns the pod as sent into `dry_run_pod(pod, decision)`: none unless INJECT."""
    if decision.outcome is not Outcome.INJECT or decision.dns_config is None:
        return []
    return [_annotate(pod, DRY_RUN_ANNOTATION, _DRY_RUN_POINTER, marker(decision.dns_config))]


def patch_for(pod: Mapping[str, Any], decision: Decision) -> list[dict[str, Any]]:
    """The RFC 6902 operations that turn the pod as sent into `mutated_pod(pod, decision)`: none unless INJECT.

    The operations share `decision.dns_config` (they are serialised, never modified)."""
    if decision.outcome is not Outcome.INJECT or decision.dns_config is None:
        return []
    operations = [_annotate(pod, INJECTED_ANNOTATION, _ANNOTATION_POINTER, marker(decision.dns_config))]
    if not isinstance(pod.get("spec"), dict):
        operations.append(_add("/spec", {"dnsPolicy": "None", "dnsConfig": decision.dns_config}))
    else:
        operations.append(_add("/spec/dnsPolicy", "None"))
        operations.append(_add("/spec/dnsConfig", decision.dns_config))
    return operations
