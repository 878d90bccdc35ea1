"""`status`, node by node: each cache pod's state as the kubelet reports it, and the fail-open fallback's gauges read
from each running cache through FakeKubeAPI's pods proxy, served by the cache's own metrics renderer
(tests/cluster_tools/caches.py). Permissions, pods that do not answer and pods that never run are all here."""
from __future__ import annotations

import re
import time

from tests.cluster_tools import workloads as w
from tests.cluster_tools.installation import NS, install


def checks(result) -> dict[str, dict]:
    return {c["check"]: c for c in result.json()["checks"]}


def nodes(result) -> dict[str, dict]:
    return {n["node"]: n for n in result.json()["nodes"]}


def node_lines(text: str) -> dict[str, list[str]]:
    """The table's node section: node -> [mark, node, injected pods, cache, fallback]."""
    section = text.split("\n\n")[1]
    assert section.split("\n")[0].split() == ["NODE", "INJECTED", "PODS", "CACHE", "FALLBACK"], text
    return {cells[1]: cells for cells in (re.split(r"\s{2,}", line.strip()) for line in section.split("\n")[1:])}


def arm(fleet, *names: str, endpoints: int = 2, ago: float = 150) -> None:
    """Arm the fallback on these nodes (all by default), refreshed `ago` seconds ago: minutes are shown from 2 min
    on, so "2 min ago" holds however slow this machine runs the test."""
    for name in names or [f"node-{i + 1}" for i in range(len(fleet.endpoints))]:
        fleet.endpoint(name).fallback(armed=1, endpoints=endpoints, refreshed=time.time() - ago)


def proxied(api) -> list[str]:
    """The pods proxy requests `status` made, as NAME:PORT."""
    return sorted(r.name for r in api.requests if r.subresource == "proxy")


def test_armed_everywhere_is_one_summary_line_and_every_node_in_json(api, cli, caches):
    fleet = caches(3)
    install(api, caches=fleet, nodes=3, cache_ready=("node-1", "node-2", "node-3"))
    arm(fleet)
    result = cli("status", "-o", "json")
    assert result.code == 0, result.out
    assert checks(result)["fallback"] == {"check": "fallback", "state": "ok", "detail": "armed on 3 of 3 nodes"}
    rows = nodes(result)
    assert sorted(rows) == ["node-1", "node-2", "node-3"]
    assert rows["node-1"] | {"refreshedSecondsAgo": None, "lastRefresh": None} == {
        "node": "node-1", "pod": "localdns-cache-node-1", "cache": "ready", "reason": "", "injectedPods": 0,
        "fallback": "armed", "endpoints": 2, "lastRefresh": None, "refreshedSecondsAgo": None,
        "fallbackState": "ok", "state": "ok", "detail": "armed: 2 endpoints, refreshed 2 min ago"}
    assert 150 <= rows["node-1"]["refreshedSecondsAgo"] < 210
    # Each cache asked once, at the DaemonSet's --metrics port, through the API server.
    assert proxied(api) == [f"localdns-cache-node-{i}:{fleet.port}" for i in (1, 2, 3)]
    assert [e.scrapes for e in fleet.endpoints] == [1, 1, 1]

    text = cli("status")
    assert "fallback               armed on 3 of 3 nodes" in text.out
    assert "NODE" not in text.out  # no node has a problem: no node table
    assert yaml_nodes(cli("status", "-o", "yaml")) == ["node-1", "node-2", "node-3"]


def yaml_nodes(result) -> list[str]:
    return [n["node"] for n in result.yaml()["nodes"]]


def test_fallback_without_endpoints_cannot_act_and_is_a_problem(api, cli, caches):
    fleet = caches(2)
    install(api, caches=fleet)
    arm(fleet, "node-1")
    fleet.endpoint("node-2").fallback(armed=0, endpoints=0, refreshed=0)
    result = cli("status", "-o", "json")
    assert result.code == 1
    assert checks(result)["fallback"]["state"] == "fail"
    assert checks(result)["fallback"]["detail"] == "armed on 1 of 2 nodes; not armed on node-2"
    row = nodes(result)["node-2"]
    assert (row["fallback"], row["endpoints"], row["state"]) == ("not armed", 0, "fail")
    assert row["detail"] == ("not armed: no kube-dns endpoint known (is the headless Service localdns-kube-dns in "
                             "kube-system?): the fallback cannot act")
    lines = node_lines(cli("status").out)
    assert list(lines) == ["node-2"]  # only nodes with a problem get a line
    assert lines["node-2"] == ["FAIL", "node-2", "0", "ready", row["detail"]]


def test_endpoints_without_their_rules_are_not_armed_either(api, cli, caches):
    fleet = caches(1)
    install(api, caches=fleet, nodes=1, cache_ready=("node-1",))
    fleet.endpoint("node-1").fallback(armed=0, endpoints=2, refreshed=time.time())
    row = nodes(cli("status", "-o", "json"))["node-1"]
    assert row["detail"] == "not armed: its rules are not in place (see the cache's setup errors): the fallback " \
                            "cannot act"


