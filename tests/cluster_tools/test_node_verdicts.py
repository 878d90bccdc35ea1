"""The per-node judge of `status`, without a cluster: a node's facts (its cache pod's state, the fallback's gauges)
in, its row and the summary checks out; the kubelet's pod states read into a reason; and the metrics port and sync
interval found the way the cache itself finds them (flags, then its --config file from the ConfigMap, then defaults)."""
from __future__ import annotations

import datetime as dt

import pytest

from cache.limits import Limits
from cache.metrics import Metrics
from cache.stats import Stats
from cache.store import Store
from clustertools.cachepods import CacheSettings, PodState, cache_settings, config_source, pick, pod_state
from clustertools.nodes import (
    NEVER_RAN,
    NO_CACHE_RUNNING,
    Fallback,
    NodeFacts,
    check_cache,
    check_fallback,
    judge,
    judge_node,
    parse_fallback,
)
from tests.cluster_tools.caches import container_status

NOW = 1_800_000_000.0
READY = PodState(True, True, "", started=NOW - 3600, ran_before=True)
RUNNING_NOT_READY = PodState(False, True, "running, not Ready: readiness probe failing", NOW - 3600, True)
CRASHING = PodState(False, False, "CrashLoopBackOff (restarted 7 times)", None, True)
NEVER_STARTED = PodState(False, False, "ContainerCreating", None, False)


def armed(endpoints: int = 2, ago: float = 30.0) -> Fallback:
    return Fallback(1, endpoints, NOW - ago)


# (why, facts, (cache, fallback, fallbackState, state), detail)
CASES = [
    ("armed and fresh", NodeFacts("n", "p", READY, fallback=armed()),
     ("ready", "armed", "ok", "ok"), "armed: 2 endpoints, refreshed 30 s ago"),
    ("armed, one endpoint, refreshed just at the limit", NodeFacts("n", "p", READY, fallback=armed(1, 180)),
     ("ready", "armed", "ok", "ok"), "armed: 1 endpoint, refreshed 3 min ago"),
    ("armed but stale: kube-dns stopped answering the name", NodeFacts("n", "p", READY, fallback=armed(2, 181)),
     ("ready", "armed", "warn", "warn"),
     "armed: 2 endpoints, last refreshed 3 min ago (more than 3 sync intervals of 60 s): kube-dns has not answered "
     "for localdns-kube-dns since, and the endpoints may be gone"),
    ("a node clock ahead of ours", NodeFacts("n", "p", READY, fallback=armed(2, -40)),
     ("ready", "armed", "ok", "ok"), "armed: 2 endpoints, refreshed 0 s ago"),
    ("armed from an earlier run, this cache just started",
     NodeFacts("n", "p", PodState(True, True, "", NOW - 20, True), fallback=Fallback(1, 2, 0)),
     ("ready", "armed", "ok", "ok"), "armed: 2 endpoints kept from an earlier run, not refreshed by this cache yet"),
    ("armed from an earlier run, never refreshed in an hour", NodeFacts("n", "p", READY, fallback=Fallback(1, 2, 0)),
     ("ready", "armed", "warn", "warn"),
     "armed: 2 endpoints kept from an earlier run, never refreshed by this cache in 60 min: kube-dns does not answer "
     "for localdns-kube-dns, and the endpoints may be gone"),
    ("not armed: no endpoint known", NodeFacts("n", "p", READY, fallback=Fallback(0, 0, 0)),
     ("ready", "not armed", "fail", "fail"),
     "not armed: no kube-dns endpoint known (is the headless Service localdns-kube-dns in kube-system?): the "
     "fallback cannot act"),
    ("not armed: endpoints, but the rules are not in place", NodeFacts("n", "p", READY, fallback=Fallback(0, 3, NOW)),
     ("ready", "not armed", "fail", "fail"),
     "not armed: its rules are not in place (see the cache's setup errors): the fallback cannot act"),
    ("off, cache ready", NodeFacts("n", "p", READY, fallback=Fallback(None)),
     ("ready", "off", "ok", "ok"), "off (--fallback-endpoints none)"),
    ("off, cache not ready: the pods there have no DNS", NodeFacts("n", "p", RUNNING_NOT_READY, 3, Fallback(None)),
     ("not ready", "off", "warn", "fail"),
     "off (--fallback-endpoints none): while this cache is not ready, pods here have no DNS"),
    ("cache not ready but running: the fallback reports", NodeFacts("n", "p", RUNNING_NOT_READY, 3, armed()),
     ("not ready", "armed", "ok", "fail"), "armed: 2 endpoints, refreshed 30 s ago"),
    ("crash loop: nothing runs to report", NodeFacts("n", "p", CRASHING, 3),
     ("not ready", "unknown", "unknown", "fail"), f"unknown: {NO_CACHE_RUNNING}"),
    ("a pod whose cache never ran", NodeFacts("n", "p", NEVER_STARTED),
     ("not ready", "unknown", "unknown", "fail"), f"unknown: {NEVER_RAN}"),
    ("no cache pod at all", NodeFacts("n", "", None, 2),
     ("missing", "unknown", "unknown", "fail"), f"unknown: {NEVER_RAN}"),
    ("running, but its metrics could not be read", NodeFacts("n", "p", READY, unread="no answer within 10 s"),
     ("ready", "unknown", "unknown", "unknown"), "unknown: no answer within 10 s"),
]


