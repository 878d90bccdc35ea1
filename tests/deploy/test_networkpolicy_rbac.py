"""The webhook's view of NetworkPolicies works under exactly what deploy/ grants its ServiceAccount (list and watch
of networkpolicies, with either TLS component), checked against an API server that enforces those rules: it syncs,
follows a change, and asks for nothing else."""
from __future__ import annotations

import time

import pytest

from localdns.kube import Client
from tests.deploy.rbac import RBACEnforcingAPI
from tests.deploy.render import LOCAL_IP, container, expanded_args, find, pod_spec, rendered
from webhook.netpolview import PolicyView

NAMESPACE = "localdns-system"


def networkpolicy(name: str) -> dict:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": "shop"}, "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}


def eventually(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("components", [("builtin-certs",), ("cert-manager",)], ids=["builtin-certs", "cert-manager"])
def test_the_view_needs_no_more_than_the_granted_rbac(components) -> None:
    from webhook.__main__ import build_parser
    objects = rendered(components)
    deployment = find(objects, "Deployment", "localdns-webhook", NAMESPACE)
    # The webhook runs the view (the default), as the ServiceAccount the bindings name, with its token mounted.
    args = build_parser().parse_args(expanded_args(container(deployment, "webhook")))
    assert args.networkpolicies == "watch"
    spec = pod_spec(deployment)
    assert spec["serviceAccountName"] == "localdns-webhook" and spec.get("automountServiceAccountToken") is not False
    with RBACEnforcingAPI(objects, NAMESPACE, spec["serviceAccountName"]) as api:
        api.seed(networkpolicy("default-deny-egress"))
        view = PolicyView(lambda: Client(api.client(), 5.0), LOCAL_IP, backoff_first=0.05, backoff_cap=0.2)
        view.start()
        try:
            eventually(lambda: view.synced, "the view synced")
            api.watches.wait_for_streams(1)
            api.seed(networkpolicy("later"))
            eventually(lambda: len(view.in_namespace("shop")) == 2, "the watch delivered the change")
        finally:
            view.stop()
        assert not api.denied
        assert {r.verb for r in api.requests} == {"list", "watch"}
        assert {r.resource for r in api.requests} == {"networkpolicies"}