def test_fallback_off_is_fine_while_the_cache_is_ready_and_a_warning_where_it_is_not(api, cli, caches):
    fleet = caches(2)
    install(api, caches=fleet, cache_ready=("node-1",))  # node-2: running, not Ready; both --fallback-endpoints none
    for endpoint in fleet.endpoints:
        endpoint.fallback(armed=None)
    w.namespace(api, "shop")
    w.pod(api, "shop", "stranded", injected=True, node="node-2")
    result = cli("status", "-o", "json")
    rows = nodes(result)
    assert (rows["node-1"]["fallback"], rows["node-1"]["fallbackState"], rows["node-1"]["endpoints"]) == \
        ("off", "ok", None)
    assert rows["node-1"]["detail"] == "off (--fallback-endpoints none)"
    assert (rows["node-2"]["fallback"], rows["node-2"]["fallbackState"]) == ("off", "warn")
    assert rows["node-2"]["detail"] == ("off (--fallback-endpoints none): while this cache is not ready, pods here "
                                        "have no DNS")
    fallback = checks(result)["fallback"]
    assert fallback == {"check": "fallback", "state": "warn",
                        "detail": "armed on 0 of 2 nodes; off on 2 nodes (--fallback-endpoints none); warnings on "
                                  "node-2"}
    assert "1 injected pod on nodes without a ready cache (node-2): their DNS fails" in \
        checks(result)["cache"]["detail"]


def test_a_refresh_older_than_three_sync_intervals_is_a_warning(api, cli, caches):
    fleet = caches(2)
    install(api, caches=fleet)
    arm(fleet, "node-1", ago=130)  # under 3 x 60 s
    arm(fleet, "node-2", ago=7 * 60)
    result = cli("status", "-o", "json")
    assert result.code == 0  # a warning
    rows = nodes(result)
    assert (rows["node-1"]["fallbackState"], rows["node-1"]["detail"]) == ("ok", "armed: 2 endpoints, refreshed "
                                                                          "2 min ago")
    assert rows["node-2"]["fallbackState"] == "warn"
    assert rows["node-2"]["detail"] == (
        "armed: 2 endpoints, last refreshed 7 min ago (more than 3 sync intervals of 60 s): kube-dns has not "
        "answered for localdns-kube-dns since, and the endpoints may be gone")
    assert checks(result)["fallback"]["detail"] == "armed on 2 of 2 nodes; warnings on node-2"


def test_the_sync_interval_is_the_daemonsets_flag(api, cli, caches):
    fleet = caches(1)
    install(api, caches=fleet, nodes=1, cache_ready=("node-1",), cache_args=("--sync-interval", "300"))
    arm(fleet, ago=7 * 60)  # 3 x 300 s is 15 min
    assert nodes(cli("status", "-o", "json"))["node-1"]["fallbackState"] == "ok"


def test_a_cache_running_but_not_ready_still_reports_its_fallback(api, cli, caches):
    fleet = caches(2)
    install(api, caches=fleet, cache_ready=("node-1",))
    arm(fleet)
    w.namespace(api, "shop")
    w.pod(api, "shop", "on-two", injected=True, node="node-2")
    result = cli("status", "-o", "json")
    assert result.code == 1  # the cache is not ready there
    row = nodes(result)["node-2"]
    assert (row["cache"], row["fallback"], row["fallbackState"], row["state"], row["injectedPods"]) == \
        ("not ready", "armed", "ok", "fail", 1)
    assert row["reason"] == "running, not Ready: readiness probe failing (restarted 1 time, last exit 0 Completed)"
    assert "1 injected pod on nodes without a ready cache (node-2): they resolve through the fallback, by kube-dns" \
        in checks(result)["cache"]["detail"]
    assert checks(result)["fallback"]["detail"] == "armed on 2 of 2 nodes"
    assert node_lines(cli("status").out) == {"node-2": [
        "FAIL", "node-2", "1", f"not ready: {row['reason']}", "armed: 2 endpoints, refreshed 2 min ago"]}


def test_a_crash_looping_cache_cannot_report_and_is_not_asked(api, cli, caches):
    fleet = caches(2)
    install(api, caches=fleet, cache_pods={"node-1": "ready", "node-2": "crashloop"})
    arm(fleet)
    result = cli("status", "-o", "json")
    row = nodes(result)["node-2"]
    assert (row["cache"], row["fallback"], row["fallbackState"], row["endpoints"]) == \
        ("not ready", "unknown", "unknown", None)
    assert row["reason"] == "CrashLoopBackOff (restarted 7 times, last exit 137 OOMKilled)"
    assert row["detail"] == "unknown: no cache running to report (the rules of its last run stay in the kernel)"
    assert fleet.endpoint("node-2").scrapes == 0 and proxied(api) == [f"localdns-cache-node-1:{fleet.port}"]
    assert checks(result)["fallback"] == {"check": "fallback", "state": "unknown",
                                          "detail": "armed on 1 of 2 nodes; unknown on node-2"}