@pytest.mark.parametrize("why,facts,verdict,detail", CASES, ids=[c[0] for c in CASES])
def test_each_node_is_judged_by_its_cache_and_its_fallback(why, facts, verdict, detail):
    row = judge_node(facts, 60.0, NOW)
    assert (row["cache"], row["fallback"], row["fallbackState"], row["state"]) == verdict
    assert row["detail"] == detail
    assert row["injectedPods"] == facts.injected and row["pod"] == (facts.pod or None)


def test_the_row_carries_the_numbers_read():
    row = judge_node(NodeFacts("node-1", "p", READY, fallback=armed(3, 42.04)), 60.0, NOW)
    assert (row["endpoints"], row["refreshedSecondsAgo"]) == (3, 42.0)
    assert row["lastRefresh"] == dt.datetime.fromtimestamp(NOW - 42.04, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    unread = judge_node(NodeFacts("node-1", "p", CRASHING), 60.0, NOW)
    assert (unread["endpoints"], unread["lastRefresh"], unread["refreshedSecondsAgo"]) == (None, None, None)


def test_the_sync_interval_sets_when_a_refresh_is_stale():
    facts = NodeFacts("n", "p", READY, fallback=armed(2, 15 * 60))
    assert judge_node(facts, 60.0, NOW)["fallbackState"] == "warn"
    assert judge_node(facts, 300.0, NOW)["fallbackState"] == "ok"


def test_the_summary_counts_armed_nodes_and_names_the_others():
    rows, check = judge([
        NodeFacts("node-3", "c", READY, fallback=Fallback(0)),
        NodeFacts("node-1", "a", READY, fallback=armed()),
        NodeFacts("node-2", "b", CRASHING),
        NodeFacts("node-4", "d", READY, fallback=armed(2, 3600)),
        NodeFacts("node-5", "e", READY, fallback=Fallback(None)),
    ], 60.0, NOW)
    assert [r["node"] for r in rows] == ["node-1", "node-2", "node-3", "node-4", "node-5"]
    assert (check.name, check.state) == ("fallback", "fail")
    assert check.detail == ("armed on 2 of 5 nodes; off on 1 node (--fallback-endpoints none); not armed on node-3; "
                            "warnings on node-4; unknown on node-2")


@pytest.mark.parametrize("facts,state,detail", [
    ([NodeFacts("a", "p", READY, fallback=armed()), NodeFacts("b", "q", READY, fallback=armed())], "ok",
     "armed on 2 of 2 nodes"),
    ([NodeFacts("a", "p", READY, fallback=Fallback(None))], "ok",
     "armed on 0 of 1 node; off on 1 node (--fallback-endpoints none)"),
    ([NodeFacts("a", "p", READY, fallback=armed()), NodeFacts("b", "q", CRASHING)], "unknown",
     "armed on 1 of 2 nodes; unknown on b"),
    ([NodeFacts("a", "p", CRASHING), NodeFacts("b", "q", READY, fallback=armed(2, 999))], "warn",
     "armed on 1 of 2 nodes; warnings on b; unknown on a"),
])
def test_the_summary_state_is_the_worst_that_is_known(facts, state, detail):
    assert check_fallback(judge(facts, 60.0, NOW)[0]) == check_fallback([judge_node(f, 60.0, NOW) for f in facts])
    check = judge(facts, 60.0, NOW)[1]
    assert (check.state, check.detail) == (state, detail)


def test_no_cache_pod_to_ask_is_unknown():
    check = check_fallback([])
    assert (check.state, check.detail) == ("unknown", "no cache pod to ask")


DAEMONSET_STATUS = {"status": {"desiredNumberScheduled": 4, "numberReady": 1}}


def test_injected_pods_on_nodes_without_a_ready_cache_are_told_what_they_get():
    injected = {"a": ["shop/1"], "b": ["shop/2", "shop/3"], "c": ["shop/4"], "d": ["shop/5"], "ok": ["shop/6"]}
    fallback = {"a": "armed", "b": "not armed", "c": "unknown", "d": "off", "ok": "armed"}
    check = check_cache(DAEMONSET_STATUS, {"ok"}, injected, fallback)
    assert check.state == "fail"
    assert check.detail == (
        "ready on 1 of 4 nodes; 2 injected pods on nodes without a ready cache (b): their DNS fails; 1 injected pod "
        "on nodes without a ready cache (d): their DNS fails; 1 injected pod on nodes without a ready cache (c): "
        "their DNS works only if the fallback's rules are there; 1 injected pod on nodes without a ready cache (a): "
        "they resolve through the fallback, by kube-dns")


def test_without_node_facts_the_cache_check_says_what_it_always_said():
    """`rollout`'s pre-flight check reads no pods: the DaemonSet's counts only."""
    assert check_cache(DAEMONSET_STATUS, None, {"a": ["shop/1"]}).detail == "ready on 1 of 4 nodes"
    check = check_cache(DAEMONSET_STATUS, {"ok"}, {"b": ["shop/1"]})
    assert check.detail == "ready on 1 of 4 nodes; 1 injected pod on nodes without a ready cache (b): their DNS fails"


# ---- pod states, in the kubelet's words ----

STARTED = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def pod(status: dict, node: str = "node-1", **meta) -> dict:
    return {"metadata": {"name": "localdns-cache-x", **meta},
            "spec": {"nodeName": node, "containers": [{"name": "cache"}]}, "status": status}


def kubelet(situation: str, ready: bool = False) -> dict:
    return {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}],
            "containerStatuses": [{"name": "cache", **container_status(situation, STARTED)}]}


