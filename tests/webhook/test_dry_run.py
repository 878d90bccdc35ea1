"""The dry-run rollout (namespace label localdns.io/inject=dry-run, webhook path /dry-run): the pod keeps its DNS
settings and gets one annotation, localdns.io/dry-run, saying exactly what /mutate would have injected; counted as
outcome "dry-run". Its patch is one `add` at the deepest parent the pod has, proven on generated pods of every shape
admission accepts, with jsonpatch and with `kubectl patch --type=json` (the API server's JSON-patch library)."""
from __future__ import annotations

import copy
import json

import jsonpatch
from hypothesis import HealthCheck, assume, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import require_tool
from tests.webhook import samples
from tests.webhook.strategies import all_settings, namespaces, pods, sparse_pods
from tests.webhook.test_patch_kubernetes import kubectl_json_patch
from webhook.admit import admit
from webhook.config import Settings
from webhook.patch import dry_run_patch, dry_run_pod
from webhook.policy import DRY_RUN_ANNOTATION, INJECTED_ANNOTATION, Outcome, decide
from webhook.review import check_pod, review_for


def post(webhook, path: str, pod: dict, namespace: str = "shop") -> dict:
    answer = webhook.client.post(f"{webhook.url}{path}", json=review_for(copy.deepcopy(pod), namespace, uid="u-1"))
    assert answer.status_code == 200, answer.text
    response = answer.json()["response"]
    assert response["allowed"] is True and response["uid"] == "u-1"
    return response


def patch_of(response: dict) -> list:
    import base64
    return json.loads(base64.b64decode(response["patch"])) if "patch" in response else []


def test_a_dry_run_pod_is_only_annotated_with_what_would_be_injected(webhook):
    pod = samples.pod(annotations={"team": "a"}, dnsConfig={"searches": ["corp.example"]})
    before = {outcome: webhook.metric("localdns_webhook_admissions_total", outcome=outcome)
              for outcome in ("dry-run", "inject")}
    injected = jsonpatch.apply_patch(copy.deepcopy(pod), patch_of(post(webhook, "/mutate", pod)))
    dry = post(webhook, "/dry-run", pod)
    assert patch_of(dry) == [{"op": "add", "path": "/metadata/annotations/localdns.io~1dry-run",
                              "value": injected["metadata"]["annotations"][INJECTED_ANNOTATION]}]
    stored = jsonpatch.apply_patch(copy.deepcopy(pod), patch_of(dry))
    assert stored["spec"] == pod["spec"]  # DNS settings untouched
    assert stored["metadata"]["annotations"] == {"team": "a", DRY_RUN_ANNOTATION: "nameservers=169.254.20.10 ndots=5"}
    assert "warnings" not in dry
    assert webhook.metric("localdns_webhook_admissions_total", outcome="dry-run") == before["dry-run"] + 1
    assert webhook.metric("localdns_webhook_admissions_total", outcome="inject") == before["inject"] + 1


def test_a_dry_run_pod_the_webhook_would_leave_alone_gets_nothing_but_the_reason(webhook):
    before = webhook.metric("localdns_webhook_admissions_total", outcome="dry-run")
    skipped = post(webhook, "/dry-run", samples.pod(hostNetwork=True))
    assert "patch" not in skipped and "warnings" not in skipped
    warned = post(webhook, "/dry-run", samples.pod(annotations={"localdns.io/ndots": "many"}))
    assert "patch" not in warned
    assert warned["warnings"] == ["localdns (dry run): annotation localdns.io/ndots must be an integer from 0 to 15, "
                                  "got 'many'; DNS left unchanged"]
    assert webhook.metric("localdns_webhook_admissions_total", outcome="dry-run") == before + 2
    # A review for something else than a Pod CREATE is "ignored" on either path.
    other = review_for(samples.pod(), "shop", operation="UPDATE")
    assert webhook.client.post(f"{webhook.url}/dry-run", json=other).json()["response"] == {
        "uid": other["request"]["uid"], "allowed": True}


PROPERTY = hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.one_of(pods, sparse_pods), namespaces, all_settings)
def test_the_dry_run_patch_is_one_add_at_the_deepest_parent_and_applies(pod, namespace, settings):
    check_pod(pod)
    sent = copy.deepcopy(pod)
    decision = decide(pod, namespace, settings)
    patch = json.loads(json.dumps(admit(pod, namespace, settings, dry_run=True).patch))
    assert pod == sent
    assert jsonpatch.apply_patch(copy.deepcopy(sent), patch) == dry_run_pod(sent, decision)
    if decision.outcome is not Outcome.INJECT:
        assert patch == []
        return
    [operation] = patch
    metadata = sent.get("metadata")
    deepest = ("/metadata" if not isinstance(metadata, dict) else "/metadata/annotations"
               if not isinstance(metadata.get("annotations"), dict) else "/metadata/annotations/localdns.io~1dry-run")
    assert operation["op"] == "add" and operation["path"] == deepest
    stored = jsonpatch.apply_patch(copy.deepcopy(sent), patch)
    # the value is the injected marker, and nothing but that one annotation changed
    assert stored["metadata"]["annotations"][DRY_RUN_ANNOTATION] == \
        jsonpatch.apply_patch(copy.deepcopy(sent), admit(pod, namespace, settings).patch)["metadata"][
            "annotations"][INJECTED_ANNOTATION]
    assert {k: v for k, v in stored.items() if k != "metadata"} == {k: v for k, v in sent.items() if k != "metadata"}
    before = sent.get("metadata") if isinstance(sent.get("metadata"), dict) else {}
    assert {k: v for k, v in stored["metadata"].items() if k != "annotations"} == \
        {k: v for k, v in before.items() if k != "annotations"}
    assert {k: v for k, v in stored["metadata"]["annotations"].items() if k != DRY_RUN_ANNOTATION} == \
        {k: v for k, v in (before.get("annotations") or {}).items() if k != DRY_RUN_ANNOTATION}


@hypothesis_settings(max_examples=30, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                            HealthCheck.filter_too_much])
@given(pod=pods, namespace=namespaces, settings=all_settings)
@example(pod={"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": {"team": "a"}}, "spec": {}},
         namespace="shop", settings=Settings())
@example(pod={"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {}}, namespace="shop",
         settings=Settings())
def test_dry_run_patches_apply_with_the_api_servers_json_patch(tmp_path, pod, namespace, settings):
    kubectl = require_tool("kubectl")
    annotations = (pod.get("metadata") or {}).get("annotations")
    pod["metadata"] = {"name": "web-1", **({"annotations": annotations} if annotations is not None else {})}
    decision = decide(pod, namespace, settings)
    assume(decision.outcome is Outcome.INJECT)
    patch = dry_run_patch(pod, decision)
    assert kubectl_json_patch(kubectl, copy.deepcopy(pod), patch, tmp_path) == dry_run_pod(pod, decision)
