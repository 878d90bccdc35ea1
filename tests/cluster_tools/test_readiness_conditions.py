"""When is a restarted workload done? The conditions of `kubectl rollout status`, on status as controllers write it."""
from __future__ import annotations

import datetime as dt

import pytest

from clustertools.readiness import RESTARTED_AT, cannot_restart, progress, restart_patch


def deployment(replicas=3, generation=2, observed=2, updated=3, total=3, available=3, conditions=()):
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "replicas": total,
                       "availableReplicas": available, "conditions": list(conditions)}}


@pytest.mark.parametrize("obj, done, says", [
    (deployment(observed=1), False, "waiting for the controller"),
    (deployment(updated=1, total=4, available=3), False, "1 of 3 new replicas updated"),
    (deployment(total=4), False, "1 old replicas pending termination"),
    (deployment(available=2), False, "2 of 3 updated replicas available"),
    (deployment(), True, "3 replicas updated and available"),
    (deployment(replicas=0, updated=0, total=0, available=0), True, "0 replicas"),
])
def test_deployment(obj, done, says):
    state = progress("Deployment", obj, generation=2)
    assert state.done is done and says in state.message and state.failure is None


def test_deployment_past_its_progress_deadline_fails_at_once():
    stuck = deployment(updated=1, conditions=[{"type": "Progressing", "status": "False",
                                               "reason": "ProgressDeadlineExceeded",
                                               "message": 'ReplicaSet "web-5f6c" has timed out progressing.'}])
    state = progress("Deployment", stuck, generation=2)
    assert not state.done and "progress deadline" in state.failure and "timed out" in state.failure


def statefulset(replicas=3, ready=3, updated=3, current="db-1", update="db-2", partition=None):
    strategy = {"type": "RollingUpdate"} | ({"rollingUpdate": {"partition": partition}} if partition else {})
    return {"spec": {"replicas": replicas, "updateStrategy": strategy},
            "status": {"observedGeneration": 2, "readyReplicas": ready, "updatedReplicas": updated,
                       "currentRevision": current, "updateRevision": update}}


@pytest.mark.parametrize("obj, done, says", [
    (statefulset(ready=2), False, "2 of 3 pods ready"),
    (statefulset(updated=2), False, "2 of 3 pods updated"),
    (statefulset(current="db-2"), True, "3 pods updated and ready"),
    (statefulset(partition=2, updated=0), False, "0 of 1 pods updated (partition 2)"),
    (statefulset(partition=2, updated=1), True, "above partition 2"),
])
def test_statefulset(obj, done, says):
    state = progress("StatefulSet", obj, generation=2)
    assert state.done is done and says in state.message


@pytest.mark.parametrize("status, done, says", [
    ({"desiredNumberScheduled": 3, "updatedNumberScheduled": 1, "numberAvailable": 3}, False, "1 of 3 nodes"),
    ({"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 2}, False, "2 of 3 updated"),
    ({"desiredNumberScheduled": 3, "updatedNumberScheduled": 3, "numberAvailable": 3}, True, "on 3 nodes"),
])
def test_daemonset(status, done, says):
    state = progress("DaemonSet", {"status": {"observedGeneration": 2, **status}}, generation=2)
    assert state.done is done and says in state.message


def test_restart_patch_is_kubectls():
    now = dt.datetime(2026, 11, 26, 23, 30, 5, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert restart_patch(now) == {"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_AT: "2026-11-26T21:30:05Z"}}}}}


def test_workloads_a_restart_would_not_replace():
    assert "paused" in cannot_restart("Deployment", {"spec": {"paused": True}})
    assert "OnDelete" in cannot_restart("DaemonSet", {"spec": {"updateStrategy": {"type": "OnDelete"}}})
    assert cannot_restart("StatefulSet", {"spec": {"updateStrategy": {"type": "RollingUpdate"}}}) is None
