"""RBAC as the API server evaluates it (rbac/v1): the rules the rendered manifests bind to a ServiceAccount, and an
in-test API server that answers 403 Forbidden to anything they do not allow, so that localdns's programs are run
against exactly what deploy/ grants them."""
from __future__ import annotations

from typing import Any

from tests.deploy.render import find, find_all
from tests.kubeapi import ApiError, FakeKubeAPI


def rbac_allows(rules: list[dict], verb: str, group: str, resource: str, name: str | None) -> bool:
    """Kubernetes' RBAC rule match (rbac/v1 evaluation helpers): verb, API group, resource, and resourceNames,
    which never match a create, a list or a watch (no single name is part of those authorization requests)."""
    for rule in rules:
        if not (verb in rule["verbs"] or "*" in rule["verbs"]):
            continue
        if not (group in rule["apiGroups"] or "*" in rule["apiGroups"]):
            continue
        if not (resource in rule["resources"] or "*" in rule["resources"]):
            continue
        names = rule.get("resourceNames") or []
        if names and (verb in ("create", "list", "watch") or name not in names):
            continue
        return True
    return False


def granted_rules(objects: list[dict], namespace: str, account: str) -> tuple[list[dict], dict[str, list[dict]]]:
    """(cluster-wide rules, namespace -> rules) that the rendered bindings give ServiceAccount namespace/account."""
    subject = {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    cluster: list[dict] = []
    namespaced: dict[str, list[dict]] = {}
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        for binding in find_all(objects, kind):
            if subject not in binding.get("subjects") or []:
                continue
            ref = binding["roleRef"]
            where = binding["metadata"].get("namespace") if kind == "RoleBinding" else None
            role = find(objects, ref["kind"], ref["name"], where if ref["kind"] == "Role" else None)
            if where is None:
                cluster += role["rules"]
            else:
                namespaced.setdefault(where, []).extend(role["rules"])
    return cluster, namespaced


class RBACEnforcingAPI(FakeKubeAPI):
    """FakeKubeAPI as ServiceAccount namespace/account, with the rules `objects` bind to it and no others."""

    def __init__(self, objects: list[dict], namespace: str, account: str) -> None:
        super().__init__(user=f"system:serviceaccount:{namespace}:{account}")
        self.cluster_rules, self.namespace_rules = granted_rules(objects, namespace, account)
        self.denied: list[tuple[str, str, str | None, str | None]] = []

    def _answer(self, verb: str, target: Any, query: dict, content_type: str | None, body: Any) -> tuple[int, Any]:
        name = target.name
        if verb == "create" and isinstance(body, dict):
            name = (body.get("metadata") or {}).get("name")
        rules = self.cluster_rules + self.namespace_rules.get(target.namespace, [])
        resource = target.rbac_resource  # `pods/proxy` for the proxy, as RBAC names a subresource
        if not rbac_allows(rules, verb, target.type.group, resource, target.name):
            self.denied.append((verb, resource, target.namespace, name))
            raise ApiError(403, "Forbidden", f"{self.user} cannot {verb} {resource} {name}")
        return super()._answer(verb, target, query, content_type, body)
