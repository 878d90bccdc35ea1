"""`status`: each check against an installation as the API server stores it; real certificates, a real TLS
handshake for the served certificate (trusting only the caBundle, for the Service name, as the API server does)."""
from __future__ import annotations

import datetime as dt
import time

from certs.authority import new_ca, new_serving_cert, service_dns_names
from clustertools import status
from tests.certs.handshake import LoopbackTLSServer
from tests.cluster_tools import workloads as w
from tests.cluster_tools.installation import NS, b64, install, webhook_configuration


def checks(result) -> dict[str, dict]:
    return {c["check"]: c for c in result.json()["checks"]}


def test_healthy_installation(api, cli, caches):
    fleet = caches(2)
    install(api, caches=fleet)
    for endpoint in fleet.endpoints:
        endpoint.fallback(armed=1, endpoints=2, refreshed=time.time())
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web", injected=True)
    result = cli("status", "-o", "json")
    assert result.code == 0, result.out
    states = {name: c["state"] for name, c in checks(result).items()}
    assert states == {"webhook configuration": "ok", "certificate": "ok", "served certificate": "unknown",
                      "webhook": "ok", "cache": "ok", "fallback": "ok", "namespaces": "ok"}
    assert checks(result)["fallback"]["detail"] == "armed on 2 of 2 nodes"
    assert "port-forward" in checks(result)["served certificate"]["detail"]
    assert result.json()["namespaces"][0] | {} == {"name": "shop", "mode": "enabled", "readable": True, "pods": 2,
                                                   "injected": 2, "needsRestart": 0, "wouldInject": 0, "untouched": 0}
    text = cli("status")
    assert text.code == 0 and "localdns is healthy" in text.out and "shop" in text.out


def test_missing_configuration_is_a_failure(api, cli):
    result = cli("status")
    assert result.code == 1
    assert "MutatingWebhookConfiguration localdns-webhook is not installed" in result.out
    assert "NOT healthy" in result.out


def test_ca_bundle_that_did_not_sign_the_secret(api, cli):
    install(api, ca_bundle=new_ca("someone-else").cert_pem())
    result = cli("status", "-o", "json")
    assert result.code == 1
    assert checks(result)["certificate"]["state"] == "fail"
    assert "did not sign" in checks(result)["certificate"]["detail"]


def test_certificate_for_the_wrong_name_or_expired(api, cli):
    ca = new_ca()
    install(api, ca=ca, serving=new_serving_cert(ca, ["localdns-webhook.default.svc"]))
    result = cli("status", "-o", "json")
    assert checks(result)["certificate"]["state"] == "fail"
    assert "not valid for localdns-webhook.localdns-system.svc" in checks(result)["certificate"]["detail"]


def test_expired_and_soon_expiring_certificate():
    ca = new_ca()
    leaf = new_serving_cert(ca, service_dns_names("localdns-webhook", NS), lifetime=dt.timedelta(days=10))
    now = dt.datetime.now(dt.UTC)
    soon, _ = status.check_certificate(ca.cert_pem(), leaf.cert_pem(), now)
    assert soon.state == "warn" and "renew soon" in soon.detail
    later, _ = status.check_certificate(ca.cert_pem(), leaf.cert_pem(), now + dt.timedelta(days=11))
    assert later.state == "fail" and "expired" in later.detail


def test_served_certificate_checked_like_the_api_server(api, cli):
    ca, serving = install(api)
    with LoopbackTLSServer() as server:
        server.present(serving.cert_pem(), serving.key_pem())
        good = cli("status", "-o", "json", "--webhook-address", f"127.0.0.1:{server.port}")
        assert checks(good)["served certificate"]["state"] == "ok", checks(good)["served certificate"]
        assert good.code == 0
        # The Secret was renewed but the webhook still serves the old certificate: verifies, but stale.
        renewed = new_serving_cert(ca, service_dns_names("localdns-webhook", NS))
        w.edit(api, "secrets", NS, "localdns-webhook-tls",
               lambda secret: secret["data"].update({"tls.crt": b64(renewed.cert_pem())}))
        stale = cli("status", "-o", "json", "--webhook-address", f"127.0.0.1:{server.port}")
        assert checks(stale)["served certificate"]["state"] == "warn"
        assert "not reloaded" in checks(stale)["served certificate"]["detail"]
        # A certificate from another CA: the API server would refuse the TLS handshake.
        other_ca = new_ca("other")
        foreign = new_serving_cert(other_ca, service_dns_names("localdns-webhook", NS))
        server.present(foreign.cert_pem(), foreign.key_pem())
        bad = cli("status", "-o", "json", "--webhook-address", f"127.0.0.1:{server.port}")
        assert checks(bad)["served certificate"]["state"] == "fail"
        assert bad.code == 1


