"""The data and pure rules behind FakeKubeAPI: resource types, Status errors, selectors, merge patches.

Each follows the published kube-apiserver behaviour (see tests/kubeapi.py for what is and is not covered).
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for core
    version: str
    plural: str
    kind: str
    namespaced: bool
    has_status: bool = False  # has a /status subresource: the main resource ignores status changes
    has_generation: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


def _types(group: str, version: str, rows: list[tuple]) -> list[ResourceType]:
    return [ResourceType(group, version, *row) for row in rows]


RESOURCE_TYPES: list[ResourceType] = [
    *_types("", "v1", [
        ("pods", "Pod", True, True, True), ("services", "Service", True, True), ("secrets", "Secret", True),
        ("configmaps", "ConfigMap", True), ("serviceaccounts", "ServiceAccount", True), ("events", "Event", True),
        ("endpoints", "Endpoints", True), ("namespaces", "Namespace", False, True), ("nodes", "Node", False, True),
    ]),
    *_types("apps", "v1", [
        ("deployments", "Deployment", True, True, True), ("replicasets", "ReplicaSet", True, True, True),
        ("statefulsets", "StatefulSet", True, True, True), ("daemonsets", "DaemonSet", True, True, True),
        ("controllerrevisions", "ControllerRevision", True),
    ]),
    *_types("batch", "v1", [("jobs", "Job", True, True, True), ("cronjobs", "CronJob", True, True, True)]),
    *_types("admissionregistration.k8s.io", "v1", [
        ("mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False, False, True),
        ("validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False, False, True),
    ]),
    *_types("rbac.authorization.k8s.io", "v1", [
        ("roles", "Role", True), ("rolebindings", "RoleBinding", True),
        ("clusterroles", "ClusterRole", False), ("clusterrolebindings", "ClusterRoleBinding", False),
    ]),
    *_types("coordination.k8s.io", "v1", [("leases", "Lease", True)]),
    *_types("networking.k8s.io", "v1", [("networkpolicies", "NetworkPolicy", True, False, True)]),
]

# Field selectors the real server accepts beyond metadata.name and metadata.namespace.
EXTRA_FIELD_LABELS = {
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "status.phase", "status.podIP", "status.nominatedNodeName"},
    "secrets": {"type"},
    "nodes": {"spec.unschedulable"},
    "events": {"involvedObject.kind", "involvedObject.name", "involvedObject.namespace", "involvedObject.uid",
               "reason", "type"},
    "namespaces": {"status.phase"},
    "replicasets": {"status.replicas"},
    "jobs": {"status.successful"},
}

# Patch merge keys of the strategic merge patch for the list fields the project touches; other lists are replaced.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "env": "name", "volumeMounts": "mountPath", "imagePullSecrets": "name", "webhooks": "name",
    "conditions": "type", "ownerReferences": "uid", "hostAliases": "ip",
}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def without(obj: dict, *keys: str) -> dict:
    return {k: v for k, v in obj.items() if k not in keys}


def strip_type(obj: dict) -> dict:
    obj.pop("kind", None)
    obj.pop("apiVersion", None)
    return obj


def merge_patch(target: Any, patch: Any, strategic: bool, field_name: str = "") -> Any:
    """RFC 7386 merge patch; with `strategic`, lists under a known merge key are merged item by item."""
    if isinstance(patch, list) and strategic and field_name in MERGE_KEYS and isinstance(target, list):
        key = MERGE_KEYS[field_name]
        merged = [copy.deepcopy(item) for item in target]
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                return copy.deepcopy(patch)
            index = next((i for i, old in enumerate(merged) if isinstance(old, dict) and old.get(key) == item[key]),
                         None)
            if item.get("$patch") == "delete":
                if index is not None:
                    merged.pop(index)
            elif index is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[index] = merge_patch(merged[index], item, strategic)
        return merged
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value, strategic, name)
    return result


_REQUIREMENT = re.compile(r"\s*(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [p for p in [*parts, current] if p.strip()]


def parse_label_selector(selector: str) -> list[Callable[[dict], bool]]:
    tests: list[Callable[[dict], bool]] = []
    for requirement in split_selector(selector):
        match = _REQUIREMENT.match(requirement)
        if not match or (match.group(1) and (match.group(3) or match.group(5))):
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {requirement.strip()!r}")
        negate, key, op, value, set_op, values = match.groups()
        if op:
            tests.append(lambda labels, k=key, v=value, eq=op != "!=": (labels.get(k) == v) == eq)
        elif set_op:
            choices = {c.strip() for c in values.split(",") if c.strip()}
            tests.append(lambda labels, k=key, c=choices, inside=set_op == "in":
                         (labels.get(k) in c) if inside else (labels.get(k) not in c))
        else:
            tests.append(lambda labels, k=key, absent=bool(negate): (k in labels) != absent)
    return tests


def parse_field_selector(selector: str, plural: str) -> list[tuple[str, str, bool]]:
    allowed = {"metadata.name", "metadata.namespace", *EXTRA_FIELD_LABELS.get(plural, ())}
    requirements = []
    for requirement in split_selector(selector):
        match = re.fullmatch(r"\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*", requirement)
        if not match:
            raise ApiError(400, "BadRequest", f"invalid selector: {requirement!r}")
        path, op, value = match.groups()
        if path not in allowed:
            raise ApiError(400, "BadRequest", f'field label not supported: {path}')
        requirements.append((path, value, op != "!="))
    return requirements


def field_value(obj: dict, path: str) -> str:
    """A field as the server's field selectors see it: missing fields are the empty string."""
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return ""
        value = value[part]
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)
