"""Every bad input: a clear error naming the object and the fix, exit 1, no traceback, nothing half-written."""
from __future__ import annotations

import datetime as dt

import pytest

from certs.authority import new_ca, new_serving_cert
from tests.certs.cluster import (
    NAMESPACE,
    TARGET,
    ca_bundles,
    run_cli,
    run_cli_process,
    run_main,
    secret_data,
    seed_secret,
    seeded_api,
    writes,
)
from tests.kubeapi import FakeKubeAPI

SECRET = f"Secret {NAMESPACE}/{TARGET.secret}"
CA_SECRET = f"CA Secret {NAMESPACE}/{TARGET.ca_secret_name}"


def assert_clean_failure(result, *phrases: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def test_forbidden_to_read_secrets_names_the_secret_and_the_grant():
    with seeded_api() as api:
        api.forbid("get", "secrets")
        result = run_cli_process(api, "bootstrap")
        assert_clean_failure(result, f"error: Secret {NAMESPACE}/{TARGET.ca_secret_name}: not allowed to get it",
                             'cannot get resource "secrets"', "grant the ServiceAccount 'get' on secrets")
        assert writes(api) == []


def test_forbidden_to_create_secrets_writes_nothing_else():
    with seeded_api() as api:
        api.forbid("create", "secrets")
        assert_clean_failure(run_cli(api, "bootstrap"), "not allowed to create it",
                             "grant the ServiceAccount 'create' on secrets")
        assert api.objects("secrets") == [] and ca_bundles(api) == [b"", b""]


def test_missing_webhook_configuration_is_named_before_anything_is_written():
    with FakeKubeAPI() as api:
        result = run_cli_process(api, "bootstrap", "--webhook-configuration", "localdns-webhook")
        assert_clean_failure(result, "MutatingWebhookConfiguration localdns-webhook not found",
                             "kubectl apply -k deploy/")
        assert writes(api) == []


@pytest.mark.parametrize("name,what", [(TARGET.secret, SECRET), (TARGET.ca_secret_name, CA_SECRET)])
def test_garbage_secret_is_refused_then_replaced_on_request(name, what):
    with seeded_api() as api:
        seed_secret(api, name, {"tls.crt": b"garbage", "tls.key": b"garbage"})
        assert_clean_failure(run_cli(api, "bootstrap"), f"{what}: certificate is not a PEM certificate",
                             "Nothing was changed", "--replace-invalid",
                             f"kubectl -n {NAMESPACE} delete secret {name}")
        assert writes(api) == []
        result = run_cli(api, "bootstrap", "--replace-invalid")
        assert result.returncode == 0, result.stderr
        assert run_cli(api, "show").returncode == 0


def test_key_that_does_not_match_its_certificate_is_refused():
    ca = new_ca()
    leaf, other = new_serving_cert(ca, list(TARGET.dns_names())), new_serving_cert(ca, ["x"])
    with seeded_api() as api:
        seed_secret(api, TARGET.ca_secret_name, {"tls.crt": ca.cert_pem(), "tls.key": ca.key_pem()})
        seed_secret(api, TARGET.secret, {"tls.crt": leaf.cert_pem(), "tls.key": other.key_pem(),
                                         "ca.crt": ca.cert_pem()})
        assert_clean_failure(run_cli(api, "bootstrap"), f"{SECRET}: key does not match its certificate")
        assert writes(api) == []


def test_expired_ca_is_refused_then_rolled_on_request():
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    ca = new_ca(lifetime=dt.timedelta(days=365), now=past)
    leaf = new_serving_cert(ca, list(TARGET.dns_names()), now=past)
    with seeded_api() as api:
        seed_secret(api, TARGET.ca_secret_name, {"tls.crt": ca.cert_pem(), "tls.key": ca.key_pem()})
        seed_secret(api, TARGET.secret, {"tls.crt": leaf.cert_pem(), "tls.key": leaf.key_pem(),
                                         "ca.crt": ca.cert_pem()})
        assert_clean_failure(run_cli(api, "bootstrap"), f"{CA_SECRET}: it expired at", "--replace-invalid")
        assert writes(api) == []
        result = run_cli(api, "bootstrap", "--replace-invalid")
        assert result.returncode == 0, result.stderr
        assert run_cli(api, "show").returncode == 0
        assert secret_data(api)["ca.crt"] != ca.cert_pem()


def test_api_server_that_times_out_is_named_with_the_fix():
    with seeded_api() as api:
        api.delay(3)
        result = run_cli(api, "bootstrap", "--timeout", "0.3")
        api.delay(0)
        assert_clean_failure(result, f"the API server at {api.url} did not answer within 0.3 s", "--timeout")
        assert writes(api) == []


def test_unreachable_api_server(tmp_path):
    with FakeKubeAPI() as api:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(api.kubeconfig_path.read_text())
    # the server has stopped: its port refuses connections
    result = run_main("show", "--kubeconfig", str(kubeconfig), "--timeout", "1")
    assert_clean_failure(result, "could not be reached", "check that it is reachable")


def test_missing_kubeconfig_says_how_to_authenticate(tmp_path):
    result = run_main("bootstrap", "--kubeconfig", str(tmp_path / "nope"))
    assert_clean_failure(result, "cannot load Kubernetes credentials", "--kubeconfig")


def test_unmanaged_secret_without_ca_crt_is_refused():
    ca = new_ca()
    leaf = new_serving_cert(ca, list(TARGET.dns_names()))
    with seeded_api() as api:
        seed_secret(api, TARGET.secret, {"tls.crt": leaf.cert_pem(), "tls.key": leaf.key_pem()}, managed=False)
        assert_clean_failure(run_cli(api, "bootstrap"), f"{SECRET} is not managed by localdns-certs and has no ca.crt")
        assert writes(api) == []


def test_inconsistent_lifetimes_are_refused():
    with seeded_api() as api:
        assert_clean_failure(run_cli(api, "bootstrap", "--leaf-days", "200"), "--ca-renew-days must exceed --leaf-days")
