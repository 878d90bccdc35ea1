"""FakeKubeAPI answers the official kubernetes client as kube-apiserver does (published REST contract).

No kube-apiserver can run here; these tests pin the parts of its contract other tests rely on: paths, verbs,
status codes and Status bodies, resourceVersion and generation bookkeeping, selectors, patch content types.
"""
from __future__ import annotations

import json

import pytest
import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.kubeapi import FakeKubeAPI


@pytest.fixture
def api():
    with FakeKubeAPI() as server:
        yield server


@pytest.fixture
def core(api):
    return client.CoreV1Api(api.client())


def secret(name: str, namespace: str = "ns", **labels: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace,
            "labels": labels}, "type": "Opaque", "data": {"k": "dg=="}}


def deployment(name: str, namespace: str = "ns", replicas: int = 1) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}}


def status_of(err: ApiException) -> dict:
    return json.loads(err.body)


def test_create_sets_identity_and_bumps_resource_version(core):
    first = core.create_namespaced_secret("ns", secret("a"))
    second = core.create_namespaced_secret("ns", secret("b"))
    assert first.kind == "Secret" and first.api_version == "v1"
    assert first.metadata.uid and first.metadata.uid != second.metadata.uid
    assert first.metadata.creation_timestamp is not None and first.metadata.namespace == "ns"
    assert int(second.metadata.resource_version) > int(first.metadata.resource_version)


def test_create_twice_is_already_exists_with_a_status_body(core):
    core.create_namespaced_secret("ns", secret("a"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret("ns", secret("a"))
    assert err.value.status == 409
    body = status_of(err.value)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["reason"] == "AlreadyExists"
    assert body["code"] == 409 and body["details"] == {"name": "a", "kind": "secrets"}
    assert body["message"] == 'secrets "a" already exists'


def test_get_missing_is_not_found_naming_group_and_object(api):
    admission = client.AdmissionregistrationV1Api(api.client())
    with pytest.raises(ApiException) as err:
        admission.read_mutating_webhook_configuration("nope")
    body = status_of(err.value)
    assert err.value.status == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'mutatingwebhookconfigurations.admissionregistration.k8s.io "nope" not found'
    assert body["details"]["group"] == "admissionregistration.k8s.io"


def test_update_with_stale_resource_version_conflicts_and_changes_nothing(api, core):
    created = core.create_namespaced_secret("ns", secret("a"))
    stale = created.metadata.resource_version
    core.patch_namespaced_secret("a", "ns", {"metadata": {"labels": {"x": "1"}}})
    body = secret("a")
    body["metadata"]["resourceVersion"] = stale
    body["data"] = {"k": "Y2hhbmdlZA=="}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_secret("a", "ns", body)
    assert err.value.status == 409 and status_of(err.value)["reason"] == "Conflict"
    assert api.get_object("secrets", "a", "ns")["data"] == {"k": "dg=="}


def test_update_without_resource_version_is_unconditional_and_keeps_identity(core):
    created = core.create_namespaced_secret("ns", secret("a"))
    body = secret("a")
    body["data"] = {"k": "bmV3"}
    updated = core.replace_namespaced_secret("a", "ns", body)
    assert updated.data == {"k": "bmV3"} and updated.metadata.uid == created.metadata.uid
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)


def test_patch_content_types(api, core):
    core.create_namespaced_secret("ns", secret("a"))
    core.patch_namespaced_secret("a", "ns", [{"op": "add", "path": "/data/extra", "value": "eA=="}])
    assert api.requests[-1].content_type == "application/json-patch+json"
    core.patch_namespaced_secret("a", "ns", {"data": {"k": None}})  # a dict body is sent as strategic merge
    assert api.requests[-1].content_type == "application/strategic-merge-patch+json"
    assert api.get_object("secrets", "a", "ns")["data"] == {"extra": "eA=="}
    core.patch_namespaced_secret("a", "ns", {"type": "Opaque"}, _content_type="application/merge-patch+json")
    assert api.requests[-1].content_type == "application/merge-patch+json" and api.requests[-1].status == 200


def test_failed_json_patch_test_op_is_invalid_and_changes_nothing(api, core):
    core.create_namespaced_secret("ns", secret("a"))
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_secret("a", "ns", [{"op": "test", "path": "/type", "value": "other"},
                                                 {"op": "remove", "path": "/data"}])
    assert err.value.status == 422 and status_of(err.value)["reason"] == "Invalid"
    assert api.get_object("secrets", "a", "ns")["data"] == {"k": "dg=="}


def test_patch_carrying_a_stale_resource_version_conflicts(core):
    created = core.create_namespaced_secret("ns", secret("a"))
    core.patch_namespaced_secret("a", "ns", {"metadata": {"labels": {"x": "1"}}})
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_secret("a", "ns", {"metadata": {"resourceVersion": created.metadata.resource_version,
                                                             "labels": {"x": "2"}}})
    assert err.value.status == 409
    current = core.read_namespaced_secret("a", "ns").metadata.resource_version
    guarded = core.patch_namespaced_secret("a", "ns", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": current},
        {"op": "add", "path": "/metadata/labels/x", "value": "3"}])
    assert guarded.metadata.labels == {"x": "3"}


