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


def mutated_pod(pod: Mapping[str, Any], decision: Decision) -> dict:
    """A deep copy of the pod with the decision applied (unchanged unless the outcome is INJECT)."""
    result = copy.deepcopy(dict(pod))
    if decision.outcome is not Outcome.INJECT or decision.dns_config is None:
        return result
    metadata = result.get("metadata")
    if not isinstance(metadata, dict):
        metadata = result["metadata"] = {}
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        annotations = metadata["annotations"] = {}
    annotations[INJECTED_ANNOTATION] = marker(decision.dns_config)
    spec = result.setdefault("spec", {})
    spec["dnsPolicy"] = "None"
    spec["dnsConfig"] = copy.deepcopy(decision.dns_config)
    return result


def make_patch(original: Mapping[str, Any], mutated: Mapping[str, Any]) -> list[dict]:
    """RFC 6902 operations turning `original` into `mutated`, verified by applying them to `original`."""
    patch = jsonpatch.make_patch(original, mutated)
    if patch.apply(copy.deepcopy(dict(original))) != mutated:
        raise PatchError("generated JSON patch does not reproduce the mutated pod")
    return list(patch)


def patch_for(pod: Mapping[str, Any], decision: Decision) -> list[dict]:
    """The patch for a decision: empty unless the pod is to be injected."""
    if decision.outcome is not Outcome.INJECT:
        return []
    return make_patch(pod, mutated_pod(pod, decision))
