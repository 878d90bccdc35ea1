"""components/startup-taint: the cache removes the startup taint from its own node once ready, and its
ServiceAccount can do nothing else to any node.

The cache's real client (cache/starttaint.py) talks HTTP to tests/kubeapi.py, the in-test API server (no
kube-apiserver runs here), which enforces the component's own RBAC verbs and runs the component's own
ValidatingAdmissionPolicy on every node update: the CEL text of the rendered manifest, evaluated by cel-python
(tests/deploy/admission.py). The manifests themselves validate with kubernetes-validate 1.35
(test_render_and_validate.py renders every component). Without the taint (or the component), what keeps the window
small is the DaemonSet's scheduling: checked at the end."""
from __future__ import annotations

import asyncio
import copy

import jsonpatch
import pytest

from cache import config
from cache.starttaint import TAINT_KEY, ApiError, KubeAPI, removal_patch, remove_taint, remove_when_ready
from tests.deploy.admission import Policy
from tests.deploy.render import container, expanded_args, find, plain_env, pod_spec, rendered
from tests.kubeapi import FakeKubeAPI

CACHE_USER = "system:serviceaccount:localdns-system:localdns-cache"
NODE_CLAIM = "authentication.kubernetes.io/node-name"
OURS = {"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}
OTHER = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
NOT_READY = {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return rendered(("builtin-certs", "startup-taint"))


@pytest.fixture(scope="module")
def policy(objects) -> Policy:
    return Policy(find(objects, "ValidatingAdmissionPolicy", "localdns-cache-startup-taint"),
                  find(objects, "ValidatingAdmissionPolicyBinding", "localdns-cache-startup-taint"))


def node(name: str, *taints: dict, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {"podCIDR": "10.244.1.0/24", **({"taints": list(taints)} if taints else {}), **spec}}


def request(old: dict, new: dict, node_name: str | None = "node-1", user: str = CACHE_USER) -> dict:
    extra = {NODE_CLAIM: [node_name]} if node_name else {}
    return {"operation": "UPDATE", "name": new["metadata"]["name"], "namespace": None,
            "resource": {"group": "", "version": "v1", "resource": "nodes"}, "subResource": "",
            "userInfo": {"username": user, "extra": extra}, "object": new, "oldObject": old}


def patched(obj: dict, patch: list[dict]) -> dict:
    return jsonpatch.apply_patch(copy.deepcopy(obj), patch)


# ---- the policy, on its own ----

def test_the_policy_admits_exactly_the_cache_removing_its_taint_from_its_own_node(policy):
    old = node("node-1", NOT_READY, OURS, OTHER)
    new = patched(old, removal_patch(old))
    assert new["spec"]["taints"] == [NOT_READY, OTHER]
    assert policy.denial(request(old, new)) is None
    last = node("node-1", OURS)
    assert policy.denial(request(last, patched(last, removal_patch(last)))) is None  # the list goes away


@pytest.mark.parametrize("change", [
    "another node", "no node claim", "another taint", "our taint and another", "adds a taint", "a label",
    "an annotation", "unschedulable", "podCIDR", "providerID",
])
def test_the_policy_refuses_anything_else_by_the_cache(policy, change):
    old = node("node-1", OURS, OTHER)
    new = patched(old, removal_patch(old))
    claim = "node-1"
    if change == "another node":
        claim = "node-2"
    elif change == "no node claim":
        claim = None
    elif change == "another taint":
        new = patched(old, [{"op": "remove", "path": "/spec/taints/1"}])
    elif change == "our taint and another":
        new["spec"]["taints"] = []
    elif change == "adds a taint":
        new["spec"]["taints"].append(NOT_READY)
    elif change == "a label":
        new["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = ""
    elif change == "an annotation":
        new["metadata"]["annotations"] = {"x": "y"}
    elif change == "unschedulable":
        new["spec"]["unschedulable"] = True
    elif change == "podCIDR":
        new["spec"]["podCIDR"] = "10.244.9.0/24"
    elif change == "providerID":
        new["spec"]["providerID"] = "aws:///i-0"
    denied = policy.denial(request(old, new, claim))
    assert denied is not None and denied[1] == "Forbidden", denied


def test_the_policy_leaves_everyone_else_alone(policy):
    old = node("node-1", OURS, OTHER)
    anything = patched(old, [{"op": "replace", "path": "/spec/taints", "value": []}])
    assert policy.denial(request(old, anything, None, user="system:node:node-1")) is None
    assert policy.denial(request(old, anything, None, user="system:serviceaccount:kube-system:node-controller")) \
        is None


# ---- the cache's client against the API server, with the component's RBAC and policy enforced ----

@pytest.fixture
def api(tmp_path, policy):
    server = FakeKubeAPI(user=CACHE_USER, user_extra={NODE_CLAIM: ["node-1"]})
    server.admit(policy.validator())
    for verb in ("create", "update", "delete", "list"):  # the ClusterRole grants get and patch on nodes only
        server.forbid(verb, "nodes")
    with server:
        token = tmp_path / "token"
        token.write_text(server.token + "\n")
        yield server, KubeAPI(server.url, str(token), None)


def test_the_cache_removes_its_taint_and_keeps_the_others(api):
    server, client = api
    server.seed(node("node-1", NOT_READY, OURS, OTHER))
    assert remove_taint(client, "node-1") == "removed"
    assert server.get_object("nodes", "node-1")["spec"]["taints"] == [NOT_READY, OTHER]
    [patch] = server.requests_for("patch", "nodes")
    assert patch.content_type == "application/json-patch+json" and patch.status == 200
    assert remove_taint(client, "node-1") == "absent"  # idempotent: a restarted cache finds nothing to do
    assert len(server.requests_for("patch", "nodes")) == 1


def test_a_taint_change_between_read_and_patch_is_read_again(api):
    server, client = api
    server.seed(node("node-1", OURS))

    def another_writer(fake: FakeKubeAPI) -> None:  # e.g. the node lifecycle controller adds not-ready
        current = fake.get_object("nodes", "node-1")
        current["spec"]["taints"].append(NOT_READY)
        fake._store[("", "nodes", "", "node-1")] = current

    server.before_next("patch", "nodes", "node-1", another_writer)
    assert remove_taint(client, "node-1") == "removed"
    assert server.get_object("nodes", "node-1")["spec"]["taints"] == [NOT_READY]
    assert [r.status for r in server.requests_for("patch", "nodes")] == [422, 200]  # the JSON patch's test failed


def test_the_api_server_refuses_another_node_and_another_taint(api, policy):
    server, client = api
    server.seed(node("node-2", OURS))
    with pytest.raises(ApiError) as refused:
        remove_taint(client, "node-2")  # the token says node-1
    assert refused.value.status == 403 and "only change the node its pod runs on" in str(refused.value)
    assert server.get_object("nodes", "node-2")["spec"]["taints"] == [OURS]
    server.seed(node("node-1", OURS, OTHER))
    with pytest.raises(ApiError) as other:  # a client that tried to remove another taint, over the same API
        client.request("PATCH", "/api/v1/nodes/node-1", [{"op": "remove", "path": "/spec/taints/1"}],
                       "application/json-patch+json")
    assert other.value.status == 403 and "may only remove the taint" in str(other.value)
    with pytest.raises(ApiError) as delete:
        client.request("DELETE", "/api/v1/nodes/node-1")
    assert delete.value.status == 403  # RBAC: get and patch only
    assert server.get_object("nodes", "node-1")["spec"]["taints"] == [OURS, OTHER]


def test_the_cache_waits_until_ready_then_retries_until_the_taint_is_gone(api, monkeypatch):
    server, client = api
    server.seed(node("node-1", OURS))
    monkeypatch.setattr("cache.starttaint.READY_POLL", 0.01)
    monkeypatch.setattr("cache.starttaint.RETRY_FIRST", 0.01)
    server.forbid("patch", "nodes")  # an install whose RBAC is not there yet
    readiness = iter([False, False, True])
    patches_seen = []

    async def run() -> None:
        task = asyncio.ensure_future(remove_when_ready(lambda: next(readiness, True), client, "node-1"))
        while len(server.requests_for("patch", "nodes")) < 2:
            await asyncio.sleep(0.01)
        patches_seen.append(len(server.requests_for("patch", "nodes")))
        server._faults.forbidden = [f for f in server._faults.forbidden if f.verb != "patch"]
        await asyncio.wait_for(task, 10)

    asyncio.run(run())
    assert patches_seen and server.get_object("nodes", "node-1").get("spec", {}).get("taints") is None
    assert server.requests_for("patch", "nodes")[-1].status == 200


# ---- what the component changes in the install ----

def test_the_component_gives_the_cache_its_token_node_name_and_flag_and_nothing_more(objects):
    daemonset = find(objects, "DaemonSet", "localdns-cache", "localdns-system")
    spec = pod_spec(daemonset)
    assert spec["automountServiceAccountToken"] is True
    cache = container(daemonset, "cache")
    downward = {"status.hostIP": "192.0.2.7", "spec.nodeName": "node-1"}
    assert plain_env(cache, downward)["NODE_NAME"] == "node-1"
    args = expanded_args(cache, downward)
    assert "--remove-startup-taint" in args
    settings, _ = config.load([a for a in args if not a.startswith("--config")], environ={})
    assert settings.remove_startup_taint is True
    role = find(objects, "ClusterRole", "localdns-cache-startup-taint")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]
    binding = find(objects, "ClusterRoleBinding", "localdns-cache-startup-taint")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "localdns-cache",
                                    "namespace": "localdns-system"}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_without_the_component_the_cache_has_no_token(objects):
    default = rendered(("builtin-certs",))
    assert pod_spec(find(default, "DaemonSet", "localdns-cache"))["automountServiceAccountToken"] is False
    assert not [o for o in default if "startup-taint" in o["metadata"]["name"]]


def tolerates(tolerations: list[dict], taint: dict) -> bool:
    """Kubernetes' toleration rule (k8s.io/api core/v1 Toleration.ToleratesTaint)."""
    for toleration in tolerations:
        if toleration.get("effect") and toleration["effect"] != taint["effect"]:
            continue
        if toleration.get("key") and toleration["key"] != taint["key"]:
            continue
        if toleration.get("operator", "Equal") == "Exists":
            return True
        if toleration.get("value", "") == taint.get("value", ""):
            return True
    return False


def test_the_cache_starts_on_a_gated_node_and_ordinary_pods_wait(objects):
    """The gate only works because the cache itself is not gated: it tolerates every taint (the startup taint, and
    the not-ready/unreachable/unschedulable ones of a node coming up), and outranks ordinary pods
    (system-node-critical: on a full node the scheduler preempts others to place it). The webhook, like any
    workload, waits for the taint to go."""
    cache = pod_spec(find(objects, "DaemonSet", "localdns-cache"))
    webhook = pod_spec(find(objects, "Deployment", "localdns-webhook"))
    for taint in (OURS, NOT_READY, {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                  {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}):
        assert tolerates(cache["tolerations"], taint), taint
    assert not tolerates(webhook.get("tolerations", []), OURS)
    assert cache["priorityClassName"] == "system-node-critical"