@pytest.mark.parametrize("status,expected", [
    (kubelet("ready", ready=True), PodState(True, True, "", STARTED.timestamp(), True)),
    (kubelet("running"), PodState(False, True, "running, not Ready: readiness probe failing (restarted 1 time, "
                                                "last exit 0 Completed)", STARTED.timestamp(), True)),
    (kubelet("crashloop"), PodState(False, False, "CrashLoopBackOff (restarted 7 times, last exit 137 OOMKilled)",
                                    None, True)),
    (kubelet("creating"), PodState(False, False, "ContainerCreating", None, False)),
    (kubelet("image"), PodState(False, False, 'ImagePullBackOff: Back-off pulling image '
                                              '"registry.example/localdns:0.2.0"', None, False)),
    ({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
      "containerStatuses": [{"name": "cache", "restartCount": 2, "state": {"terminated": {
          "reason": "Error", "exitCode": 1}}}]},
     PodState(False, False, "terminated: Error exit 1 (restarted 2 times)", None, True)),
    ({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."},
     PodState(False, False, "evicted: The node was low on resource: memory.", None, False)),
    ({"phase": "Failed", "reason": "NodeShutdown", "message": "Pod was terminated in response to imminent node "
      "shutdown."}, PodState(False, False, "failed: NodeShutdown: Pod was terminated in response to imminent node "
                                           "shutdown.", None, False)),
    ({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]},
     PodState(False, False, "starting: no container status yet", None, False)),
    ({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},  # Ready before any container status
     PodState(True, True, "", None, True)),
    ({"phase": "Pending", "containerStatuses": [{"name": "cache", "state": {"waiting": {
        "reason": "ErrImagePull", "message": "x" * 400}}}]},
     PodState(False, False, "ErrImagePull: " + "x" * 157 + "...", None, False)),
])
def test_pod_state_says_why_a_cache_is_not_ready(status, expected):
    assert pod_state(pod(status)) == expected


def test_a_terminating_or_unscheduled_pod_says_so():
    assert pod_state(pod(kubelet("running"), deletionTimestamp="2026-01-01T12:00:00Z")).reason == "terminating"
    unscheduled = pod({"phase": "Pending"}, node="")
    assert pod_state(unscheduled).reason == "not scheduled yet"


def test_one_pod_speaks_for_each_node():
    old_ready = pod(kubelet("ready", ready=True), creationTimestamp="2026-01-01T00:00:00Z")
    surge = pod(kubelet("creating"), creationTimestamp="2026-01-02T00:00:00Z")
    evicted = pod({"phase": "Failed", "reason": "Evicted"}, creationTimestamp="2026-01-01T00:00:00Z")
    replacement = pod(kubelet("running"), creationTimestamp="2026-01-03T00:00:00Z")
    assert pick([surge, old_ready])["node-1"] is old_ready
    assert pick([replacement, evicted])["node-1"] is replacement
    newer = pod(kubelet("creating"), creationTimestamp="2026-01-05T00:00:00Z")
    assert pick([surge, newer])["node-1"] is newer