def test_secret_type_is_immutable(core):
    core.create_namespaced_secret("ns", secret("a"))
    body = secret("a")
    body["type"] = "kubernetes.io/tls"
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_secret("a", "ns", body)
    assert err.value.status == 422 and "field is immutable" in status_of(err.value)["message"]


def test_strategic_merge_merges_containers_by_name(api):
    apps = client.AppsV1Api(api.client())
    api.seed(deployment("d"))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "s:1"}]}}}}
    result = apps.patch_namespaced_deployment("d", "ns", patch)
    assert [c.name for c in result.spec.template.spec.containers] == ["c", "sidecar"]


def test_generation_grows_with_spec_and_status_is_a_subresource(api):
    apps = client.AppsV1Api(api.client())
    created = apps.create_namespaced_deployment("ns", {**deployment("d"), "status": {"replicas": 7}})
    assert created.metadata.generation == 1 and created.status is None  # status on create is dropped
    labelled = apps.patch_namespaced_deployment("d", "ns", {"metadata": {"labels": {"a": "b"}}})
    assert labelled.metadata.generation == 1
    scaled = apps.patch_namespaced_deployment("d", "ns", {"spec": {"replicas": 3}, "status": {"replicas": 9}})
    assert scaled.metadata.generation == 2 and scaled.status is None
    with_status = apps.patch_namespaced_deployment_status("d", "ns", {"status": {"replicas": 3}})
    assert with_status.status.replicas == 3 and with_status.metadata.generation == 2


def test_list_is_typed_with_resource_version_and_filters(api, core):
    for name, ns, labels in [("a", "ns", {"app": "x"}), ("b", "ns", {"app": "y"}), ("c", "other", {"app": "x"}),
                             ("d", "ns", {})]:
        api.seed(secret(name, ns, **labels))
    listed = core.list_namespaced_secret("ns")
    assert listed.kind == "SecretList" and listed.api_version == "v1"
    assert int(listed.metadata.resource_version) >= 5
    assert [s.metadata.name for s in listed.items] == ["a", "b", "d"]
    raw = api.requests[-1]
    assert raw.verb == "list" and raw.namespace == "ns"
    names = lambda result: [(s.metadata.namespace, s.metadata.name) for s in result.items]  # noqa: E731
    assert names(core.list_secret_for_all_namespaces(label_selector="app=x")) == [("ns", "a"), ("other", "c")]
    assert names(core.list_secret_for_all_namespaces(label_selector="app in (y),app")) == [("ns", "b")]
    assert names(core.list_secret_for_all_namespaces(label_selector="!app")) == [("ns", "d")]
    assert names(core.list_secret_for_all_namespaces(label_selector="app notin (x)")) == [("ns", "b"), ("ns", "d")]
    assert names(core.list_secret_for_all_namespaces(field_selector="metadata.namespace=other")) == [("other", "c")]
    assert names(core.list_namespaced_secret("ns", field_selector="metadata.name!=a")) == [("ns", "b"), ("ns", "d")]


def test_list_pages_with_limit_and_continue(api, core):
    for name in "abcde":
        api.seed(secret(name))
    first = core.list_namespaced_secret("ns", limit=2)
    second = core.list_namespaced_secret("ns", limit=2, _continue=first.metadata._continue)
    third = core.list_namespaced_secret("ns", limit=2, _continue=second.metadata._continue)
    assert [s.metadata.name for page in (first, second, third) for s in page.items] == list("abcde")
    assert third.metadata._continue is None


