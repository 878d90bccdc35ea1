"""Every body gets an answer that is a 2xx AdmissionReview (allowed, with a patch that applies) or a 4xx with a
message: never a 5xx, and never "internal error" for a pod that kube-apiserver could send. Pods come from hypothesis,
as the API server sends them (typed, unvalidated: options without a name, any string anywhere) and ill-typed (any
JSON value at any place the webhook reads); bodies are sent over HTTPS to the real server."""
from __future__ import annotations

import copy
import json

import jsonpatch
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.conftest import require_tool
from tests.webhook.oracle import judge
from tests.webhook.samples import pod
from tests.webhook.strategies import api_server_pods, ill_typed_pods, malformed_affinities, placed, pods
from tests.webhook.test_patch_kubernetes import kubectl_json_patch
from webhook.review import review_for

PROPERTY = hypothesis_settings(max_examples=150, deadline=None,
                               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
WINDOWS_IN_A_LIST = placed(pod(), ("spec", "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution",
                                   "nodeSelectorTerms", 0, "matchExpressions", 0),
                           {"key": "kubernetes.io/os", "operator": "In", "values": [["windows"]]})


def answered(webhook, sent: dict) -> tuple[int, dict, list]:
    """POST the pod's review; the answer judged (tests/webhook/oracle.py), and the patch of a 200."""
    body = json.dumps(review_for(copy.deepcopy(sent), "shop", uid="u1")).encode()
    answer = webhook.post(body, **{"content-type": "application/json"})
    return answer.status_code, answer.json(), judge(body, answer.status_code, answer.content)


@PROPERTY
@given(api_server_pods)
@example({"apiVersion": "v1", "kind": "Pod", "spec": {"dnsConfig": {"options": [{"value": "2"}]}}})  # issue 13
def test_what_the_api_server_can_send_is_answered_allowed(webhook, sent):
    status, _, _ = answered(webhook, sent)
    assert status == 200


@PROPERTY
@given(st.one_of(ill_typed_pods, st.builds(placed, pods, st.just(("spec", "affinity")), malformed_affinities)))
@example(WINDOWS_IN_A_LIST)  # issue 13: TypeError (unhashable) in the policy, answered "internal error"
def test_ill_typed_pods_get_a_4xx_with_a_message_or_an_allowed_answer(webhook, sent):
    answered(webhook, sent)


def test_the_issues_ill_typed_affinity_is_a_400_naming_the_field(webhook):
    status, body, _ = answered(webhook, WINDOWS_IN_A_LIST)
    assert status == 400 and "matchExpressions[0].values[0] must be a string, got list" in body["error"]


def test_an_option_without_a_name_leaves_the_pod_unchanged_with_a_warning(webhook):
    status, body, patch = answered(webhook, pod(dnsConfig={"options": [{"value": "2"}]}))
    assert status == 200 and patch == []
    assert "option name must not be empty" in body["response"]["warnings"][0]


@hypothesis_settings(max_examples=20, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(sent=api_server_pods)
def test_patches_for_what_the_api_server_can_send_apply_with_its_json_patch(webhook, tmp_path, sent):
    kubectl = require_tool("kubectl")
    sent["metadata"] = {"name": "web-1", **({"annotations": a} if (a := sent["metadata"].get("annotations"))
                                            is not None else {})}
    _, _, patch = answered(webhook, sent)
    if patch:
        assert kubectl_json_patch(kubectl, copy.deepcopy(sent), patch, tmp_path) == \
            jsonpatch.apply_patch(copy.deepcopy(sent), patch)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _review_with(raw_value: bytes, where: str = "object") -> bytes:
    """A valid review whose request carries `raw_value` (JSON text) at `where`, in a field the webhook reads
    (kind) or inside the pod in one it does not."""
    review = json.dumps(review_for(pod(), "shop", uid="u1")).encode()
    if where == "kind":
        return review.replace(b'"kind": "AdmissionReview"', b'"kind": ' + raw_value, 1)
    return review.replace(b'"containers": ', b'"deep": ' + raw_value + b', "containers": ', 1)


DEEP = "nested too deep"
NOT_AN_OBJECT = "must be a JSON object"


@pytest.mark.parametrize("body, messages", [
    (_nested(970), (DEEP, NOT_AN_OBJECT)),  # issue 13: 2 KB, HTTP 500 (RecursionError); the parser's limit
    (_nested(100_000), (DEEP,)),            # depends on the stack it runs on, so either 400 is right
    (_review_with(_nested(1000)), (DEEP,)),  # issue 13: a valid review with one field nested 1,000 deep
    (_review_with(b'{"a":' * 5000 + b"1" + b"}" * 5000), (DEEP,)),
    (_review_with(_nested(900), where="kind"), ("kind must be AdmissionReview, got list", DEEP)),  # no repr of it
], ids=["bare-970", "bare-100000", "pod-field-1000", "pod-object-5000", "kind-900"])
def test_deeply_nested_json_gets_400_with_a_message(webhook, body, messages):
    answer = webhook.post(body, **{"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert any(message in answer.json()["error"] for message in messages), answer.text
    assert webhook.client.get(f"{webhook.url}/healthz").status_code == 200


def test_nesting_the_parser_accepts_in_a_field_the_webhook_does_not_read_is_harmless(webhook):
    answer = webhook.post(_review_with(_nested(500)), **{"content-type": "application/json"})
    assert answer.status_code == 200 and answer.json()["response"]["patch"]


def test_no_answer_was_an_internal_error(webhook):
    """After everything above (same server, module scope): the error counter is still zero."""
    assert webhook.metric("localdns_webhook_admissions_total", outcome="error") == 0
