"""The webhook's view of the cluster's NetworkPolicies (webhook/netpolview.py), against the in-test API server's list
and watch (tests/kubeapi.py, tests/kubeapi_watch.py: kube-apiserver's watch contract, since no real one runs here):
it follows added, modified and deleted policies, lists again after 410 Expired and after a cut stream, keeps trying
while it may not list, and until it has synced pods are injected as without it. Admissions through the real HTTPS
webhook then show what users see: pods whose policies block DNS to the local IP stay on kube-dns with warnings that
name the policy and give the rule, and no admission calls the API server."""
from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import strategies as st

from localdns.kube import Client
from tests.kubeapi import FakeKubeAPI
from tests.webhook import samples
from webhook.config import Settings
from webhook.metrics import Metrics
from webhook.netpolview import PolicyView
from webhook.review import review_for

LOCAL_IP = "169.254.20.10"
DEFAULT_DENY = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
    "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}
UDP_ONLY = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
    "to": [{"ipBlock": {"cidr": "169.254.20.10/32"}}], "ports": [{"protocol": "UDP", "port": 53}]}]}


def networkpolicy(name: str, namespace: str, spec: dict) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def eventually(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Wait for something another thread does (not a timing assertion: the bound only ends a hung test)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def names_in(view: PolicyView, namespace: str) -> list[str]:
    return [p.name for p in view.in_namespace(namespace)]


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as server:
        yield server


@pytest.fixture
def start_view(api: FakeKubeAPI) -> Iterator[Callable[..., tuple[PolicyView, Metrics]]]:
    views: list[PolicyView] = []

    def start(wait: bool = True) -> tuple[PolicyView, Metrics]:
        metrics = Metrics()
        view = PolicyView(lambda: Client(api.client(), 5.0), LOCAL_IP, metrics, backoff_first=0.05, backoff_cap=0.2)
        views.append(view)
        view.start()
        if wait:
            eventually(lambda: view.synced, "the view synced")
            api.watches.wait_for_streams(1)
        return view, metrics

    yield start
    for view in views:
        view.stop()
        assert not view._thread.is_alive(), "stop() ends the view's thread"


def gauge(metrics: Metrics, name: str) -> float | None:
    return metrics.registry.get_sample_value(name)


def requests(api: FakeKubeAPI, verb: str) -> list:
    return api.requests_for(verb, "networkpolicies")


def test_it_lists_then_follows_added_modified_and_deleted_policies(api, start_view):
    api.seed(networkpolicy("deny", "shop", DEFAULT_DENY))
    api.seed(networkpolicy("deny", "payments", DEFAULT_DENY))
    view, metrics = start_view()
    assert names_in(view, "shop") == ["deny"] and names_in(view, "payments") == ["deny"]
    assert gauge(metrics, "localdns_webhook_networkpolicies_synced") == 1
    assert gauge(metrics, "localdns_webhook_networkpolicies") == 2
    [_] = requests(api, "list")
    [watch] = requests(api, "watch")
    # The watch starts from the list's version: the last write before the list.
    assert watch.query["resourceVersion"] == [api.get_object("networkpolicies", "deny", "payments")["metadata"][
        "resourceVersion"]]
    assert watch.query["allowWatchBookmarks"] == ["true"] and watch.query["watch"] == ["1"]

    api.seed(networkpolicy("allow-local-dns", "shop", UDP_ONLY))
    eventually(lambda: names_in(view, "shop") == ["allow-local-dns", "deny"], "ADDED applied")
    assert [p.udp for p in view.in_namespace("shop")] == [True, False]

    from kubernetes import client as k8s
    networking = k8s.NetworkingV1Api(api.client())
    changed = api.get_object("networkpolicies", "allow-local-dns", "shop")
    changed["spec"]["egress"][0]["ports"].append({"protocol": "TCP", "port": 53})
    networking.replace_namespaced_network_policy("allow-local-dns", "shop", changed)
    eventually(lambda: view.in_namespace("shop")[0].tcp, "MODIFIED applied")

    networking.delete_namespaced_network_policy("deny", "payments")
    eventually(lambda: names_in(view, "payments") == [], "DELETED applied")
    assert gauge(metrics, "localdns_webhook_networkpolicies") == 2
    assert len(requests(api, "list")) == 1, "events alone kept it current: no second list"


def test_a_version_gone_410_makes_it_list_again(api, start_view, caplog):
    api.seed(networkpolicy("deny", "shop", DEFAULT_DENY))
    view, metrics = start_view()

    def while_disconnected(server: FakeKubeAPI) -> None:
        # Between two watches, a policy is added and etcd compacts the history the next watch would start from.
        server.seed(networkpolicy("added-meanwhile", "shop", UDP_ONLY))
        server.watches.compact()

    api.before_next("watch", "networkpolicies", None, while_disconnected)
    with caplog.at_level(logging.INFO, "localdns.webhook"):
        api.watches.end()  # the server's timeoutSeconds: the view watches again from where it was
        eventually(lambda: "added-meanwhile" in names_in(view, "shop"), "the re-list saw the change")
    assert len(requests(api, "list")) == 2
    assert any("410 Expired: too old resource version" in r.getMessage() for r in caplog.records)
    assert gauge(metrics, "localdns_webhook_networkpolicies_synced") == 1


def test_a_cut_stream_makes_it_list_again(api, start_view):
    view, _ = start_view()
    api.before_next("list", "networkpolicies", None,
                    lambda server: server.seed(networkpolicy("deny", "shop", DEFAULT_DENY)))
    api.watches.drop()
    eventually(lambda: names_in(view, "shop") == ["deny"], "the re-list after the cut")
    assert len(requests(api, "list")) == 2
    api.watches.wait_for_streams(1)
    # The new watch starts from the new list's version, not from before the cut.
    last_watch = requests(api, "watch")[-1]
    assert int(last_watch.query["resourceVersion"][0]) >= int(
        api.get_object("networkpolicies", "deny", "shop")["metadata"]["resourceVersion"])


def test_a_bookmark_moves_its_version_past_other_changes(api, start_view):
    view, _ = start_view()
    written = api.seed({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "unrelated", "namespace": "shop"}})
    api.watches.bookmark()
    eventually(lambda: view.resource_version == written["metadata"]["resourceVersion"], "the bookmark's version")
    api.watches.compact()
    api.watches.end()
    api.watches.wait_for_streams(1)
    assert len(requests(api, "list")) == 1, "the bookmark's version is not compacted: no 410, no re-list"


