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


# ---- the pods proxy: what a pod serves, as text (tests/kubeapi.py follows kube-apiserver's pod proxy) ----

class PodServer:
    """A pod's HTTP port on 127.0.0.1: answers GET with the path and query it was asked for, and records the
    Accept header; `/fail` answers 500 with a body of its own."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.accepts: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.accepts.append(self.headers.get("Accept"))
                status, body = (500, b"boom\n") if self.path == "/fail" else (200, f"asked {self.path}\n".encode())
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.http.server_address[1]
        self.thread = threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.thread.join(5)


@pytest.fixture
def pod_server():
    server = PodServer()
    yield server
    server.close()


def seed_pod(api, name: str, ip: str | None = "127.0.0.1", ports: list[int] | None = None) -> None:
    container = {"name": "c", "image": "i"} | ({"ports": [{"containerPort": p} for p in ports]} if ports else {})
    status = {"phase": "Running"} | ({"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {})
    api.seed({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
              "spec": {"containers": [container]}, "status": status})


def test_proxy_get_returns_what_the_pod_serves_as_text(api, pod_server):
    seed_pod(api, "web-1")
    client = kube.connect(str(api.kubeconfig_path), timeout=5)
    assert client.proxy_get("Pod", "web-1", "shop", pod_server.port, "/metrics") == "asked /metrics\n"
    assert pod_server.accepts == ["text/plain, */*"]
    request = api.requests[-1]
    assert (request.path, request.verb, request.resource, request.subresource, request.name, request.status) == (
        f"/api/v1/namespaces/shop/pods/web-1:{pod_server.port}/proxy/metrics", "get", "pods", "proxy",
        f"web-1:{pod_server.port}", 200)
    # The pod's own error comes back as its answer, not as the API server's Status.
    with pytest.raises(kube.KubeError) as failed:
        client.proxy_get("Pod", "web-1", "shop", pod_server.port, "/fail")
    assert type(failed.value) is kube.KubeError
    assert str(failed.value) == (f"the API server at {api.url} answered 500 Internal Server Error to get port "
                                 f"{pod_server.port} of Pod shop/web-1: Internal Server Error")


def test_the_fake_proxy_follows_the_api_servers_contract(api, pod_server):
    """What kube-apiserver's pod proxy does, checked over raw HTTP: the pod's content type and body as they are,
    the path's rest and the query passed on, the port taken from the pod's first containerPort when the name has
    none, a URL-encoded `NAME%3APORT`, and its own answers for a pod that does not exist, has no address or does
    not answer."""
    import json
    import urllib.error
    import urllib.request

    seed_pod(api, "web-1", ports=[pod_server.port, 9])
    seed_pod(api, "pending", ip=None)
    seed_pod(api, "link-local", ip="169.254.1.1")

    def get(path: str) -> tuple[int, str, str]:
        request = urllib.request.Request(api.url + path, headers={"Authorization": f"Bearer {api.token}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.headers["Content-Type"], answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read().decode()

    base = "/api/v1/namespaces/shop/pods"
    assert get(f"{base}/web-1/proxy/a/b/?x=1&y=2") == (
        200, "text/plain; version=0.0.4; charset=utf-8", "asked /a/b/?x=1&y=2\n")
    assert get(f"{base}/web-1%3A{pod_server.port}/proxy") == (200, "text/plain; version=0.0.4; charset=utf-8",
                                                               "asked /\n")
    assert get(f"{base}/http:web-1:{pod_server.port}/proxy/m")[2] == "asked /m\n"
    seed_pod(api, "proxy")  # a pod may be named like the subresource
    assert get(f"{base}/proxy:{pod_server.port}/proxy/proxy/x")[2] == "asked /proxy/x\n"

    def status(path: str) -> tuple[int, str, str]:
        code, content_type, body = get(path)
        assert content_type == "application/json"
        answer = json.loads(body)
        assert answer["kind"] == "Status" and answer["code"] == code
        return code, answer["reason"], answer["message"]

    assert status(f"{base}/gone:80/proxy/") == (404, "NotFound", 'pods "gone" not found')
    assert status(f"{base}/pending:80/proxy/") == (400, "BadRequest", "address not allowed")
    assert status(f"{base}/link-local:80/proxy/") == (400, "BadRequest", "address not allowed")
    assert status(f"{base}/a:b:c:d/proxy/") == (400, "BadRequest", 'invalid pod request "a:b:c:d"')
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert status(f"{base}/web-1:{closed}/proxy/metrics") == (
        503, "ServiceUnavailable", f"error trying to reach service: dial tcp 127.0.0.1:{closed}: connect: "
                                   "connection refused")


def test_proxy_failures_are_the_same_error_family(api, pod_server):
    seed_pod(api, "web-1")
    client = kube.connect(str(api.kubeconfig_path), timeout=5)
    with pytest.raises(kube.NotFound):
        client.proxy_get("Pod", "gone", "shop", pod_server.port, "/metrics")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    with pytest.raises(kube.Unavailable) as unanswered:
        client.proxy_get("Pod", "web-1", "shop", closed, "/metrics")
    assert unanswered.value.said == f"error trying to reach service: dial tcp 127.0.0.1:{closed}: connect: " \
                                    "connection refused"
    assert str(unanswered.value) == (f"port {closed} of Pod shop/web-1: the API server at {api.url} could not reach "
                                     f"it (503 Service Unavailable: {unanswered.value.said})")

    # RBAC names the proxy pods/proxy: a grant (or refusal) on pods is not one on it, and the other way round.
    api.forbid("get", "pods/proxy", namespace="shop")
    with pytest.raises(kube.Forbidden) as forbidden:
        client.proxy_get("Pod", "web-1", "shop", pod_server.port, "/metrics")
    assert "cannot get resource \"pods/proxy\" in API group \"\" in the namespace \"shop\"" in str(forbidden.value)
    assert "grant the ServiceAccount 'get' on pods/proxy" in str(forbidden.value)
    assert client.get("Pod", "web-1", "shop")["metadata"]["name"] == "web-1"
    api.allow_all()
    api.forbid("get", "pods", namespace="shop")
    assert client.proxy_get("Pod", "web-1", "shop", pod_server.port, "/metrics") == "asked /metrics\n"


def test_a_pod_that_never_answers_is_given_up_on_after_the_timeout_asked(api):
    """A pod that accepts the connection and never answers: the call's own timeout ends the wait (Unreachable), the
    client's longer one is not waited out."""
    seed_pod(api, "web-1")
    client = kube.connect(str(api.kubeconfig_path), timeout=30)
    with socket.socket() as silent:  # listens, never accepts: the kernel completes the handshake, nobody answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        with pytest.raises(kube.Unreachable) as waited:
            client.proxy_get("Pod", "web-1", "shop", silent.getsockname()[1], "/metrics", timeout=0.5)
    assert "did not answer within 0.5 s (get port" in str(waited.value)
