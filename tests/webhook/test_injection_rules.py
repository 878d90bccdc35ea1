"""Every injection rule of issue 2, through the real HTTPS server with a client that verifies the generated CA.

kube-apiserver cannot run here: the reviews follow admission.k8s.io/v1 and v1beta1 exactly, and each returned
patch is applied to the pod as sent (the `admit` helper) the way the API server applies it.
"""
from __future__ import annotations

import pytest

from tests.webhook.samples import pod
from webhook.config import DNSOption, Settings

CLUSTER_SEARCHES = ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"]


def test_plain_pod_gets_kubelets_cluster_first_settings_with_the_local_cache(webhook):
    result = webhook.admit(pod(), namespace="shop")
    spec = result.pod["spec"]
    assert spec["dnsPolicy"] == "None"
    assert spec["dnsConfig"] == {"nameservers": ["169.254.20.10"], "searches": CLUSTER_SEARCHES,
                                 "options": [{"name": "ndots", "value": "5"}]}
    assert result.pod["metadata"]["annotations"]["localdns.io/injected"] == "nameservers=169.254.20.10 ndots=5"
    assert "warnings" not in result.response
    assert spec["containers"] == pod()["spec"]["containers"]  # nothing else touched


def test_namespace_comes_from_the_request_not_the_object(webhook):
    # Controller-made pods carry no namespace; a forged one in the object must not steer the search path.
    for sent in (pod(), pod(namespace="elsewhere")):
        result = webhook.admit(sent, namespace="shop")
        assert result.pod["spec"]["dnsConfig"]["searches"][0] == "shop.svc.cluster.local"


@pytest.mark.parametrize("spec", [
    {"dnsPolicy": "ClusterFirst"},
    {},
    {"dnsPolicy": "ClusterFirstWithHostNet", "hostNetwork": True},
    {"dnsPolicy": "ClusterFirstWithHostNet"},
    {"hostNetwork": False},
], ids=["ClusterFirst", "unset", "ClusterFirstWithHostNet-hostNetwork", "ClusterFirstWithHostNet", "hostNetwork-false"])
def test_cluster_dns_policies_are_injected(webhook, spec):
    result = webhook.admit(pod(**spec))
    assert result.pod["spec"]["dnsPolicy"] == "None"
    assert result.pod["spec"]["dnsConfig"]["nameservers"] == ["169.254.20.10"]


@pytest.mark.parametrize("spec", [
    {"hostNetwork": True},
    {"hostNetwork": True, "dnsPolicy": "ClusterFirst"},
    {"dnsPolicy": "Default"},
    {"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"]}},
], ids=["hostNetwork-unset", "hostNetwork-ClusterFirst", "Default", "None"])
def test_pods_not_using_cluster_dns_are_untouched(webhook, spec):
    result = webhook.admit(pod(**spec))
    assert result.patch == [] and "patch" not in result.response and "patchType" not in result.response


@pytest.mark.parametrize("value", ["disabled", "false", "Disabled", "FALSE"])
def test_opt_out_annotation(webhook, value):
    assert webhook.admit(pod(annotations={"localdns.io/inject": value})).patch == []


def test_unknown_opt_out_value_injects_and_warns(webhook):
    result = webhook.admit(pod(annotations={"localdns.io/inject": "no"}))
    assert result.pod["spec"]["dnsPolicy"] == "None"
    assert any("localdns.io/inject" in w and "'no'" in w for w in result.response["warnings"])


def test_ndots_annotation_sets_that_pods_ndots(webhook):
    result = webhook.admit(pod(annotations={"localdns.io/ndots": "2"}))
    assert result.pod["spec"]["dnsConfig"]["options"] == [{"name": "ndots", "value": "2"}]
    assert result.pod["metadata"]["annotations"]["localdns.io/ndots"] == "2"  # kept as the user wrote it


@pytest.mark.parametrize("value", ["abc", "-1", "16", "", "2.5", "٣"])
def test_invalid_ndots_annotation_leaves_pod_untouched_with_a_warning(webhook, value):
    result = webhook.admit(pod(annotations={"localdns.io/ndots": value}))
    assert result.patch == []
    assert any("localdns.io/ndots" in w for w in result.response["warnings"])


def _requires_os(*terms: list[str]) -> dict:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": values}]} for values in terms]}}}


@pytest.mark.parametrize("spec", [
    {"os": {"name": "windows"}},
    {"nodeSelector": {"kubernetes.io/os": "windows"}},
    {"affinity": _requires_os(["windows"])},
    {"affinity": _requires_os(["windows"], ["windows"])},
], ids=["os", "nodeSelector", "affinity", "affinity-two-terms"])
def test_windows_pods_are_untouched(webhook, spec):
    assert webhook.admit(pod(**spec)).patch == []


@pytest.mark.parametrize("spec", [
    {"nodeSelector": {"kubernetes.io/os": "linux"}, "os": {"name": "linux"}},
    {"affinity": _requires_os(["windows", "linux"])},
    {"affinity": _requires_os(["windows"], ["linux"])},  # terms are ORed: it may land on Linux
], ids=["linux", "affinity-either", "affinity-or-linux"])
def test_pods_that_may_run_on_linux_are_injected(webhook, spec):
    assert webhook.admit(pod(**spec)).patch


@pytest.mark.parametrize("namespace", ["kube-system", "localdns-system"])
def test_default_excluded_namespaces(webhook, namespace):
    assert webhook.admit(pod(), namespace=namespace).patch == []


