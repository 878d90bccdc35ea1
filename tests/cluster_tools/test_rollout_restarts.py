"""`rollout`: a dry run changes nothing; --yes restarts like `kubectl rollout restart` and waits for readiness.

FakeKubeAPI runs no controllers; `workloads.Controller` plays the Deployment/StatefulSet/DaemonSet controller by
writing status through /status once the API server has bumped metadata.generation for the template change."""
from __future__ import annotations

import datetime as dt

import pytest

from clustertools.readiness import RESTARTED_AT
from tests.cluster_tools import workloads as w

FAST = ("--poll-interval", "0.02")
pytestmark = pytest.mark.usefixtures("installed")


def restarted_at(api, plural: str, ns: str, name: str) -> str | None:
    obj = api.get_object(plural, name, ns)
    return (obj["spec"]["template"]["metadata"].get("annotations") or {}).get(RESTARTED_AT)


def test_dry_run_is_the_default_and_changes_nothing(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web")
    w.cronjob(api, "shop", "nightly")
    w.pod(api, "shop", "debug")
    result = cli("rollout")
    assert result.code == 0
    assert "Dry run: nothing was changed" in result.out
    assert "deployment/web" in result.out and "cronjob/nightly" in result.out
    assert "add --delete-bare-pods" in result.out or "kept" in result.out
    for argv in (("--yes", "--dry-run"), ("--dry-run", "--yes", "--delete-bare-pods")):
        assert "Dry run" in cli("rollout", *argv).out
    writes = [r for r in api.requests if r.method in ("PATCH", "PUT", "POST", "DELETE")]
    assert writes == []


def test_yes_restarts_each_workload_and_waits_until_ready(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web", replicas=3)
    w.statefulset(api, "shop", "db")
    w.daemonset(api, "shop", "agent")
    w.cronjob(api, "shop", "nightly")
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    with w.Controller(api, "Deployment", "shop", "web"), w.Controller(api, "StatefulSet", "shop", "db"), \
            w.Controller(api, "DaemonSet", "shop", "agent"):
        result = cli("rollout", "--yes", "--timeout", "20", "-o", "json", *FAST)
    assert result.code == 0, result.err
    data = result.json()
    assert {(r["kind"], r["name"], r["result"]) for r in data["restarts"]} == {
        ("Deployment", "web", "ready"), ("StatefulSet", "db", "ready"), ("DaemonSet", "agent", "ready")}
    for plural, name in (("deployments", "web"), ("statefulsets", "db"), ("daemonsets", "agent")):
        stamp = dt.datetime.fromisoformat(restarted_at(api, plural, "shop", name).replace("Z", "+00:00"))
        assert stamp >= before
    patches = [r for r in api.requests_for("patch", "deployments") + api.requests_for("patch", "statefulsets")
               if r.subresource is None]  # the Controller's own writes go to /status
    assert {p.content_type for p in patches} == {"application/strategic-merge-patch+json"}
    assert patches[0].body == {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: restarted_at(
        api, "deployments", "shop", "web")}}}}}
    # Jobs are never restarted.
    assert api.requests_for("patch", "cronjobs") == [] and api.requests_for("patch", "jobs") == []
    assert [g["name"] for g in data["notRestarted"]] == ["nightly"]


def test_one_at_a_time_by_default(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "a")
    w.deployment(api, "shop", "b")
    # "b" must not be patched before "a" is ready: check at the moment b's patch arrives.
    seen = {}
    api.before_next("patch", "deployments", "b", lambda server: seen.update(
        a=server.get_object("deployments", "a", "shop")["status"]))
    with w.Controller(api, "Deployment", "shop", "a"), w.Controller(api, "Deployment", "shop", "b"):
        result = cli("rollout", "--yes", "--timeout", "20", *FAST)
    assert result.code == 0, result.err + result.out
    assert seen["a"]["updatedReplicas"] == seen["a"]["availableReplicas"] == 2
    assert seen["a"]["observedGeneration"] == 2


def test_max_concurrent_starts_several_before_any_is_ready(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "a")
    w.deployment(api, "shop", "b")
    seen = {}
    controller_a = w.Controller(api, "Deployment", "shop", "a")

    def b_patched(server) -> None:
        # a's controller only starts now, so a cannot be ready yet: b was started while a was still restarting.
        seen["a"] = server.get_object("deployments", "a", "shop")
        controller_a.__enter__()

    api.before_next("patch", "deployments", "b", b_patched)
    try:
        with w.Controller(api, "Deployment", "shop", "b"):
            result = cli("rollout", "--yes", "--max-concurrent", "2", "--timeout", "20", *FAST)
    finally:
        controller_a.__exit__()
    assert result.code == 0, result.err
    assert seen["a"]["metadata"]["generation"] == 2  # a had been patched before b
    assert controller_a.completed.is_set()


def test_rollout_that_never_becomes_ready_times_out_and_stops(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "a")
    w.deployment(api, "shop", "b")
    # No controller: the restart is never observed.
    result = cli("rollout", "--yes", "--timeout", "0.3", "-o", "json", *FAST)
    assert result.code == 1
    restarts = {r["name"]: r for r in result.json()["restarts"]}
    assert restarts["a"]["result"] == "failed"
    assert "not ready after 0.3s" in restarts["a"]["message"]
    assert "kubectl rollout status deployment/a -n shop" in restarts["a"]["message"]
    assert restarts["b"]["result"] == "not-started"
    assert restarted_at(api, "deployments", "shop", "b") is None  # nothing the user did not ask for
    assert "Traceback" not in result.err


