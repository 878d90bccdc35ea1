"""`python -m certs bootstrap` against FakeKubeAPI through the official client: creates, keeps, repairs, races."""
from __future__ import annotations

import base64
import subprocess

from cryptography import x509

from certs.authority import dns_names_of, is_signed_by, new_ca, new_serving_cert
from certs.reconcile import reconcile
from certs.rotation import Action, Policy
from tests.certs.cluster import (
    NAMESPACE,
    TARGET,
    ca_bundles,
    certs_in,
    kube_for,
    replace_webhook_configuration,
    run_cli,
    run_cli_process,
    secret_data,
    seed_secret,
    seeded_api,
    webhook_configuration,
    writes,
)
from tests.certs.handshake import LoopbackTLSServer
from tests.conftest import require_tool

POLICY = Policy(TARGET.dns_names())


def assert_serving_works(api) -> None:
    """The webhook's Secret serves a handshake that a client trusting only each caBundle accepts."""
    data = secret_data(api)
    with LoopbackTLSServer() as server:
        server.present(data["tls.crt"], data["tls.key"])
        for bundle in ca_bundles(api):
            assert server.handshake(bundle, "localdns-webhook.localdns-system.svc") == b"ok"


def test_bootstrap_creates_tls_secret_with_ca_and_sets_every_ca_bundle(tmp_path):
    openssl = require_tool("openssl")
    with seeded_api() as api:
        result = run_cli_process(api, "bootstrap")
        assert result.returncode == 0, result.stderr
        assert "new-ca: there is no CA yet" in result.stderr
        secret = api.get_object("secrets", "localdns-webhook-tls", NAMESPACE)
        assert secret["type"] == "kubernetes.io/tls" and set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
        data = secret_data(api)
        bundles = ca_bundles(api)
        assert bundles == [data["ca.crt"]] * 2
        ca_data = secret_data(api, "localdns-webhook-tls-ca")
        assert certs_in(data["ca.crt"]) == certs_in(ca_data["tls.crt"])
        (tmp_path / "bundle.pem").write_bytes(bundles[0])
        (tmp_path / "tls.crt").write_bytes(data["tls.crt"])
        for name in TARGET.dns_names():
            verify = subprocess.run([openssl, "verify", "-CAfile", tmp_path / "bundle.pem", "-purpose", "sslserver",
                                     "-verify_hostname", name, tmp_path / "tls.crt"],
                                    capture_output=True, text=True, timeout=30)
            assert verify.returncode == 0, verify.stdout + verify.stderr
        assert_serving_works(api)


def test_bootstrap_is_idempotent_and_keeps_a_valid_secret():
    with seeded_api() as api:
        assert run_cli(api, "bootstrap").returncode == 0
        before = (secret_data(api), secret_data(api, "localdns-webhook-tls-ca"), ca_bundles(api))
        written = len(writes(api))
        result = run_cli(api, "bootstrap")
        assert result.returncode == 0, result.stderr
        assert len(writes(api)) == written  # the second run only read
        assert (secret_data(api), secret_data(api, "localdns-webhook-tls-ca"), ca_bundles(api)) == before


def test_a_secret_whose_ca_bundle_was_never_patched_is_repaired_next_run():
    with seeded_api() as api:
        api.forbid("patch", "mutatingwebhookconfigurations")
        failed = run_cli(api, "bootstrap")
        assert failed.returncode == 1 and "Traceback" not in failed.stderr
        assert "MutatingWebhookConfiguration localdns-webhook: not allowed to patch" in failed.stderr
        assert ca_bundles(api) == [b"", b""]
        secret_before = secret_data(api)
        api.allow_all()
        assert run_cli(api, "bootstrap").returncode == 0
        assert secret_data(api) == secret_before  # the valid Secret was kept, only caBundle written
        assert ca_bundles(api) == [secret_before["ca.crt"]] * 2
        assert_serving_works(api)


def test_a_ca_bundle_reset_by_someone_is_put_back():
    with seeded_api() as api:
        assert run_cli(api, "bootstrap").returncode == 0
        mwc = api.get_object("mutatingwebhookconfigurations", "localdns-webhook")
        del mwc["webhooks"][1]["clientConfig"]["caBundle"]
        kube = kube_for(api)
        replace_webhook_configuration(api, mwc)
        assert ca_bundles(api)[1] == b""
        step = reconcile(kube, TARGET, POLICY, log=lambda _: None)
        assert step.action is Action.NOTHING
        assert ca_bundles(api) == [secret_data(api)["ca.crt"]] * 2


def test_two_replicas_racing_converge_on_one_certificate():
    with seeded_api() as api:
        racer_log: list[str] = []
        # The other replica runs its whole bootstrap just before our first create reaches the server.
        api.before_next("create", "secrets", TARGET.ca_secret_name,
                        lambda server: reconcile(kube_for(server), TARGET, POLICY, racer_log.append))
        log: list[str] = []
        step = reconcile(kube_for(api), TARGET, POLICY, log.append)
        assert step.action is Action.NOTHING
        assert any("changed while we worked on it" in line for line in log)
        assert [r.status for r in api.requests_for("create", "secrets")].count(409) == 1
        data = secret_data(api)
        assert is_signed_by(certs_in(data["tls.crt"])[0], certs_in(data["ca.crt"])[0])
        assert len(api.objects("secrets")) == 2
        assert_serving_works(api)