def test_served_certificate_address_that_does_not_answer(api, cli):
    import socket
    install(api)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = cli("status", "-o", "json", "--webhook-address", f"127.0.0.1:{port}")
    assert checks(result)["served certificate"]["state"] == "fail"
    assert "cannot connect" in checks(result)["served certificate"]["detail"]


def test_webhook_down_and_cache_missing_on_a_node(api, cli):
    install(api, webhook_ready=0, cache_ready=("node-1",))
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web", injected=True)  # its pods run on node-1
    w.pod(api, "shop", "unlucky", injected=True, node="node-2")
    result = cli("status", "-o", "json")
    assert result.code == 1
    found = checks(result)
    assert found["webhook"]["state"] == "fail" and "0/2" in found["webhook"]["detail"]
    assert found["cache"]["state"] == "fail"
    assert "ready on 1 of 2 nodes" in found["cache"]["detail"]
    assert "1 injected pod on nodes without a ready cache (node-2)" in found["cache"]["detail"]


def test_pods_waiting_for_a_restart_are_a_warning(api, cli):
    install(api)
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web")
    result = cli("status", "-o", "json")
    assert result.code == 0
    assert checks(result)["namespaces"]["state"] == "warn"
    assert "python -m webhook audit" in checks(result)["namespaces"]["detail"]


def test_forbidden_secret_is_partial_not_healthy(api, cli):
    install(api)
    api.forbid("get", "secrets", namespace=NS)
    result = cli("status", "-o", "json")
    assert result.code == 3
    assert checks(result)["certificate"]["state"] == "unknown"
    assert result.json()["partial"] is True and result.json()["healthy"] is False


def test_configuration_with_both_entries_is_ok_and_each_must_use_its_path(api, cli):
    ca, _ = install(api)
    bundle = b64(ca.cert_pem())
    ok = checks(cli("status", "-o", "json"))["webhook configuration"]
    assert ok["state"] == "ok" and ok["detail"] == "localdns-webhook: 2 webhooks, caBundle set"
    # The dry-run label sent to /mutate: pods meant only to be annotated would be changed.
    crossed = webhook_configuration(bundle, (("inject.localdns.io", "enabled", "/mutate"),
                                             ("dry-run.localdns.io", "dry-run", "/mutate")))
    w.edit(api, "mutatingwebhookconfigurations", None, "localdns-webhook", lambda mwc: mwc.update(crossed))
    result = cli("status", "-o", "json")
    assert result.code == 1 and checks(result)["webhook configuration"]["state"] == "fail"
    assert "dry-run.localdns.io sends namespaces labelled localdns.io/inject=dry-run to /mutate, not /dry-run: " \
           "their pods are changed instead of only annotated" in checks(result)["webhook configuration"]["detail"]


def test_configuration_from_before_the_dry_run_entry_is_a_warning(api, cli):
    ca, _ = install(api)
    older = webhook_configuration(b64(ca.cert_pem()), (("inject.localdns.io", "enabled", "/mutate"),))
    w.edit(api, "mutatingwebhookconfigurations", None, "localdns-webhook", lambda mwc: mwc.update(older))
    found = checks(cli("status", "-o", "json"))["webhook configuration"]
    assert found["state"] == "warn"
    assert "no entry for localdns.io/inject=dry-run: namespaces labelled so are not reviewed at all" in found["detail"]


def test_entries_with_different_ca_bundles_are_a_warning(api, cli):
    install(api)

    def split(mwc: dict) -> None:
        mwc["webhooks"][1]["clientConfig"]["caBundle"] = b64(new_ca("stale").cert_pem())

    w.edit(api, "mutatingwebhookconfigurations", None, "localdns-webhook", split)
    found = checks(cli("status", "-o", "json"))["webhook configuration"]
    assert found["state"] == "warn" and "the entries carry different caBundles" in found["detail"]