def test_workload_deleted_mid_run_is_reported_and_the_rest_goes_on(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "a")
    w.deployment(api, "shop", "b")
    # Deleted between the audit and its restart: the GET before the patch answers 404.
    api.before_next("get", "deployments", "a", lambda server: w.vanish(server, "deployments", "shop", "a"))
    with w.Controller(api, "Deployment", "shop", "b"):
        result = cli("rollout", "--yes", "--timeout", "20", "-o", "json", *FAST)
    restarts = {r["name"]: r for r in result.json()["restarts"]}
    assert restarts["a"]["result"] == "skipped" and "deleted" in restarts["a"]["message"]
    assert restarts["b"]["result"] == "ready"
    assert result.code == 0


def test_bare_pods_are_kept_unless_asked(api, cli):
    w.namespace(api, "shop")
    w.pod(api, "shop", "debug")
    kept = cli("rollout", "--yes", "-o", "json", *FAST)
    assert kept.code == 0
    assert api.get_object("pods", "debug", "shop") is not None
    assert kept.json()["barePods"][0]["result"] == "kept"
    deleted = cli("rollout", "--yes", "--delete-bare-pods", "-o", "json", *FAST)
    assert deleted.code == 0
    assert api.get_object("pods", "debug", "shop") is None
    assert deleted.json()["barePods"][0]["result"] == "deleted"


def test_delete_bare_pods_without_yes_is_still_a_dry_run(api, cli):
    w.namespace(api, "shop")
    w.pod(api, "shop", "debug")
    result = cli("rollout", "--delete-bare-pods")
    assert result.code == 0 and "Dry run" in result.out
    assert api.get_object("pods", "debug", "shop") is not None


def test_on_delete_statefulset_and_paused_deployment_are_not_patched(api, cli):
    w.namespace(api, "shop")
    w.statefulset(api, "shop", "db", updateStrategy={"type": "OnDelete"})
    w.deployment(api, "shop", "web", paused=True)
    result = cli("rollout", "--yes", "-o", "json", *FAST)
    restarts = {r["name"]: r for r in result.json()["restarts"]}
    assert restarts["db"]["result"] == "skipped" and "OnDelete" in restarts["db"]["message"]
    assert restarts["web"]["result"] == "skipped" and "paused" in restarts["web"]["message"]
    assert api.requests_for("patch", "statefulsets") == [] and api.requests_for("patch", "deployments") == []


def test_refuses_when_new_pods_would_not_get_a_working_cache(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web")
    w.pod(api, "shop", "debug")
    # One of two nodes has no ready cache.
    w.edit(api, "daemonsets", "localdns-system", "localdns-cache", lambda ds: ds["status"].update(numberReady=1))
    result = cli("rollout", "--yes", "--delete-bare-pods", *FAST)
    assert result.code == 1
    assert "refusing to restart" in result.err and "ready on 1 of 2 nodes" in result.err
    assert [r for r in api.requests if r.method in ("PATCH", "DELETE")] == []
    dry = cli("rollout")
    assert "Not safe to restart now" in dry.out and dry.code == 0
    with w.Controller(api, "Deployment", "shop", "web"):
        forced = cli("rollout", "--yes", "--force", "--timeout", "20", *FAST)
    assert forced.code == 0 and restarted_at(api, "deployments", "shop", "web") is not None


def test_progress_bar_on_a_terminal():
    import io

    from clustertools.audit import OwnerGroup
    from clustertools.owners import Owner
    from clustertools.rollout import READY, RESTARTING, Reporter, Target

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    reporter = Reporter(total=2, stream=screen)
    target = Target(OwnerGroup(Owner("Deployment", "web", "shop"), ["p"]), RESTARTING, "1 of 2 new replicas updated")
    reporter.update(target)
    assert screen.getvalue().startswith("\r\x1b[K[....................] 0/2 deployment shop/web: 1 of 2 new")
    reporter.finished = 1
    target.state, target.message = READY, "2 replicas updated and available after 3s"
    reporter.update(target)
    assert screen.getvalue().endswith("\r\x1b[Kdeployment shop/web: ready: 2 replicas updated and available after 3s\n")


def test_new_pods_that_come_back_without_injection_stop_the_run(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "a")
    w.deployment(api, "shop", "b")
    with w.Controller(api, "Deployment", "shop", "a", webhook_injects=False):
        result = cli("rollout", "--yes", "--timeout", "20", "-o", "json", *FAST)
    assert result.code == 1
    restarts = {r["name"]: r for r in result.json()["restarts"]}
    assert restarts["a"]["result"] == "failed"
    assert "2 new pods still bypass the local cache" in restarts["a"]["message"]
    assert restarts["b"]["result"] == "not-started"
    assert restarted_at(api, "deployments", "shop", "b") is None


def test_after_a_rollout_audit_finds_nothing_left(api, cli):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web", replicas=3)
    w.statefulset(api, "shop", "db")
    assert cli("audit").code == 1
    with w.Controller(api, "Deployment", "shop", "web"), w.Controller(api, "StatefulSet", "shop", "db"):
        assert cli("rollout", "--yes", "--timeout", "20", *FAST).code == 0
    after = cli("audit", "-o", "json")
    assert after.code == 0 and after.json()["namespaces"][0]["injected"] == 5
