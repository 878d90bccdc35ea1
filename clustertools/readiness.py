"""When a restarted workload is done: the restart patch and the rollout conditions of `kubectl rollout status`.

Pure: objects as the API server serves them in, a verdict out. `rollout` does the I/O around them.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from clustertools.output import plural

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def restart_patch(now: dt.datetime) -> dict[str, Any]:
    """The body `kubectl rollout restart` sends (strategic merge patch)."""
    stamp = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}


def cannot_restart(kind: str, obj: dict[str, Any]) -> str | None:
    """Why patching the template would not replace the pods, or None when a restart works."""
    spec = obj.get("spec", {})
    if kind == "Deployment" and spec.get("paused"):
        return "the Deployment is paused; `kubectl rollout resume` it first"
    if kind in ("StatefulSet", "DaemonSet") and (spec.get("updateStrategy") or {}).get("type") == "OnDelete":
        return (f"the {kind} uses updateStrategy OnDelete, so a restart would not replace its pods; "
                "delete them one at a time instead")
    return None


@dataclass(frozen=True)
class Progress:
    done: bool
    message: str
    failure: str | None = None


def progress(kind: str, obj: dict[str, Any], generation: int) -> Progress:
    """Has the controller finished rolling out `generation`? The conditions of `kubectl rollout status`."""
    spec, status = obj.get("spec", {}), obj.get("status", {})
    if int(status.get("observedGeneration") or 0) < generation:
        return Progress(False, "waiting for the controller to see the restart")
    if kind == "Deployment":
        return _deployment_progress(spec, status)
    if kind == "StatefulSet":
        return _statefulset_progress(spec, status)
    if kind == "DaemonSet":
        return _daemonset_progress(status)
    raise ValueError(f"no rollout for {kind}")


def _deployment_progress(spec: dict[str, Any], status: dict[str, Any]) -> Progress:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            why = condition.get("message", "")
            return Progress(False, "stuck", f"exceeded its progress deadline{': ' + why if why else ''}")
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    total = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < want:
        return Progress(False, f"{updated} of {want} new replicas updated")
    if total > updated:
        return Progress(False, f"{total - updated} old replicas pending termination")
    if available < want:
        return Progress(False, f"{available} of {want} updated replicas available")
    return Progress(True, f"{plural(want, 'replica')} updated and available")


def _statefulset_progress(spec: dict[str, Any], status: dict[str, Any]) -> Progress:
    want = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    rolling = (spec.get("updateStrategy") or {}).get("rollingUpdate") or {}
    partition = int(rolling.get("partition") or 0)
    if partition > 0:
        # Pods below the partition are never replaced; the rollout is done once those above it are.
        if updated < want - partition:
            return Progress(False, f"{updated} of {want - partition} pods updated (partition {partition})")
        return Progress(True, f"{plural(want - partition, 'pod')} above partition {partition} updated")
    if ready < want:
        return Progress(False, f"{ready} of {want} pods ready")
    if status.get("updateRevision") != status.get("currentRevision"):
        return Progress(False, f"{updated} of {want} pods updated")
    return Progress(True, f"{plural(want, 'pod')} updated and ready")


def _daemonset_progress(status: dict[str, Any]) -> Progress:
    desired = int(status.get("desiredNumberScheduled") or 0)
    updated = int(status.get("updatedNumberScheduled") or 0)
    available = int(status.get("numberAvailable") or 0)
    if updated < desired:
        return Progress(False, f"{updated} of {desired} nodes run the updated pod")
    if available < desired:
        return Progress(False, f"{available} of {desired} updated pods available")
    return Progress(True, f"updated and available on {plural(desired, 'node')}")
