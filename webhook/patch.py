"""The JSON patch for a decision, computed from the object as sent and the mutated copy.

A patch that does not apply makes kube-apiserver reject the pod even with failurePolicy Ignore, so it is never
written by hand: jsonpatch diffs the two documents, and `make_patch` checks that the result applies.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch

from webhook.policy import INJECTED_ANNOTATION, Decision, Outcome, marker


class PatchError(RuntimeError):
    """The generated patch did not reproduce the mutated object (a bug; the pod is then left unchanged)."""


# The only places a decision writes. Everything else in the pod is left as sent, so the patch is computed over
# just these (diffing and copying a whole pod cost ~80% of an admission's CPU).
_TOUCHED = (("metadata", "annotations"), ("spec", "dnsPolicy"), ("spec", "dnsConfig"))


def mutated_pod(pod: Mapping[str, Any], decision: Decision) -> dict:
    """A copy of the pod with the decision applied (unchanged unless the outcome is INJECT).

    Only the parts the decision writes are copied; the rest is shared with `pod`, which is never modified."""
    result = dict(pod)
    if decision.outcome is not Outcome.INJECT or decision.dns_config is None:
        return result
    metadata = result["metadata"] = dict(result["metadata"]) if isinstance(result.get("metadata"), dict) else {}
    annotations = metadata.get("annotations")
    annotations = metadata["annotations"] = dict(annotations) if isinstance(annotations, dict) else {}
    annotations[INJECTED_ANNOTATION] = marker(decision.dns_config)
    spec = result["spec"] = dict(result["spec"]) if isinstance(result.get("spec"), dict) else {}
    spec["dnsPolicy"] = "None"
    spec["dnsConfig"] = copy.deepcopy(decision.dns_config)
    return result


def _touched_view(pod: Mapping[str, Any]) -> dict:
    """The pod cut down to the paths a decision writes, with the same shape along those paths, so a patch between
    two views addresses the same places in the whole pods."""
    view: dict = {}
    for parent, key in _TOUCHED:
        if parent not in pod:
            continue
        section = pod[parent]
        if not isinstance(section, dict):
            view[parent] = section
            continue
        part = view.setdefault(parent, {})
        if key in section:
            part[key] = section[key]
    return view


def make_patch(original: Mapping[str, Any], mutated: Mapping[str, Any]) -> list[dict]:
    """RFC 6902 operations turning `original` into `mutated`, verified by applying them to `original`.

    `mutated` must differ from `original` only at the paths in `_TOUCHED` (as `mutated_pod` guarantees): the diff
    and the check run over those paths alone."""
    before, after = _touched_view(original), _touched_view(mutated)
    patch = jsonpatch.make_patch(before, after)
    if patch.apply(copy.deepcopy(before), in_place=True) != after:
        raise PatchError("generated JSON patch does not reproduce the mutated pod")
    return list(patch)


def patch_for(pod: Mapping[str, Any], decision: Decision) -> list[dict]:
    """The patch for a decision: empty unless the pod is to be injected."""
    if decision.outcome is not Outcome.INJECT:
        return []
    return make_patch(pod, mutated_pod(pod, decision))
