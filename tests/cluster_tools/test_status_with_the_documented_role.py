"""`status` run by an admin with the narrow Role that docs/cluster-tools.md gives for localdns-system, under RBAC as
the API server evaluates it (tests/deploy/rbac.py's rule match, on the resource as RBAC names it: `pods/proxy` for
the proxy): the Role is enough for a complete result, and without `pods/proxy` the result is partial, not wrong."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import yaml

from tests.cluster_tools import workloads as w
from tests.cluster_tools.installation import NS, install
from tests.deploy.rbac import rbac_allows
from tests.kubeapi import ApiError, FakeKubeAPI

DOC = Path(__file__).resolve().parents[2] / "docs" / "cluster-tools.md"
# The reads outside localdns-system that the doc lists beside the Role (a ClusterRole).
ELSEWHERE = [{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
              "verbs": ["get"]},
             {"apiGroups": [""], "resources": ["namespaces", "pods"], "verbs": ["list"]},
             {"apiGroups": ["apps", "batch"], "resources": ["replicasets", "jobs"], "verbs": ["list"]},
             {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list"]}]


def documented_role() -> dict:
    text = DOC.read_text()
    block = re.search(r"a narrow role\s+for `status`.*?```yaml\n(.*?)```", text, re.S)
    assert block, "docs/cluster-tools.md has no Role for status"
    role = yaml.safe_load(block.group(1))
    assert (role["kind"], role["metadata"]["namespace"]) == ("Role", NS)
    return role


class Admin(FakeKubeAPI):
    """The API server as an admin bound to `role` in localdns-system and to ELSEWHERE cluster-wide."""

    def __init__(self, role_rules: list[dict]) -> None:
        super().__init__(user="jane@example.com")
        self.role_rules = role_rules

    def _answer(self, verb: str, target: Any, query: dict, content_type: str | None, body: Any) -> tuple[int, Any]:
        rules = ELSEWHERE + (self.role_rules if target.namespace == NS else [])
        if not rbac_allows(rules, verb, target.type.group, target.rbac_resource, target.name):
            raise ApiError(403, "Forbidden", f'User "{self.user}" cannot {verb} resource "{target.rbac_resource}" '
                           f'in API group "{target.type.group}" in the namespace "{target.namespace}"')
        return super()._answer(verb, target, query, content_type, body)


def run_as_admin(cli, caches, role_rules: list[dict]):
    fleet = caches(2)
    with Admin(role_rules) as admin:
        install(admin, caches=fleet)
        for endpoint in fleet.endpoints:
            endpoint.fallback(armed=1, endpoints=2, refreshed=time.time())
        w.namespace(admin, "shop")
        w.deployment(admin, "shop", "web", injected=True)
        return cli("status", "-o", "json", kubeconfig=str(admin.kubeconfig_path))


def test_the_documented_role_reads_every_nodes_fallback(cli, caches):
    result = run_as_admin(cli, caches, documented_role()["rules"])
    data = result.json()
    assert data["gaps"] == [] and result.code == 0, result.out
    assert {n["node"]: n["fallback"] for n in data["nodes"]} == {"node-1": "armed", "node-2": "armed"}


def test_without_pods_proxy_the_result_is_partial(cli, caches):
    rules = [dict(rule, resources=[r for r in rule["resources"] if r != "pods/proxy"])
             for rule in documented_role()["rules"]]
    result = run_as_admin(cli, caches, rules)
    assert result.code == 3
    assert result.json()["gaps"] == ["cannot read the caches' metrics, so not whether each node's fallback is "
                                     "armed: grant 'get' on pods/proxy in namespace localdns-system"]
    assert {n["fallback"] for n in result.json()["nodes"]} == {"unknown"}