def test_a_conflicting_update_is_read_again_not_overwritten():
    with seeded_api() as api:
        assert run_cli(api, "bootstrap").returncode == 0
        mwc = api.get_object("mutatingwebhookconfigurations", "localdns-webhook")
        for webhook in mwc["webhooks"]:
            webhook["clientConfig"].pop("caBundle")
        kube = kube_for(api)
        replace_webhook_configuration(api, mwc)
        api.conflict_next("patch", "mutatingwebhookconfigurations", "localdns-webhook")
        log: list[str] = []
        assert reconcile(kube, TARGET, POLICY, log.append).action is Action.NOTHING
        assert any("changed while we worked on it" in line for line in log)
        assert ca_bundles(api) == [secret_data(api)["ca.crt"]] * 2


def test_a_secret_managed_elsewhere_is_only_read_and_its_ca_injected():
    ca = new_ca("cert-manager-ca")
    leaf = new_serving_cert(ca, list(TARGET.dns_names()))
    with seeded_api() as api:
        seed_secret(api, TARGET.secret, {"tls.crt": leaf.cert_pem(), "tls.key": leaf.key_pem(),
                                         "ca.crt": ca.cert_pem()}, managed=False)
        result = run_cli(api, "bootstrap")
        assert result.returncode == 0, result.stderr
        assert ("patch", "mutatingwebhookconfigurations", "localdns-webhook") in writes(api)
        assert not [w for w in writes(api) if w[1] == "secrets"]
        assert ca_bundles(api) == [ca.cert_pem()] * 2
        assert run_cli(api, "bootstrap", "--replace-invalid").returncode == 0  # valid, so still not taken over
        assert not [w for w in writes(api) if w[1] == "secrets"]
        shown = run_cli(api, "show")
        assert shown.returncode == 0 and "managed elsewhere" in shown.stdout


def test_show_reports_a_differing_ca_bundle_and_exits_1():
    with seeded_api() as api:
        missing = run_cli(api, "show")
        assert missing.returncode == 1 and "missing" in missing.stdout and "next: new-ca" in missing.stdout
        assert run_cli(api, "bootstrap").returncode == 0
        shown = run_cli(api, "show")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "webhook pods.localdns.io: caBundle matches ca.crt" in shown.stdout
        assert "localdns-webhook.localdns-system.svc.cluster.local" in shown.stdout
        mwc = api.get_object("mutatingwebhookconfigurations", "localdns-webhook")
        mwc["webhooks"][0]["clientConfig"]["caBundle"] = base64.b64encode(new_ca("stranger").cert_pem()).decode()
        replace_webhook_configuration(api, mwc)
        differs = run_cli(api, "show")
        assert differs.returncode == 1 and "caBundle DIFFERS from ca.crt" in differs.stdout
        assert "next: sync-webhooks" in differs.stdout


def test_an_empty_placeholder_secret_is_filled_keeping_its_type_and_annotations():
    with seeded_api() as api:
        api.seed({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {
            "name": TARGET.secret, "namespace": NAMESPACE, "annotations": {"team": "dns"}}})
        result = run_cli(api, "bootstrap")
        assert result.returncode == 0, result.stderr
        secret = api.get_object("secrets", TARGET.secret, NAMESPACE)
        assert secret["type"] == "Opaque" and secret["metadata"]["annotations"] == {"team": "dns"}
        assert secret["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "localdns-certs"}
        assert_serving_works(api)


def test_a_ca_bundle_patch_based_on_a_stale_read_is_not_applied():
    """Another writer changes the configuration between our read and our patch: our patch must not land."""
    with seeded_api() as api:
        def someone_edits(server):
            mwc = server.get_object("mutatingwebhookconfigurations", "localdns-webhook")
            mwc["metadata"].setdefault("labels", {})["edited"] = "yes"
            replace_webhook_configuration(server, mwc)

        api.before_next("patch", "mutatingwebhookconfigurations", "localdns-webhook", someone_edits)
        log: list[str] = []
        assert reconcile(kube_for(api), TARGET, POLICY, log.append).action is Action.NOTHING
        patches = api.requests_for("patch", "mutatingwebhookconfigurations")
        assert [p.status for p in patches] == [422, 200]
        mwc = api.get_object("mutatingwebhookconfigurations", "localdns-webhook")
        assert mwc["metadata"]["labels"] == {"edited": "yes"}
        assert "localdns.io/ca-bundle-synced-at" in mwc["metadata"]["annotations"]
        assert ca_bundles(api) == [secret_data(api)["ca.crt"]] * 2


def test_certificate_names_follow_service_namespace_and_cluster_domain():
    with seeded_api() as api:
        api.seed({**webhook_configuration(), "metadata": {"name": "other-hook"}})
        result = run_cli(api, "bootstrap", "--namespace", "dns", "--service", "hook", "--secret", "hook-tls",
                         "--webhook-configuration", "other-hook", "--cluster-domain", "example.internal")
        assert result.returncode == 0, result.stderr
        secret = api.get_object("secrets", "hook-tls", "dns")
        leaf = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
        assert dns_names_of(leaf) == ["hook", "hook.dns", "hook.dns.svc", "hook.dns.svc.example.internal"]
        assert api.get_object("secrets", "hook-tls-ca", "dns") is not None
        assert ca_bundles(api) == [b"", b""]  # the other configuration was not touched