def test_until_it_may_list_pods_are_injected_as_without_it(api, start_view, start_webhook, caplog):
    api.seed(networkpolicy("deny", "shop", DEFAULT_DENY))
    api.forbid("list", "networkpolicies")
    with caplog.at_level(logging.WARNING, "localdns.webhook"):
        view, metrics = start_view(wait=False)
        eventually(lambda: len(requests(api, "list")) >= 3, "it keeps trying")
    assert not view.synced and gauge(metrics, "localdns_webhook_networkpolicies_synced") == 0
    [warning] = [r.getMessage() for r in caplog.records if "cannot list NetworkPolicies" in r.getMessage()]
    assert "'list' on networkpolicies.networking.k8s.io" in warning  # once, saying which grant is missing
    webhook = start_webhook(Settings(), metrics=metrics, networkpolicies=view)
    assert admitted(webhook, "shop")[1] == []  # injected, no warning: the check is not on
    api.allow_all()
    eventually(lambda: view.synced, "synced once allowed")
    patch, warnings = admitted(webhook, "shop")
    assert patch == [] and len(warnings) == 2
    assert webhook.metric("localdns_webhook_networkpolicies_synced") == 1


def admitted(webhook, namespace: str, path: str = "/mutate", pod: dict | None = None) -> tuple[list, list]:
    answer = webhook.client.post(f"{webhook.url}{path}", json=review_for(pod or samples.pod(), namespace))
    assert answer.status_code == 200
    response = answer.json()["response"]
    assert response["allowed"] is True
    patch = json.loads(base64.b64decode(response["patch"])) if "patch" in response else []
    return patch, response.get("warnings", [])


def test_admissions_answer_from_the_view_without_calling_the_api(api, start_view, start_webhook):
    api.seed(networkpolicy("default-deny-egress", "shop", DEFAULT_DENY))
    api.seed(networkpolicy("dns-udp", "payments", UDP_ONLY))
    api.seed(networkpolicy("db-only", "open", {**DEFAULT_DENY, "podSelector": {"matchLabels": {"app": "db"}}}))
    view, metrics = start_view()
    webhook = start_webhook(Settings(), metrics=metrics, networkpolicies=view)
    calls = len(api.requests)

    # UDP 53 blocked: left on kube-dns, with the policy named and the rule to add.
    patch, warnings = admitted(webhook, "shop")
    assert patch == []
    assert warnings == [
        "localdns: NetworkPolicy shop/default-deny-egress blocks DNS (UDP 53) to the node-local cache 169.254.20.10; "
        "DNS left unchanged",
        "localdns: to allow it, add to spec.egress of shop/default-deny-egress: - {to: [{ipBlock: {cidr: "
        "169.254.20.10/32}}], ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]}"]
    assert webhook.metric("localdns_webhook_admissions_total", outcome="skip") == 1
    # Only TCP blocked: injected, and told that large answers will fail.
    patch, warnings = admitted(webhook, "payments")
    assert [op["path"] for op in patch] == ["/metadata/annotations", "/spec/dnsPolicy", "/spec/dnsConfig"]
    assert warnings[0].startswith("localdns: NetworkPolicy payments/dns-udp blocks TCP 53 to the node-local cache")
    # A policy for other pods, and a namespace without any: injected, nothing said.
    assert admitted(webhook, "open")[1] == [] and admitted(webhook, "elsewhere")[1] == []
    assert admitted(webhook, "open", pod=samples.pod("db"))[0] == []
    # host-network pods are not subject to NetworkPolicies: injected as before
    host = samples.pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
    assert admitted(webhook, "shop", pod=host)[0] != []
    # In a dry-run namespace the same check, said as a dry run.
    patch, warnings = admitted(webhook, "shop", "/dry-run")
    assert patch == [] and warnings[0].startswith("localdns (dry run): NetworkPolicy shop/default-deny-egress")
    assert len(api.requests) == calls, "no admission called the API server"