# ---- what the DaemonSet tells the cache ----

def daemonset(args: list[str], env: list[dict] | None = None, mounts: list[dict] | None = None,
              volumes: list[dict] | None = None) -> dict:
    container = {"name": "cache", "args": args, "env": env or [], "volumeMounts": mounts or []}
    return {"spec": {"template": {"spec": {"containers": [{"name": "sidecar"}, container],
                                           "volumes": volumes or []}}}}


DEPLOY_ENV = [{"name": "METRICS_PORT", "value": "9300"},
              {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}]


@pytest.mark.parametrize("args,env,config_file,expected", [
    (["--metrics=[$(HOST_IP)]:$(METRICS_PORT)"], DEPLOY_ENV, None, CacheSettings(9300, 60.0)),
    (["--metrics", "0.0.0.0:9400", "--sync-interval", "30"], [], None, CacheSettings(9400, 30.0)),
    (["--metrics=off"], [], None, CacheSettings(None, 60.0)),
    ([], [], "metrics: 127.0.0.1:9500\nsync-interval: 600\n", CacheSettings(9500, 600.0)),
    (["--sync-interval=30"], [], "sync-interval: 600\n", CacheSettings(9253, 30.0)),  # the flag wins
    (["--metrics=:1", "--metrics=:2"], [], None, CacheSettings(2, 60.0)),  # the last flag wins
    (["--metrics=[$(HOST_IP)]:$(UNSET)", "--sync-interval=soon"], DEPLOY_ENV, None, CacheSettings(9253, 60.0)),
    (["--metrics=[::1]:$$(METRICS_PORT)"], DEPLOY_ENV, None, CacheSettings(9253, 60.0)),  # $$ escapes
    ([], [], "not: [yaml", CacheSettings(9253, 60.0)),
    ([], [], None, CacheSettings(9253, 60.0)),
])
def test_metrics_port_and_sync_interval_as_the_cache_reads_them(args, env, config_file, expected):
    assert cache_settings(daemonset(args, env), config_file) == expected


CONFIG_VOLUME = [{"name": "config", "configMap": {"name": "localdns-cache-config-5h2k9"}},
                 {"name": "tmp", "emptyDir": {}}]


@pytest.mark.parametrize("args,mounts,volumes,expected", [
    (["--config=/etc/localdns/cache.yaml"], [{"name": "config", "mountPath": "/etc/localdns"}], CONFIG_VOLUME,
     ("localdns-cache-config-5h2k9", "cache.yaml")),
    (["--config", "/etc/localdns.yaml"], [{"name": "config", "mountPath": "/etc/localdns.yaml",
                                           "subPath": "cache.yaml"}], CONFIG_VOLUME,
     ("localdns-cache-config-5h2k9", "cache.yaml")),
    (["--config=/etc/localdns/tuning.yaml"], [{"name": "config", "mountPath": "/etc/localdns/"}],
     [{"name": "config", "configMap": {"name": "cm", "items": [{"key": "cache.yaml", "path": "tuning.yaml"}]}}],
     ("cm", "cache.yaml")),
    (["--config=/tmp/cache.yaml"], [{"name": "tmp", "mountPath": "/tmp"}], CONFIG_VOLUME, None),
    ([], [{"name": "config", "mountPath": "/etc/localdns"}], CONFIG_VOLUME, None),
])
def test_the_config_file_is_found_in_its_configmap(args, mounts, volumes, expected):
    assert config_source(daemonset(args, mounts=mounts, volumes=volumes)) == expected


# ---- the gauges, from the cache's own renderer ----

def page(armed: int | None, endpoints: int = 0, refreshed: float = 0.0) -> str:
    stats = Stats()
    stats.fallback_armed, stats.fallback_endpoints, stats.fallback_last_refresh = armed, endpoints, refreshed
    return Metrics(stats, Store(Limits())).render()[0].decode()


def test_the_gauges_are_read_from_the_caches_page():
    assert parse_fallback(page(1, 3, NOW)) == Fallback(1, 3, NOW)
    assert parse_fallback(page(0)) == Fallback(0, 0, 0.0)
    assert parse_fallback(page(None)) == Fallback(None)  # --fallback-endpoints none: the gauges are absent


@pytest.mark.parametrize("text", ["<html>404</html>", "", "up 1\n", "localdns_fallback_armed one\n"])
def test_a_page_that_is_not_a_caches_metrics_is_not_read_as_off(text):
    with pytest.raises(ValueError):
        parse_fallback(text)