def test_configured_excluded_namespaces(start_webhook):
    hook = start_webhook(Settings(excluded_namespaces=frozenset({"batch"})))
    assert hook.admit(pod(), namespace="batch").patch == []
    assert hook.admit(pod(), namespace="kube-system").patch  # the list replaces the default


def test_already_injected_pod_gets_no_second_patch(webhook):
    injected = webhook.admit(pod()).pod
    again = webhook.admit(injected)
    assert again.patch == [] and again.pod == injected


def test_stale_marker_without_injected_settings_is_injected_again(webhook):
    # A pod template copied from a running pod carries the marker but ClusterFirst: it must still be switched.
    result = webhook.admit(pod(annotations={"localdns.io/injected": "nameservers=169.254.20.10 ndots=5"}))
    assert result.pod["spec"]["dnsPolicy"] == "None"


def test_own_dns_config_is_kept_and_merged_as_kubelet_does(webhook):
    own = {"nameservers": ["169.254.20.10", "10.20.0.53"],
           "searches": ["svc.cluster.local", "corp.example.com"],
           "options": [{"name": "edns0"}, {"name": "ndots", "value": "3"}, {"name": "timeout", "value": "2"}]}
    result = webhook.admit(pod(dnsConfig=own))
    assert result.pod["spec"]["dnsConfig"] == {
        "nameservers": ["169.254.20.10", "10.20.0.53"],
        "searches": [*CLUSTER_SEARCHES, "corp.example.com"],
        # the pod's own ndots wins on the clash, in ndots' place
        "options": [{"name": "ndots", "value": "3"}, {"name": "edns0"}, {"name": "timeout", "value": "2"}],
    }


def test_settings_shape_the_injected_config(start_webhook):
    hook = start_webhook(Settings(local_ip="169.254.0.53", cluster_domain="corp.internal", ndots=2,
                                  extra_options=(DNSOption("single-request-reopen"), DNSOption("timeout", "1")),
                                  fallback_nameserver="10.96.0.10"))
    result = hook.admit(pod(dnsConfig={"nameservers": ["10.20.0.53"], "options": [{"name": "timeout", "value": "3"}]}),
                        namespace="shop")
    assert result.pod["spec"]["dnsConfig"] == {
        "nameservers": ["169.254.0.53", "10.96.0.10", "10.20.0.53"],
        "searches": ["shop.svc.corp.internal", "svc.corp.internal", "corp.internal"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "single-request-reopen"},
                    {"name": "timeout", "value": "3"}],
    }


def test_too_many_nameservers_leaves_pod_untouched_naming_the_limit(webhook):
    result = webhook.admit(pod(dnsConfig={"nameservers": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}))
    assert result.patch == []
    assert any("limit of 3" in w for w in result.response["warnings"])


def test_too_many_search_paths_leaves_pod_untouched_naming_the_limit(webhook):
    result = webhook.admit(pod(dnsConfig={"searches": [f"d{i}.example.com" for i in range(30)]}))
    assert result.patch == []
    assert any("limit of 32" in w for w in result.response["warnings"])


def test_exactly_32_search_paths_are_injected(webhook):
    result = webhook.admit(pod(dnsConfig={"searches": [f"d{i}.example.com" for i in range(29)]}))
    assert len(result.pod["spec"]["dnsConfig"]["searches"]) == 32


def test_too_long_search_line_leaves_pod_untouched_naming_the_limit(webhook):
    long_names = [("a" * 60 + ".") * 3 + f"x{i}.example" for i in range(11)]
    result = webhook.admit(pod(dnsConfig={"searches": long_names}))
    assert result.patch == []
    assert any("limit of 2048" in w for w in result.response["warnings"])


def test_invalid_search_name_leaves_pod_untouched(webhook):
    result = webhook.admit(pod(dnsConfig={"searches": ["Not_A_Domain"]}))
    assert result.patch == []
    assert any("Not_A_Domain" in w for w in result.response["warnings"])


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE", "CONNECT"])
def test_other_operations_are_allowed_without_patch(webhook, operation):
    assert webhook.admit(pod(), operation=operation).patch == []


def test_other_kinds_are_allowed_without_patch(webhook):
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "d1", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "namespace": "shop", "operation": "CREATE", "object": {"kind": "Deployment", "spec": {}}}}
    answer = webhook.post(review)
    assert answer.status_code == 200
    assert answer.json() == {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                             "response": {"uid": "d1", "allowed": True}}


def test_v1beta1_review_is_answered_in_v1beta1(webhook):
    result = webhook.admit(pod(), api_version="admission.k8s.io/v1beta1")
    assert result.review["apiVersion"] == "admission.k8s.io/v1beta1"
    assert result.review["kind"] == "AdmissionReview"
    assert result.pod["spec"]["dnsPolicy"] == "None"


def test_metrics_count_admissions_by_outcome(start_webhook):
    hook = start_webhook()
    hook.admit(pod())
    hook.admit(pod(annotations={"localdns.io/inject": "disabled"}))
    hook.admit(hook.admit(pod()).pod)
    assert hook.metric("localdns_webhook_admissions_total", outcome="inject") == 2
    assert hook.metric("localdns_webhook_admissions_total", outcome="skip") == 1
    assert hook.metric("localdns_webhook_admissions_total", outcome="already-injected") == 1
    assert hook.metric("localdns_webhook_admission_duration_seconds_count") == 4


def test_health_endpoints(webhook):
    assert webhook.client.get(f"{webhook.url}/healthz").status_code == 200
    assert webhook.client.get(f"{webhook.url}/readyz").status_code == 200