def test_an_unreadable_policy_is_taken_to_block_every_pod(api, start_view, start_webhook, caplog):
    # Not one the API server would store; the view must neither crash nor pretend it allows DNS.
    api.seed(networkpolicy("odd", "shop", {"podSelector": {}, "egress": [{"ports": [{"protocol": "ICMP"}]}]}))
    with caplog.at_level(logging.WARNING, "localdns.webhook"):
        view, metrics = start_view()
    assert any("NetworkPolicy shop/odd" in r.getMessage() and "TCP, UDP or SCTP" in r.getMessage()
               for r in caplog.records)
    webhook = start_webhook(Settings(), metrics=metrics, networkpolicies=view)
    patch, warnings = admitted(webhook, "shop")
    assert patch == [] and "shop/odd (unreadable)" in warnings[0]


def test_an_internal_error_does_not_end_the_view(api, start_view, monkeypatch, caplog):
    from webhook import netpol
    api.seed(networkpolicy("deny", "shop", DEFAULT_DENY))
    real, calls = netpol.compile_policy, []

    def broken_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(netpol, "compile_policy", broken_once)
    with caplog.at_level(logging.ERROR, "localdns.webhook"):
        view, _ = start_view()
    assert names_in(view, "shop") == ["deny"] and len(requests(api, "list")) == 2
    assert any("NetworkPolicy view: internal error" in r.getMessage() for r in caplog.records)


def test_admission_and_preview_never_load_the_kubernetes_client(tmp_path):
    """The heavy `kubernetes` package (and the shared client) is for the view in `serve` only: admission and preview
    run without it."""
    pod = tmp_path / "pod.yaml"
    pod.write_text(json.dumps(samples.pod()))
    code = (
        "import sys\n"
        "from webhook.__main__ import main\n"
        "import webhook.app, webhook.admit\n"
        f"assert main(['preview', {str(pod)!r}, '-n', 'shop']) == 0\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'localdns', 'urllib3')\n"
        "                and m not in ('localdns', 'localdns.logformat'))\n"  # the log format: the stdlib only
        "print(loaded, file=sys.stderr)\n"
        "sys.exit(1 if loaded else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


class Policies:
    """A synced set of policies, as the view holds them (for tests that need no API server)."""

    synced = True

    def __init__(self, *objects: dict) -> None:
        from webhook import netpol
        self.policies = tuple(netpol.compile_policy(obj, LOCAL_IP) for obj in objects)

    def in_namespace(self, namespace: str):
        return [p for p in self.policies if p.namespace == namespace]


def test_ill_typed_labels_get_a_4xx_not_an_internal_error(start_webhook):
    """The check reads the pod's labels: a label that is not a string (the API server never sends one) is refused
    like any ill-typed field the webhook reads, never an internal error."""
    from hypothesis import given
    from hypothesis import settings as hypothesis_settings

    from tests.webhook.strategies import json_values, placed
    selecting = networkpolicy("web-only", "shop", {
        **DEFAULT_DENY, "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}})
    webhook = start_webhook(Settings(), networkpolicies=Policies(selecting))

    @hypothesis_settings(max_examples=60, deadline=None)
    @given(st.sampled_from([("metadata", "labels"), ("metadata", "labels", "app")]), json_values)
    def check(path, value):
        sent = placed(samples.pod(), path, value)
        answer = webhook.post(review_for(sent, "shop"))
        assert answer.status_code in (200, 400), answer.text
        if answer.status_code == 400:
            assert "metadata.labels" in answer.json()["error"]
        else:
            assert not any("internal error" in w for w in answer.json()["response"].get("warnings", []))

    check()