def test_pods_that_never_ran_a_cache_say_why(api, cli, caches):
    fleet = caches(3)
    install(api, caches=fleet, cache_pods={"node-1": "image", "node-2": "unscheduled", "node-3": "creating"})
    result = cli("status", "-o", "json")
    rows = nodes(result)
    assert rows["node-1"]["reason"] == 'ImagePullBackOff: Back-off pulling image "registry.example/localdns:0.2.0"'
    assert rows["node-2"]["reason"] == ("not scheduled: Unschedulable: 0/3 nodes are available: 1 Insufficient "
                                        "memory, 2 node(s) didn't match Pod's node affinity/selector.")
    assert rows["node-2"]["pod"] == "localdns-cache-node-2"  # found by the DaemonSet's node affinity
    assert rows["node-3"]["reason"] == "ContainerCreating"
    assert {r["detail"] for r in rows.values()} == {
        "unknown: no cache running to report (the rules of an earlier cache, if one ran, stay in the kernel)"}
    assert proxied(api) == []


def test_a_node_with_injected_pods_and_no_cache_pod(api, cli, caches):
    fleet = caches(3)
    install(api, caches=fleet, cache_pods={"node-1": "ready", "node-2": "ready", "node-3": "none"})
    arm(fleet)
    w.namespace(api, "shop")
    w.pod(api, "shop", "alone", injected=True, node="node-3")
    result = cli("status", "-o", "json")
    row = nodes(result)["node-3"]
    assert (row["pod"], row["cache"], row["reason"], row["fallback"], row["injectedPods"], row["state"]) == \
        (None, "missing", "no cache pod on this node", "unknown", 1, "fail")
    assert "1 injected pod on nodes without a ready cache (node-3): their DNS works only if the fallback's rules " \
           "are there" in checks(result)["cache"]["detail"]
    assert checks(result)["fallback"]["detail"] == "armed on 2 of 3 nodes; unknown on node-3"


def test_proxy_forbidden_is_a_gap_not_a_failure(api, cli, caches):
    fleet = caches(2)
    install(api, caches=fleet)
    arm(fleet)
    api.forbid("get", "pods/proxy", namespace=NS)
    result = cli("status", "-o", "json")
    assert result.code == 3, result.out
    data = result.json()
    assert data["partial"] is True and data["healthy"] is False
    assert data["gaps"] == ["cannot read the caches' metrics, so not whether each node's fallback is armed: grant "
                            "'get' on pods/proxy in namespace localdns-system"]
    assert checks(result)["fallback"]["state"] == "unknown"
    assert {n["detail"] for n in data["nodes"]} == {
        "unknown: not allowed to read its metrics (get on pods/proxy)"}
    assert checks(result)["cache"]["state"] == "ok"  # listing the pods is another permission
    text = cli("status").out
    assert "PARTIAL: some objects could not be read:" in text and "grant 'get' on pods/proxy" in text
    assert "localdns is unknown (partial)" in text


def test_a_cache_whose_metrics_do_not_answer_is_unknown(api, cli, caches):
    fleet = caches(2)
    install(api, caches=fleet)
    arm(fleet)
    fleet.silence("node-2")
    result = cli("status", "-o", "json")
    assert result.code == 0  # nothing known to be wrong, nothing unreadable by permission
    row = nodes(result)["node-2"]
    assert (row["cache"], row["fallback"], row["state"]) == ("ready", "unknown", "unknown")
    assert row["detail"] == (f"unknown: the API server could not reach its metrics on port {fleet.port} (error trying "
                             f"to reach service: dial tcp {fleet.ip('node-2')}:{fleet.port}: connect: connection "
                             "refused)")
    assert node_lines(cli("status").out) == {"node-2": ["--", "node-2", "0", "ready", row["detail"]]}


def test_metrics_off_means_the_fallback_cannot_be_read(api, cli, caches):
    fleet = caches(1)
    install(api, caches=fleet, nodes=1, cache_ready=("node-1",), cache_args=("--metrics=off",))
    row = nodes(cli("status", "-o", "json"))["node-1"]
    assert row["detail"] == "unknown: the caches export no metrics (--metrics off)"
    assert proxied(api) == []


def test_during_an_upgrade_the_ready_pod_of_a_node_speaks_for_it(api, cli, caches):
    from tests.cluster_tools.caches import cache_pod

    fleet = caches(1)
    install(api, caches=fleet, nodes=1, cache_ready=("node-1",))
    cache_pod(api, fleet, "node-1", "creating", name="localdns-cache-surge")  # the surge pod beside the old one
    arm(fleet)
    result = cli("status", "-o", "json")
    assert [(n["pod"], n["cache"], n["fallback"]) for n in result.json()["nodes"]] == [
        ("localdns-cache-node-1", "ready", "armed")]
    assert result.code == 0