def test_pods_by_node_name_and_unsupported_field_label(api, core):
    for name, node in [("p1", "n1"), ("p2", "n2"), ("p3", None)]:
        spec = {"containers": [{"name": "c", "image": "i"}], **({"nodeName": node} if node else {})}
        api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "ns"}, "spec": spec})
    assert [p.metadata.name for p in core.list_pod_for_all_namespaces(field_selector="spec.nodeName=n1").items] == [
        "p1"]
    assert [p.metadata.name for p in core.list_namespaced_pod("ns", field_selector="spec.nodeName=").items] == ["p3"]
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod("ns", field_selector="spec.hostname=x")
    assert err.value.status == 400 and "field label not supported" in status_of(err.value)["message"]


def test_cluster_scoped_resources_and_namespaces(api):
    c = api.client()
    core = client.CoreV1Api(c)
    created = core.create_namespace({"metadata": {"name": "team", "labels": {"localdns.io/inject": "enabled"}}})
    assert created.status.phase == "Active"
    assert [n.metadata.name for n in core.list_namespace(label_selector="localdns.io/inject=enabled").items] == [
        "team"]
    api.seed({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    assert core.read_node("n1").metadata.namespace is None
    batch = client.BatchV1Api(c)
    api.seed({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj", "namespace": "team"},
              "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                  "containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}}}}}})
    assert batch.read_namespaced_cron_job("cj", "team").metadata.generation == 1


def test_delete_returns_the_object_and_honours_preconditions(api, core):
    created = core.create_namespaced_secret("ns", secret("a"))
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_secret("a", "ns", body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid="not-the-uid")))
    assert err.value.status == 409
    core.delete_namespaced_secret("a", "ns", body=client.V1DeleteOptions(
        preconditions=client.V1Preconditions(uid=created.metadata.uid)))
    assert api.get_object("secrets", "a", "ns") is None
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_secret("a", "ns")
    assert err.value.status == 404


def test_dry_run_answers_without_storing(api, core):
    core.create_namespaced_secret("ns", secret("a"), dry_run="All")
    assert api.get_object("secrets", "a", "ns") is None


def test_forbid_answers_403_like_rbac(api, core):
    api.seed(secret("a"))
    api.forbid("get", "secrets", namespace="ns", name="a")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_secret("a", "ns")
    body = status_of(err.value)
    assert err.value.status == 403 and body["reason"] == "Forbidden"
    assert body["message"] == ('secrets "a" is forbidden: User "system:serviceaccount:test:tester" cannot get '
                               'resource "secrets" in API group "" in the namespace "ns"')
    assert core.list_namespaced_secret("ns").items  # other verbs still allowed
    api.allow_all()
    assert core.read_namespaced_secret("a", "ns").metadata.name == "a"


def test_conflict_next_fails_only_the_next_matching_request(api, core):
    api.seed(secret("a"))
    api.conflict_next("patch", "secrets", "a")
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_secret("a", "ns", {"metadata": {"labels": {"x": "1"}}})
    assert err.value.status == 409 and status_of(err.value)["reason"] == "Conflict"
    assert core.patch_namespaced_secret("a", "ns", {"metadata": {"labels": {"x": "1"}}}).metadata.labels == {"x": "1"}


def test_before_next_lets_a_racing_writer_win(api, core):
    api.before_next("create", "secrets", "a", lambda server: server.seed(secret("a", app="racer")))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_secret("ns", secret("a"))
    assert status_of(err.value)["reason"] == "AlreadyExists"
    assert api.get_object("secrets", "a", "ns")["metadata"]["labels"] == {"app": "racer"}


def test_delay_makes_the_client_time_out(api, core):
    api.delay(1)
    # the client retries a read timeout a few times, then gives up
    with pytest.raises((urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.MaxRetryError)):
        core.list_namespaced_secret("ns", _request_timeout=0.2)
    api.delay(0)
    assert core.list_namespaced_secret("ns", _request_timeout=5).items == []


def test_requests_without_the_token_are_unauthorized(api):
    configuration = client.Configuration(host=api.url)
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(client.ApiClient(configuration)).list_namespaced_secret("ns")
    assert err.value.status == 401


def test_unknown_resource_is_404_and_server_stops_its_thread():
    server = FakeKubeAPI().start()
    c = server.client()
    response = c.call_api(*c.param_serialize("GET", "/apis/example.com/v1/widgets", header_params={},
                                             auth_settings=["BearerToken"]))
    response.read()
    assert response.status == 404 and json.loads(response.data)["reason"] == "NotFound"
    server.stop()
    assert not server._thread.is_alive()
