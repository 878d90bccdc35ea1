"""Property tests: for generated pods (dnsConfig, annotations, hostNetwork, policies, OS, settings), every patch
applies to the object as sent, every injected result passes kube-apiserver's validation and kubelet's limits, and
injection reproduces kubelet's own ClusterFirst result with only the nameserver swapped."""
from __future__ import annotations

import copy
import json

import jsonpatch
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.webhook.strategies import LOCAL_IP, all_settings, json_values, namespaces, pods, sparse_pods
from webhook import resolvconf
from webhook.app import answer_review
from webhook.config import Settings
from webhook.patch import mutated_pod, patch_for
from webhook.policy import Outcome, decide
from webhook.review import BadReview, check_pod, parse, review_for

PROPERTY = hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(pods, namespaces, all_settings)
def test_every_patch_applies_to_the_pod_as_sent(pod, namespace, settings):
    sent = copy.deepcopy(pod)
    decision = decide(pod, namespace, settings)
    patch = patch_for(pod, decision)
    assert pod == sent, "deciding must not change the pod"
    # The patch travels as JSON, and the API server applies it to the object it sent.
    applied = jsonpatch.apply_patch(copy.deepcopy(sent), json.loads(json.dumps(patch)))
    assert applied == mutated_pod(sent, decision)
    if decision.outcome is not Outcome.INJECT:
        assert patch == [] and applied == sent


# Every place a decision may write, and each parent the patch may have to create first (nothing else is touched).
WRITABLE = {"/metadata", "/metadata/annotations", "/metadata/annotations/localdns.io~1injected", "/spec",
            "/spec/dnsPolicy", "/spec/dnsConfig"}


@PROPERTY
@given(st.one_of(pods, sparse_pods), namespaces, all_settings)
def test_patches_write_only_the_decision_and_apply_to_any_shape_admission_accepts(pod, namespace, settings):
    check_pod(pod)  # null or absent metadata, spec and annotations all pass the review checks
    sent = copy.deepcopy(pod)
    decision = decide(pod, namespace, settings)
    patch = json.loads(json.dumps(patch_for(pod, decision)))
    assert {operation["path"] for operation in patch} <= WRITABLE
    applied = jsonpatch.apply_patch(copy.deepcopy(sent), patch)
    assert applied == mutated_pod(sent, decision)
    if decision.outcome is Outcome.INJECT:
        assert applied["metadata"]["annotations"]["localdns.io/injected"]
        assert applied["spec"]["dnsPolicy"] == "None" and applied["spec"]["dnsConfig"] == decision.dns_config
        # everything the decision does not write is exactly as sent
        for part in ("metadata", "spec"):
            before = sent.get(part) if isinstance(sent.get(part), dict) else {}
            written = {"metadata": {"annotations"}, "spec": {"dnsPolicy", "dnsConfig"}}[part]
            assert {k: v for k, v in applied[part].items() if k not in written} == \
                {k: v for k, v in before.items() if k not in written}
        annotations = (sent.get("metadata") or {}).get("annotations") or {}
        assert {k: v for k, v in applied["metadata"]["annotations"].items() if k != "localdns.io/injected"} == \
            {k: v for k, v in annotations.items() if k != "localdns.io/injected"}
        assert {k: v for k, v in applied.items() if k not in ("metadata", "spec")} == \
            {k: v for k, v in sent.items() if k not in ("metadata", "spec")}


@PROPERTY
@given(pods, namespaces, all_settings)
def test_every_injected_result_passes_validation_and_kubelets_limits(pod, namespace, settings):
    decision = decide(pod, namespace, settings)
    if decision.outcome is not Outcome.INJECT:
        return
    stored = mutated_pod(pod, decision)
    spec = stored["spec"]
    assert spec["dnsPolicy"] == "None"
    assert resolvconf.validation_errors("None", spec["dnsConfig"]) == []
    assert spec["dnsConfig"]["nameservers"][0] == settings.local_ip
    assert spec["dnsConfig"]["searches"][:3] == resolvconf.cluster_searches(namespace, settings.cluster_domain)
    # kubelet keeps the injected config whole: nothing is deduplicated or trimmed away on the node.
    on_node = resolvconf.pod_resolver_config(spec, namespace, ["10.96.0.10"], settings.cluster_domain)
    assert on_node == resolvconf.ResolverConfig(
        tuple(spec["dnsConfig"]["nameservers"]), tuple(spec["dnsConfig"]["searches"]),
        tuple(resolvconf.option_text(option) for option in spec["dnsConfig"]["options"]))
    # A pod sent again (reinvocation, re-create from its own YAML) is recognised and not patched twice.
    assert decide(stored, namespace, settings).outcome is Outcome.ALREADY_INJECTED


@PROPERTY
@given(pods, st.sampled_from(["default", "shop"]))
def test_injection_reproduces_kubelets_cluster_first_with_the_local_ip(pod, namespace):
    settings = Settings()
    if "localdns.io/ndots" in ((pod.get("metadata") or {}).get("annotations") or {}):
        return  # the annotation changes ndots on purpose
    decision = decide(pod, namespace, settings)
    if decision.outcome is not Outcome.INJECT:
        return
    kubelet_before = resolvconf.pod_resolver_config({**pod["spec"], "dnsPolicy": "ClusterFirst", "hostNetwork": False},
                                                    namespace, [LOCAL_IP], "cluster.local")
    after = resolvconf.pod_resolver_config(mutated_pod(pod, decision)["spec"], namespace, ["10.96.0.10"],
                                           "cluster.local")
    assert after == kubelet_before


@hypothesis_settings(max_examples=300, deadline=None)
@given(pods, st.dictionaries(st.sampled_from(["uid", "kind", "operation", "namespace", "object", "dryRun",
                                              "subResource"]), json_values, max_size=3))
def test_any_review_is_either_refused_with_a_message_or_answered_allowed(pod, corruption):
    review = review_for(pod, "shop", uid="u1")
    review["request"].update(corruption)
    try:
        request = parse(json.dumps(review).encode())
    except BadReview as error:
        assert str(error)
        return
    answer, outcome = answer_review(request, Settings())
    assert answer["response"]["allowed"] is True and answer["response"]["uid"] == request.uid
    assert outcome != "error"


def test_decisions_share_nothing_a_caller_could_change():
    """Most pods' dnsConfig is computed once per namespace and ndots: each decision still gets its own copy."""
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "app", "image": "nginx"}]}}
    first = decide(pod, "shop", Settings())
    expected = copy.deepcopy(first.dns_config)
    first.dns_config["searches"].append("changed.example")
    first.dns_config["options"][0]["value"] = "1"
    assert decide(pod, "shop", Settings()).dns_config == expected
