"""The shared Kubernetes client: the credential order both the cluster tools and certs document, and the one table
that turns the API server's answers (tests/kubeapi.py, kube-apiserver's REST contract) into one error family."""
from __future__ import annotations

import os
import socket

import pytest

from localdns import kube
from tests.kubeapi import FakeKubeAPI

HOME_CONFIG = os.path.expanduser("~/.kube/config")
IN_POD = {"KUBERNETES_SERVICE_HOST": "10.96.0.1"}


@pytest.mark.parametrize("kubeconfig,context,environ,expected", [
    ("/etc/admin.conf", None, {"KUBECONFIG": "/k1:/k2", **IN_POD}, "/etc/admin.conf"),  # named first, always
    (None, None, {"KUBECONFIG": "/k1:/k2", **IN_POD}, "/k1:/k2"),  # then $KUBECONFIG (files merged), even in a pod
    (None, None, IN_POD, None),  # then the pod's ServiceAccount, over a stray ~/.kube/config in the image
    (None, None, {}, HOME_CONFIG),  # then ~/.kube/config
    (None, "staging", IN_POD, HOME_CONFIG),  # a context needs a kubeconfig, even in a pod
])
def test_credentials_are_taken_in_the_documented_order(kubeconfig, context, environ, expected):
    assert kube.credentials_source(kubeconfig, context, environ) == expected


@pytest.fixture
def api():
    with FakeKubeAPI() as server:
        server.seed({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
                     "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                              "template": {"metadata": {"labels": {"app": "web"}},
                                           "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
        yield server


def test_answers_map_to_one_error_family_each_naming_the_object(api):
    client = kube.connect(str(api.kubeconfig_path), timeout=5)
    with pytest.raises(kube.NotFound) as missing:
        client.get("Deployment", "gone", "shop")
    assert str(missing.value).startswith("Deployment shop/gone not found: ") and missing.value.what == \
        "Deployment shop/gone"

    api.forbid("patch", "deployments", namespace="shop")
    with pytest.raises(kube.Forbidden) as forbidden:
        client.patch("Deployment", "web", "shop", {"metadata": {"labels": {"a": "b"}}})
    assert str(forbidden.value).startswith("Deployment shop/web: not allowed to patch it (")
    assert "grant the ServiceAccount 'patch' on deployments.apps" in str(forbidden.value)  # RBAC's own name
    api.allow_all()

    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "shop"}, "type": "Opaque"}
    client.create("Secret", "shop", body)
    with pytest.raises(kube.Conflict) as exists:
        client.create("Secret", "shop", body)
    assert exists.value.what == "Secret shop/s"

    # A JSON patch whose `test` fails is answered 422: the caller's precondition, so a conflict like 409.
    with pytest.raises(kube.Conflict):
        client.patch("Deployment", "web", "shop", [{"op": "test", "path": "/metadata/resourceVersion",
                                                    "value": "0"}], "json")
    # Any other 422 is not a conflict: reading again would change nothing.
    with pytest.raises(kube.KubeError) as invalid:
        client.replace("Secret", "s", "shop", {**body, "type": "kubernetes.io/tls"})
    assert type(invalid.value) is kube.KubeError
    assert str(invalid.value).startswith(f"the API server at {api.url} answered 422 Unprocessable Entity to update "
                                         'Secret shop/s: Secret "s" is invalid: type: ')


def test_rejected_credentials_are_unauthorized(api, tmp_path):
    wrong = tmp_path / "kubeconfig"
    wrong.write_text(api.kubeconfig_path.read_text().replace(api.token, "not-the-token"))
    with pytest.raises(kube.Unauthorized, match=r"rejected the credentials \(401 Unauthorized\) for namespaces"):
        kube.connect(str(wrong)).list("Namespace")


def test_no_answer_is_unreachable_with_what_to_do(api, tmp_path):
    client = kube.connect(str(api.kubeconfig_path), timeout=0.3, timeout_flag="--timeout")
    api.delay(2)
    with pytest.raises(kube.Unreachable) as slow:
        client.get("Deployment", "web", "shop")
    api.delay(0)
    assert f"the API server at {api.url} did not answer within 0.3 s (get Deployment shop/web)" in str(slow.value)
    assert str(slow.value).endswith("or raise --timeout")
    with socket.socket() as sock:  # bound, then closed: nothing listens there any more
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    gone = tmp_path / "kubeconfig"
    gone.write_text(api.kubeconfig_path.read_text().replace(api.url, closed))
    with pytest.raises(kube.Unreachable) as refused:
        kube.connect(str(gone)).list("Pod", "shop")
    assert str(refused.value).startswith(f"cannot reach the Kubernetes API server at {closed}: [Errno 111] "
                                         "Connection refused (pods in namespace shop could not be reached)")


def test_missing_or_broken_credentials_say_how_to_authenticate(api, tmp_path):
    with pytest.raises(kube.CredentialsError, match=r"kubeconfig .*absent does not exist; pass --kubeconfig FILE"):
        kube.connect(str(tmp_path / "absent"))
    with pytest.raises(kube.CredentialsError, match="nope"):
        kube.connect(str(api.kubeconfig_path), context="nope")


def test_a_watch_streams_events_after_the_lists_version_and_its_failures_are_the_same_family(api):
    """kube-apiserver's watch contract (tests/kubeapi_watch.py): events after the list's resourceVersion; 410 for a
    compacted one, as an ERROR event; refused (403) before the stream; cut in the middle."""
    import threading

    client = kube.connect(str(api.kubeconfig_path), timeout=5)
    items, version = client.listing("Deployment", "shop")
    assert [i["metadata"]["name"] for i in items] == ["web"] and version == items[0]["metadata"]["resourceVersion"]
    watch = client.watch("Deployment", version, "shop")
    seen: list[tuple[str, str]] = []
    reader = threading.Thread(target=lambda: seen.extend((e["type"], e["object"]["metadata"]["name"]) for e in watch))
    reader.start()
    api.watches.wait_for_streams(1)
    api.seed({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": "shop"},
              "spec": {"selector": {"matchLabels": {"app": "api"}}, "template": {}}})
    api.watches.end()
    reader.join(10)
    assert seen == [("ADDED", "api")]

    api.watches.compact()
    with pytest.raises(kube.Expired) as expired:
        list(client.watch("Deployment", version, "shop"))
    assert str(expired.value) == (f"deployments in namespace shop: the version to watch from is too old (410 Expired: "
                                  f"too old resource version: {version} ({int(version) + 1})); list them again")

    api.forbid("watch", "deployments")
    with pytest.raises(kube.Forbidden) as forbidden:
        client.watch("Deployment", version, "shop")
    assert "grant the ServiceAccount 'watch' on deployments.apps" in str(forbidden.value)
    api.allow_all()

    cut = client.watch("Deployment", str(int(version) + 1), "shop")
    failure: list[BaseException] = []

    def read() -> None:
        try:
            list(cut)
        except kube.KubeError as error:
            failure.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    api.watches.wait_for_streams(1)
    api.watches.drop()
    reader.join(10)
    [error] = failure
    assert type(error) is kube.Unreachable and "was cut off" in str(error)
