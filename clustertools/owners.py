"""What recreates a pod: its owner chain (Pod -> ReplicaSet -> Deployment, Pod -> Job -> CronJob, ...), followed
through `ownerReferences` with `controller: true` as the API server returns them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from clustertools.scope import Gaps
from localdns.kube import JSON, Client, Forbidden, NotFound


@dataclass(frozen=True)
class Owner:
    """What recreates a pod: the object a restart goes through."""

    kind: str  # Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet, Pod (bare), or another controller
    name: str
    namespace: str
    note: str = ""  # why the chain stopped early (owner deleted, not readable)

    @property
    def ref(self) -> str:
        return f"{self.kind.lower()}/{self.name}"

    def as_dict(self) -> dict[str, str]:
        out = {"kind": self.kind, "namespace": self.namespace, "name": self.name}
        return out | ({"note": self.note} if self.note else {})


def controller_of(obj: JSON) -> JSON | None:
    """The ownerReference with controller: true (at most one per object, the API server enforces it)."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


class OwnerResolver:
    """Follows Pod -> ReplicaSet -> Deployment and Pod -> Job -> CronJob, listing each namespace's ReplicaSets and
    Jobs once (by uid, as ownerReferences name them) instead of one GET per pod."""

    # The intermediate kinds, and the kind that may own each in turn.
    HOPS: ClassVar[dict[str, str]] = {"ReplicaSet": "Deployment", "Job": "CronJob"}

    def __init__(self, client: Client, gaps: Gaps) -> None:
        self.client = client
        self.gaps = gaps
        self._by_uid: dict[tuple[str, str], dict[str, JSON] | None] = {}

    def owner_of(self, pod: JSON) -> Owner:
        meta = pod["metadata"]
        namespace = meta.get("namespace", "")
        ref = controller_of(pod)
        if ref is None:
            return Owner("Pod", meta["name"], namespace)
        kind, name = ref.get("kind", ""), ref.get("name", "")
        if kind not in self.HOPS:
            return Owner(kind, name, namespace)
        middle, note = self._find(namespace, kind, ref.get("uid", ""))
        if middle is None:
            return Owner(kind, name, namespace, note)
        top = controller_of(middle)
        if top is not None:
            return Owner(top.get("kind", ""), top.get("name", ""), namespace)
        return Owner(kind, name, namespace)

    def _find(self, namespace: str, kind: str, uid: str) -> tuple[JSON | None, str]:
        key = (namespace, kind)
        if key not in self._by_uid:
            try:
                self._by_uid[key] = {o["metadata"].get("uid", ""): o for o in self.client.list(kind, namespace)}
            except (Forbidden, NotFound) as exc:
                self.gaps.add(f"{exc} (owners of its pods shown as the {kind}, not followed further)")
                self._by_uid[key] = None
        known = self._by_uid[key]
        if known is None:
            return None, f"{kind} not readable"
        if uid in known:
            return known[uid], ""
        return None, f"{kind} no longer exists (deleted while listing; its pods are going away)"
