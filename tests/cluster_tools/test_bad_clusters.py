"""No cluster, no permission, wrong credentials: one clear line, the right exit code, partial results marked."""
from __future__ import annotations

import socket

import yaml

from tests.cluster_tools import workloads as w


def closed_port_kubeconfig(tmp_path) -> str:
    with socket.socket() as sock:  # bind then close: nothing listens there any more
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u"}}],
    }))
    return str(path)


def test_unreachable_cluster_is_one_clear_line(cli, tmp_path):
    kubeconfig = closed_port_kubeconfig(tmp_path)
    for command in ("audit", "rollout", "status"):
        result = cli(command, kubeconfig=kubeconfig)
        assert result.code == 2, (command, result)
        assert result.err.startswith("error: cannot reach the Kubernetes API server at http://127.0.0.1:")
        assert "Connection refused" in result.err or "refused" in result.err.lower()
        assert "Traceback" not in result.err and result.out == ""


def test_unknown_context_and_missing_kubeconfig(cli, api, tmp_path):
    result = cli("audit", "--context", "nope")
    assert result.code == 2 and "nope" in result.err and "Traceback" not in result.err
    result = cli("audit", kubeconfig=str(tmp_path / "absent"))
    assert result.code == 2 and result.err.startswith("error: ")


def test_rejected_credentials(cli, api, tmp_path):
    config = yaml.safe_load(api.kubeconfig_path.read_text())
    config["users"][0]["user"]["token"] = "wrong"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    result = cli("audit", kubeconfig=str(path))
    assert result.code == 2 and "401 Unauthorized" in result.err


def test_forbidden_namespace_gives_a_partial_result(api, cli):
    w.namespace(api, "open")
    w.deployment(api, "open", "web")
    w.namespace(api, "closed")
    w.deployment(api, "closed", "secret-web")
    api.forbid("list", "pods", namespace="closed")
    result = cli("audit", "-o", "json")
    data = result.json()
    assert result.code == 3
    assert data["partial"] is True
    assert any('cannot list resource "pods"' in gap and "closed" in gap for gap in data["gaps"])
    assert [g["name"] for g in data["needsRestart"]] == ["web"]  # what could be read is still reported
    table = cli("audit")
    assert table.code == 3 and "PARTIAL RESULT" in table.out and "Nothing needs a restart" not in table.out


def test_partial_plan_still_restarts_what_it_saw(api, cli, installed):
    w.namespace(api, "open")
    w.deployment(api, "open", "web")
    w.namespace(api, "closed")
    api.forbid("list", "pods", namespace="closed")
    with w.Controller(api, "Deployment", "open", "web"):
        result = cli("rollout", "--yes", "--timeout", "20", "--poll-interval", "0.02")
    assert result.code == 3
    assert "PARTIAL" in result.out and "ready" in result.out


def test_unreadable_replicasets_stop_the_owner_chain_and_say_so(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web")
    api.forbid("list", "replicasets", namespace="shop")
    result = cli("audit", "-o", "json")
    data = result.json()
    assert result.code == 3
    group = data["needsRestart"][0]
    assert (group["kind"], group["name"]) == ("ReplicaSet", "web-7d4b9c8f6d")
    assert group["action"] == "none"  # never guess a Deployment to restart
    assert any("replicasets" in gap for gap in data["gaps"])


def test_owner_deleted_while_listing(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web")
    # The ReplicaSet disappears between the pod list and the ReplicaSet list.
    api.before_next("list", "replicasets", None, lambda server: w.vanish(server, "replicasets", "shop",
                                                                          "web-7d4b9c8f6d"))
    data = cli("audit", "-o", "json").json()
    group = data["needsRestart"][0]
    assert group["kind"] == "ReplicaSet" and "no longer exists" in group["note"]
    assert group["action"] == "none"


def test_forbidden_patch_fails_that_workload_only(api, cli, installed):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "a")
    w.statefulset(api, "shop", "b")
    api.forbid("patch", "deployments", namespace="shop")
    with w.Controller(api, "StatefulSet", "shop", "b"):
        result = cli("rollout", "--yes", "-o", "json", "--timeout", "20", "--poll-interval", "0.02")
    restarts = {r["name"]: r for r in result.json()["restarts"]}
    assert restarts["a"]["result"] == "failed" and "forbidden" in restarts["a"]["message"]
    assert restarts["b"]["result"] == "ready"
    assert result.code == 1


def test_no_permission_to_list_namespaces_points_at_namespace_flag(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web")
    api.forbid("list", "namespaces")
    result = cli("audit")
    assert result.code == 2 and "-n/--namespace" in result.err
    # Naming the namespace works without listing namespaces (a get is enough).
    named = cli("audit", "-n", "shop", "-o", "json")
    assert named.code == 1 and named.json()["needsRestart"][0]["name"] == "web"


def test_forbidden_namespace_get_when_named_is_partial_but_still_audited(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web")
    api.forbid("get", "namespaces", name="shop")
    result = cli("audit", "-n", "shop", "-o", "json")
    assert result.code == 3
    assert result.json()["needsRestart"][0]["name"] == "web"
    assert any("assuming it is opted in" in gap for gap in result.json()["gaps"])


def test_api_server_that_does_not_answer_in_time(api, cli):
    w.namespace(api, "shop")
    api.delay(3)
    result = cli("audit", "--request-timeout", "0.3")
    api.delay(0)
    assert result.code == 2
    assert result.err.startswith("error: cannot reach the Kubernetes API server") and "timed out" in result.err
